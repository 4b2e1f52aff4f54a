"""Compiled regular expressions kept between runs: the same patterns, never in the way.

A build keeps the code `re` compiled each pattern to (pipeline/_regexcache.py); the next
process hands that code to `_sre` instead of compiling. A pattern made from kept code
must equal the one `re` compiles (CPython compares patterns by their code), and a
damaged, foreign, unsafe or contended cache must only cost the compiling.
"""

from __future__ import annotations

import ast
import os
import resource
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import CORPUS, ROOT, SAMPLES, run_publish

posts = sorted(p for p in (CORPUS / "hf-blog").glob("*.md") if p.name != "MANIFEST.md")
needs_corpus = pytest.mark.skipif(not posts, reason="the shared corpus is not beside the repo")


def build(issue, temp, out) -> dict[str, bytes]:
    done = run_publish("build", str(issue), "--out", str(out), env={"TMPDIR": str(temp)})
    assert done.returncode == 0, done.stderr
    return {name: (out / name).read_bytes() for name in ("email.html", "email.txt")}


def kept_files(temp):
    return sorted(temp.glob("publish-cache-*/regex-*.marshal"))


def python(code: str, temp) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          env={**os.environ, "TMPDIR": str(temp)}, capture_output=True,
                          text=True, timeout=120)


@needs_corpus
def test_every_kept_pattern_equals_what_re_compiles(tmp_path):
    """Build an English and a Chinese post (and the sample with code), then in a fresh
    process compare each kept pattern with `re`'s own compile of it, code and all."""
    for n, issue in enumerate([SAMPLES["en"], posts[0], next(p for p in posts
                                                               if p.name.startswith("zh"))]):
        build(issue, tmp_path, tmp_path / f"out{n}")
    assert len(kept_files(tmp_path)) == 1
    done = python("""
        import re
        from re import _compiler
        original = _compiler.compile
        import pipeline.build  # installs the kept code
        from pipeline import _regexcache as kept
        entries = kept._load(kept._STATE["path"])
        assert len(entries) > 300, len(entries)
        for (is_bytes, pattern, flags), args in entries.items():
            fresh = original(pattern, flags)
            made = kept._from_args(pattern, args)
            assert made == fresh, pattern
            assert (made.groups, made.groupindex, made.flags) == (
                fresh.groups, fresh.groupindex, fresh.flags), pattern
        # and what `re.compile` answers now comes from the kept code
        assert _compiler.compile is kept._compile_kept
        print(len(entries))
    """, tmp_path)
    assert done.returncode == 0, done.stderr


@given(st.text(alphabet="ab()[]|*+?{}^$.\\-0123456789:<>=!Pé字\n ", max_size=24),
       st.sampled_from([0, 2, 8, 16, 64, 2 | 8 | 16]))
def test_any_pattern_compiles_to_what_re_makes_and_errors_alike(source, flags):
    from re import _compiler

    from pipeline import _regexcache as kept

    try:
        fresh = kept._ORIGINAL(source, flags)
    except Exception as exc:  # the same error from both
        with pytest.raises(type(exc)):
            kept._compile_kept(source, flags)
        return
    made = kept._compile_kept(source, flags)  # compiled, then kept
    again = kept._compile_kept(source, flags)  # from the kept code
    assert made == fresh == again
    assert again.groupindex == fresh.groupindex and again.flags == fresh.flags
    assert _compiler is not None


