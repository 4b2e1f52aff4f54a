"""Which language an issue is written in, and which template strings speak it.

The language decides the `<html lang>`, the fonts and every word of the template around
the article ("View in browser", the byline, the footer), so it is judged on what the
reader will see: the prose, without code, URLs, HTML attributes or math, which in a
technical post easily outnumber the words. A Chinese character carries about as much as
an English word, so each counts as one word; Latin text is counted in words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import InputError
from .keep import kept_while_short

# Han ideographs (with extensions and compatibility forms); kana and hangul apart, since
# they make a text Japanese or Korean, not Chinese.
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KANA = r"\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_HANGUL = r"\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
_HAN_CHAR = re.compile(f"[{_HAN}]")
_KANA_CHAR = re.compile(f"[{_KANA}]")
_HANGUL_CHAR = re.compile(f"[{_HANGUL}]")
# A word of an alphabetic script: letters (not CJK), with inner apostrophes or hyphens.
_WORD = re.compile(rf"(?:(?![{_HAN}{_KANA}{_HANGUL}])[^\W\d_])+(?:['’-](?:(?![{_HAN}])[^\W\d_])+)*")
_URL = re.compile(r"\b(?:https?|ftp|mailto):[^\s<>\"'）)]+|\bwww\.[^\s<>\"'）)]+", re.I)
# Tried only where a word or a part between `@`s starts, and neither part runs past an
# `@`: inside a long word (a data URI, a row of `x@`) `\S+@` would rescan it from every
# position.
_EMAIL_ADDRESS = re.compile(r"(?<![^\s@])[^\s@]+@[^\s@]+\.\w+")
_SKIPPED_TAGS = ("pre", "code", "script", "style", "kbd", "samp", "var", "math", "svg",
                 "template", "noscript", "textarea")

# Common characters written differently in the two scripts (simplified, traditional).
# Any real Chinese prose uses dozens of them, so their counts tell the script apart.
_SIMPLIFIED = set("这们个来时说为国会对发过还进经现动问开关实学体长与书电数设计让应该"
                  "产样种点见边东车门马给题处总无从网络图标结论简单页测试")
_TRADITIONAL = set("這們個來時說為國會對發過還進經現動問開關實學體長與書電數設計讓應該"
                   "產樣種點見邊東車門馬給題處總無從網絡圖標結論簡單頁測試")
# A call this close to even is reported, so the editor can set `lang` in the front matter.
CLOSE_MARGIN = 0.15
MIN_WORDS = 12
SAMPLE_CHARS = 60_000

# Tags whose strings live in another file than their base language's.
TRADITIONAL_CHINESE = ("zh-hant", "zh-tw", "zh-hk", "zh-mo")
SIMPLIFIED_CHINESE = ("zh-hans", "zh-cn", "zh-sg", "zh-my")
CJK_LANGUAGES = ("zh", "ja", "ko")


@dataclass(frozen=True)
class Counts:
    """Words of visible prose by script; each Han, kana or hangul character is one word."""

    han: int = 0
    kana: int = 0
    hangul: int = 0
    latin: int = 0

    @property
    def total(self) -> int:
        return self.han + self.kana + self.hangul + self.latin


@dataclass(frozen=True)
class Choice:
    """The language an email is rendered in, why, and anything the editor should know."""

    lang: str
    reason: str
    warnings: tuple[str, ...] = field(default=())
    share: float | None = None  # of Chinese in the prose, when detected


# visible prose ---------------------------------------------------------------------------
@kept_while_short(512, 16 * 1024)
def _html_text(markup: str) -> str:
    """The text a reader sees in an HTML snippet: no tags, attributes, comments or code.

    The same snippets come back at every save of a preview: each is read once (kept when
    under 16 KB, 512 of them at most)."""
    from bs4 import BeautifulSoup
    from bs4.element import Comment

    soup = BeautifulSoup(markup, "html.parser")
    for element in soup.find_all(_SKIPPED_TAGS):
        element.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    return soup.get_text(" ")


_INLINE_TAG = re.compile(r"<(/?)([a-zA-Z][\w-]*)")


def _inline_text(token) -> str:
    """The prose of a paragraph's inline tokens: text, not code, math, tags or image alts
    (nor text inside inline HTML `<code>`, `<kbd>` and the like)."""
    parts = []
    hidden = 0  # depth inside inline HTML whose text is not prose
    for child in token.children or ():
        if child.type == "html_inline":
            match = _INLINE_TAG.match(child.content)
            if match and match.group(2).lower() in _SKIPPED_TAGS:
                hidden = max(0, hidden + (-1 if match.group(1) else 1))
            parts.append(" ")
        elif hidden:
            continue
        elif child.type == "text":
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak", "image"):
            parts.append(" ")  # an image's alt text is not prose the reader sees
    return "".join(parts)


def prose(markdown_body: str) -> str:
    """The visible prose of a Markdown body: no code, math, URLs, markup or comments.

    Parsed with the same Markdown parser as the email, so what counts as code here is
    what the reader sees as code.
    """
    from .markdown import parse

    pieces: list[str] = []
    for token in parse(markdown_body[:SAMPLE_CHARS]):
        if token.type == "inline":
            pieces.append(_inline_text(token))
        elif token.type == "html_block":
            pieces.append(_html_text(token.content))
    text = " ".join(pieces)
    # Inline HTML inside paragraphs reaches us as separate tags; the text between them is
    # already kept, and anything tag-like left over (an unclosed `<a href=…`) goes here.
    text = re.sub(r"<[^>\n]*>?", " ", text)
    text = _URL.sub(" ", text)
    return _EMAIL_ADDRESS.sub(" ", text)


def _traditional(text: str) -> bool:
    """Whether Chinese prose is written in Traditional characters (clearly more of them)."""
    simplified = sum(1 for c in text if c in _SIMPLIFIED)
    traditional = sum(1 for c in text if c in _TRADITIONAL)
    return traditional >= 3 and traditional > 2 * simplified


def count(text: str) -> Counts:
    return Counts(
        han=len(_HAN_CHAR.findall(text)),
        kana=len(_KANA_CHAR.findall(text)),
        hangul=len(_HANGUL_CHAR.findall(text)),
        latin=len(_WORD.findall(text)),
    )


# the decision ----------------------------------------------------------------------------
def detect(markdown_body: str, fallback: str) -> Choice:
    """The language of the prose: 'zh' when Chinese words are the majority, else `fallback`.

    A text that is mostly Latin-script words keeps the newsletter's own language (we cannot
    tell English from French here), unless that language is Chinese, Japanese or Korean,
    in which case it is 'en'. Japanese (kana) and Korean (hangul) are not Chinese.
    """
    text = prose(markdown_body)
    counts = count(text)
    total = counts.total
    if total < MIN_WORDS:
        return Choice(fallback, f"the setting: too little prose to tell ({total} words)")
    cjk = counts.han + counts.kana + counts.hangul
    han_share = counts.han / total
    cjk_share = cjk / total
    warnings: list[str] = []
    if cjk_share > 0.5 and (counts.kana > counts.han * 0.1 or counts.hangul > counts.han):
        script = "Japanese" if counts.kana >= counts.hangul else "Korean"
        return Choice(fallback, f"the setting: the prose looks {script}, which is not "
                      "detected; set `lang` in the front matter", share=han_share)
    if han_share > 0.5:
        lang = "zh"
        reason = f"detected: {han_share:.0%} of prose words are Chinese"
        if _traditional(text):
            lang = "zh-Hant"
            reason += ", in Traditional characters"
    else:
        lang = fallback
        if fallback.split("-")[0].lower() in CJK_LANGUAGES:
            lang = "en"
        reason = f"detected: {1 - han_share:.0%} of prose words are not Chinese"
    if abs(han_share - 0.5) < CLOSE_MARGIN:
        warnings.append(
            f"the language is a close call ({han_share:.0%} of {total} prose words are "
            f"Chinese); chose '{lang}'. Set `lang:` in the front matter to be sure")
    return Choice(lang, reason, tuple(warnings), han_share)


def choose(issue, settings) -> Choice:
    """The front matter's `lang`, else the language of the prose, else the setting."""
    if issue.lang:
        return Choice(issue.lang, "front matter")
    return detect(issue.body, settings.language)


