"""The tree one HTML pass hands the next is the tree parsing its text would give.

The passes of a build (embeds, tidy, headline, plain text, preheader) parse the fragment
only once (pipeline/htmltree.py). That is only safe if the tree handed over is exactly
what a fresh parse of the serialized text yields: same elements, attributes (lists where
parsing makes lists), strings (joined, whitespace-only ones cut the way the parser does).
"""

from __future__ import annotations

import threading

import pytest
from bs4 import BeautifulSoup
from bs4.element import NavigableString, Tag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import build, htmltree
from tests.conftest import CORPUS, SAMPLES


def shape(node) -> object:
    if isinstance(node, Tag):
        return (node.name, list(node.attrs.items()), [shape(c) for c in node.contents])
    return (type(node).__name__, str(node))


def handed_over(text: str) -> object:
    """What the next pass would get for `text` (left for it: read_only)."""
    return shape(htmltree.parse(text, read_only=True))


def fresh(text: str) -> object:
    return shape(BeautifulSoup(text, "html.parser"))


FRAGMENTS = st.lists(st.sampled_from([
    "<p>one <b>two</b> three</p>", "\n", "\n\n  \n", "  ", "\t", "<pre>  a\n\n  b  </pre>",
    "<pre> <b> x </b>\n\n</pre>", "<textarea>  </textarea>", "<div class='a  b'> </div>",
    "<table><tr><td headers='h1 h2'>c</td></tr></table>", "<ul>\n<li>x</li>\n\n</ul>",
    "text &amp; more", "<a rel='nofollow noopener' href='/x'>l</a>", "<br>", "<img src=x>",
    "<p>汉字 <i>斜</i></p>", "<!-- note -->", "<span>a</span><span>b</span>",
    "<ruby>字<rt>zi<!-- c -->x</rt><rp> <b>(</b> </rp></ruby>",
]), min_size=1, max_size=12).map("".join)
EDITS = st.lists(st.tuples(st.sampled_from(
    ["decompose", "unwrap", "wrap", "new_tag", "space", "empty", "class", "text",
     "uncomment"]),
    st.integers(0, 50)), max_size=8)


def edit(tree, edits) -> None:
    """The kinds of change the passes make: drop, unwrap, wrap, add tags and strings."""
    for kind, n in edits:
        tags = [t for t in tree.find_all(True)]
        target = tags[n % len(tags)] if tags else None
        if kind in ("space", "empty", "text") and target is not None \
                and target.can_be_empty_element:
            target = None  # nothing goes inside <br> or <img>
        if kind == "decompose" and target is not None:
            target.decompose()
        elif kind == "unwrap" and target is not None:
            target.unwrap()
        elif kind == "wrap" and target is not None:
            target.wrap(tree.new_tag("div", attrs={"class": "table-scroll box"}))
        elif kind == "new_tag":
            tree.append(tree.new_tag("p", attrs={"class": "x", "rel": "a b"}))
        elif kind == "space":
            (target or tree).append(NavigableString("  \n \n"))
            (target or tree).append(NavigableString(" "))
        elif kind == "empty":
            (target or tree).insert(0, NavigableString(""))
        elif kind == "class" and target is not None:
            target["class"] = " c  d "
        elif kind == "text" and target is not None:
            target.append(NavigableString("<b>&amp;</b>"))
        elif kind == "uncomment":
            for node in [c for c in tree.descendants if type(c).__name__ == "Comment"]:
                node.extract()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAGMENTS, EDITS)
def test_a_changed_tree_handed_over_is_the_tree_its_text_parses_to(fragment, edits):
    tree = htmltree.parse(fragment)
    edit(tree, edits)
    text = htmltree.serialize(tree)
    assert handed_over(text) == fresh(text)
    assert str(htmltree.parse(text)) == text  # taking it keeps its text
    htmltree.forget()


POSTS = sorted(p for p in CORPUS.rglob("*.md") if p.name != "MANIFEST.md")


@pytest.mark.skipif(not POSTS, reason="corpus not present")
@pytest.mark.parametrize("source", [*SAMPLES.values(), *POSTS], ids=lambda p: p.stem)
def test_every_post_hands_its_passes_the_tree_of_its_fragment(source, repo_settings):
    built = build.render_issue(source, repo_settings)
    assert handed_over(built.fragment) == fresh(built.fragment)


