"""The methods dataclasses and named tuples generate, kept compiled between runs.

A build keeps the code `compile` made of the source dataclasses and namedtuple generate
(pipeline/_codecache.py); the next process runs that code instead of compiling. The
classes must behave exactly as without it, and a damaged, foreign or unwritable file must
only cost the compiling. Also here: kept files are only written back when worth it.
"""

from __future__ import annotations

import os
import textwrap

from tests.conftest import SAMPLES, run_publish
from tests.test_regexcache import build, damage_each_way, python


def code_files(temp):
    return sorted(temp.glob("publish-cache-*/code-*.marshal"))


# Classes of every kind dataclasses and namedtuple make methods for; the script prints
# what a user of them could notice, so two processes can be compared.
CLASSES = """
    import dataclasses, collections, inspect, typing
    from dataclasses import dataclass, field, KW_ONLY

    @dataclass
    class Plain:
        a: int
        b: str = "x"
        c: list = field(default_factory=list)

    @dataclass(frozen=True, order=True)
    class Frozen:
        n: int
        tag: "str" = "t"

    @dataclass(kw_only=True, slots=True, eq=False)
    class Keywords:
        x: typing.Optional[int] = None
        _: KW_ONLY
        y: float = 1.5

    @dataclass(unsafe_hash=True)
    class Child(Plain):
        d: int = 4

    Point = collections.namedtuple("Point", "x y", defaults=[0])
    shown = []
    for cls in (Plain, Frozen, Keywords, Child):
        shown.append((cls.__name__, str(inspect.signature(cls)),
                      repr({k: v for k, v in cls.__init__.__annotations__.items()}),
                      sorted(k for k in vars(cls) if k.startswith("__"))))
    shown.append((repr(Plain(1)), Plain(1) == Plain(1), Plain(1) == Plain(2),
                   repr(Frozen(2)), Frozen(1) < Frozen(2), hash(Frozen(3)) == hash(Frozen(3)),
                   repr(Keywords(x=2, y=3.0)), Keywords() == Keywords(),
                   repr(Child(1, d=5)), Child.__hash__ is not None))
    try:
        Frozen(1).n = 2
    except dataclasses.FrozenInstanceError as exc:
        shown.append(("frozen", type(exc).__name__))
    try:
        Plain()
    except TypeError as exc:
        shown.append(("missing", str(exc)))
    shown.append((repr(Point(1)), Point(1, 2)._asdict(), str(inspect.signature(Point)),
                  Point.__new__.__defaults__))
    for row in shown:
        print(row)
"""


