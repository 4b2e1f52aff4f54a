"""Inline Markdown read the way its author meant it, where CommonMark's letter says otherwise.

Each rule fixes a shape that real posts contain and that readers would otherwise see as
source text: `**Label: **text` and `**注意：**文字` (CommonMark's flanking rules refuse
both closers), `[text]((url))` (a doubled parenthesis), TeX quotes ``like this'' (two
backticks that are not code), and `\\( … \\)` / `\\[ … \\]` math written for MathJax.
Repairs that guess are reported as warnings with the line, so the editor can fix the source.
"""

from __future__ import annotations

import re

from markdown_it.common.utils import isPunctChar, normalizeReference

# CJK ideographs, kana, hangul and full-width forms: scripts written without spaces, where
# CommonMark's rule "punctuation next to `**` needs a space on its other side" misfires.
_CJK = re.compile(r"[\u2e80-\u9fff\u3000-\u303f\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
# What ends a bold label before the space an author slipped inside the closing `**`.
_LABEL_END = ":.!?)：。！？）"
_LINK_IN_DOUBLE_PARENS = re.compile(
    r"\(\(\s*(?P<url>(?:https?://|mailto:|www\.|/|#)[^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)"
    r"\s*\)(?P<second>\))?")
_SPACED_LINK = re.compile(
    r"[ \t]+\((?P<url>https?://[^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)\)")
# Single-backslash \( … \) is math only when its content reads like TeX, since `\(` is
# also how a writer escapes a parenthesis.
_TEX_LIKE = re.compile(r"[\\^_={}]|^\s*[A-Za-z]\s*$")
# (opener, closer, display?) as written in Markdown source, double backslashes first.
_MATH_DELIMITERS = (("\\\\(", "\\\\)", False), ("\\\\[", "\\\\]", True),
                    ("\\(", "\\)", False), ("\\[", "\\]", True))


def warn(state, pos: int, message: str) -> None:
    """Record a warning for the body line that holds `state.src[pos]`."""
    first = state.env.get("_line")
    line = None if first is None else first + state.src.count("\n", 0, pos) + 1
    state.env.setdefault("warnings", []).append((line, message))


def find_closer(state, needle: str, start: int) -> int:
    """`state.src.find(needle, start, posMax)`, answering at once when no closer is left.

    Keeps a run of unclosed openers (`\\(` thousands of times) linear, not quadratic.
    """
    if state.html_terminator_last(needle) < start:
        return -1
    return state.src.find(needle, start, state.posMax)


def inline_with_lines(state) -> None:
    """The core inline step, remembering each block's first line for inline warnings."""
    for token in state.tokens:
        if token.type == "inline":
            if token.children is None:
                token.children = []
            state.env["_line"] = token.map[0] if token.map else None
            state.md.inline.parse(token.content, state.md, state.env, token.children)
    state.env["_line"] = None


# emphasis ------------------------------------------------------------------------------
def _neighbour(tokens, index: int, step: int) -> str:
    """Up to 8 characters of text beside a delimiter run ('' at the edge of the block)."""
    text = ""
    index += step
    while 0 <= index < len(tokens) and len(text) < 8:
        token = tokens[index]
        if token.type in ("text", "text_special"):
            text = token.content + text if step < 0 else text + token.content
        elif token.type in ("softbreak", "hardbreak"):
            text = "\n" + text if step < 0 else text + "\n"
            break
        else:  # the character CommonMark sees at that edge of a code span, link, tag, math
            edge = _EDGES.get(token.type, "a")[0 if step > 0 else -1]
            text = edge + text if step < 0 else text + edge
            break
        index += step
    return text


_EDGES = {"code_inline": "``", "link_open": "[[", "link_close": "))", "html_inline": "<>",
          "math_inline": "$$", "math_inline_double": "$$", "image": "!)"}


def _relax(tokens, delimiters) -> None:
    i = 0
    while i < len(delimiters):
        j = i
        while (j + 1 < len(delimiters) and delimiters[j + 1].marker == delimiters[i].marker
               and delimiters[j + 1].token == delimiters[j].token + 1):
            j += 1
        run = delimiters[i:j + 1]
        i = j + 1
        star = run[0].marker == 0x2A
        if len(run) > 2 or not (star or len(run) == 2):  # `*`, `**`, `__`: `_x_` is snake_case
            continue
        before = _neighbour(tokens, run[0].token, -1)
        after = _neighbour(tokens, run[-1].token, 1)
        prev, nxt = before[-1:], after[:1]
        cjk = bool(_CJK.match(prev or " ") or _CJK.match(nxt or " "))
        close = open_ = False
        core = before.rstrip()
        if prev.isspace() and core and core[-1] in (_LABEL_END if len(run) == 2 else ":："):
            close = True  # `**Label: **text`: the space belongs after the closer
        if not star:
            pass  # underscores only take the slipped-space repair
        elif cjk and prev and not prev.isspace() and isPunctChar(prev) and nxt \
                and not nxt.isspace():
            close = True  # `**注意：**文字`
        if star and cjk and nxt and isPunctChar(nxt) and prev and not prev.isspace() \
                and not isPunctChar(prev):
            open_ = True  # `文字**“引用”**`
        for delimiter in run:
            delimiter.close = delimiter.close or close
            delimiter.open = delimiter.open or open_


def lenient_emphasis(state) -> None:
    """Let `*`/`**` runs pair where a slipped space or CJK punctuation defeats CommonMark."""
    _relax(state.tokens, state.delimiters)
    for meta in state.tokens_meta:
        if meta and meta.get("delimiters"):
            _relax(state.tokens, meta["delimiters"])


# links -------------------------------------------------------------------------------
def misshapen_link(state, silent: bool) -> bool:
    """`[text]((url))`, `[text]((url)` and `[text] (https://url)`: CommonMark shows them as
    text (or links to `(url)`); link to the url, and say the source is malformed."""
    src, start = state.src, state.pos
    if src[start] != "[":
        return False
    label_end = state.md.helpers.parseLinkLabel(state, start, True)
    if label_end < 0:
        return False
    if src.startswith("((", label_end + 1):
        match, what = _LINK_IN_DOUBLE_PARENS.match(src, label_end + 1, state.posMax), \
            "doubled parenthesis"
    else:
        match, what = _SPACED_LINK.match(src, label_end + 1, state.posMax), \
            "a space between ] and ("
        label = normalizeReference(src[start + 1:label_end])
        if match is not None and label in state.env.get("references", {}):
            return False  # a reference link followed by a URL in parentheses
    if match is None:
        return False
    url = match.group("url")
    href = state.md.normalizeLink("https://" + url if url.startswith("www.") else url)
    if not state.md.validateLink(href):
        return False
    if not silent:
        warn(state, start, f"malformed link {src[start:match.end()]!r}: {what}; "
                           f"linked to {url}")
        old_max = state.posMax
        state.pos, state.posMax = start + 1, label_end
        token = state.push("link_open", "a", 1)
        token.attrs = {"href": href}
        state.linkLevel += 1
        state.md.inline.tokenize(state)
        state.linkLevel -= 1
        state.push("link_close", "a", -1)
        state.posMax = old_max
    state.pos = match.end()
    return True


# TeX ---------------------------------------------------------------------------------
def tex_quotes(state, silent: bool) -> bool:
    """``quoted'' (TeX's opening and closing quotes) is a quotation, not a code span."""
    src, pos = state.src, state.pos
    if not src.startswith("``", pos) or src.startswith("```", pos) or src[pos - 1:pos] == "`":
        return False
    close = find_closer(state, "''", pos + 2)
    if close < 0:
        return False
    body = src[pos + 2:close]
    if not body or body[0].isspace() or body[-1].isspace() or "`" in body \
            or src[close + 2:close + 3] in ("`", "'"):
        return False
    if not silent:  # as text: markdown-it's text rule may run past a nested range's end
        state.append_pending(f"“{body}”")
    state.pos = close + 2
    return True


def paren_math(state, silent: bool) -> bool:
    """`\\( … \\)` and `\\[ … \\]` (MathJax's delimiters, escaped for Markdown) are math;
    so is `\\( … \\)` written with single backslashes when its content reads like TeX."""
    src, pos = state.src, state.pos
    if src[pos] != "\\":
        return False
    found = next((d for d in _MATH_DELIMITERS if src.startswith(d[0], pos)), None)
    if found is None:
        return False
    opener, closer, double = found
    end = find_closer(state, closer, pos + len(opener))
    if end < 0:
        return False
    content = src[pos + len(opener):end]
    if not content.strip():
        return False
    if len(opener) == 2 and (not _TEX_LIKE.search(content) or (double and "\\" not in content
                                                                and "^" not in content)):
        return False
    if not silent:
        token = state.push("math_inline_double" if double else "math_inline", "math", 0)
        token.content = content.strip()
        token.markup = opener
    state.pos = end + len(closer)
    return True


def install(md) -> None:
    """Add the rules to a MarkdownIt parser (with dollarmath already installed)."""
    md.core.ruler.at("inline", inline_with_lines)
    md.inline.ruler.before("escape", "paren_math", paren_math)
    md.inline.ruler.before("backticks", "tex_quotes", tex_quotes)
    md.inline.ruler.before("link", "misshapen_link", misshapen_link)
    md.inline.ruler2.before("balance_pairs", "lenient_emphasis", lenient_emphasis)
