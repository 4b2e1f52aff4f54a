"""Live reload: time from saving the issue to the refreshed email in the preview page.

Usage: python bench/preview.py [--runs 15]
       python bench/preview.py --rebuild [--runs 15] [--code DIR] [--issue FILE]
Starts `publish preview` on a copy of the bigger sample, opens it in headless Chromium
(Debian's chromium), then repeatedly edits the issue and waits for the new sentence to
appear inside the email frame. Prints the median, min and max.

--rebuild measures only what the running server does on each save (Preview.rebuild:
settings, build, check, .eml), in this process after a first build, wall and CPU.
--code runs another checkout's `pipeline` (an older commit) for a before/after pair.
--issue rebuilds that file (a corpus post, say) instead of the bigger sample; --stages
adds each stage's thread CPU per save (its median and fastest). Each save is paired with a
fixed reference work (bench/machine_speed.py) timed before and after it, since this
machine's speed moves in phases: the rebuild is also given as a ratio to it, and as the
median of the saves made at full speed (the reference on both sides within 15 % of its
fastest).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def letter_copy(tmp: str, code: Path, issue: Path | None = None) -> tuple[Path, Path]:
    folder = Path(tmp) / "letter"
    for name in ("email_templates", "issues", "assets"):
        shutil.copytree(code / name, folder / name)
    shutil.copy2(code / "publish.toml", folder / "publish.toml")
    if issue is not None:
        return folder, Path(shutil.copy2(issue, folder / "issues" / issue.name))
    return folder, max((folder / "issues").glob("*.md"), key=lambda p: p.stat().st_size)


def rebuilds(runs: int, code: Path, issue: Path | None = None, stages: bool = False) -> None:
    """The server's own rebuild after each save, without the browser."""
    from machine_speed import reference_cpu

    from pipeline import preview, settings

    spent = timed_stages() if stages else {}

    os.environ["PUBLISH_IMAGE_SIZES"] = "local"  # each rebuild reads the settings again
    with tempfile.TemporaryDirectory() as tmp:
        folder, issue = letter_copy(tmp, code, issue)
        watched = preview.Preview(issue, settings.load(folder, env={"PUBLISH_IMAGE_SIZES":
                                                                    "local"}))
        head, sep, body = issue.read_text("utf-8").partition("\n---\n")
        anchor = body.split()[0]  # the first word of the body
        walls, cpus, references = [], [], []
        for n in range(runs + 2):
            reference = reference_cpu()
            issue.write_text(head + sep + body.replace(anchor, f"Reload{n} {anchor}", 1),
                             "utf-8")
            cpu, start = time.process_time(), time.perf_counter()
            watched.rebuild()
            if n >= 2:  # the first rebuilds fill per-process caches
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
                references.append(reference)
            elif n == 1:
                spent.clear()
            assert not watched.snapshot.error, watched.snapshot.error
        references.append(reference_cpu())  # the one after the last save
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; code: {code}")
    print(f"rebuild on save ({issue.name}): median {statistics.median(walls) * 1000:.1f} ms "
          f"(min {min(walls) * 1000:.1f}), CPU median {statistics.median(cpus) * 1000:.1f} ms "
          f"(min {min(cpus) * 1000:.1f}), n={runs}")
    print(speed_lines(cpus, references))
    for name, times in sorted(spent.items(), key=lambda item: -min(item[1])):
        print(f"  {name:26} thread CPU per save: median {statistics.median(times) * 1000:6.1f} "
              f"ms, min {min(times) * 1000:6.1f}")


def speed_lines(cpus: list[float], references: list[float]) -> str:
    """The rebuild against the reference timed around each save (`references` has one more
    entry than `cpus`): their ratio, and the saves with full speed before and after."""
    fastest = min(references)
    around = list(zip(cpus, references, references[1:], strict=False))
    full = [cpu for cpu, before, after in around if max(before, after) <= fastest * 1.15]
    ratios = [cpu / ((before + after) / 2) for cpu, before, after in around]
    return (f"  reference work: CPU median {statistics.median(references) * 1000:.1f} ms, "
            f"fastest {fastest * 1000:.1f} (slowest {max(references) * 1000:.1f}); rebuild / "
            f"reference, median of pairs: {statistics.median(ratios):.2f}\n"
            f"  saves at full speed (reference before and after <= 1.15 x its fastest): CPU median "
            + (f"{statistics.median(full) * 1000:.1f} ms, n={len(full)}" if full else "none"))


STAGES = ("build.render_issue", "check.check_html", "check_contrast.problems",
          "embeds.swap", "tidy.tidy", "headline.split", "plaintext.from_html",
          "markdown.render", "language.choose", "render.render", "render.inline_css",
          "render.mjml_to_html", "build.preview_eml")


def timed_stages() -> dict[str, list[float]]:
    """Wrap each stage (module.function, as the build calls it) to record its thread CPU."""
    import importlib

    spent: dict[str, list[float]] = {}
    for name in STAGES:
        module_name, function = name.split(".")
        module = importlib.import_module(f"pipeline.{module_name}")
        original = getattr(module, function)

        def wrapped(*args, _original=original, _name=name, **kwargs):
            start = time.thread_time()
            try:
                return _original(*args, **kwargs)
            finally:
                spent.setdefault(_name, []).append(time.thread_time() - start)

        setattr(module, function, wrapped)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rebuild", action="store_true",
                        help="time only the server's rebuild, without the browser")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the checkout whose pipeline is measured")
    parser.add_argument("--stages", action="store_true",
                        help="with --rebuild: also the thread CPU of each stage")
    parser.add_argument("--issue", type=Path, default=None,
                        help="with --rebuild: the issue to rebuild (default: the bigger sample)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    if args.rebuild:
        rebuilds(args.runs, args.code.resolve(),
                 args.issue.resolve() if args.issue else None, args.stages)
        return
    runs = args.runs
    from playwright.sync_api import sync_playwright

    from pipeline import preview, settings
    with tempfile.TemporaryDirectory() as tmp:
        folder, issue = letter_copy(tmp, args.code.resolve())
        running = preview.start(issue, settings.load(folder, env={}))
        original = issue.read_text("utf-8")
        anchor = original.split("\n\n")[1].split()[0]  # the first word of the body
        times = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.goto(running.url)
            frame = page.frame_locator("#desktop iframe")
            frame.locator("h1").wait_for()
            for n in range(runs):
                marker = f"Reload{n}"
                start = time.perf_counter()
                issue.write_text(original.replace(anchor, f"{marker} {anchor}", 1), "utf-8")
                frame.locator(f"text={marker}").first.wait_for(timeout=10_000)
                times.append(time.perf_counter() - start)
            browser.close()
        running.stop()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"save -> refreshed email frame ({issue.name}): median "
          f"{statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f}, "
          f"max {max(times) * 1000:.0f} (n={runs})")


if __name__ == "__main__":
    main()
