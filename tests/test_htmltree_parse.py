"""The tree parsed in kept groups (pipeline/htmltree_parse.py) is the tree html.parser gives.

Compared with `BeautifulSoup(x, "html.parser")` node by node: names, attributes (and their
list values), strings and their classes, line numbers, and every link between nodes
(parent, siblings, document order), over generated fragments full of what an editor's raw
HTML holds (unclosed and stray tags, comments and entities cut anywhere, <script>, <pre>,
void elements closed in every way) and over the Markdown of every sample and corpus post,
parsed again after edits so that kept groups meet changed ones.
"""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup
from bs4.element import Tag
from bs4.exceptions import ParserRejectedMarkup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import htmltree_parse
from tests.conftest import CORPUS, SAMPLES


@pytest.fixture(autouse=True)
def every_fragment_in_groups(monkeypatch):
    monkeypatch.setattr(htmltree_parse, "MIN_CHARS", 0)
    monkeypatch.setattr(htmltree_parse, "WARM", True)


def described(soup) -> list:
    """Everything a pass could read of the tree, node by node in document order."""
    nodes = [soup, *soup.descendants]
    index = {id(node): n for n, node in enumerate(nodes)}

    def at(node):
        return None if node is None else index.get(id(node), "outside")

    out = []
    for node in nodes:
        links = (at(node.parent), at(node.next_element), at(node.previous_element),
                 at(node.next_sibling), at(node.previous_sibling))
        if isinstance(node, Tag):
            attrs = [(k, type(v).__name__, list(v) if isinstance(v, list) else v)
                     for k, v in node.attrs.items()]
            out.append(("tag", node.name, attrs, node.sourceline, node.sourcepos,
                        node.can_be_empty_element, node.hidden, node.prefix, node.namespace,
                        len(node.contents), links))
        else:
            out.append((type(node).__name__, str(node), links))
    out.append(("last", at(soup._most_recent_element)))
    return out


def check(fragment: str) -> None:
    try:
        expected = described(BeautifulSoup(fragment, "html.parser"))
    except ParserRejectedMarkup:  # markup html.parser gives up on: the same refusal
        with pytest.raises(ParserRejectedMarkup):
            htmltree_parse.parse(fragment)
        return
    assert described(htmltree_parse.parse(fragment)) == expected  # parsed, groups kept
    assert described(htmltree_parse.parse(fragment)) == expected  # from the kept groups


BLOCKS = [
    "<p>one <b>two</b> three</p>", "<h2 id=x>Heading &amp; more</h2>", "<div align='center'>",
    "</div>", "<pre><code>a\n\n  b &lt; c\n</code></pre>", "<script>if (a<b) x='</p>'\n</script>",
    "<style>p>a{color:red}\n</style>", "<!-- a comment\nover lines -->", "<!-- unclosed",
    "<br>", "<br/>", "</br>", "<img src=x>", "</img>", "<p>stray &amp", "&#x4e2d;&#20013;",
    "&nbsp;&unknown; &", "<a href='x'", ">", "<", "text", "汉字 <i>斜</i>", "<table>\n<tr>",
    "<td>c</td>", "</tr></table>", "<ul>\n<li>x</li>\n</ul>", "<![CDATA[x]]>", "<!DOCTYPE html>",
    "<?php echo 1 ?>", "<ruby>字<rt>zi</rt></ruby>", "<textarea>  a\n</textarea>", "</p>",
    "<p class='a  b' class=c>dup</p>", "<template><p>t</p>\n</template>", "</ b>", "<x-y z>",
    "<P>Upper</P>", "<textarea>", "  ", "\t", "<b>", "</b>",
]
FRAGMENTS = st.lists(st.sampled_from(BLOCKS) | st.text(alphabet="<>/!-&;#\n abp=\"'", max_size=8),
                     min_size=1, max_size=40).map(lambda parts: ">\n".join(parts) + ">\n")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAGMENTS)
def test_a_fragment_parses_as_html_parser_parses_it(fragment):
    check(fragment)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAGMENTS, FRAGMENTS, st.integers(0, 10_000))
def test_an_edited_fragment_parses_as_html_parser_parses_it(first, inserted, at):
    """Groups kept from one version of a fragment, in the next version around an edit."""
    check(first)
    cut = at % (len(first) + 1)
    check(first[:cut] + inserted + first[cut:])
    check(inserted + first)


POSTS = sorted(p for p in CORPUS.rglob("*.md") if p.name != "MANIFEST.md")


@pytest.mark.skipif(not POSTS, reason="corpus not present")
@pytest.mark.parametrize("source", [*SAMPLES.values(), *POSTS], ids=lambda p: p.stem)
def test_the_markdown_of_every_post_parses_as_html_parser_parses_it(source):
    from pipeline import issue, markdown

    body = issue.load(source).body
    check(markdown.render(body).html)
    blocks = body.split("\n\n")
    edited = "\n\n".join([*blocks[: len(blocks) // 2], "<div>an unclosed <b>block",
                          *blocks[len(blocks) // 2:]])
    check(markdown.render(edited).html)


def test_what_is_kept_is_bounded(monkeypatch):
    monkeypatch.setattr(htmltree_parse, "KEEP_CHARS", 5_000)
    htmltree_parse.clear()
    for n in range(200):
        check("".join(f"<p>paragraph {n} {m}</p>\n" for m in range(20)))
        groups, chars = htmltree_parse.kept_size()
        assert chars <= 5_000
    assert groups > 0
    huge = "<div>" + "<p>x</p>\n" * 20_000 + "</div>\n"  # one group, over KEEP_GROUP
    check(huge)
    assert htmltree_parse.kept_size()[1] <= 5_000
    htmltree_parse.clear()


def test_a_pass_changing_its_tree_never_changes_what_is_kept():
    fragment = "".join(f'<p class="c{n}">para {n} <b>bold</b></p>\n' for n in range(40))
    tree = htmltree_parse.parse(fragment)
    for p in tree.find_all("p")[::2]:
        p.decompose()
    for b in tree.find_all("b"):
        b.string = "changed"
        b["class"] = ["x"]
    for p in tree.find_all("p"):
        p["class"].append("extra")
    check(fragment)  # the kept groups still give the tree of the text


def test_threads_parsing_at_once_each_get_their_own_tree():
    import threading

    htmltree_parse.clear()
    base = ["".join(f"<p>thread {t} paragraph {n} &amp; <i>x</i></p>\n" for n in range(60))
            for t in range(4)]
    shared = "".join(f"<h2>shared {n}</h2>\n<p>words</p>\n" for n in range(40))
    failures = []

    def work(t: int) -> None:
        try:
            for n in range(15):
                text = base[t][: 200 + n * 37] + ">\n" + shared
                expected = described(BeautifulSoup(text, "html.parser"))
                tree = htmltree_parse.parse(text)
                if described(tree) != expected:
                    failures.append((t, n))
                tree.decompose()  # each thread's own copy, changed at once
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