def damage_each_way(path, tmp_path, first: dict[str, bytes]) -> bytes:
    """Build the English sample over each kind of damage to the kept file at `path`: the
    email must be `first` every time. Returns the file as it was."""
    good = path.read_bytes()
    for n, damaged in enumerate([b"", b"garbage", good[:len(good) // 2],
                                 good[:-40] + bytes(40),  # the checksum catches it
                                 good.replace(b"cpython", b"cpythoX", 1)]):
        path.write_bytes(damaged)
        assert build(SAMPLES["en"], tmp_path, tmp_path / f"b{n}") == first
    return good


def test_damaged_or_foreign_files_are_compiled_again(tmp_path):
    first = build(SAMPLES["en"], tmp_path, tmp_path / "a")
    (path,) = kept_files(tmp_path)
    good = damage_each_way(path, tmp_path, first)
    assert build(SAMPLES["en"], tmp_path, tmp_path / "c") == first  # written anew
    assert len(path.read_bytes()) > len(good) // 2


def test_a_damaged_entry_behind_a_good_checksum_is_not_trusted_blindly(tmp_path):
    """An entry whose code `_sre` refuses is compiled again, not raised."""
    done = python("""
        import re
        import pipeline.build
        from pipeline import _regexcache as kept
        import marshal
        key = (False, "(?P<x>ab)+c", 0)
        kept._KEPT[key] = marshal.dumps((32, b"\\x01\\x02\\x03", 1, {"x": 1}, (None, "x")))
        assert re.compile("(?P<x>ab)+c").match("ababc").group("x") == "ab"
        for damaged in (marshal.dumps(("not", "the", "right", "shape")), b"\\xff", "text"):
            kept._KEPT[key] = damaged
            re.purge()
            assert re.compile("(?P<x>ab)+c").match("ababc").group("x") == "ab"
    """, tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_damaged_count_in_a_kept_file_costs_no_memory(tmp_path):
    """A flipped bit where a file's layout holds a count (marshal's tuple of two billion
    items, a tag two pages long) must be read as damage, not allocated: the build is the
    same with its memory held to 1 GB (it needs ~0.4), for each of the three kept files."""
    first = build(SAMPLES["en"], tmp_path, tmp_path / "a")
    folder = next(tmp_path.glob("publish-cache-*"))
    paths = sorted(folder.glob("*.marshal"))
    assert sorted(path.name.split("-")[0] for path in paths) == ["code", "css", "regex"]
    for path in paths:
        good = path.read_bytes()
        for n, damaged in enumerate([bytes([good[0] ^ 1]) + b"\xff\xff\xff\x7f" + good[5:],
                                     good[:13] + b"\xff\xff" + good[15:]]):
            path.write_bytes(damaged)
            out = tmp_path / f"{path.name[:4]}-{n}"
            done = subprocess.run(
                [sys.executable, "-m", "pipeline.cli", "build", str(SAMPLES["en"]), "--out",
                 str(out)], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)},
                capture_output=True, text=True, timeout=120, preexec_fn=lambda: (
                    resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))))
            assert done.returncode == 0, (path.name, n, done.stderr)
            assert {name: (out / name).read_bytes() for name in first} == first
        path.write_bytes(good)