def test_a_pass_that_takes_the_tree_leaves_none_behind():
    text = htmltree.serialize(BeautifulSoup("<p>a</p>\n<p>b</p>", "html.parser"))
    taken = htmltree.parse(text)
    taken.p.decompose()  # a pass changes it, then fails before writing its text
    again = htmltree.parse(text)
    assert again is not taken and str(again) == text


def test_each_thread_has_its_own_tree():
    text = htmltree.serialize(BeautifulSoup("<p>shared</p>", "html.parser"))
    mine = htmltree.parse(text, read_only=True)
    seen = []
    worker = threading.Thread(target=lambda: seen.append(htmltree.parse(text)))
    worker.start()
    worker.join()
    assert seen[0] is not mine and str(seen[0]) == text
    assert htmltree.parse(text) is mine


@pytest.mark.parametrize("fragment", [
    "<p>漢<ruby>字<rt>かん<!-- a note -->じ</rt></ruby></p>",
    "<p><ruby>東京<rt>とう<label>きょう</label></rt><rp>(</rp><rp><!-- x -->)</rp></ruby></p>",
    "<p><ruby>字<rt>  <!-- x -->  </rt></ruby> after</p>",
])
def test_strings_joined_inside_ruby_text_stay_ruby_text(fragment):
    """BeautifulSoup types the strings inside <rt>/<rp> (its get_text leaves them out of a
    paragraph's text); strings a pass joins there keep that type, as parsing gives them."""
    tree = htmltree.parse(fragment)
    for node in [n for n in tree.descendants if type(n).__name__ == "Comment"]:
        node.extract()  # what embeds.swap does with authors' comments
    for label in tree.find_all("label"):
        label.unwrap()
    text = htmltree.serialize(tree)
    assert handed_over(text) == fresh(text)
    assert htmltree.parse(text, read_only=True).p.get_text() == \
        BeautifulSoup(text, "html.parser").p.get_text()
    htmltree.forget()


def test_ruby_annotations_with_a_comment_stay_out_of_the_preheader(tmp_path):
    """End to end: the preheader a build derives is the one its fragment parses to."""
    from pipeline import preheader, settings
    from tests.conftest import empty_letter, write_issue

    letter = empty_letter(tmp_path)
    source = write_issue(letter / "issues", "ruby.md", (
        "---\ntitle: Ruby\n---\n\n<p>日本語の<ruby>漢<rt>かん<!-- note -->じ</rt></ruby>"
        "です。A paragraph long enough to open the preheader.</p>\n"))
    built = build.render_issue(source, settings.load(letter, env={}))
    htmltree.forget()
    assert built.email.preheader.startswith(preheader.derive(built.fragment, "Ruby"))
    assert "かんじ" not in built.email.preheader


WRITTEN = st.lists(st.sampled_from([
    "<p a='x\"y' b=\"it's\" c='both \" and &apos;' d=\"&lt;&amp;&gt;\">q</p>", "<br>", "<br/>",
    "<img src=x alt>", "<script>if (a<b && c>d) x='&amp;'</script>", "<style>p>a{}</style>",
    "<!-- <b> & -->", "<![CDATA[a<b]]>", "<!DOCTYPE html>", "<?php x ?>", "a &lt; b &amp; c",
    "<ruby>字<rt>z&lt;i</rt><rp>(</rp></ruby>", "<template><p>&amp;</p></template>",
    "<textarea> &lt;x&gt; </textarea>", "<svg:rect width=1></svg:rect>", "<p class=''>e</p>",
    "<td headers='a b'>c</td>", "<x-card data-a='1'></x-card>", "<p>汉字 <i>斜</i></p>",
]), min_size=1, max_size=10).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(FRAGMENTS, WRITTEN), EDITS)
def test_the_lean_writer_writes_what_beautifulsoup_writes(fragment, edits):
    tree = BeautifulSoup(fragment, "html.parser")
    edit(tree, edits)
    assert htmltree.write(tree) == str(tree)


@pytest.mark.skipif(not POSTS, reason="corpus not present")
@pytest.mark.parametrize("source", [*SAMPLES.values(), *POSTS[::3]], ids=lambda p: p.stem)
def test_the_lean_writer_writes_every_post_as_beautifulsoup_does(source):
    from pipeline import issue, markdown

    tree = BeautifulSoup(markdown.render(issue.load(source).body).html, "html.parser")
    assert htmltree.write(tree) == str(tree)
    tree.find(True)["data-x"] = 5  # a value BeautifulSoup writes with str(): left to it
    tree.append(tree.new_string("<&>"))
    assert htmltree.write(tree) == str(tree)
