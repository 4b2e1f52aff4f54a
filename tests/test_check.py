"""`publish check`: each rule fires on a small fixture that breaks it and not on one that
does not; the sample issues pass clean; --links asks a real server on loopback."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from pipeline import check
from tests.conftest import SAMPLES, run_publish

ADDRESS = "1 Test Street, Testville"


def page(body: str, head: str = "", bg: bool = True) -> str:
    style = ' style="background-color:#ffffff"' if bg else ""
    return (f"<!doctype html><html><head>{head}</head><body{style}>{body}"
            f'<p>{ADDRESS} <a href="https://x.example/unsubscribe?token=t">Unsubscribe</a></p>'
            "</body></html>")


def rules(html: str, **kw) -> set[str]:
    kw.setdefault("preheader", "A preheader that is comfortably longer than forty chars.")
    kw.setdefault("postal_address", ADDRESS)
    kw.setdefault("subject", "A subject")
    return {f.rule for f in check.check_html(html, **kw)}


GOOD_IMG = '<img src="https://x.example/a.png" alt="A" width="300">'

# rule -> (fixture that fires it, fixture that does not)
CASES = {
    "forbidden-tag": (page('<video src="https://x.example/v.mp4"></video>'),
                      page('<a href="https://x.example/v.mp4">Watch</a>')),
    "custom-element": (page("<gradio-app></gradio-app>"), page("<div>ok</div>")),
    "srcset": (page('<img src="https://x.example/a.png" srcset="a.png 2x" alt="" width="3">'),
               page(GOOD_IMG)),
    "external-css": (page("", '<link rel="stylesheet" href="https://x.example/a.css">'),
                     page("", "<style>p{color:#000}</style>")),
    "layout-css": (page('<div style="display:flex">a</div>'),
                   page('<div style="display:block">a</div>')),
    "gmail-clip": (page("<p>" + "word " * 22000 + "</p>"), page("<p>short</p>")),
    "size": (page("<p>" + "word " * 19000 + "</p>"), page("<p>short</p>")),
    "style-size": (page("", "<style>" + "p{color:#000}" * 1400 + "</style>"),
                   page("", "<style>p{color:#000}</style>")),
    "c1-control": (page("<p>it\u0092s</p>"), page("<p>it’s</p>")),
    "img-alt": (page('<img src="https://x.example/a.png" width="3">'), page(GOOD_IMG)),
    "img-width": (page('<img src="https://x.example/a.png" alt="A">'), page(GOOD_IMG)),
    "img-data-uri": (page('<img src="data:image/png;base64,AAAA" alt="" width="3">'),
                     page(GOOD_IMG)),
    "img-http": (page('<img src="http://x.example/a.png" alt="" width="3">'), page(GOOD_IMG)),
    "img-relative": (page('<img src="/a.png" alt="" width="3">'), page(GOOD_IMG)),
    "link-empty": (page('<a href="">x</a>'), page('<a href="https://x.example/">x</a>')),
    "anchor-missing": (page('<a href="#nowhere">x</a>'),
                       page('<a href="#here">x</a><a id="here" name="here"></a>')),
    "link-http": (page('<a href="http://x.example/">x</a>'),
                  page('<a href="https://x.example/">x</a>')),
    "link-relative": (page('<a href="/about">About</a>'),
                      page('<a href="mailto:a@x.example">Write to us</a>')),
    "link-text": (page('<a href="https://x.example/">click here</a>'),
                  page('<a href="https://x.example/">the full report</a>')),
    "placeholder": (page("<p>The launch date is TK.</p>"), page("<p>The TKO was clean.</p>")),
    "dark-mode-contrast": (page('<p style="color:#111111">dark text</p>', bg=False),
                           page('<p style="color:#111111">dark text</p>')),
    "client-support": (page('<p style="text-shadow:1px 1px #000">shadow</p>'),
                       page('<p style="color:#000">plain</p>')),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_on_its_fixture_and_only_there(rule):
    bad, good = CASES[rule]
    assert rule in rules(bad)
    assert rule not in rules(good)


def test_inbox_and_footer_rules():
    good = page("<p>hi</p>")
    assert "preheader" in rules(good, preheader="")
    assert "preheader" in rules(good, preheader="too short")
    assert "preheader" not in rules(good)
    assert "subject-length" in rules(good, subject="x" * 79)
    assert "subject-length" not in rules(good, subject="x" * 78)
    bare = "<!doctype html><html><body style='background-color:#fff'><p>hi</p></body></html>"
    assert {"unsubscribe", "postal-address"} <= rules(bare)
    assert not {"unsubscribe", "postal-address"} & rules(good)


INBOX_RULES = {"preheader", "subject-length", "unsubscribe", "postal-address"}


def test_every_rule_in_the_table_has_a_fixture_that_breaks_it():
    from pipeline.check_rules import RULES

    assert {rule.id for rule in RULES} - INBOX_RULES <= set(CASES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_a_warning_rule_is_accepted_on_its_own_and_an_error_never(rule):
    bad, _good = CASES[rule]
    found = check.check_html(bad, preheader="A preheader that is comfortably longer than forty.",
                             postal_address=ADDRESS, subject="A subject")
    severity = next(f.severity for f in found if f.rule == rule)
    others = {f.rule for f in found} - {rule}
    kept = rules(bad, accept=check.accepted(rule))
    if severity == "warning":
        assert rule not in kept
    else:
        assert rule in kept  # an error cannot be accepted away
    assert others <= kept  # accepting one rule leaves the others alone


def test_the_compact_caniemail_table_says_what_the_full_one_says():
    import json

    from pipeline import caniemail

    full = json.loads(caniemail.FULL.read_text("utf-8"))
    assert caniemail.compact(full) == json.loads(caniemail.COMPACT.read_text("utf-8"))
    table = caniemail.features()
    assert len(table) == len(full["data"]) > 250
    for feature in full["data"]:  # spelled out again, not through compact()
        title, lacking = table[feature["slug"]]
        assert title == feature["title"]
        for (family, platform), label in caniemail.TARGETS.items():
            tests = feature["stats"].get(family, {}).get(platform) or {}
            latest = list(tests.values())[-1] if tests else "y"  # caniemail lists oldest first
            assert (label in lacking) == latest.startswith("n"), (feature["slug"], label)


def test_accepted_features_are_not_reported():
    html = page('<p style="text-shadow:1px 1px #000">shadow</p>')
    assert "client-support" not in rules(html, accept=check.accepted("css-text-shadow"))


@pytest.mark.parametrize("issue", sorted(SAMPLES.values()), ids=lambda p: p.name)
def test_sample_issues_pass_clean(issue):
    result = run_publish("check", str(issue))
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith(": clean")


def test_check_exits_1_on_errors_and_prints_json(tmp_path):
    (tmp_path / "publish.toml").write_text('name = "T"\npostal_address = "1 Road"\n', "utf-8")
    (tmp_path / "bad.md").write_text(
        "---\ntitle: Bad\n---\n\nSee [the form](/form) and TK.\n", "utf-8")
    result = run_publish("check", "bad.md", "--json", cwd=tmp_path)
    assert result.returncode == 1
    found = {f["rule"] for f in json.loads(result.stdout)}
    assert "placeholder" in found
    text = run_publish("check", "bad.md", cwd=tmp_path).stdout
    assert "error placeholder: leftover TK placeholder" in text and "1 error(s)" in text


class _Site(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        if self.path == "/no-head":
            self.send_response(405)
        elif self.path.startswith("/ok") or self.path == "/no-head-but-get":
            self.send_response(200)
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
        else:
            self.send_response(404)
        self.end_headers()

    def do_GET(self):
        self.send_response(200 if self.path == "/no-head" else 404)
        self.end_headers()


def test_links_option_requests_every_link_and_image():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        html = (f'<a href="{base}/ok">fine</a> <a href="{base}/no-head">get only</a> '
                f'<a href="{base}/gone">gone</a> <a href="{base}/loop">loop</a> '
                f'<a href="mailto:a@b.example">mail</a> <a href="%%unsubscribe_url%%">u</a> '
                f'<img src="{base}/ok.png" alt="" width="3">')  # loopback only: no network
        findings = check.check_links(html, timeout=5)
    finally:
        server.shutdown()
    broken = {f.message.split()[1]: f.severity for f in findings}
    assert broken == {f"{base}/gone": "error", f"{base}/loop": "error"}


def test_check_reports_every_build_warning_with_file_and_line(tmp_path):
    """What `publish build` warned about, `publish check` shows too, at the same line."""
    (tmp_path / "publish.toml").write_text('name = "T"\npostal_address = "1 Road"\n'
                                           'base_url = "https://t.example/"\n', "utf-8")
    (tmp_path / "warned.md").write_text(
        "---\ntitle: Warned\n---\n\nA first paragraph that is long enough to read as prose.\n\n"
        "![](https://t.example/a.png)\n\nJump to [the end](#nowhere).\n\n"
        "Hello {first_name}, see [this]((https://x.example/a)).\n", "utf-8")
    built = run_publish("build", "warned.md", "--json", "--out", "out", cwd=tmp_path)
    warned = json.loads(built.stdout)["warnings"]
    assert len(warned) >= 4  # and any the image sizing adds
    result = run_publish("check", "warned.md", "--json", cwd=tmp_path)
    findings = json.loads(result.stdout)
    located = {(f["rule"], f["line"]) for f in findings if f["file"] == "warned.md"}
    assert {("img-alt", 7), ("anchor-missing", 9), ("placeholder", 11),
            ("link-malformed", 11)} <= located
    assert len([f for f in findings if f["file"]]) == len(warned)
    text = run_publish("check", "warned.md", cwd=tmp_path).stdout
    for line in (7, 9, 11):
        assert f"warned.md:{line}: warning " in text
    assert "image has no alt text" in text and "matches no heading" in text


def test_build_warnings_become_findings_even_without_a_line():
    findings = check.from_warnings(
        ["a/b.md:12: image has no alt text: x.png", "a/b.md: HTML nested too deep",
         "settings: something odd"], "a/b.md")
    assert [(f.rule, f.file, f.line) for f in findings] == [
        ("img-alt", "a/b.md", 12), ("build", "a/b.md", None), ("build", "", None)]
    assert str(findings[0]).startswith("a/b.md:12: warning img-alt: image has no alt text")
    assert findings[1].message == "HTML nested too deep"
