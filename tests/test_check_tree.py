"""`publish check` reads the email's lxml tree (check_tree) where it used to build a
BeautifulSoup tree of it: every finding must be what the soup gave, on every post's email
and on generated pages full of what the two could read differently (word-list attributes
with odd spaces, strings of only spaces in and out of <pre>, ruby text, style and script
text, comments, placeholders and addresses split across elements)."""

from __future__ import annotations

from functools import cached_property

import pytest
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import build, check, check_contrast, htmltree
from pipeline.check_rules import RULES, Page
from pipeline.check_support import support
from tests.conftest import CORPUS, SAMPLES


class SoupPage(Page):
    """The page as the check read it before: BeautifulSoup's lxml tree."""

    @cached_property
    def soup(self):
        return BeautifulSoup(self.html, "lxml")

    @cached_property
    def elements(self) -> list:
        return htmltree.tags(self.soup)

    @cached_property
    def images(self) -> list:
        return htmltree.tags(self.soup, {"img"})

    @cached_property
    def anchors(self) -> list:
        return htmltree.tags(self.soup, {"a"})

    @cached_property
    def style_text(self) -> str:
        return "\n".join(style.get_text() for style in htmltree.tags(self.soup, {"style"}))

    @cached_property
    def body_text(self) -> str:
        soup = self.soup
        return soup.body.get_text(" ") if soup.body else soup.get_text(" ")

    @cached_property
    def all_text(self) -> str:
        return self.soup.get_text(" ")


def findings(page: Page) -> list:
    found = [check._found(rule, page) for rule in RULES]
    return [*found, support(page, set())]


def same_findings(html: str, text: str = "", postal_address: str = "") -> None:
    fields = dict(text=text, subject="A subject", preheader="", postal_address=postal_address)
    tree = check_contrast.parsed(html)
    now = Page(html, tree, **fields)
    before = SoupPage(html, None, **fields)
    assert findings(now) == findings(before)
    # the tree leaves out the spaces the parser saw outside <html> (soup_text has them)
    assert (now.body_text.strip(), now.all_text.strip(), now.style_text) == (
        before.body_text.strip(), before.all_text.strip(), before.style_text)
    assert now.soup_text == before.all_text
    assert [(e.name, e.attrs) for e in now.elements] == [
        (e.name, e.attrs) for e in before.elements]


POSTS = sorted(p for p in CORPUS.rglob("*.md") if p.name != "MANIFEST.md")


@pytest.mark.skipif(not POSTS, reason="corpus not present")
@pytest.mark.parametrize("source", [*SAMPLES.values(), *POSTS], ids=lambda p: p.stem)
def test_every_post_is_checked_as_the_soup_checked_it(source, repo_settings):
    built = build.render_issue(source, repo_settings)
    same_findings(built.html, built.text, repo_settings.postal_address)


PIECES = ["<p>one <b>two</b> three</p>", "\n", "\n\n  \n", "  ", "\t", "\x0c",
          "<pre>  a\n\n  b  </pre>", "<pre> <b> x </b>\n\n</pre>", "<textarea>  </textarea>",
          "<div class='a  b'> </div>", "<div class='a\u00a0b\x0bc'>x</div>",
          "<table><tr><td headers='h1 h2'>c</td></tr></table>", "<a rel='nofollow  x' "
          "href='http://x.example/'>here</a>", "<a href='#nowhere'>Click Here</a>",
          "<a href=''>e</a>", "<link rel='stylesheet alternate' href='x.css'>", "<br>",
          "<img src='x.png'>", "<img src='data:image/png;base64,AA' alt='' width='3'>",
          "<p>汉字 <i>斜</i></p>", "<!-- TK -->", "T<!-- c -->K", "<span>T</span>K",
          " TK ", "<ruby>字<rt>TK<!-- c -->x</rt><rp> <b>(</b> </rp></ruby>",
          "<style>p{color:red} @import url(x.css);</style>", "<style>  </style>",
          "<script>var TK = 1;</script>", "<template><p>TK</p></template>",
          "<p style='display:flex;position:absolute'>f</p>", "<my-el>c</my-el>",
          "<video src='v.mp4'></video>", "1 Main St,<br>  City", "1 Main St, City",
          "<pre>1 Main St,\n\n  City</pre>", "\u0085", "<div id='nowhere'></div>",
          "<h1 class=''>h</h1>", "<p accesskey='a b' dropzone=' '>d</p>", "&nbsp;&amp;",
          "<iframe sandbox='a b' src='x'></iframe>", "<rt>only</rt>", "</p>", "<p>",
          "<body style='x'>b</body>", "<head><style>h{}</style></head>", "<![CDATA[x]]>",
          "<?php echo 1 ?>",
          # foreign elements, namespaced names, Outlook's conditional comments, odd case
          "<svg viewBox='0 0 1 1'><rect class='a b'/><style>p{}</style><title>T</title>"
          "<foreignObject><p>TK</p></foreignObject></svg>",
          "<math><mi>x</mi><annotation-xml encoding='text/html'><p>y</p></annotation-xml></math>",
          "<p xml:lang='en' lang='fr'>l</p>", "<a xlink:href='http://x.example/'>l</a>",
          "<o:p class='a b'>o</o:p>", "<v:rect fillcolor='#fff'><v:textbox>t</v:textbox></v:rect>",
          "<!--[if mso]><table><tr><td>mso</td></tr></table><![endif]-->",
          "<template><style>p{color:red}</style><p>TK</p></template>",
          "<P CLASS='A  B' Data-X='1'>u</P>", "<p class='a' class='b'>dup</p>", "<p class>c</p>",
          "<img alt='a' ALT='b' src='x.png'>", "<noscript><p>n</p></noscript>",
          "<xmp>  <b>x</b> </xmp>", "<p>\r\n</p>", "\u3000"]
ADDRESSES = ["", "1 Main St, City", "1 Main St,\n\n  City", "1 Main St,   City", "TK", " ",
             "\n", "City\n", " 1 Main St", "City \n"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), min_size=0, max_size=12).map("".join),
       st.sampled_from(["", "<!doctype html>", "<html><body>", "<html><head></head><body>",
                        "\n<!doctype html>\n", "</p>\n"]),
       st.sampled_from(["", "\n", "</html>\n", "</body></html> \n", "</body>\n</html>"]),
       st.sampled_from(ADDRESSES))
def test_generated_pages_are_checked_as_the_soup_checked_them(body, head, tail, address):
    same_findings(head + body + tail, postal_address=address)


def test_the_tables_are_beautifulsoups():
    from bs4.builder import HTMLTreeBuilder

    from pipeline import check_tree

    assert dict(HTMLTreeBuilder.DEFAULT_CDATA_LIST_ATTRIBUTES) == check_tree.LIST_ATTRIBUTES
    assert set(HTMLTreeBuilder.DEFAULT_PRESERVE_WHITESPACE_TAGS) == check_tree.KEEP_SPACES
    assert set(HTMLTreeBuilder.DEFAULT_STRING_CONTAINERS) == check_tree.STRING_BOXES
