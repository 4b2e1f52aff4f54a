"""Bad and unusual input: one-line errors with file and line, warnings, nothing half-written."""

from __future__ import annotations

import json

import pytest
from bs4 import BeautifulSoup

from pipeline import build, settings
from tests.conftest import ROOT, empty_letter, run_publish, write_issue

GOOD = "---\ntitle: A fine issue\n---\n\nHello there, this is a paragraph of the issue.\n"


@pytest.fixture
def letter(tmp_path):
    """An empty newsletter folder using the shipped templates."""
    return empty_letter(tmp_path)


def _fails(letter, name, text_or_bytes, expect_line):
    path = letter / "issues" / name
    if isinstance(text_or_bytes, bytes):
        path.write_bytes(text_or_bytes)
    else:
        path.write_text(text_or_bytes, "utf-8")
    result = run_publish("build", f"issues/{name}", cwd=letter)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"issues/{name}:{expect_line}:" in lines[0]
    assert not (letter / "build").exists() or not any((letter / "build").iterdir())
    return lines[0]


def test_missing_title(letter):
    message = _fails(letter, "a.md", "---\nsubtitle: x\n---\nbody\n", 2)
    assert "title" in message


def test_yaml_error_points_at_its_line(letter):
    message = _fails(letter, "b.md", "---\ntitle: ok\nauthors: [a, b\ndate: 2025-01-01\n---\n", 4)
    assert "front matter" in message


def test_wrong_types(letter):
    assert "date" in _fails(letter, "c.md", "---\ntitle: ok\n\ndate: next tuesday\n---\n", 4)
    assert "title" in _fails(letter, "d.md", "---\ntitle: [1, 2]\n---\n", 2)


def test_title_with_a_line_break_is_refused(letter):
    assert "one line" in _fails(letter, "e.md", '---\ntitle: "Hi\\nBcc: x@y.z"\n---\n', 2)


def test_unknown_language(letter):
    message = _fails(letter, "f.md", "---\ntitle: ok\nlang: tlh\n---\nbody\n", 3)
    assert "tlh" in message and "en" in message


def test_not_utf8(letter):
    assert "UTF-8" in _fails(letter, "g.md", "---\ntitle: ok\n---\ncaf\xe9\n".encode("latin-1"), 4)


def test_no_front_matter(letter):
    assert "front matter" in _fails(letter, "h.md", "# Just markdown\n", 1)


def test_missing_file_is_a_clear_error(letter):
    result = run_publish("build", "issues/nope.md", cwd=letter)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: issues/nope.md: no such file"


def test_failed_build_leaves_previous_outputs_untouched(letter):
    path = write_issue(letter / "issues", "keep.md", GOOD)
    assert run_publish("build", "issues/keep.md", cwd=letter).returncode == 0
    before = (letter / "build" / "keep" / "email.html").read_bytes()
    path.write_text("---\ntitle: [broken\n---\n", "utf-8")
    assert run_publish("build", "issues/keep.md", cwd=letter).returncode == 2
    assert (letter / "build" / "keep" / "email.html").read_bytes() == before
    assert sorted(p.name for p in (letter / "build").iterdir()) == ["keep"]


def test_recoverable_problems_are_warnings_with_file_and_line(letter):
    write_issue(letter / "issues", "w.md", GOOD + (
        "\n[jump](#nowhere)\n\n"
        "<img src=\"pic.png\">\n\n"
        "<img alt=\"no source\">\n\n"
        "<video controls></video>\n\n"
        "<iframe width=\"10\"></iframe>\n"
    ))
    result = run_publish("build", "issues/w.md", "--json", cwd=letter)
    assert result.returncode == 0, result.stderr
    warnings = json.loads(result.stdout)["warnings"]
    expected = {
        "issues/w.md:7: link to #nowhere": False,
        "issues/w.md:9: image has no alt text": False,
        "issues/w.md:11: image has no src": False,
        "issues/w.md:13: <video> has no source": False,
        "issues/w.md:15: <iframe> has no source": False,
    }
    for warning in warnings:
        for start in expected:
            if warning.startswith(start):
                expected[start] = True
    assert all(expected.values()), warnings
    html = (letter / "build" / "w" / "email.html").read_text("utf-8")
    assert "<video" not in html and "<iframe" not in html
    assert 'src="https://letter.example/pic.png"' in html
    assert 'href="#nowhere"' not in html and "jump" in html


def test_front_matter_text_is_escaped_not_executed(letter):
    write_issue(letter / "issues", "x.md",
                '---\ntitle: "<script>alert(1)</script> & friends"\n---\n\nBody text here.\n')
    result = run_publish("build", "issues/x.md", cwd=letter)
    assert result.returncode == 0, result.stderr
    html = (letter / "build" / "x" / "email.html").read_text("utf-8")
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in html


def test_plain_value_with_colon_is_read_as_text_with_a_warning(letter):
    write_issue(letter / "issues", "c.md", "---\ntitle: Lite: fast and small\n---\n\nBody text.\n")
    result = run_publish("build", "issues/c.md", "--json", cwd=letter)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["title"] == "Lite: fast and small"
    assert summary["warnings"][0].startswith("issues/c.md:2: front matter")


