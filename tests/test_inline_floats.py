"""Images floated by their style get Outlook's align attribute, as premailer alone gives it,
though each image style's float is read once per process and kept."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from pipeline import render

STYLES = ["float:right", "float: left; width:100px", "width:100%;max-width:552px;height:auto",
          "float:right !important", "FLOAT:LEFT", "float:none", "float:left;float:right",
          "font-family:'中文字体'; float:left", "float:", ";;;", "float:right; /* x */"]


def _document(styles: list[str]) -> str:
    images = "".join(f'<img src="https://x.example/{n}.png" style="{s}">'
                     for n, s in enumerate(styles))
    return f"<!doctype html><html><head></head><body><div>{images}</div></body></html>"


def _aligns(html: str) -> list[str | None]:
    found = []
    for tag in re.findall(r"<img\b[^>]*>", html):
        match = re.search(r'\balign="([^"]*)"', tag)
        found.append(match[1] if match else None)
    return found


def _premailer_alone(document: str) -> list[str | None]:
    """What premailer itself does, in a process that never imported our code."""
    program = (
        "import json, sys, premailer\n"
        "html = premailer.Premailer(sys.stdin.read(), allow_network=False, "
        "disable_validation=True, disable_leftover_css=True, keep_style_tags=True, "
        "strip_important=False, remove_classes=False).transform(pretty_print=False)\n"
        "print(html)\n")
    done = subprocess.run([sys.executable, "-c", program], input=document, text=True,
                          capture_output=True, check=True)
    return _aligns(done.stdout)


def test_floated_images_are_aligned_as_premailer_aligns_them():
    document = _document(STYLES)
    expected = _premailer_alone(document)
    assert "right" in expected and "left" in expected  # the test sees both
    assert _aligns(render.inline_css(document, "")) == expected
    # asked again (the kept floats answer), and in another order
    assert _aligns(render.inline_css(document, "")) == expected
    again = _document(list(reversed(STYLES)))
    assert _aligns(render.inline_css(again, "")) == list(reversed(expected))


def test_a_float_from_the_stylesheet_is_aligned_too():
    document = _document(["width:10px", "width:10px"]).replace(
        '<img src="https://x.example/1.png"', '<img class="r" src="https://x.example/1.png"')
    aligned = _aligns(render.inline_css(document, ".r { float: right }"))
    assert aligned == [None, "right"]
    assert json.dumps(aligned)  # plain values, not cssutils objects


def test_builds_in_threads_at_once_align_the_same():
    """The preview builds in its own thread beside `publish build`s; the kept floats are
    shared by all of them."""
    from concurrent.futures import ThreadPoolExecutor

    documents = [_document(STYLES[n:] + STYLES[:n]) for n in range(len(STYLES))]
    expected = [_aligns(render.inline_css(d, "")) for d in documents]
    with ThreadPoolExecutor(4) as pool:
        for _round in range(3):
            got = list(pool.map(lambda d: _aligns(render.inline_css(d, "")), documents))
            assert got == expected