def test_classes_made_from_kept_code_behave_as_without_it(tmp_path):
    """The same classes, in a process without the cache, in the one that fills it and in
    one answered from it: signatures, annotations (no `from __future__` of ours leaks into
    the generated code), methods, reprs, comparisons, hashes, errors, all alike."""
    plain = python(CLASSES, tmp_path / "none")  # no pipeline imported: the builtins
    assert plain.returncode == 0, plain.stderr
    with_cache = "import pipeline.build\nfrom pipeline import _codecache as kept\n" + \
        textwrap.dedent(CLASSES) + "\nprint(kept._STATE['installed'], len(kept._KEPT) > 0)\n"
    first = python(with_cache, tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(code_files(tmp_path)) == 1
    second = python(with_cache + "print(kept._STATE['added'])\n", tmp_path)
    assert second.returncode == 0, second.stderr
    assert first.stdout == plain.stdout + "True True\n"
    assert second.stdout == first.stdout + "0\n"  # every method came from the file


def test_every_kept_entry_is_the_code_compile_makes(tmp_path):
    build(SAMPLES["en"], tmp_path, tmp_path / "a")
    build(SAMPLES["zh"], tmp_path, tmp_path / "b")
    (path,) = code_files(tmp_path)
    done = python(f"""
        import marshal
        from pipeline import _codecache as kept, _regexcache
        entries = _regexcache.read_entries({str(path)!r}, kept._tag())
        assert len(entries) > 50, len(entries)
        for (mode, source), data in entries.items():
            assert marshal.loads(data) == compile(source, "<string>", mode, dont_inherit=True)
        print(len(entries))
    """, tmp_path)
    assert done.returncode == 0, done.stderr


def test_damaged_foreign_or_ill_shaped_files_are_compiled_again(tmp_path):
    first = build(SAMPLES["en"], tmp_path, tmp_path / "a")
    (path,) = code_files(tmp_path)
    good = damage_each_way(path, tmp_path, first)
    assert len(path.read_bytes()) > len(good) // 2  # written anew
    # a good checksum over entries that are not code, or not of the shape written
    done = python(f"""
        import marshal
        from pipeline._regexcache import pack, unpack
        tag, blob = unpack(open({str(path)!r}, "rb").read())
        entries = marshal.loads(blob)
        for n, key in enumerate(list(entries)):
            entries[key] = [b"not code", marshal.dumps(1), "text", None][n % 4]
        entries[1] = 2
        entries[("exec",)] = b""
        blob = marshal.dumps(entries)
        open({str(path)!r}, "wb").write(pack(tag, blob))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    again = run_publish("build", str(SAMPLES["en"]), "--out", str(tmp_path / "c"),
                        env={"TMPDIR": str(tmp_path)})
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert {n: (tmp_path / "c" / n).read_bytes() for n in first} == first


def test_an_unwritable_or_unsafe_folder_only_costs_the_compiling(tmp_path):
    (tmp_path / f"publish-cache-{os.getuid()}").write_text("a file, not a folder")
    first = build(SAMPLES["zh"], tmp_path, tmp_path / "a")
    assert build(SAMPLES["zh"], tmp_path, tmp_path / "b") == first
    assert code_files(tmp_path) == []
    done = python("""
        import pipeline.build, dataclasses, builtins
        from pipeline import _codecache as kept
        assert kept._STATE["path"] is None
        assert getattr(dataclasses, "exec", builtins.exec) is builtins.exec  # left alone
    """, tmp_path)
    assert done.returncode == 0, done.stderr


def test_kept_files_are_written_back_only_when_worth_it(tmp_path):
    """A run whose new entries cost less to make than the file costs to write leaves the
    file as it is (a library making one cheap pattern from a set, in another order in
    each process, would otherwise have every build rewrite the whole file); one whose new
    entries cost more writes it, with them. Both kept files alike."""
    build(SAMPLES["en"], tmp_path, tmp_path / "a")
    regex = next(tmp_path.glob("publish-cache-*/regex-*.marshal"))
    (code,) = code_files(tmp_path)
    stamps = {path: path.stat().st_ino for path in (regex, code)}
    script = """
        import re, collections, dataclasses
        import pipeline.build
        from pipeline import _codecache, _regexcache
        for kept in (_codecache, _regexcache):
            kept._STATE["loading"] = {loading}  # what reading the file took, as if so long
        re.compile("a new pattern, cheap to compile: [xyz]+ {n}")
        collections.namedtuple("Fresh{n}", "fresh{n}_a fresh{n}_b")
    """
    done = python(script.format(loading=60.0, n=1), tmp_path)
    assert done.returncode == 0, done.stderr
    assert {path: path.stat().st_ino for path in stamps} == stamps  # neither rewritten
    done = python(script.format(loading=0.0, n=2), tmp_path)
    assert done.returncode == 0, done.stderr
    assert all(path.stat().st_ino != stamps[path] for path in stamps)  # both replaced
    done = python("""
        import pipeline.build
        from pipeline import _codecache, _regexcache
        assert (False, "a new pattern, cheap to compile: [xyz]+ 2", 0) in _regexcache._KEPT
        assert (False, "a new pattern, cheap to compile: [xyz]+ 1", 0) not in _regexcache._KEPT
        assert any("fresh2_a" in source for _, source in _codecache._KEPT)
        assert not any("fresh1_a" in source for _, source in _codecache._KEPT)
    """, tmp_path)
    assert done.returncode == 0, done.stderr


def test_worth_writing_weighs_compiling_against_writing():
    from pipeline._regexcache import worth_writing

    assert worth_writing(0.010, 0.0)  # no file yet: anything new is worth keeping
    assert worth_writing(0.050, 0.004)
    assert not worth_writing(0.0002, 0.004)  # one cheap pattern beside a 1 MB file
    assert not worth_writing(0.0, 0.0)
