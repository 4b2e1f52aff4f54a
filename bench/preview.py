"""Live reload: time from saving the issue to the refreshed email in the preview page.

Usage: python bench/preview.py [--runs 15]
Starts `publish preview` on a copy of the bigger sample, opens it in headless Chromium
(Debian's chromium), then repeatedly edits the issue and waits for the new sentence to
appear inside the email frame. Prints the median, min and max.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> None:
    from playwright.sync_api import sync_playwright

    from pipeline import preview, settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "letter"
        for name in ("email_templates", "issues", "assets"):
            shutil.copytree(ROOT / name, folder / name)
        shutil.copy2(ROOT / "publish.toml", folder / "publish.toml")
        issue = max((folder / "issues").glob("*.md"), key=lambda p: p.stat().st_size)
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