def test_over_gmail_clip_limit_is_flagged(letter, tmp_path):
    paragraph = "This sentence is here to make the issue long enough to be clipped. " * 12
    body = "\n\n".join(f"{n}. {paragraph}" for n in range(180))
    write_issue(letter / "issues", "long.md", "---\ntitle: Long\n---\n\n" + body)
    s = settings.load(letter, env={})
    result = build.build(letter / "issues" / "long.md", s)
    assert result.built.html_bytes > 102 * 1024
    assert [f.rule for f in result.built.findings if f.severity == "error"] == ["gmail-clip"]


def test_settings_come_from_pyproject_and_environment(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.publish]\nname = "Py Letter"\n'
        'base_url = "https://py.example/blog"\n', "utf-8")
    s = settings.load(tmp_path, env={})
    assert s.name == "Py Letter" and s.base_url == "https://py.example/blog/"
    s = settings.load(tmp_path, env={"PUBLISH_BASE_URL": "https://env.example/"})
    assert s.base_url == "https://env.example/"
    write_issue(tmp_path, "i.md", "---\ntitle: T\n---\n\n![a](img/a.png)\n")
    html = build.render_issue(tmp_path / "i.md", s).email.html
    assert 'src="https://env.example/img/a.png"' in html


def test_unknown_setting_is_refused(tmp_path):
    (tmp_path / "publish.toml").write_text('nmae = "typo"\n', "utf-8")
    result = run_publish("build", "x.md", cwd=tmp_path)
    assert result.returncode == 2
    assert "publish.toml" in result.stderr and "nmae" in result.stderr


def test_repository_root_is_the_default_newsletter():
    assert settings.load(ROOT / "issues", env={}).root == ROOT


def test_line_breaks_between_words_and_in_code_survive_mjml(letter):
    write_issue(letter / "issues", "ws.md", "---\ntitle: Spaces\n---\n\n"
                "**bold**\n*italic* and `code`\n[link](https://x.example)\n\n"
                "```python\n# first line\nsecond = 2\n```\n")
    built = build.render_issue(letter / "issues" / "ws.md", settings.load(letter, env={}))
    soup = BeautifulSoup(built.html, "html.parser")
    assert "bold italic and code link" in " ".join(soup.get_text().split())
    assert soup.find("pre").get_text().splitlines()[:2] == ["# first line", "second = 2"]


def test_unwritable_output_folder_is_a_clear_error(letter):
    write_issue(letter / "issues", "ok.md", GOOD)
    result = run_publish("build", "issues/ok.md", "--out", "/proc/publish-cannot-write-here",
                         cwd=letter)
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: /proc/publish-cannot-write-here: cannot write the "
                                     "outputs: No such file or directory")


def test_front_matter_kept_between_builds_in_one_process_is_never_stale(letter):
    """One process building again and again (a preview) reuses the last front matter only
    for the same text at the same place: warnings name the right file, edits are seen,
    and a build changing what it got does not change the next build's."""
    front = "---\ntitle: Lite: fast and small\ntags: [a, b]\n---\n\n"
    one = write_issue(letter / "issues", "one.md", front + "First body text here.\n")
    two = write_issue(letter / "issues", "two.md", front + "Second body text here.\n")
    config = settings.load(letter, env={})
    first = build.render_issue(one, config)
    first.issue.meta["tags"].append("changed by a caller")
    first.issue.meta["title"] = "changed"
    again = build.render_issue(one, config)
    assert again.issue.title == "Lite: fast and small"
    assert again.issue.meta["tags"] == ["a", "b"]
    assert [w for w in again.warnings if "front matter" in w] == \
        [w for w in first.warnings if "front matter" in w]
    other = build.render_issue(two, config)
    assert any(w.startswith(f"{two}:2: front matter") for w in other.warnings)
    assert not any(str(one) in w for w in other.warnings)
    two.write_text(front.replace("Lite: fast", "Lite, fast") + "Second body.\n", "utf-8")
    edited = build.render_issue(two, config)
    assert edited.issue.title == "Lite, fast and small"
    assert not any("front matter" in w for w in edited.warnings)


@pytest.mark.parametrize("broken", ['<div     <small>Published</small>\n</div>',
                                    '<p class="x" <b>bold</b></p>'])
def test_a_tag_left_unclosed_in_raw_html_builds_and_says_where(letter, broken):
    """`<div <small>`: the parser reads `<small` as an attribute name, which MJML cannot
    parse (the build failed with MJML's error). It is dropped with a warning naming the
    line, and the rest of the email is built."""
    path = letter / "issues" / "unclosed.md"
    path.write_text("---\ntitle: Unclosed\n---\n\nFirst paragraph.\n\n" + broken +
                    "\n\nLast paragraph.\n", "utf-8")
    result = run_publish("build", "issues/unclosed.md", "--json", cwd=letter)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "issues/unclosed.md:7: dropped" in result.stdout, result.stdout
    html = next((letter / "build").glob("*/email.html")).read_text("utf-8")
    assert "Last paragraph." in html and "&lt;small" not in html
