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

import bisect
import html
import itertools
import re

_ALERT = re.compile(r"\[!(NOTE|TIP|IMPORTANT|WARNING|CAUTION)\][ \t]*\n?", re.I)
PLACEHOLDER = re.compile(r"\{\{?[ \t]*[A-Za-z_][\w.-]+[ \t]*\}\}?")
_DATE = (r"(?:(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.? \d{1,2},? \d{4}"
         r"|\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.? \d{4}"
         r"|\d{4}-\d{2}-\d{2})")
_SCAFFOLD = re.compile(
    rf"(?:Published|Posted|Updated)(?: on)? {_DATE}\.?"
    r"(?: ?(?:Update|Edit|View)(?: this page)? on GitHub)?", re.I)
# Elements of an HTML block whose text is not prose: kept byte for byte.
_OPAQUE = {"pre", "code", "kbd", "samp", "script", "style", "textarea", "math", "svg"}
_TAG = re.compile(r"<!--|<([A-Za-z][\w-]*)?[^<>]*>")
# A chunk without any of these characters cannot hold Markdown (nor a placeholder).
_MAYBE_MARKDOWN = re.compile(r"[*_`\[\]$\\{~!]")
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
    """A quote whose first paragraph opens with `[!TIP]` (any case) is a callout; its
    opening and closing tokens both carry the kind."""
    tokens = state.tokens
    opened = []
    for i, token in enumerate(tokens):
        if token.type == "blockquote_close" and opened:
            kind = opened.pop()
            if kind:
                token.meta = {**(token.meta or {}), "alert": kind}
            continue
        if token.type != "blockquote_open":
            continue
        opened.append(None)
        if i + 2 >= len(tokens):
            continue
        inline = tokens[i + 2]
        if tokens[i + 1].type != "paragraph_open" or inline.type != "inline":
            continue
        match = _ALERT.match(inline.content)
        if match is None:
            continue
        opened[-1] = match.group(1).lower()
        token.meta = {**(token.meta or {}), "alert": opened[-1]}
        inline.content = inline.content[match.end():].lstrip()
        if match.group(0).endswith("\n") and inline.map:
            inline.map = [inline.map[0] + 1, inline.map[1]]
        if not inline.content:
            for part in (tokens[i + 1], inline, tokens[i + 3]):
                part.hidden = True
                part.type = "alert_marker"


_CONTENT = "\x00callout content\x00"


def _callout(kind: str, env) -> tuple[str, str]:
    """The callout partial's markup before and after the quote's content (rendered once
    per kind and Markdown render)."""
    done = env.setdefault("_callouts", {})
    if kind not in done:
        from .errors import InputError
        from .tokens import packaged_tokens

        look = env.get("look") or packaged_tokens()
        label = (env.get("strings") or {}).get(f"alert_{kind}", kind.capitalize())
        markup = look.partial("callout.html.j2", kind=kind, label=label, content=_CONTENT)
        if markup.count(_CONTENT) != 1:
            raise InputError("the callout template must show {{ content }} exactly once",
                             look.partial_file("callout.html.j2"))
        before, after = markup.split(_CONTENT)
        done[kind] = (before, after)
    return done[kind]


def render_blockquote_open(self, tokens, idx, options, env) -> str:
    kind = (tokens[idx].meta or {}).get("alert")
    if not kind:
        return self.renderToken(tokens, idx, options, env)
    return _callout(kind, env)[0]


def render_blockquote_close(self, tokens, idx, options, env) -> str:
    kind = (tokens[idx].meta or {}).get("alert")
    if not kind:
        return self.renderToken(tokens, idx, options, env)
    return _callout(kind, env)[1]


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
            prose = (text for is_prose, text in segments(token.content) if is_prose)
            text = " ".join(html.unescape(" ".join(prose)).split())
            if text and _SCAFFOLD.fullmatch(text):
                _warn(state, line, f"web-page scaffolding {text!r} left out of the email")
                continue
        keep.append(token)
    state.tokens[:] = keep


def _warn(state, line: int | None, message: str) -> None:
    state.env.setdefault("warnings", []).append((line, message))


_OPEN_TAG = re.compile(r"<([A-Za-z][\w-]*)[^<>]*?(?<!/)>")
_VOID = {"img", "br", "hr", "input", "meta", "link", "source", "wbr", "area", "col", "embed"}
_PROSE_MARKDOWN = re.compile(r"\[[^\]\n]+\]\((?:https?:|/|#)|\*\*[^*\s][^*\n]*\*\*")


