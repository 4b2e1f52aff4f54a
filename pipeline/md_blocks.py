"""Block-level Markdown as authors meant it, and warnings for source left as text.

- GitHub alerts (`> [!TIP]`) become callouts with a label in the issue's language.
- Markdown inside an HTML block (`<figcaption>[paper](url)</figcaption>`, a `<p>` under an
  image) is rendered: CommonMark keeps the whole block raw until a blank line, but the blog
  platforms these posts come from render it, and the author wrote it to be rendered.
- Web-page scaffolding (a lone `{authors}`, a "Published … / Update on GitHub" block) is
  left out with a warning; a `{placeholder}` inside prose is kept and warned about.
- Whatever Markdown syntax is still left as text (`**`, `](`, a backtick, `[!NOTE]`, a
  `#heading` without its space) is reported with its line: never printed silently.
"""

from __future__ import annotations

import html
import re

ALERT_COLOURS = {
    "note": "#0969da", "tip": "#1a7f37", "important": "#8250df",
    "warning": "#9a6700", "caution": "#d1242f",
}
_ALERT = re.compile(r"\[!(NOTE|TIP|IMPORTANT|WARNING|CAUTION)\][ \t]*\n?", re.I)
PLACEHOLDER = re.compile(r"\{\{?[ \t]*[A-Za-z_][\w.-]+[ \t]*\}\}?")
_SCAFFOLD = re.compile(
    r"(?:Published|Posted|Updated)(?: on)?\s+[\w ,./-]{3,40}?\d{4}\.?"
    r"(?:\s*(?:Update|Edit|View)(?: this page)? on GitHub)?", re.I)
# Regions of an HTML block whose text is not prose: kept byte for byte.
_OPAQUE = re.compile(
    r"<!--.*?-->|<(pre|code|kbd|samp|script|style|textarea|math|svg)\b.*?</\1\s*>", re.S | re.I)
_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
_RENDERED = {"link_open", "code_inline", "strong_open", "em_open", "s_open", "math_inline",
             "math_inline_double", "image"}
LEFTOVERS = (
    (re.compile(r"\]\("), "Markdown link syntax '](' shown as text: a malformed link?"),
    (re.compile(r"\*\*"), "'**' shown as text: bold markers that do not pair"),
    (re.compile(r"`"), "a backtick shown as text: an unclosed code span?"),
    (re.compile(r"\[![A-Za-z]+\]"), "alert marker shown as text: GitHub alerts are "
                                    "'> [!NOTE]' on the first line of a quote"),
    (PLACEHOLDER, "template placeholder shown as text: fill it in or remove it"),
)


# alerts ------------------------------------------------------------------------------
def alerts(state) -> None:
    """A quote whose first paragraph opens with `[!TIP]` (any case) is a callout."""
    tokens = state.tokens
    for i, token in enumerate(tokens):
        if token.type != "blockquote_open" or i + 2 >= len(tokens):
            continue
        inline = tokens[i + 2]
        if tokens[i + 1].type != "paragraph_open" or inline.type != "inline":
            continue
        match = _ALERT.match(inline.content)
        if match is None:
            continue
        token.meta = {**(token.meta or {}), "alert": match.group(1).lower()}
        inline.content = inline.content[match.end():].lstrip()
        if match.group(0).endswith("\n") and inline.map:
            inline.map = [inline.map[0] + 1, inline.map[1]]
        if not inline.content:
            for part in (tokens[i + 1], inline, tokens[i + 3]):
                part.hidden = True
                part.type = "alert_marker"


def render_blockquote_open(self, tokens, idx, options, env) -> str:
    kind = (tokens[idx].meta or {}).get("alert")
    if not kind:
        return self.renderToken(tokens, idx, options, env)
    label = (env.get("strings") or {}).get(f"alert_{kind}", kind.capitalize())
    return (f'<blockquote class="callout callout-{kind}" '
            f'style="border-left:4px solid {ALERT_COLOURS[kind]};">\n'
            f'<p class="callout-title" style="margin:0 0 6px;">'
            f'<strong>{html.escape(label)}</strong></p>\n')


