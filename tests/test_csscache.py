"""What cssutils made of the CSS, kept between runs: the same results, never in the way.

premailer's stylesheet rules and style pairs, the image floats and the check's head
rules are kept in a file (pipeline/_csscache.py) so a build of styles seen before never
imports cssutils. Every kept result must equal a fresh computation, and a damaged,
foreign, unsafe or contended file must only cost the parsing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CORPUS, ROOT, SAMPLES, run_publish

posts = sorted(p for p in (CORPUS / "hf-blog").glob("*.md") if p.name != "MANIFEST.md")
needs_corpus = pytest.mark.skipif(not posts, reason="the shared corpus is not beside the repo")


def build(issue, temp, out) -> dict[str, bytes]:
    done = run_publish("build", str(issue), "--out", str(out), env={"TMPDIR": str(temp)})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return {name: (out / name).read_bytes() for name in ("email.html", "email.txt")}


def kept_files(temp):
    return sorted(temp.glob("publish-cache-*/css-*.marshal"))


def python(code: str, temp) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env={**os.environ, "TMPDIR": str(temp),
                               "PUBLISH_IMAGE_SIZES": "local"},
                          capture_output=True, text=True, timeout=180)


@needs_corpus
def test_every_kept_result_equals_a_fresh_computation(tmp_path):
    """Build the samples and Chinese and English posts, then in a fresh process compute
    each kept result again with premailer and cssutils themselves and compare."""
    issues = [SAMPLES["en"], SAMPLES["zh"], posts[0],
              next(p for p in posts if p.name.startswith("zh"))]
    for n, issue in enumerate(issues):
        build(issue, tmp_path, tmp_path / f"out{n}")
    (path,) = kept_files(tmp_path)
    done = python(f"""
        from pipeline import _csscache, check_contrast
        entries = _csscache._load({str(path)!r})
        kinds = {{kind for kind, _ in entries}}
        assert kinds == {{"premailer-rules", "premailer-pairs", "float", "contrast-rules"}}, kinds
        cssutils = _csscache.quiet_cssutils()
        from premailer import Premailer
        from premailer.merge_style import csstext_to_pairs
        for (kind, key), value in entries.items():
            if kind == "premailer-pairs":
                assert csstext_to_pairs(key[0], validate=key[1]) == value, key
            elif kind == "premailer-rules":
                css, index, strip, novalid, pseudo, star = key
                p = Premailer("<p>", strip_important=strip, disable_validation=novalid,
                              exclude_pseudoclasses=pseudo, include_star_selectors=star)
                rules, leftover = p._parse_style_rules(css, index)
                assert rules == value[0], css
                assert len(leftover) == len(value[1])
            elif kind == "float":
                assert (cssutils.parseStyle(key).float or "") == value, key
            else:
                assert check_contrast._parsed(key) == value
        print(len(entries))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 20