def indented_prose(state) -> None:
    """Warn when prose indented inside an HTML container became a code block.

    After a blank line CommonMark reads the container's content as Markdown, so text the
    author indented for neatness is code. Real code is common there too (a notebook's output
    `<div>`), so this only warns when the "code" holds Markdown links or bold.
    """
    tokens = state.tokens
    for before, token in itertools.pairwise(tokens):
        if token.type != "code_block" or before.type != "html_block" or not token.map:
            continue
        opened = [m.group(1).lower() for m in _OPEN_TAG.finditer(before.content)
                  if m.group(1).lower() not in _VOID]
        closed = re.findall(r"</([A-Za-z][\w-]*)", before.content)
        if len(opened) > len(closed) and _PROSE_MARKDOWN.search(token.content):
            _warn(state, token.map[0] + 1,
                  f"text indented 4 spaces inside <{opened[-1]}> is shown as code; "
                  "remove the indentation if it is prose")


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


def segments(source: str):
    """(is_prose, text) pieces of raw HTML: prose between tags, and tags, comments and the
    whole of `<pre>`, `<code>`, `<script>`… elements kept apart. Linear in the input."""
    lower = source.lower()
    pos = 0
    while pos < len(source):
        match = _TAG.search(source, pos)
        if match is None:
            break
        if match.start() > pos:
            yield True, source[pos:match.start()]
        end = match.end()
        name = (match.group(1) or "").lower()
        if match.group(0) == "<!--":
            close = lower.find("-->", end)
            end = len(source) if close < 0 else close + 3
        elif name in _OPAQUE and not match.group(0).endswith("/>"):
            close = lower.find(f"</{name}", end)
            close = lower.find(">", close) if close >= 0 else -1
            end = len(source) if close < 0 else close + 1
        yield False, source[match.start():end]
        pos = end
    if pos < len(source):
        yield True, source[pos:]


def markdown_in_html(state) -> None:
    """Render the prose of each HTML block as inline Markdown, tags kept as written."""
    for token in state.tokens:
        if token.type != "html_block" or not token.map:
            continue
        pieces = []
        line = token.map[0] + 1
        for is_prose, text in segments(token.content):
            pieces.append(_chunk(state, text, line) if is_prose else text)
            line += text.count("\n")
        token.content = "".join(pieces)


def _chunk(state, text: str, line: int) -> str:
    if not text.strip() or not _MAYBE_MARKDOWN.search(text):
        return text
    rendered = _render_chunk(state, text, line)
    if rendered is None:
        return text
    lead = text[:len(text) - len(text.lstrip())]
    tail = text[len(text.rstrip()):]
    return lead + rendered.strip() + tail


# leftovers ---------------------------------------------------------------------------
def scan_inline(state, token, paragraph: bool = False) -> None:
    """Warn about Markdown syntax that an inline token still shows as text."""
    children = token.children or []
    first = token.map[0] if token.map else None
    newlines = [i for i, c in enumerate(token.content) if c == "\n"]
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
                line = None if first is None else first + 1 + bisect.bisect_left(
                    newlines, max(found, 0))
                if (line, message) in seen:
                    continue
                seen.add((line, message))
                snippet = " ".join(child.content[max(0, match.start() - 25):
                                                 match.end() + 25].split())
                _warn(state, line, f"{message}: {snippet!r}")
        if paragraph and index == 0 and re.match(r"#{1,6}[^\s#]", child.content) and \
                token.content.startswith("#"):
            _warn(state, None if first is None else first + 1,
                  f"{child.content.split()[0]!r} at the start of a paragraph is shown as "
                  "text; put a space after the '#' for a heading")


def leftovers(state) -> None:
    tokens = state.tokens
    for i, token in enumerate(tokens):
        if token.type == "inline":
            scan_inline(state, token, paragraph=i > 0 and tokens[i - 1].type == "paragraph_open")


def limited(warnings: list[tuple[int | None, str]], most: int = 10):
    """At most `most` warnings of each kind, then one line saying how many more there are."""
    counts: dict[str, int] = {}
    kept = []
    for line, message in warnings:
        kind = message.split(": ")[0]
        counts[kind] = counts.get(kind, 0) + 1
        if counts[kind] <= most:
            kept.append((line, message))
    kept += [(None, f"{kind}: {n - most} more like this") for kind, n in counts.items()
             if n > most]
    return kept


def install(md) -> None:
    md.core.ruler.after("block", "alerts", alerts)
    md.core.ruler.after("alerts", "scaffolding", scaffolding)
    md.core.ruler.after("scaffolding", "indented_prose", indented_prose)
    md.core.ruler.after("inline", "leftovers", leftovers)
    md.core.ruler.after("leftovers", "markdown_in_html", markdown_in_html)
    md.add_render_rule("blockquote_open", render_blockquote_open)
    md.add_render_rule("blockquote_close", render_blockquote_close)
    md.add_render_rule("alert_marker", lambda self, tokens, idx, options, env: "")
