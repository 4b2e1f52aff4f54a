"""Input no one planned for: generated issues and subscriber files.

Either the build succeeds and its promises hold (no forbidden tag, every #anchor resolves,
every image absolute with alt text, a non-empty text part), or it fails with the one-line
error for bad input. Never a traceback, never a hang: each case runs under an alarm.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import build, subscribers
from pipeline import settings as settings_mod
from pipeline.errors import InputError
from tests.conftest import assert_email_promises


@contextlib.contextmanager
def at_most(seconds: int):
    """Fail a build that runs away: `seconds` of CPU time, not of the wall clock, so a
    loaded machine slows the build without failing it."""
    def alarm(*_):
        raise TimeoutError(f"took more than {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def build_or_input_error(path, s):
    """The build, or None after a one-line InputError; anything else fails the test."""
    with at_most(30):
        try:
            built = build.render_issue(path, s)
        except InputError as exc:
            assert "\n" not in str(exc) and str(exc)
            return None
    assert_email_promises(built)
    return built


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
    | st.dates(min_value=dt.date(1900, 1, 1)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=6)

html_pieces = st.sampled_from([
    "<div>", "</div>", "<p>", "<figure><video><source src='clip.mp4'></video>",
    "<figure><video></video><figcaption>cap</figcaption></figure>", "<iframe>", "<iframe src=''>",
    "<iframe src='https://www.youtube.com/embed/abcdefghijk'></iframe>", "<audio controls>",
    "<img>", "<img src=''>", "<img src='a b.png' alt='x\ny'>", '<a href="#nowhere">x</a>',
    '<a href="#Heading-One">toc</a>', "<table><tr><td>", "<svg><circle/></svg>",
    "<script>alert(1)</script>", "<gradio-app src='https://x.hf.space'>", "<details><summary>s",
    "<span title=\"a'b\nc\">q</span>", "<!-- comment", "<![CDATA[x]]>", "<b><i>", "</b>",
])
markdown_pieces = st.sampled_from([
    "# Heading One", "## 更新: 2024 年 12 月", "- item\n  - nested", "1. one\n2. two",
    "> quote", "```python\nx = 1\n```", "$$\na_1\n$$", "| a | b |\n|---|---|\n| 1 | 2 |",
    "text[^1]\n\n[^1]: note", "![alt](pic.png)", "[link](/relative)", "***bold***", "~~s~~",
    "\u200b\u200d\u202e\ufeff", "😀👩‍👩‍👧", "\x00", "TK", "\t\tindented",
])
bodies = st.lists(st.one_of(html_pieces, markdown_pieces, st.text(max_size=40)),
                  max_size=25).map("\n\n".join)


@settings(deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(meta=st.dictionaries(st.text(min_size=1, max_size=10), yaml_values, max_size=5),
       title=st.one_of(st.none(), st.text(max_size=40)), body=bodies)
def test_generated_issues_build_or_fail_cleanly(tmp_path_factory, meta, title, body):
    folder = tmp_path_factory.mktemp("fuzz")
    if title is not None:
        meta = {**meta, "title": title}
    front = yaml.safe_dump(meta, allow_unicode=True)
    path = folder / "issue.md"
    path.write_text(f"---\n{front}---\n\n{body}\n", "utf-8")
    build_or_input_error(path, settings_mod.load(folder, env={}))


@pytest.mark.parametrize("name,body", [
    ("table-5000-rows", "| a | b |\n|---|---|\n" + "\n".join(f"| {i} | x |" for i in range(5000))),
    ("lists-200-deep", "\n".join("  " * i + "- item" for i in range(200))),
    ("divs-3000-deep", "<div>" * 3000 + "x" + "</div>" * 3000),
    ("emphasis-5000", "*" * 5000 + "x" + "*" * 5000),
    ("line-1-mb", "word " * 200_000),
    ("nul-bytes", "a\x00b <b>\x00</b>"),
    ("cdata-section", "<![CDATA[x]]> and <!DOCTYPE html> <?php echo 1 ?>"),  # broke MJML
    ("c0-control-character", "before\x1fafter"),  # broke MJML
    ("attribute-quotes", '<img src="a\nb.png" alt="x\'y\n&quot;z"> <p title=\'"\'>t</p>'),
])
def test_named_hard_cases(tmp_path, name, body):
    path = tmp_path / f"{name}.md"
    path.write_text(f"---\ntitle: {name}\n---\n\n{body}\n", "utf-8")
    built = build_or_input_error(path, settings_mod.load(tmp_path, env={}))
    assert built is not None


def test_nul_in_front_matter_is_a_clean_error(tmp_path):
    path = tmp_path / "nul.md"
    path.write_text("---\ntitle: a\x00b\n---\nbody\n", "utf-8")
    assert build_or_input_error(path, settings_mod.load(tmp_path, env={})) is None


emails = st.from_regex(r"[A-Za-z0-9._%+-]{1,10}@[A-Za-z0-9-]{1,8}\.(org|com|net)", fullmatch=True)
junk = st.text(max_size=20)


@settings(deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.one_of(emails, junk), st.text(max_size=10)), max_size=30),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]),
       delimiter=st.sampled_from([",", ";", "\t"]))
def test_generated_subscriber_files_import_exactly_the_valid_rows(tmp_path_factory, rows,
                                                                    encoding, delimiter):
    import csv
    import io

    folder = tmp_path_factory.mktemp("subs")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(["email", "name"])
    for email, name in rows:
        writer.writerow([email, name])
    text = buffer.getvalue()
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    source = folder / "in.csv"
    source.write_bytes(data)
    with at_most(30):
        report = subscribers.import_file(source, folder / "main.csv")
    valid: dict[str, str] = {}
    for email, _name in rows:
        with contextlib.suppress(ValueError):
            valid.setdefault(subscribers.normalize_email(email).lower(), email)
    imported = {item.key for _, item in subscribers.read(folder / "main.csv")
                if isinstance(item, subscribers.Subscriber)}
    assert imported == set(valid)
    assert report.added == len(valid)
    assert all(r.line >= 2 for r in report.rejected)