# scaffolding and placeholders -----------------------------------------------------------
def scaffolding(state) -> None:
    """Leave out a paragraph that is only `{placeholder}` and a "Published …" HTML block."""
    tokens = state.tokens
    keep = []
    skip = 0
    for i, token in enumerate(tokens):
        if skip:
            skip -= 1
            continue
        line = token.map[0] + 1 if token.map else None
        if (token.type == "paragraph_open" and i + 2 < len(tokens)
                and PLACEHOLDER.fullmatch(tokens[i + 1].content.strip())):
            _warn(state, line, f"template placeholder {tokens[i + 1].content.strip()} "
                               "left in the text; left out of the email")
            skip = 2
            continue
        if token.type == "html_block":
            text = " ".join(html.unescape(_TAG.sub(" ", _OPAQUE.sub(" ", token.content))).split())
            if text and _SCAFFOLD.fullmatch(text):
                _warn(state, line, f"web-page scaffolding {text!r} left out of the email")
                continue
        keep.append(token)
    state.tokens[:] = keep


def _warn(state, line: int | None, message: str) -> None:
    state.env.setdefault("warnings", []).append((line, message))


# Markdown inside HTML blocks ------------------------------------------------------------
def _render_chunk(state, text: str, line: int | None) -> str | None:
    """HTML for a prose chunk of an HTML block when it holds Markdown, else None."""
    from markdown_it.token import Token

    md = state.md
    text = re.sub(r"[ \t]+\n", "\n", text)
    state.env["_line"] = None if line is None else line - 1
    children: list[Token] = []
    md.inline.parse(text, md, state.env, children)
    holder = Token("inline", "", 0)
    holder.content, holder.children, holder.map = text, children, (
        None if line is None else [line - 1, line])
    scan_inline(state, holder)
    state.env["_line"] = None
    if not any(child.type in _RENDERED for child in children):
        return None
    for child in children:
        if child.type == "text_special":
            child.type = "text"
    return md.renderer.renderInline(children, md.options, state.env)


def markdown_in_html(state) -> None:
    """Render the prose of each HTML block as inline Markdown, tags kept as written."""
    for token in state.tokens:
        if token.type != "html_block" or not token.map:
            continue
        source = token.content
        pieces: list[str] = []
        last = 0
        for match in re.finditer(_OPAQUE.pattern + "|" + _TAG.pattern, source, re.S | re.I):
            pieces.append(_chunk(state, source, last, match.start(), token.map[0]))
            pieces.append(match.group(0))
            last = match.end()
        pieces.append(_chunk(state, source, last, len(source), token.map[0]))
        token.content = "".join(pieces)


def _chunk(state, source: str, start: int, end: int, first_line: int) -> str:
    text = source[start:end]
    if not text.strip():
        return text
    line = first_line + source.count("\n", 0, start) + 1
    rendered = _render_chunk(state, text, line)
    if rendered is None:
        return text
    lead = text[:len(text) - len(text.lstrip())]
    tail = text[len(text.rstrip()):]
    return lead + rendered.strip() + tail


# leftovers ---------------------------------------------------------------------------
def scan_inline(state, token) -> None:
    """Warn about Markdown syntax that an inline token still shows as text."""
    children = token.children or []
    first = token.map[0] if token.map else None
    seen: set[tuple[int | None, str]] = set()
    cursor: dict[str, int] = {}
    for index, child in enumerate(children):
        if child.type != "text":
            continue
        for pattern, message in LEFTOVERS:
            for match in pattern.finditer(child.content):
                found = token.content.find(match.group(0), cursor.get(pattern.pattern, 0))
                if found >= 0:
                    cursor[pattern.pattern] = found + 1
                line = None if first is None else first + 1 + token.content.count(
                    "\n", 0, max(found, 0))
                if (line, message) in seen:
                    continue
                seen.add((line, message))
                snippet = " ".join(child.content[max(0, match.start() - 25):
                                                 match.end() + 25].split())
                _warn(state, line, f"{message}: {snippet!r}")
        if index == 0 and re.match(r"#{1,6}[^\s#]", child.content) and \
                token.content.startswith("#"):
            _warn(state, None if first is None else first + 1,
                  f"{child.content.split()[0]!r} at the start of a paragraph is shown as "
                  "text; put a space after the '#' for a heading")


def leftovers(state) -> None:
    for token in state.tokens:
        if token.type == "inline":
            scan_inline(state, token)


def install(md) -> None:
    md.core.ruler.after("block", "alerts", alerts)
    md.core.ruler.after("alerts", "scaffolding", scaffolding)
    md.core.ruler.after("inline", "leftovers", leftovers)
    md.core.ruler.after("leftovers", "markdown_in_html", markdown_in_html)
    md.add_render_rule("blockquote_open", render_blockquote_open)
    md.add_render_rule("alert_marker", lambda self, tokens, idx, options, env: "")
