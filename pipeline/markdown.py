"""Markdown (CommonMark, tables, strikethrough, footnotes, raw HTML, math) to an HTML fragment.

Code is coloured with inline styles, since email clients drop most `<style>` rules;
`$$…$$` math stays as its readable TeX source.
"""

from __future__ import annotations

import html
import re
import sys
from functools import lru_cache

CODE_STYLE = (
    "background-color:#f6f8fa;color:#1f2328;border-radius:6px;padding:12px 14px;"
    "font-family:Menlo,Consolas,'Courier New',monospace;font-size:13px;line-height:1.45;"
    "white-space:pre-wrap;word-wrap:break-word;overflow-x:auto;"
)
MATH_STYLE = (
    "font-family:Menlo,Consolas,'Courier New',monospace;font-size:14px;"
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


def highlight(code: str, lang: str, _attrs: object = None) -> str:
    """A `<pre>` with inline-styled spans, or plain escaped code for unknown languages."""
    language = _language(lang)
    lexer = _lexer(language) if language else None
    code_open = f'<code class="language-{language}">' if language else "<code>"
    if lexer is None:
        body = html.escape(code)
    else:
        from pygments import highlight as pyg_highlight
        from pygments.formatters import HtmlFormatter

        formatter = HtmlFormatter(nowrap=True, noclasses=True, style="friendly")
        body = pyg_highlight(code, lexer, formatter)
    return f'<pre style="{CODE_STYLE}">{code_open}{body}</code></pre>\n'


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


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.footnote import footnote_plugin

    md = MarkdownIt("commonmark", {"html": True, "highlight": highlight, "typographer": False})
    md.options["maxNesting"] = MAX_NESTING + 1
    _refuse_too_deep(md)
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
        return html.escape("$" + tokens[idx].content + "$")

    def inline_double_math(self, tokens, idx, options, env):
        return html.escape("$$" + tokens[idx].content + "$$")

    def block_math(self, tokens, idx, options, env):
        tex = html.escape(tokens[idx].content.strip())
        return f'<div class="math" style="{MATH_STYLE}">$$\n{tex}\n$$</div>\n'

    md.add_render_rule("math_inline", inline_math)
    md.add_render_rule("math_inline_double", inline_double_math)
    md.add_render_rule("math_block", block_math)
    md.add_render_rule("math_block_label", block_math)
    return md


def to_html(body: str) -> str:
    """Render an issue's Markdown body to an HTML fragment; TooDeep rather than lose text."""
    return _parser().render(body)
