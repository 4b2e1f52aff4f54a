"""Markdown (CommonMark, tables, strikethrough, footnotes, raw HTML, math) to an HTML fragment.

Code is coloured with inline styles, since email clients drop most `<style>` rules;
math stays as its readable TeX source, set as code: `$$…$$` blocks, inline `$…$`,
`\\(…\\)` and `\\[…\\]`. Repairs for what authors meant and warnings for source
left as text live in md_inline and md_blocks.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from functools import lru_cache

from . import md_blocks, md_inline

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


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.footnote import footnote_plugin

    md = MarkdownIt("commonmark", {"html": True, "highlight": highlight, "typographer": False})
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
        return f'<div class="math" style="{MATH_STYLE}">$$\n{tex}\n$$</div>\n'

    md.add_render_rule("math_inline", inline_math)
    md.add_render_rule("math_inline_double", inline_double_math)
    md.add_render_rule("math_block", block_math)
    md.add_render_rule("math_block_label", block_math)
    md_inline.install(md)
    md_blocks.install(md)
    return md


@dataclass
class Rendered:
    html: str
    # (line of the body, 1-based, or None; message) for what the author should look at.
    warnings: list[tuple[int | None, str]] = field(default_factory=list)


def render(body: str, strings: dict[str, str] | None = None) -> Rendered:
    """Render an issue's Markdown body; `strings` label callouts in the issue's language."""
    env: dict = {"strings": strings or {}, "warnings": []}
    fragment = _parser().render(body, env)
    return Rendered(fragment, md_blocks.limited(env["warnings"]))


def to_html(body: str) -> str:
    """Render an issue's Markdown body to an HTML fragment."""
    return render(body).html


def parse(body: str) -> list:
    """The token stream of a Markdown body, as `render` sees it (for reading its prose)."""
    return _parser().parse(body, {"strings": {}, "warnings": []})
