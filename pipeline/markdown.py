"""Markdown (CommonMark, tables, strikethrough, footnotes, raw HTML, math) to an HTML fragment.

Code is coloured with inline styles, since email clients drop most `<style>` rules. Code
blocks are dark in light and dark mode alike, with a palette that stays legible when a
client inverts the page, so no client's dark mode has to recolour each token; long lines
wrap inside the block instead of widening the email. Math stays as its readable TeX
source, set as code: `$$…$$` blocks, inline `$…$`, `\\(…\\)` and `\\[…\\]`. Repairs for
what authors meant and warnings for source left as text live in md_inline and md_blocks.
"""

from __future__ import annotations

import html
import re
import sys
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from . import md_blocks, md_inline
from .tokens import Tokens, packaged_tokens


def _compact_fonts(fonts: str) -> str:
    """A font list as style attributes carry it: no space after the commas."""
    return ",".join(name.strip() for name in fonts.split(","))


def code_block_style(look: Tokens) -> str:
    """A code block's style. Its colours are pinned (!important) so no client's dark mode
    recolours them; long lines wrap inside the block instead of widening the email."""
    code = look.code
    return (
        f"background-color:{code['background']}!important;color:{code['text']}!important;"
        f"border-radius:{code['radius']}px;"
        f"padding:{code['padding']};margin:0 0 16px;"
        f"font-family:{_compact_fonts(look.fonts['code'])};font-size:{code['font_size']}px;"
        f"line-height:{code['line_height']};"
        "white-space:pre-wrap;word-wrap:break-word;word-break:break-word;"
    )


def math_style(look: Tokens) -> str:
    return (
        f"font-family:{_compact_fonts(look.fonts['code'])};"
        f"font-size:{look.code['inline_font_size']}px;"
        "white-space:pre-wrap;word-wrap:break-word;text-align:center;margin:16px 0;"
    )


def _language(info: str) -> str:
    """The language of a fence's info string: `Python`, `python=` and `python {x}` are python."""
    return re.sub(r"[^a-z0-9+#-].*$", "", info.strip().lower())


def _lexer(language: str):
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return get_lexer_by_name(language)
    except ClassNotFound:
        return None


_PYGMENTS_COLOUR = re.compile(r"color: (#[0-9A-Fa-f]{6})")


def code_style(look: Tokens | None = None):
    """A Pygments style for the dark code block whose every colour reaches WCAG AA on it,
    as it is and under a full inversion; diff backgrounds are dropped (one background)."""
    code = (look or packaged_tokens()).code
    return _code_style(code["palette"], code["background"])


@lru_cache(maxsize=8)
def _code_style(palette: str, background: str):
    from pygments.style import Style
    from pygments.styles import get_style_by_name

    from .colours import legible_on

    styles = {}
    for token, spec in get_style_by_name(palette).styles.items():
        parts = [part for part in spec.split() if not part.startswith(("bg:", "border:"))]
        styles[token] = " ".join(
            legible_on(part, background) if part.startswith("#") else part
            for part in parts)
    return type("EmailCodeStyle", (Style,),
                {"background_color": background, "styles": styles})


def highlight(code: str, lang: str, look: Tokens | None = None) -> str:
    """A `<pre>` with inline-styled spans, or plain escaped code for unknown languages."""
    look = look or packaged_tokens()
    args = (code, _language(lang), code_block_style(look), look.code["palette"],
            look.code["background"])
    if len(code) > KEEP_CODE:
        return _highlighted.__wrapped__(*args)
    return _highlighted(*args)


KEEP_CODE = 16 * 1024  # longer blocks are coloured each time: at most 256 x 16 KB kept


@lru_cache(maxsize=256)  # the same blocks come back at every save of a preview
def _highlighted(code: str, language: str, block_style: str, palette: str,
                 background: str) -> str:
    """The coloured block: all it depends on is in its arguments."""
    lexer = _lexer(language) if language else None
    code_open = f'<code class="language-{language}">' if language else "<code>"
    if lexer is None:
        body = html.escape(code)
    else:
        from pygments import highlight as pyg_highlight
        from pygments.formatters import HtmlFormatter

        formatter = HtmlFormatter(nowrap=True, noclasses=True,
                                  style=_code_style(palette, background))
        body = _PYGMENTS_COLOUR.sub(r"color:\1!important",
                                    pyg_highlight(code, lexer, formatter))
    return f'<pre style="{block_style}">{code_open}{body}</code></pre>\n'


# markdown-it stops at 20 levels (a list 10 deep) and silently drops what is deeper; allow
# far more (embeds.flatten_deep flattens what email cannot show), refuse (never drop) beyond.
MAX_NESTING = 1000
# Each level of a nested block is a few Python frames in markdown-it's recursive parser
# (Python 3.11+ does not spend C stack on them); set once, on import, never lowered.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 6 * MAX_NESTING + 1000))


class TooDeep(ValueError):
    """Blocks nested deeper than MAX_NESTING; `line` is the 1-based body line."""

    def __init__(self, line: int):
        super().__init__(f"quotes or lists nested more than {MAX_NESTING} levels deep")
        self.line = line