def test_a_build_of_styles_seen_before_never_loads_cssutils(tmp_path):
    first = build(SAMPLES["en"], tmp_path, tmp_path / "a")
    done = python(f"""
        import sys
        from pathlib import Path
        from pipeline import build, lazy, settings
        result = build.build({str(SAMPLES["en"])!r}, settings.load(Path(".")),
                             {str(tmp_path / "b")!r})
        assert "cssutils" not in sys.modules or lazy.is_deferred("cssutils"), "loaded"
        assert result.built.findings is not None
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert {n: (tmp_path / "b" / n).read_bytes() for n in first} == first


_PROPERTY = st.sampled_from(["color", "background-color", "width", "float", "FLOAT", "margin",
                             "font-family", "text-align", "padding", "x-unknown", "--var"])
_VALUE = st.one_of(
    st.sampled_from(["red", "#fff", "#AbC", "left", "right", "Right", "0", "10px 2em",
                     "'Noto Sans', 微软雅黑, sans-serif", "url(a.png)", "unset", "inherit",
                     "rgb(1, 2, 3)", "calc(100% - 2px)", "none !important", "1px solid #000"]),
    st.text(alphabet="abc#0123456789 ;:!(),%'\"é字\\-/*{}", max_size=12))


@st.composite
def _style(draw) -> str:
    pairs = draw(st.lists(st.tuples(_PROPERTY, _VALUE), max_size=5))
    joiner = draw(st.sampled_from([";", "; ", " ;\n"]))
    return joiner.join(f"{name}:{value}" for name, value in pairs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_style(), _style(), st.sampled_from(["p", ".a", "td.a", "img", "p, img", "a:hover",
                                            "* ", "#x", "@media screen"]))
def test_inlining_any_css_equals_premailer_alone_missed_and_kept(sheet_style, inline, selector):
    """Hypothesis-made stylesheets and inline styles: premailer through the kept results
    (a miss, then a hit) writes what premailer alone writes."""
    from premailer import Premailer

    from pipeline import _csscache, inliner

    css = f"{selector} {{{sheet_style}}}\n.b {{{inline}}}"
    document = (f'<html><head><style>td{{color:red}}</style></head><body><p class="a" '
                f'style="{inline.replace(chr(34), "")}">x</p><img class="b" src="a.png" '
                f'style="{inline.replace(chr(34), "")}"><div id="x">y</div></body></html>')
    options = dict(allow_network=False, strip_important=False, keep_style_tags=True,
                   remove_classes=False, disable_validation=True, disable_leftover_css=True,
                   disable_basic_attributes=["width", "height"])
    _csscache.quiet_cssutils()

    def plain():
        try:
            return Premailer(document, css_text=css, cache_css_parsing=False,
                             **options).transform(pretty_print=False)
        except Exception as exc:
            return type(exc)

    def ours():
        try:
            return inliner._inliner_class()(document, css_text=css, **options).transform(
                pretty_print=False)
        except Exception as exc:
            return type(exc)

    # premailer's own pairs go through the kept ones now; compare with its undecorated
    # function as cssutils computes it
    expected = _without_kept(plain)
    assert ours() == expected  # computed (or kept from an earlier example)
    assert ours() == expected  # answered from what was kept


def _without_kept(run):
    from premailer import merge_style
    from premailer import premailer as premailer_module

    from pipeline import inliner

    inliner._inliner_class()
    saved = premailer_module.csstext_to_pairs, merge_style.csstext_to_pairs
    original = premailer_module.csstext_to_pairs.__closure__[0].cell_contents
    premailer_module.csstext_to_pairs = merge_style.csstext_to_pairs = original
    try:
        return run()
    finally:
        premailer_module.csstext_to_pairs, merge_style.csstext_to_pairs = saved


def test_damaged_or_foreign_files_are_parsed_again(tmp_path):
    first = build(SAMPLES["en"], tmp_path, tmp_path / "a")
    (path,) = kept_files(tmp_path)
    good = path.read_bytes()
    for n, damaged in enumerate([b"", b"garbage", good[:len(good) // 2],
                                 good[:-40] + bytes(40), good.replace(b"-", b"+", 1)]):
        path.write_bytes(damaged)
        assert build(SAMPLES["en"], tmp_path, tmp_path / f"b{n}") == first
    assert build(SAMPLES["en"], tmp_path, tmp_path / "c") == first
    assert len(path.read_bytes()) > len(good) // 2


def test_entries_of_the_wrong_shape_behind_a_good_checksum_are_computed_again(tmp_path):
    """A file whose checksum and tag hold but whose results are of the wrong shape: the
    build is the same and says nothing."""
    first = build(SAMPLES["en"], tmp_path, tmp_path / "a")
    (path,) = kept_files(tmp_path)
    done = python(f"""
        import marshal
        from pipeline._regexcache import pack, unpack
        tag, blob = unpack(open({str(path)!r}, "rb").read())
        entries = marshal.loads(blob)
        for n, key in enumerate(list(entries)):
            entries[key] = [None, ("a",), 3, {{}}, (1, 2, 3)][n % 5]
        entries[1] = 2
        entries[("float",)] = "left"
        blob = marshal.dumps(entries)
        open({str(path)!r}, "wb").write(pack(tag, blob))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    again = run_publish("build", str(SAMPLES["en"]), "--out", str(tmp_path / "b"),
                        env={"TMPDIR": str(tmp_path)})
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert {n: (tmp_path / "b" / n).read_bytes() for n in first} == first


def test_an_edited_stylesheet_is_parsed_anew(tmp_path):
    """The kept rules are keyed by the stylesheet's exact text: an edited template
    stylesheet changes the email as it would without the file."""
    import shutil

    root = tmp_path / "letter"
    shutil.copytree(ROOT / "email_templates", root / "email_templates")
    shutil.copy(ROOT / "publish.toml", root / "publish.toml")
    issue = root / "issue.md"
    shutil.copy(SAMPLES["en"], issue)
    for name in ("assets",):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, root / name)

    def built(out):
        done = run_publish("--root", str(root), "build", str(issue), "--out", str(out),
                           env={"TMPDIR": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        return (out / "email.html").read_text("utf-8")

    before = built(tmp_path / "a")
    css = root / "email_templates" / "email.css.j2"
    css.write_text(css.read_text("utf-8") + "\np { color: #123456; }\n", "utf-8")
    after = built(tmp_path / "b")
    assert "#123456" not in before and "#123456" in after
    (tmp_path / f"publish-cache-{os.getuid()}").rename(tmp_path / "moved")
    assert built(tmp_path / "c") == after  # nothing kept: the same email


def test_a_result_put_in_place_of_a_checked_one_is_checked_again(tmp_path):
    """A kept result whose shape was checked is answered without checking it again, but
    only that very result: one put in its place (read from another run's file) is
    checked, and computed again when it has the wrong shape."""
    done = python("""
        from pipeline import _csscache as cache
        checks, computed = [], []

        def ask():
            return cache.kept("pairs", "color: red",
                              lambda: computed.append(1) or [("color", "red")],
                              lambda found: checks.append(1) or isinstance(found, list))

        assert ask() == [("color", "red")] and computed == [1]
        ask(), ask(), ask()
        assert len(checks) == 1  # checked once, then trusted
        cache._KEPT[("pairs", "color: red")] = "not pairs"
        assert ask() == [("color", "red")] and computed == [1, 1]
    """, tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_long_session_holds_a_bounded_number_of_results(tmp_path):
    """A preview session adds a result for every new inline style an edit makes: memory
    holds at most the bound, the recently used results stay answered, the others are
    computed again when asked, and the file written at exit is still read back."""
    done = python("""
        from pipeline import _csscache as cache
        cache._MAX_HELD = 100
        computed = []

        def ask(n):
            return cache.kept("pairs", f"color: #{n:06x}",
                              lambda: computed.append(n) or [("color", f"#{n:06x}")],
                              lambda found: isinstance(found, list))

        ask(0)
        for n in range(1, 1000):
            ask(n)
            ask(0)  # in use all along
            assert len(cache._KEPT) <= 100 and len(cache._USED) <= 100
            assert len(cache._CHECKED) <= 100  # shapes already checked, as bounded
        computed.clear()
        assert ask(0) == [("color", "#000000")] and ask(999) == [("color", "#0003e7")]
        assert computed == []
        assert ask(5) == [("color", "#000005")] and computed == [5]
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(kept_files(tmp_path)) == 1
    done = python("""
        from pipeline import _csscache as cache
        assert cache.kept("pairs", "color: #000000", lambda: 1 / 0, lambda f: True) == [
            ("color", "#000000")]
    """, tmp_path)
    assert done.returncode == 0, done.stderr


def test_another_version_of_the_code_keeps_its_own_file_and_old_ones_go(tmp_path):
    """Two versions building on one machine (another checkout, an upgrade) each keep their
    own file instead of replacing each other's, so neither parses again at every turn; the
    files of all but the three most recently written versions are removed when one is
    written, and nothing else in the folder is touched."""
    first = build(SAMPLES["en"], tmp_path, tmp_path / "a")
    (ours,) = kept_files(tmp_path)
    folder = ours.parent
    theirs = folder / "css-0badc0de-604.marshal"  # another version's, written just now
    theirs.write_bytes(b"their results")
    old = []
    for n in range(4):
        path = folder / f"css-old{n}-604.marshal"
        path.write_bytes(b"old")
        os.utime(path, (1_000_000 + n, 1_000_000 + n))
        old.append(path)
    other = folder / "notes.txt"
    other.write_text("not ours")
    ours.unlink()  # this version's results are gone: the next build writes them anew
    assert build(SAMPLES["en"], tmp_path, tmp_path / "b") == first
    assert ours.exists() and theirs.read_bytes() == b"their results"
    assert [path.exists() for path in old] == [False, False, False, True]  # 3 newest kept
    assert other.read_text() == "not ours"
    done = python("""
        import pipeline.render
        from pipeline import _csscache
        _csscache._ensure_loaded()
        print(len(_csscache._KEPT) > 10)
    """, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
