"""Every corpus post, the samples and a set of hard cases, as a reader sees them in Chromium.

At 320 and 375 px no email scrolls sideways; every visible text run reaches WCAG AA in light
mode, under the email's own dark rules (prefers-color-scheme emulation) and inverted as
Gmail's apps do it; no image is drawn wider than its own pixels; no word or number in a
table is split across lines. One browser and one page per width serve every email.

Remote images never leave the machine: the build reads sizes from a cache this test fills
(the sizes the browser will then be served), and the browser's requests are answered with
made-up images of those sizes. Images the cache does not know are served larger than the
column, so only the sizing the build could know is judged.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from pipeline import build, images, settings
from pipeline.urls import absolute
from tests.browser_audit import CHROMIUM, Auditor, image_size_for, png_bytes
from tests.conftest import CORPUS, SAMPLES, copy_sample_newsletter, write_issue

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")

POSTS = sorted(p for p in CORPUS.rglob("*.md") if p.name != "MANIFEST.md")
WIDTHS = (320, 375)
_SOURCE_IMAGE = re.compile(
    r"""(?:src|poster)\s*=\s*["']?([^"'\s>]+)|!\[[^\]]*\]\(\s*<?([^)\s>]+)""", re.I)
UNKNOWN_SIZE = (1600, 900)  # what the browser gets for an image the build could not size


def _seed_cache(post: Path, base_url: str, state: Path) -> dict[str, tuple[int, int]]:
    """The image sizes a build would have read from the network, written to its cache."""
    sizes = {}
    for match in _SOURCE_IMAGE.finditer(post.read_text("utf-8")):
        url = absolute(match.group(1) or match.group(2), base_url)
        if url.startswith(("http://", "https://")):
            sizes[url] = image_size_for(url)
    state.mkdir(parents=True, exist_ok=True)
    cache = state / images.CACHE_FILE
    known = json.loads(cache.read_text("utf-8")) if cache.is_file() else {}
    known.update({url: [w, h, int(time.time())] for url, (w, h) in sizes.items()})
    cache.write_text(json.dumps(known), "utf-8")
    return sizes


class Images:
    """What the browser is served: local files as they are, remote images at known sizes."""

    def __init__(self, settings_: settings.Settings):
        self.folders = [settings_]  # newsletter folders whose local images are served
        self.known: dict[str, tuple[int, int]] = {}
        self.blocked = False  # as Outlook and many webmails start: no image loads

    def __call__(self, url: str) -> bytes | None:
        if self.blocked:
            return None
        for folder in self.folders:
            local = images.ImageSizes(folder.root, folder.base_url).local_path(url)
            if local is not None:
                return local.read_bytes()
        return png_bytes(*self.known.get(url, UNKNOWN_SIZE))


@pytest.fixture(scope="module")
def layout_settings(tmp_path_factory, repo_settings):
    state = tmp_path_factory.mktemp("layout-state")
    return replace(repo_settings, state_dir=str(state))


@pytest.fixture(scope="module")
def served_images(layout_settings):
    return Images(layout_settings)


@pytest.fixture(scope="module")
def auditor(served_images):
    auditor = Auditor(WIDTHS, image_for=served_images)
    yield auditor
    auditor.close()


def assert_reads_right(auditor: Auditor, html: str, name: str) -> None:
    problems = []
    for report in auditor.audit(html, name):
        where = f"{name} at {report.width}px, {report.mode}"
        if report.scrolls_sideways:
            problems.append(f"{where}: scrolls sideways ({report.scroll_width}px)")
        if report.low_contrast and report.width == WIDTHS[-1]:
            problems.append(f"{where}: low contrast {report.low_contrast[:3]}")
        if report.oversized_images:
            problems.append(f"{where}: images drawn past their size "
                            f"{report.oversized_images[:3]}")
        if report.split_words:
            problems.append(f"{where}: words split in table cells {report.split_words[:5]}")
    assert not problems, "\n".join(problems)


def _build_and_audit(path: Path, settings_, served_images, auditor) -> build.Built:
    served_images.known.update(_seed_cache(path, settings_.base_url, settings_.state_path))
    built = build.render_issue(path, settings_)
    assert_reads_right(auditor, built.html, path.name)
    return built


@pytest.mark.skipif(not POSTS, reason="../shared/corpus/ is not present")
@pytest.mark.parametrize("post", POSTS, ids=lambda p: p.name)
def test_corpus_post_reads_right_on_a_phone_in_every_colour_mode(
        post, layout_settings, served_images, auditor):
    built = _build_and_audit(post, layout_settings, served_images, auditor)
    assert not [f for f in built.findings if f.rule.endswith("contrast")]


@pytest.mark.parametrize("sample", sorted(SAMPLES.values()), ids=lambda p: p.name)
def test_sample_reads_right_on_a_phone_in_every_colour_mode(
        sample, layout_settings, served_images, auditor):
    _build_and_audit(sample, layout_settings, served_images, auditor)


HARD_CASES = """---
title: Hard cases for a phone
---

A paragraph of ordinary prose, so the email has something to read before the hard parts.

```python
x = "{long_token}"
print(x)  # {long_comment}
```

An indented block, as a notebook's output is pasted:

    Output:
    {dashes}
    I enjoy walking with my cute dog.

<pre>{long_token}</pre>

| {twelve_head} |
| {twelve_rule} |
| {twelve_row} |

| Model | Parameters | Throughput |
|---|---:|---:|
| LaMDA | 137000000000 | 36542.123456789 |
| InstructGPT-175B-experimental | 175000000000.000001 | 365,42 |

<table><tr><td><iframe src="https://www.youtube.com/embed/dQw4w9WgXcQ"></iframe></td>
<td>An embed card inside a table cell, beside a cell of words.</td></tr></table>

<div style="width:50%"><img src="/assets/wide.png" alt="A wide figure in a half-width box"></div>

<div style="width:900px">A box written for a wide screen, with a few words inside it.</div>

![A 16 px icon](/assets/icon16.png) and text after it.

<img class="block dark:hidden" src="/assets/logo-light.png" alt="Logo for light pages">
<img class="hidden dark:block" src="/assets/logo-dark.png" alt="Logo for dark pages">

<div style="background-color: #e6f9e6; padding: 8px">A note on a light green card, with
<a href="https://example.com/">a link</a> and <code>inline code</code>.</div>

#### A fourth-level heading

<table><tr><th>Header cell</th><td><code>code in a cell</code></td></tr></table>
"""


@pytest.fixture(scope="module")
def hard_letter(tmp_path_factory):
    folder = copy_sample_newsletter(tmp_path_factory.mktemp("hard") / "letter")
    for name, size in (("wide.png", (1400, 700)), ("icon16.png", (16, 16)),
                       ("logo-light.png", (240, 60)), ("logo-dark.png", (240, 60))):
        (folder / "assets" / name).write_bytes(png_bytes(*size, dark="dark" in name))
    text = HARD_CASES.format(
        long_token="a" * 400, long_comment="b" * 300, dashes="-" * 160,
        twelve_head=" | ".join(f"Column {i}" for i in range(12)),
        twelve_rule=" | ".join("---" for _ in range(12)),
        twelve_row=" | ".join(f"value{i}-{'x' * 12}" for i in range(12)))
    return write_issue(folder / "issues", "hard.md", text)


def test_hard_cases_read_right(hard_letter, auditor, served_images, tmp_path):
    letter = settings.load(hard_letter.parent.parent, env={})
    letter = replace(letter, state_dir=str(tmp_path / "state"))
    served_images.folders.insert(0, letter)
    try:
        built = _build_and_audit(hard_letter, letter, served_images, auditor)
    finally:
        served_images.folders.remove(letter)
    soup = BeautifulSoup(built.fragment, "html.parser")
    icon = soup.find("img", alt="A 16 px icon")
    assert icon["width"] == "16"
    assert soup.find("img", alt="Logo for light pages") is not None
    assert soup.find("img", alt="Logo for dark pages") is None
    for pre in soup.find_all("pre"):
        assert "pre-wrap" in pre["style"]
    assert len(soup.select("div.table-scroll > table")) == 4
    assert not [f for f in built.findings if f.rule.endswith("contrast")]


def test_blocked_images_do_not_widen_the_email(hard_letter, auditor, served_images, tmp_path):
    """Images that never load (blocked by the client, or gone) keep the email phone-wide."""
    letter = replace(settings.load(hard_letter.parent.parent, env={}),
                     state_dir=str(tmp_path / "state"))
    served_images.blocked = True
    try:
        for path in (hard_letter, *sorted(SAMPLES.values())):
            built = build.render_issue(path, letter)
            for report in auditor.audit(built.html, path.name, modes=("light",)):
                assert not report.scrolls_sideways, (path.name, report.width,
                                                     report.scroll_width)
    finally:
        served_images.blocked = False


OPENINGS = {
    "paragraph": "Plain words open this issue; a heading comes later.\n\n## Later on\n\nMore.\n",
    "heading": "## Introduction\n\nPlain words under the heading.\n\n## Later on\n\nMore.\n",
    "heading in raw HTML": ('<div>\n<h3>Inside a block of its own</h3>\n\n<p>Words.</p>\n'
                            '</div>\n\n## Later on\n\nMore.\n'),
}
_GAP_JS = """() => {
  const byline = document.querySelector('.byline').getBoundingClientRect();
  const body = document.querySelector('#later-on').parentElement;
  const first = body.firstElementChild;
  const inner = first.querySelector('h3');
  return {gap: first.getBoundingClientRect().top - byline.bottom,
          later: getComputedStyle(document.querySelector('#later-on')).marginTop,
          inner: inner ? getComputedStyle(inner).marginTop : null};
}"""


def test_an_issue_that_opens_with_a_heading_sits_as_close_to_the_byline(auditor, tmp_path,
                                                                        repo_settings):
    """The section's padding is the space under the byline: an opening heading's own top
    margin is not added to it (it was ~40 px more), while every other heading, and one
    opening a block of raw HTML, keeps its margin."""
    page = auditor.pages[375]
    page.emulate_media(color_scheme="light")
    measured = {}
    for name, body in OPENINGS.items():
        text = f"---\ntitle: Openings\nauthors: [Ada]\n---\n\n{body}"
        path = write_issue(tmp_path, f"{len(measured)}.md", text)
        page.set_content(build.render_issue(path, repo_settings).html, wait_until="load")
        measured[name] = page.evaluate(_GAP_JS)
    gaps = {name: m["gap"] for name, m in measured.items()}
    assert abs(gaps["heading"] - gaps["paragraph"]) <= 2, gaps
    assert all(m["later"] == "28px" for m in measured.values()), measured
    assert measured["heading in raw HTML"]["inner"] == "24px", measured
