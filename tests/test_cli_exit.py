"""How a `publish` process ends: a one-shot command (build, check) skips the interpreter's
teardown and runs without the cyclic garbage collector; nothing of its work may be lost.

Every test runs real processes: the exit handlers of the process (the kept caches, a
caller's own) run, its output reaches the reader whole and in order, its exit status is
the command's, another thread still running is waited for, and every other command keeps
the collector and the usual exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, SAMPLES, empty_letter, run_publish, write_issue


def script(body: str, *args: str, temp, cwd=ROOT) -> subprocess.CompletedProcess:
    """`body` run before `publish ARGS` in one process (as `python -m pipeline.cli`)."""
    code = textwrap.dedent(body) + textwrap.dedent(f"""
        import sys
        from pipeline import cli
        sys.argv = ["publish", *{list(args)!r}]
        cli.main()
        print("AFTER MAIN", gc.isenabled(), flush=True)
    """)
    env = {**os.environ, "TMPDIR": str(temp), "PUBLISH_IMAGE_SIZES": "local"}
    env.pop("PYTHONUNBUFFERED", None)  # output held in buffers, as usual, until flushed
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


def test_a_build_ends_with_its_files_whole_its_handlers_run_and_its_output_flushed(tmp_path):
    out = tmp_path / "out"
    done = script("""
        import atexit, gc
        atexit.register(lambda: print("HANDLER RAN"))  # buffered too
        print("BEFORE", gc.isenabled(), end=" ")  # buffered: must still come out
    """, "build", str(SAMPLES["en"]), "--out", str(out), "--json", temp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("BEFORE True ")
    summary, _, rest = done.stdout[len("BEFORE True "):].rpartition("}")
    assert json.loads(summary + "}")["files"]["email.html"] == str(out / "email.html")
    assert rest.strip() == "HANDLER RAN"  # and main never returned: no "AFTER MAIN"
    reference = run_publish("build", str(SAMPLES["en"]), "--out", str(tmp_path / "again"),
                            env={"TMPDIR": str(tmp_path / "elsewhere"),
                                 "PUBLISH_IMAGE_SIZES": "local"})
    assert reference.returncode == 0, reference.stderr
    for name in ("email.html", "email.txt"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    kept = sorted(p.name.split("-")[0] for p in tmp_path.glob("publish-cache-*/*.marshal"))
    assert kept == ["code", "css", "regex"]  # the caches' exit handlers wrote them


def test_bad_input_keeps_its_status_and_message(tmp_path):
    letter = empty_letter(tmp_path / "letter")
    issue = write_issue(letter / "issues", "bad.md", "---\ntitle: [unclosed\n---\nBody\n")
    done = script("import gc\n", "--root", str(letter), "build", str(issue), temp=tmp_path)
    assert done.returncode == 2
    assert "bad.md" in done.stderr and "Traceback" not in done.stderr
    assert "AFTER MAIN" not in done.stdout
    missing = script("import gc\n", "build", str(tmp_path / "nowhere.md"), temp=tmp_path)
    assert missing.returncode == 2 and "nowhere.md" in missing.stderr


def test_a_check_reports_and_exits_as_the_usual_exit_would(tmp_path):
    letter = empty_letter(tmp_path / "letter")
    issue = write_issue(letter / "issues", "x.md",
                        "---\ntitle: Checked\n---\n\n[click here](https://example.com/x)\n\n"
                        '<p style="color:#777;background:#888">faint</p>\n')
    env = {**os.environ, "TMPDIR": str(tmp_path), "PUBLISH_IMAGE_SIZES": "local"}
    runs = {}
    for one_shot in (True, False):
        runs[one_shot] = subprocess.run(
            [sys.executable, "-c", "import sys; from pipeline import cli; "
             f"cli.ONE_SHOT = {cli_one_shot(one_shot)}; sys.argv = ['publish', *sys.argv[1:]]; "
             "cli.main()", "--root", str(letter), "check", str(issue), "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    fast, usual = runs[True], runs[False]
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        usual.returncode, usual.stdout, usual.stderr)
    rules = {finding["rule"] for finding in json.loads(fast.stdout)}
    assert {"link-text", "contrast", "preheader"} <= rules  # the whole report came out


def cli_one_shot(on: bool) -> str:
    return '("build", "check")' if on else "()"


def test_another_thread_still_running_is_waited_for(tmp_path):
    flag, out = tmp_path / "thread-finished", tmp_path / "out"
    done = script(f"""
        import gc, os, threading, time
        def late():  # still at work when the build is done
            while not os.path.exists({str(out / "email.eml")!r}):
                time.sleep(0.01)
            time.sleep(0.3)
            open({str(flag)!r}, "w").close()
        threading.Thread(target=late).start()
    """, "build", str(SAMPLES["en"]), "--out", str(out), temp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert flag.exists()
    assert "AFTER MAIN True" in done.stdout  # main returned: the usual exit, collector on


def test_other_commands_keep_the_collector_and_the_usual_exit(tmp_path):
    letter = empty_letter(tmp_path / "letter")
    done = script("import gc\n", "--root", str(letter), "sends", "--json", temp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("AFTER MAIN True")
    helped = script("import gc\n", "--help", temp=tmp_path)
    assert helped.returncode == 0 and "AFTER MAIN True" in helped.stdout
