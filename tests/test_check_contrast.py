"""`publish check`'s contrast rules: light mode, the email's own dark rules, and inversion,
each computed through a real cascade (importance, origin, specificity, inheritance)."""

from __future__ import annotations

import pytest

from pipeline import check, colours, markdown
from pipeline.check_contrast import problems
from pipeline.tokens import packaged_tokens

DARK_PAGE = ("<style>:root{color-scheme:light dark}"
             "@media (prefers-color-scheme: dark){{body{{background-color:#111111 !important}}"
             "{rules}}}</style>")


def page(body: str, dark_rules: str = "", bg: str = "#ffffff") -> str:
    head = DARK_PAGE.replace("{{", "{").replace("}}", "}").replace("{rules}", dark_rules)
    return (f"<!doctype html><html><head>{head}</head>"
            f'<body style="background-color:{bg}">{body}</body></html>')


def found(html: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for problem in problems(html):
        result.setdefault(problem.rule, []).append(problem.message)
    return result


def test_light_mode_contrast_needs_aa_and_large_text_needs_less():
    assert "contrast" in found(page('<p style="color:#999999">grey</p>'))
    assert "contrast" not in found(page('<p style="color:#595959">dark grey</p>'))
    # 3.0:1 grey is enough for 24 px text and for 19 px bold, not for 19 px regular
    grey = "color:#949494"
    assert "contrast" not in found(page(f'<h1 style="{grey};font-size:24px">Big</h1>'))
    assert "contrast" not in found(page(f'<p style="{grey};font-size:19px"><b>Bold</b></p>'))
    assert "contrast" in found(page(f'<p style="{grey};font-size:19px">Regular</p>'))


def test_text_the_dark_rules_forget_is_found():
    # the old template's failure: a light code background the dark rules never recolour
    html = page('<p>Run <code style="background-color:#f3f4f6">pip</code></p>',
                "p{color:#e6e8eb !important}")
    messages = found(html)["dark-mode-contrast"]
    assert any("#e6e8eb on #f3f4f6" in m for m in messages)
    fixed = page('<p>Run <code style="background-color:#f3f4f6">pip</code></p>',
                 "p{color:#e6e8eb !important} code{background-color:#333 !important}")
    assert "dark-mode-contrast" not in found(fixed)


def test_inherited_colour_under_the_dark_rules():
    html = page('<div style="color:#1f2328"><h4>Heading</h4><p>Text</p></div>',
                "p{color:#eeeeee !important}")
    messages = found(html)["dark-mode-contrast"]
    assert len(messages) == 1 and "#1f2328" in messages[0]  # the h4 inherits the dark ink


def test_inline_important_wins_over_the_stylesheet_and_specificity_orders_rules():
    pinned = page('<pre style="background-color:#0d1117 !important;color:#e6edf3 !important">'
                  "code</pre>",
                  "pre{background-color:#ffffff !important;color:#ffffff !important}")
    assert "dark-mode-contrast" not in found(pinned)
    ordered = page('<div class="a"><p class="b">x</p></div>',
                   ".a .b{color:#eeeeee !important} .b{color:#111111 !important}")
    assert "dark-mode-contrast" not in found(ordered)
    later = page('<p class="b">x</p>', ".b{color:#eeeeee !important} .b{color:#111111 !important}")
    assert "dark-mode-contrast" in found(later)


def test_a_page_without_dark_support_or_background_turns_dark_around_fixed_text():
    bare = '<!doctype html><html><body><p style="color:#111111">dark text</p></body></html>'
    assert "dark-mode-contrast" in found(bare)
    painted = ('<!doctype html><html><body style="background-color:#ffffff">'
               '<p style="color:#111111">dark text</p></body></html>')
    assert "dark-mode-contrast" not in found(painted)


def test_inversion_that_loses_contrast_is_found():
    # github-dark's red passes on its dark background and fails once inverted
    html = page('<pre style="background-color:#0d1117;color:#f85149">red</pre>')
    assert "contrast" not in found(html)
    assert "inverted-contrast" in found(html)


def test_hidden_text_and_text_over_images_are_not_judged():
    html = page('<div style="display:none;color:#ffffff">preheader</div>'
                '<div style="background:url(https://x.example/a.png)">'
                '<p style="color:#ffffff">on a photo</p></div>')
    assert found(html) == {}


def test_findings_are_grouped_and_reach_check_html():
    html = page("".join(f'<p style="color:#aaaaaa">grey {i}</p>' for i in range(30))
                + '<p><a href="https://x.example/unsubscribe">Unsubscribe</a> 1 Road</p>')
    findings = [f for f in check.check_html(html, postal_address="1 Road", preheader="x" * 50)
                if f.rule == "contrast"]
    assert len(findings) == 1 and "30 places" in findings[0].message
    assert findings[0].severity == "warning" and findings[0].where.startswith("<p")


@pytest.mark.parametrize("token", sorted({spec for spec in
                                          markdown.code_style().styles.values() if spec}))
def test_every_code_colour_is_legible_as_it_is_and_inverted(token):
    background = colours.parse(packaged_tokens().code["background"])[0]
    for part in token.split():
        if part.startswith("#"):
            rgb = colours.parse(part)[0]
            assert colours.contrast(rgb, background) >= 4.5
            assert colours.contrast(colours.inverted(rgb), colours.inverted(background)) >= 4.5


def test_a_template_whose_dark_rules_forget_elements_is_caught_by_check(tmp_path):
    """The dark rules this project once shipped recoloured only some elements: `check` on a
    build with them finds the code, headers and header link they left illegible."""
    from pipeline import build, settings
    from tests.conftest import SAMPLES, copy_sample_newsletter

    folder = copy_sample_newsletter(tmp_path / "letter")
    template = folder / "email_templates" / "issue.mjml.j2"
    source = template.read_text("utf-8")
    start = source.index("@media (prefers-color-scheme: dark)")
    end = source.index("</mj-style>")
    template.write_text(source[:start] + """@media (prefers-color-scheme: dark) {
        .email-bg { background-color: #111418 !important; }
        .paper, .paper > table { background-color: #1b1f24 !important; }
        .paper div, .paper p, .paper li, .paper td, .paper h1, .paper h2, .paper h3
          { color: #e6e8eb !important; }
        .paper a { color: #7cb7ff !important; }
        .muted, .muted div, .muted p { color: #a3abb5 !important; }
      }
    """ + source[end:], "utf-8")
    built = build.render_issue(folder / SAMPLES["en"].relative_to(SAMPLES["en"].parents[1]),
                               settings.load(folder, env={}))
    dark = [f for f in built.findings if f.rule == "dark-mode-contrast"]
    assert dark, built.findings
    assert any("<th" in f.where for f in dark)  # #e6e8eb on the light header background
    assert any("<a" in f.where for f in dark)  # the header's "View in browser"
