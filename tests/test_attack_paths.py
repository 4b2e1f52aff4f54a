"""Attacks on "outputs only ever replace what publish made": every odd --out and slug.

Each refused build must exit 2 with one line and leave every file of the newsletter (and
around it) byte for byte as it was.
"""

from __future__ import annotations

import os

import pytest

from pipeline import build, settings
from tests.conftest import empty_letter, run_publish, write_issue

GOOD = "---\ntitle: A fine issue\n---\n\nHello there, this is a paragraph of the issue.\n"


def snapshot(folder):
    """Every file and symlink under `folder`, with its bytes (or link target)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    found[rel] = handle.read()
            else:
                found[rel] = "dir"
    return found


@pytest.fixture
def letter(tmp_path):
    """A newsletter with an issue, a built issue, state, subscribers and a file beside it."""
    folder = empty_letter(tmp_path / "letter")
    write_issue(folder / "issues", "a.md", GOOD)
    (folder / "subscribers").mkdir()
    (folder / "subscribers" / "main.csv").write_text("email\nx@example.org\n", "utf-8")
    (folder / ".publish").mkdir()
    (folder / ".publish" / "state.db").write_bytes(b"pretend state")
    assert run_publish("build", "issues/a.md", cwd=folder).returncode == 0
    (tmp_path / "neighbour.txt").write_text("not the newsletter's", "utf-8")
    return folder


def _refused(folder, *args, expect=""):
    before = snapshot(folder.parent)
    result = run_publish("build", *args, cwd=folder)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert expect in lines[0], lines[0]
    assert snapshot(folder.parent) == before, f"publish build {args} changed files"
    return lines[0]


@pytest.mark.parametrize("out", [".", "..", "issues", "subscribers", ".publish", "build",
                                 "email_templates", "issues/../.", ".publish/new-folder"])
def test_out_onto_a_folder_publish_did_not_make_is_refused(letter, out):
    (letter / "email_templates").mkdir(exist_ok=True)
    message = _refused(letter, "issues/a.md", "--out", out)
    assert "nothing was changed" in message


def test_out_onto_the_root_of_the_file_system_is_refused(letter):
    before = snapshot(letter.parent)
    result = run_publish("build", "issues/a.md", "--out", "/", cwd=letter)
    assert result.returncode == 2 and "nothing was changed" in result.stderr
    assert snapshot(letter.parent) == before


def test_out_through_a_symlink_to_the_newsletter_is_refused(letter):
    (letter.parent / "link").symlink_to(letter)
    _refused(letter, "issues/a.md", "--out", str(letter.parent / "link"))
    _refused(letter, "issues/a.md", "--out", str(letter.parent / "link" / "issues"))


def test_out_onto_a_file_is_refused(letter):
    _refused(letter, "issues/a.md", "--out", "subscribers/main.csv")
    (letter.parent / "file-link").symlink_to(letter / "subscribers" / "main.csv")
    _refused(letter, "issues/a.md", "--out", str(letter.parent / "file-link"))


def test_out_onto_a_build_folder_holding_something_else_is_refused(letter):
    notes = letter / "build" / "a" / "my-notes.txt"
    notes.write_text("mine", "utf-8")
    message = _refused(letter, "issues/a.md", expect="my-notes.txt")
    assert "did not make" in message
    notes.unlink()
    (letter / "build" / "a" / "sub").mkdir()
    _refused(letter, "issues/a.md")


def test_a_symlink_inside_an_output_folder_is_not_followed_or_removed(letter, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me", "utf-8")
    (letter / "build" / "a" / "email.txt").unlink()
    (letter / "build" / "a" / "email.txt").symlink_to(target)
    _refused(letter, "issues/a.md")
    assert target.read_text("utf-8") == "keep me"


def test_unmarked_folder_with_output_names_is_refused_for_out(letter, tmp_path):
    """A folder of someone's own email.html (no marker) is not publish's to replace."""
    own = tmp_path / "mine"
    own.mkdir()
    (own / "email.html").write_text("<p>my own</p>", "utf-8")
    _refused(letter, "issues/a.md", "--out", str(own), expect=build.MARKER)


def test_folders_publish_made_new_and_empty_ones_are_written(letter, tmp_path):
    out = tmp_path / "fresh" / "deep"
    for _ in range(2):  # new, then the folder publish made
        result = run_publish("build", "issues/a.md", "--out", str(out), cwd=letter)
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [build.MARKER, *build.OUTPUT_FILES])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_publish("build", "issues/a.md", "--out", str(empty), cwd=letter).returncode == 0
    assert (empty / "email.eml").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["deep"]  # no staging left


def test_a_build_made_before_the_marker_is_still_replaced(letter):
    """`build/<slug>/` from an older publish holds only the three outputs: it is ours."""
    (letter / "build" / "a" / build.MARKER).unlink()
    result = run_publish("build", "issues/a.md", cwd=letter)
    assert result.returncode == 0, result.stderr
    assert (letter / "build" / "a" / build.MARKER).is_file()


@pytest.mark.parametrize("slug", ['"."', '".."', '"..."', '""', '"a/b"', '"../x"', '"/"',
                                  '"..\\\\"', "null", '"---"'])
def test_slugs_that_are_not_a_folder_name_are_refused_with_their_line(letter, slug):
    write_issue(letter / "issues", "s.md", f"---\ntitle: T\n\nslug: {slug}\n---\n\nBody.\n")
    message = _refused(letter, "issues/s.md", expect="issues/s.md:4:")
    assert "slug" in message


@pytest.mark.parametrize("name", ["...md", "..md", "!!!.md"])
def test_file_names_that_give_no_folder_name_are_refused(letter, name):
    write_issue(letter / "issues", name, GOOD)
    _refused(letter, f"issues/{name}", expect=f"issues/{name}:1:")


def test_build_dir_setting_of_dot_still_never_replaces_the_newsletter(letter):
    """With build_dir = ".", outputs go to ./<slug>/; a slug naming an existing folder of
    the newsletter is refused instead of replacing it."""
    with open(letter / "publish.toml", "a", encoding="utf-8") as handle:
        handle.write('build_dir = "."\n')
    write_issue(letter / "issues", "i.md", "---\ntitle: T\nslug: issues\n---\n\nBody.\n")
    _refused(letter, "issues/i.md", expect="did not make")


def test_library_refuses_the_same_paths(letter):
    s = settings.load(letter, env={})
    built = build.render_issue(letter / "issues" / "a.md", s)
    from pipeline.errors import InputError

    for out in (letter, letter / "issues", letter.parent, letter / "build"):
        with pytest.raises(InputError, match="nothing was changed"):
            build.write_outputs(built, s, out)


def test_builds_started_together_leave_one_whole_output_folder(letter):
    import subprocess
    import sys

    runs = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "build", "issues/a.md"],
                             cwd=letter, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(4)]
    for run in runs:
        _out, err = run.communicate(timeout=120)
        assert run.returncode in (0, 1), err
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    assert any(run.returncode == 0 for run in runs)
    folder = letter / "build" / "a"
    assert sorted(p.name for p in folder.iterdir()) == sorted([build.MARKER, *build.OUTPUT_FILES])
    assert "Hello there" in (folder / "email.txt").read_text("utf-8")
    assert run_publish("build", "issues/a.md", cwd=letter).returncode == 0
