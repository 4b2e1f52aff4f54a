"""The embed swap on its own: which thumbnail a card gets, what links where, what is removed."""

from __future__ import annotations

from bs4 import BeautifulSoup
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import templates
from pipeline.embeds import EmbedContext, swap, youtube_id
from tests.conftest import ROOT

STRINGS = templates.strings(ROOT / "email_templates", "en")


def _swap(fragment: str, **context):
    ctx = EmbedContext(
        base_url="https://letter.example/", strings=STRINGS,
        where=lambda needle, nth: f"issue.md:{needle}", **context,
    )
    return swap(fragment, ctx)


def _card_image(result) -> str | None:
    img = BeautifulSoup(result.html, "html.parser").find("img")
    return img["src"] if img else None


VIDEO = '<video controls{poster}><source src="https://cdn.example/clip.mp4"></video>'


def test_thumbnail_order_poster_then_mapping_then_issue_image_then_text_card():
    both = {"media_thumbnails": {"https://cdn.example/clip.mp4": "/m.jpg"},
            "embed_thumbnail": "/e.jpg"}
    poster = _swap(VIDEO.format(poster=' poster="/p.jpg"'), **both)
    assert _card_image(poster) == "https://letter.example/p.jpg"
    mapped = _swap(VIDEO.format(poster=""), **both)
    assert _card_image(mapped) == "https://letter.example/m.jpg"
    issue_image = _swap(VIDEO.format(poster=""), embed_thumbnail="/e.jpg")
    assert _card_image(issue_image) == "https://letter.example/e.jpg"
    text_card = _swap(VIDEO.format(poster=""))
    assert _card_image(text_card) is None
    assert "card-text" in text_card.html and "https://cdn.example/clip.mp4" in text_card.html
    assert "cdn.example" in BeautifulSoup(text_card.html, "html.parser").get_text()


def test_youtube_gets_its_own_thumbnail_and_watch_link():
    for src in ("https://www.youtube.com/embed/dQw4w9WgXcQ?si=x",
                "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ",
                "https://youtu.be/dQw4w9WgXcQ"):
        assert youtube_id(src) == "dQw4w9WgXcQ"
    result = _swap('<iframe src="https://www.youtube.com/embed/dQw4w9WgXcQ"></iframe>')
    assert result.cards[0].url == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert _card_image(result) == "https://i.ytimg.com/vi/dQw4w9WgXcQ/hqdefault.jpg"


def test_figure_caption_and_alt_become_the_card_caption():
    result = _swap("<figure>" + VIDEO.format(poster="") + "<figcaption>Our clip</figcaption>"
                   "</figure>")
    assert result.cards[0].caption == "Our clip"
    assert "<figure" not in result.html and result.html.count("Our clip") == 1
    result = _swap('<audio alt="The interview" src="talk.mp3"></audio>')
    assert result.cards[0].caption == "The interview"
    assert result.cards[0].url == "https://letter.example/talk.mp3"


def test_cards_are_tables_outlook_can_lay_out():
    soup = BeautifulSoup(_swap(VIDEO.format(poster=' poster="/p.jpg"')).html, "html.parser")
    table = soup.find("table")
    assert table["role"] == "presentation"
    assert soup.find("img")["width"] == "552"
    assert all(a["href"] == "https://cdn.example/clip.mp4" for a in soup.find_all("a"))


def test_substack_subscribe_embed_becomes_a_button():
    result = _swap('<iframe src="https://tides.substack.com/embed" width="480"></iframe>')
    assert result.cards[0].kind == "subscribe"
    link = BeautifulSoup(result.html, "html.parser").find("a")
    assert link["href"] == "https://tides.substack.com/subscribe"
    assert link.get_text() == "Subscribe"


def test_object_embed_and_spaces_link_to_their_pages():
    result = _swap('<object data="https://x.example/embed/chart"></object>'
                   '<embed src="https://y.example/a.swf">'
                   '<gradio-app src="https://someone-demo.hf.space"></gradio-app>')
    assert [c.url for c in result.cards] == [
        "https://x.example/chart", "https://y.example/a.swf", "https://someone-demo.hf.space"]


def test_what_cannot_show_is_removed_and_custom_elements_unwrapped():
    result = _swap('<script>alert(1)</script><form><input name="q"><button>Go</button></form>'
                   '<svg><circle r="4"/></svg><p onclick="x()">kept</p>'
                   '<medium-zoom src="/z.png" alt="zoomed"></medium-zoom>'
                   '<my-widget><b>inner text</b></my-widget>'
                   '<picture><source srcset="a.webp"><img src="a.png" alt="a"></picture>')
    soup = BeautifulSoup(result.html, "html.parser")
    assert {t.name for t in soup.find_all(True)} == {"p", "img", "b"}
    assert "onclick" not in result.html and "alert" not in result.html
    assert soup.find("img", alt="zoomed")["src"] == "/z.png"
    assert "inner text" in soup.get_text()


