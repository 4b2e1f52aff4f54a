"""Compiled templates kept between runs: never stale, never in the way.

A cold build reuses the templates an earlier process compiled (Jinja2's bytecode cache,
in a private folder of the temporary directory). An edited template must be compiled
again; a damaged, unusable or missing cache must only cost the compiling.
"""

from __future__ import annotations

from tests.conftest import copy_sample_newsletter, run_publish, write_issue


def build(folder, tmp, out: str):
    done = run_publish("--root", str(folder), "build", str(folder / "issues" / "case.md"),
                       "--out", str(folder / out), env={"TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    return (folder / out / "email.html").read_text("utf-8")


def letter(tmp_path):
    folder = copy_sample_newsletter(tmp_path / "letter")
    write_issue(folder / "issues", "case.md", "---\ntitle: Cached\n---\n\nHello there.\n")
    temp = tmp_path / "temp"
    temp.mkdir()
    return folder, temp


def cache_files(temp):
    return sorted(temp.glob("_jinja2-cache-*/publish-*.cache"))


def test_a_second_build_reuses_what_the_first_compiled_and_an_edit_is_seen(tmp_path):
    folder, temp = letter(tmp_path)
    first = build(folder, temp, "a")
    kept = {path: path.stat().st_mtime_ns for path in cache_files(temp)}
    assert len(kept) >= 2  # the email template and its CSS at least
    assert build(folder, temp, "b") == first
    assert {path: path.stat().st_mtime_ns for path in cache_files(temp)} == kept
    template = folder / "email_templates" / "issue.mjml.j2"
    template.write_text(template.read_text("utf-8").replace(
        "</mj-body>", "<mj-section><mj-column><mj-text>Edited footer line</mj-text>"
        "</mj-column></mj-section></mj-body>"), "utf-8")
    assert "Edited footer line" in build(folder, temp, "c")


def test_damaged_cache_entries_are_compiled_again(tmp_path):
    folder, temp = letter(tmp_path)
    first = build(folder, temp, "a")
    for n, path in enumerate(cache_files(temp)):
        good = path.read_bytes()
        path.write_bytes([b"", b"garbage", good[:len(good) // 2], good[:12] + b"\x80junk"][n % 4])
    assert build(folder, temp, "b") == first
    assert build(folder, temp, "c") == first  # and the entries were written anew


def test_no_usable_cache_folder_only_costs_the_compiling(tmp_path):
    folder, temp = letter(tmp_path)
    first = build(folder, temp, "a")
    for entry in temp.glob("_jinja2-cache-*"):
        for path in entry.iterdir():
            path.unlink()
        entry.rmdir()
        entry.write_text("a file where the cache folder would be", "utf-8")
    assert build(folder, temp, "b") == first
    assert build(folder, tmp_path / "no-such-folder", "c") == first