# template strings ------------------------------------------------------------------------
def strings_name(lang: str, available: list[str]) -> tuple[str | None, str]:
    """Which strings file speaks `lang`, and a warning when it is only an approximation.

    An exact file wins (`pt-BR.toml`); Chinese tags go by script (zh-TW, zh-HK, zh-Hant →
    zh-Hant; zh-CN, zh-SG, zh-Hans → zh); any other tag falls back to its base language
    with a warning. None when not even the base language has strings.
    """
    by_lower = {name.lower(): name for name in available}
    tag = lang.lower()
    if tag in by_lower:
        return by_lower[tag], ""
    if tag.startswith(TRADITIONAL_CHINESE) and "zh-hant" in by_lower:
        return by_lower["zh-hant"], ""
    if tag.startswith(SIMPLIFIED_CHINESE) and "zh" in by_lower:
        return by_lower["zh"], ""
    if tag.startswith(TRADITIONAL_CHINESE):
        # Never Simplified strings for a Traditional tag without saying so.
        if "zh" in by_lower:
            return by_lower["zh"], (f"no Traditional Chinese template strings for '{lang}': "
                                    "using Simplified Chinese (add strings/zh-Hant.toml)")
        return None, ""
    base = tag.split("-")[0]
    if base in by_lower:
        return by_lower[base], (f"no template strings for '{lang}': using '{by_lower[base]}' "
                                f"(add strings/{lang}.toml to silence this)")
    return None, ""


def require_strings_name(lang: str, available: list[str], folder) -> tuple[str, str]:
    name, warning = strings_name(lang, available)
    if name is None:
        known = ", ".join(available) or "none"
        raise InputError(
            f"no template strings for language '{lang}' (known: {known}); "
            f"add {lang.split('-')[0].lower()}.toml to {folder}"
        )
    return name, warning