def test_entries_of_the_wrong_shape_behind_a_good_checksum_are_ignored(tmp_path):
    """A file marshal reads and whose checksum holds, but not of the shape written: the
    build is the same, nothing is printed, and the file is written whole again."""
    first = build(SAMPLES["en"], tmp_path, tmp_path / "a")
    (path,) = kept_files(tmp_path)
    done = python(f"""
        import marshal
        from pipeline._regexcache import pack, unpack
        tag, _ = unpack(open({str(path)!r}, "rb").read())
        entries = {{1: 2, (True,): (), (False, "a", 0): ("x",), (False, "(b)", 0): (0, "no"),
                    (False, "c+", 0): marshal.dumps(("x",)), (False, "d", 0): b"\\x00"}}
        blob = marshal.dumps(entries)
        open({str(path)!r}, "wb").write(pack(tag, blob))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    again = run_publish("build", str(SAMPLES["en"]), "--out", str(tmp_path / "b"),
                        env={"TMPDIR": str(tmp_path)})
    assert again.returncode == 0 and again.stderr == ""
    assert {n: (tmp_path / "b" / n).read_bytes() for n in ("email.html", "email.txt")} == first
    assert len(path.read_bytes()) > 100_000


def test_an_unsafe_folder_is_never_used(tmp_path):
    """Neither the kept patterns nor the kept CSS results (_csscache, same folder)."""
    folder = tmp_path / f"publish-cache-{os.getuid()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)  # anyone could write code into it
    first = build(SAMPLES["en"], tmp_path, tmp_path / "a")
    assert list(folder.iterdir()) == []
    folder.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    folder.symlink_to(elsewhere)  # a link planted in a shared temporary directory
    assert build(SAMPLES["en"], tmp_path, tmp_path / "b") == first
    assert list(elsewhere.iterdir()) == []


def test_an_unwritable_folder_only_costs_the_compiling(tmp_path):
    (tmp_path / f"publish-cache-{os.getuid()}").write_text("a file, not a folder")
    first = build(SAMPLES["zh"], tmp_path, tmp_path / "a")
    assert build(SAMPLES["zh"], tmp_path, tmp_path / "b") == first
    assert kept_files(tmp_path) == []


@needs_corpus
def test_builds_at_once_leave_one_whole_file(tmp_path):
    """Builds writing the kept files at once: each file is one build's whole write, so
    it holds every entry some one of them used (the last to write; the union of them all
    is not promised: a build that started before any file was written keeps only its
    own). A torn or half-written file would fail its checksum and read as empty."""
    issues = [SAMPLES["en"], SAMPLES["zh"], *posts[:4]]
    (tmp_path / "alone").mkdir()
    alone = {issue: build(issue, tmp_path / "alone", tmp_path / f"alone-{n}")
             for n, issue in enumerate(issues)}
    shared = tmp_path / "shared"
    shared.mkdir()
    with ThreadPoolExecutor(len(issues)) as pool:
        told = list(pool.map(lambda n: build_noting_use(issues[n], shared,
                                                        tmp_path / f"at-once-{n}"),
                             range(len(issues))))
    # Read here, on one thread: Python 3.11's parser is not safe on several at once
    # ("AST constructor recursion depth mismatch").
    noted = [(outputs, ast.literal_eval(used)) for outputs, used in told]
    assert [outputs for outputs, _ in noted] == [alone[issue] for issue in issues]
    (path,) = kept_files(shared)
    (css,) = shared.glob("publish-cache-*/css-*.marshal")  # _csscache's, written at once too
    (code,) = shared.glob("publish-cache-*/code-*.marshal")  # _codecache's, likewise
    assert sorted(path.parent.iterdir()) == sorted([path, css, code])  # no staging left
    done = python(f"""
        import pipeline.build
        from pipeline import _codecache, _csscache, _regexcache as kept
        print(repr({{"regex": set(kept._load(kept._STATE["path"])),
                    "code": set(kept.read_entries({str(code)!r}, _codecache._tag())),
                    "css": set(_csscache._load({str(css)!r}))}}))
    """, shared)
    assert done.returncode == 0, done.stderr
    kept = ast.literal_eval(done.stdout)
    for kind in ("regex", "code", "css"):
        assert any(used[kind] and used[kind] <= kept[kind] for _, used in noted), kind


def build_noting_use(issue, temp, out) -> tuple[dict[str, bytes], str]:
    """`build`, in a process that also tells which kept entries it used (as the repr of a
    dict of sets)."""
    code = textwrap.dedent("""
        import atexit, sys
        def tell():
            kept = {name: sys.modules[f"pipeline.{module}"]._USED for name, module in
                    (("regex", "_regexcache"), ("code", "_codecache"), ("css", "_csscache"))}
            print("USED", repr(kept), flush=True)
        atexit.register(tell)  # registered first: runs after the caches are written
        from pipeline import cli
        sys.argv = ["publish", *sys.argv[1:]]
        cli.main()
    """)
    done = subprocess.run([sys.executable, "-c", code, "build", str(issue), "--out", str(out)],
                          cwd=ROOT, env={**os.environ, "TMPDIR": str(temp)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    used = done.stdout.rpartition("USED ")[2]
    return {name: (out / name).read_bytes() for name in ("email.html", "email.txt")}, used


@pytest.mark.parametrize("internals", [
    # `re` making of the probe patterns something other than `_code` and `_sre.compile`
    # give (as a CPython whose internals changed would): the others are left alone
    "_made = _compiler.compile\n"
    "_compiler.compile = lambda p, flags=0: _made(p, flags | (re.I if '(?P<name>[a-z' in"
    " str(p) else 0))",
])
def test_an_interpreter_whose_re_internals_differ_compiles_as_usual(tmp_path, internals):
    """A CPython whose `re` internals are not those the cache was written for: nothing is
    kept or answered from the cache, and every pattern is `re`'s own."""
    done = python(f"""
        import re
        from re import _compiler
        exec({internals!r})
        original = _compiler.compile
        import pipeline.build
        from pipeline import _regexcache as kept
        assert _compiler.compile is original, "the cache was installed"
        assert not kept._STATE["installed"] or kept._STATE["path"] is None
        assert re.compile("(?P<x>a+)b").groupindex == {{"x": 1}}
        print("ok")
    """, tmp_path)
    assert done.stdout.strip() == "ok", done.stderr
    assert kept_files(tmp_path) == []