def _refuse_too_deep(md) -> None:
    """markdown-it skips the content of blocks nested past maxNesting; raise instead."""
    tokenize = md.block.tokenize

    def checked(state, start_line: int, end_line: int, *args):
        if state.level >= MAX_NESTING:
            line = state.skipEmptyLines(start_line)
            if line < end_line and state.sCount[line] >= state.blkIndent:
                raise TooDeep(line + 1)
        return tokenize(state, start_line, end_line, *args)

    md.block.tokenize = checked


# How deep inline markup (links in links, emphasis) is followed. Inline parsing retries
# each `[` at every level, so markdown-it's own limit (20 in CommonMark mode) keeps it
# linear; the block limit raised above must not apply here, or a line of `[` takes minutes.
INLINE_MAX_NESTING = 20


def _limit_inline_nesting(md) -> None:
    """Skip a token past INLINE_MAX_NESTING as markdown-it does past its maxNesting."""
    skip_token = md.inline.skipToken

    def limited(state) -> None:
        if state.level >= INLINE_MAX_NESTING and state.pos not in state.cache:
            start = state.pos
            state.pos = state.posMax + 1
            state.cache[start] = state.pos
            return
        skip_token(state)

    md.inline.skipToken = limited


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt
    from markdown_it.common.utils import unescapeAll
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.footnote import footnote_plugin

    md = MarkdownIt("commonmark", {"html": True, "typographer": False})
    md.options["maxNesting"] = MAX_NESTING + 1
    _refuse_too_deep(md)
    _limit_inline_nesting(md)
    md.enable(["table", "strikethrough"])
    md.use(footnote_plugin)
    md.use(
        dollarmath_plugin,
        allow_labels=False,
        allow_space=False,
        allow_digits=False,
        double_inline=True,
        renderer=lambda content, options: html.escape(content),
    )

    def inline_math(self, tokens, idx, options, env):
        return f'<code class="math">{html.escape("$" + tokens[idx].content.strip() + "$")}</code>'

    def inline_double_math(self, tokens, idx, options, env):
        return f'<code class="math">{html.escape("$$" + tokens[idx].content.strip() + "$$")}</code>'

    def block_math(self, tokens, idx, options, env):
        tex = html.escape(tokens[idx].content.strip())
        return f'<div class="math" style="{math_style(env_look(env))}">$$\n{tex}\n$$</div>\n'

    def fence(self, tokens, idx, options, env):
        """A fenced code block, coloured for its language (the info string's first word)."""
        info = unescapeAll(tokens[idx].info) if tokens[idx].info else ""
        return highlight(tokens[idx].content, info, env_look(env)) + "\n"

    def code_block(self, tokens, idx, options, env):
        """An indented code block: the same styled block as a fence without a language."""
        return highlight(tokens[idx].content, "", env_look(env))

    md.add_render_rule("fence", fence)
    md.add_render_rule("code_block", code_block)
    md.add_render_rule("math_inline", inline_math)
    md.add_render_rule("math_inline_double", inline_double_math)
    md.add_render_rule("math_block", block_math)
    md.add_render_rule("math_block_label", block_math)
    md_inline.install(md)
    md_blocks.install(md)
    return md


@dataclass
class Rendered:
    """The body as HTML, with what the author should look at."""

    html: str
    # (line of the body, 1-based, or None; message) for what the author should look at.
    warnings: list[tuple[int | None, str]] = field(default_factory=list)


def env_look(env: dict) -> Tokens:
    """The tokens a render was given, else publish's own."""
    return env.get("look") or packaged_tokens()


def render(body: str, strings: dict[str, str] | None = None,
           look: Tokens | None = None) -> Rendered:
    """Render an issue's Markdown body; `strings` label callouts in the issue's language,
    `look` gives code blocks and callouts the newsletter's tokens and partials.

    When `parse` just read this same body (the language is detected before the strings
    are known), its token stream is rendered rather than parsed again: parsing never
    reads `strings` or `look`, which only rendering uses.
    """
    md = _parser()
    last = getattr(_LAST_PARSE, "parsed", None)
    _LAST_PARSE.parsed = None
    if last is not None and last[0] == body:
        tokens, env = last[1], {**last[2], "strings": strings or {}, "look": look}
    else:
        env = {"strings": strings or {}, "warnings": [], "look": look}
        tokens = md.parse(body, env)
    fragment = md.renderer.render(tokens, md.options, env)
    return Rendered(fragment, md_blocks.limited(env["warnings"]))


def parse(body: str) -> list:
    """The token stream of a Markdown body, as `render` sees it (for reading its prose;
    the reader must not change it: the next `render` of the same body renders it)."""
    env: dict = {"strings": {}, "warnings": []}
    tokens = _parser().parse(body, env)
    _LAST_PARSE.parsed = (body, tokens, env)
    return tokens


_LAST_PARSE = threading.local()  # .parsed: (body, tokens, env) of this thread's last parse