def test_embed_without_source_is_a_warning_not_a_crash():
    result = _swap("<video controls></video><iframe></iframe><gradio-app></gradio-app>")
    assert len(result.warnings) == 3 and result.cards == []
    assert "<video> has no source" in result.warnings[0]


def test_space_embeds_link_to_the_space_page():
    result = _swap('<iframe src="https://hf.space/embed/chrisjay/mnist-adversarial/+"></iframe>'
                   '<iframe src="https://huggingface.co/spaces/owner/app/embed"></iframe>'
                   '<iframe src="https://huggingface.co/spaces/owner/app?embed=true"></iframe>'
                   '<iframe src="https://owner-app.hf.space"></iframe>'
                   '<iframe src="https://huggingface.co/datasets/o/d/embed/viewer/default/train">'
                   '</iframe>')
    assert [(c.kind, c.url) for c in result.cards] == [
        ("demo", "https://huggingface.co/spaces/chrisjay/mnist-adversarial"),
        ("demo", "https://huggingface.co/spaces/owner/app"),
        ("demo", "https://huggingface.co/spaces/owner/app"),
        ("demo", "https://owner-app.hf.space"),
        ("page", "https://huggingface.co/datasets/o/d/viewer/default/train"),
    ]
    hrefs = {a["href"] for a in BeautifulSoup(result.html, "html.parser").find_all("a")}
    assert not [h for h in hrefs if "/+" in h or h.endswith("/embed")]


PIECES = ['<video src="https://x.example/v.mp4" poster="/p.png"></video>',
          '<figure><iframe src="https://x.hf.space"></iframe><figcaption>Démo 中文</figcaption>'
          '</figure>', '<p>a <b>b</b>\n\n  c</p>', "<!-- note -->", "<script>x()</script>",
          '<img src="/a.png" srcset="a 2x" onload="x()">', '<h2 id="Same">Same</h2>', "\n\n",
          '<a href="#same">to it</a>', '<pre>  a\n\n  b </pre>', "<details><summary>S</summary>"
          "<p>d</p></details>", '<table><tr><td style="width:900px">w</td></tr></table>',
          '<ruby>字<rt>zi</rt></ruby>', '<my-widget src="/w.png">w</my-widget>', " &amp; "]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=10).map("".join))
def test_the_tree_handed_to_tidy_gives_what_its_text_gives(fragment):
    """The build hands the swapped tree to tidy without writing it out; tidy must then
    write exactly what it writes for the text (and the text is still there if asked first)."""
    from pipeline import htmltree, tidy

    where = lambda needle, nth: f"issue.md:{needle}"  # noqa: E731
    htmltree.forget()
    handed = tidy.tidy(_swap(fragment), "https://letter.example/", where)
    htmltree.forget()
    text = _swap(fragment).html
    htmltree.forget()
    written = tidy.tidy(text, "https://letter.example/", where)
    assert (handed.html, handed.images, handed.warnings) == (
        written.html, written.images, written.warnings)
    swapped = _swap(fragment)
    assert swapped.html == text  # asked for first: the text, then the tree parsed from it
    assert tidy.tidy(swapped, "https://letter.example/", where).html == written.html


HEADINGS = ["<h1>The same title</h1>", "<h1>The same title, and more words</h1>",
            "<h2>The same title</h2>", "<h1>Another <a name='x'></a>title</h1>",
            "<h1><img src='/i.png'> The same title</h1>", "\n", "<p>words first</p>", ""]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(HEADINGS),
       st.lists(st.sampled_from(PIECES), min_size=0, max_size=8).map("".join))
def test_the_tree_handed_to_the_headline_gives_what_its_text_gives(heading, rest):
    """The build hands tidy's tree to the headline pass, which writes it out once (after
    dropping a heading that repeats the title): the same headline, fragment and text as
    from the text written in between."""
    from pipeline import headline, htmltree, plaintext, tidy

    where = lambda needle, nth: f"issue.md:{needle}"  # noqa: E731
    fragment = heading + rest
    htmltree.forget()
    handed = headline.split("The same title", tidy.tidy(_swap(fragment), "https://x.example/",
                                                        where))
    handed_text = plaintext.from_html(handed.fragment, STRINGS)
    htmltree.forget()
    text = tidy.tidy(_swap(fragment), "https://x.example/", where).html
    htmltree.forget()
    written = headline.split("The same title", text)
    written_text = plaintext.from_html(written.fragment, STRINGS)
    assert (handed.headline, handed.fragment, handed.dropped, handed_text) == (
        written.headline, written.fragment, written.dropped, written_text)
