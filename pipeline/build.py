"""`publish build`: an issue file in, email.html + email.txt + email.eml out, all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import (
    _codecache,  # noqa: F401  first: what the modules below compile comes from kept code
    _regexcache,  # noqa: F401  (imported by _codecache first)
    check,
    embeds,
    headline,
    images,
    language,
    lazy,
    markdown,
    message,
    plaintext,
    render,
    templates,
    tidy,
    tokens,
    unsubscribe,
)
from . import issue as issue_mod
from .errors import InputError, PublishError
from .issue import Issue
from .render import Email
from .settings import Settings


@dataclass
class Built:
    """A rendered issue, before anything is written."""

    issue: Issue
    email: Email
    # The email-safe body before the template, for services that take their own format.
    fragment: str
    # The files as the editor sees them: tokens filled with preview values.
    html: str
    text: str
    cards: list[embeds.Card]
    images: int
    preview_values: dict[str, str]
    # Why the email is in its language ("front matter", "detected: 95% of prose words …").
    lang_reason: str = ""
    warnings: list[str] = field(default_factory=list)
    findings: list[check.Finding] = field(default_factory=list)

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))


@dataclass
class BuildResult:
    """A build written: what was built and the files it wrote."""

    built: Built
    out_dir: Path
    files: dict[str, Path]

    def summary(self) -> dict:
        email = self.built.email
        return {
            "title": self.built.issue.title,
            "issue": str(self.built.issue.path),
            "lang": email.lang,
            "lang_reason": self.built.lang_reason,
            "preheader": email.preheader,
            "html_bytes": self.built.html_bytes,
            "gmail_clip_bytes": check.GMAIL_CLIP,
            "images": self.built.images,
            "embeds_swapped": dict(Counter(card.kind for card in self.built.cards)),
            "warnings": self.built.warnings,
            "findings": [finding.as_dict() for finding in self.built.findings],
            "files": {name: str(path) for name, path in self.files.items()},
        }


def preview_values(settings: Settings, strings: dict[str, str]) -> dict[str, str]:
    """Token values for the built files, which are read by the editor, not a subscriber."""
    return {
        "unsubscribe_url": unsubscribe.url(settings.unsubscribe_url, settings.base_url,
                                           settings.sender_address, "preview"),
        "email": settings.sender_address,
        "name": strings["name_fallback"],
    }


def placeholder_findings(settings: Settings, service: str | None = None) -> list[check.Finding]:
    """Scaffold placeholders still in the settings: errors when `service` reaches real
    readers (it says so itself), warnings for a service that only writes local files."""
    from .settings import placeholders

    found = placeholders(settings)
    if not found:
        return []  # the common case: no need to load the services to ask
    from . import services

    try:
        real = services.reaches_readers(service or settings.service)
    except InputError:
        real = True
    severity = "error" if real else "warning"
    hint = ("set it in publish.toml before sending to real readers" if real else
            "fine for the local outbox; set it in publish.toml before a real send")
    return [check.Finding("placeholder-setting", severity, why, hint, where=f"setting {key}")
            for key, why in found]


def _embed_context(issue: Issue, settings: Settings, strings: dict[str, str], where,
                   look: tokens.Tokens | None = None):
    thumbs = issue.meta.get("media_thumbnails") or {}
    if not isinstance(thumbs, dict):
        raise InputError(
            "front matter 'media_thumbnails' must map media URLs to image URLs",
            issue.path,
            issue.meta_lines.get("media_thumbnails"),
        )
    embed_thumbnail = issue.meta.get("embed_thumbnail") or ""
    return embeds.EmbedContext(
        base_url=settings.base_url,
        strings=strings,
        where=where,
        source=str(issue.path),
        media_thumbnails={str(k): str(v) for k, v in thumbs.items()},
        embed_thumbnail=str(embed_thumbnail),
        look=look,
    )


def _too_deep(issue: Issue, exc: markdown.TooDeep) -> InputError:
    return InputError(f"{exc}; email cannot show that, and the text would be lost",
                      issue.path, issue.body_line + exc.line - 1)


def _fetch_image_sizes(settings: Settings) -> bool:
    if settings.image_sizes not in ("fetch", "local"):
        raise InputError(f"setting 'image_sizes' must be \"fetch\" or \"local\", "
                         f"not {settings.image_sizes!r}")
    return settings.image_sizes == "fetch"


def render_issue(path: str | Path, settings: Settings) -> Built:
    """Every stage from Markdown to the finished email, in memory."""
    lazy.defer(*lazy.UNUSED_BY_BUILD)
    lazy.entity_patterns_on_use()
    issue = issue_mod.load(path)
    folder = templates.templates_dir(settings.root, settings.templates_dir)
    look = tokens.load_tokens(settings.root / settings.templates_dir)
    try:
        choice = language.choose(issue, settings)  # parses the Markdown too
    except markdown.TooDeep as exc:
        raise _too_deep(issue, exc) from None
    lang = choice.lang
    try:
        strings = templates.strings(folder, lang)
        strings_warning = templates.resolve(folder, lang)[1]
    except InputError as exc:
        line = issue.meta_lines.get("lang") or issue.meta_lines.get("language")
        raise InputError(exc.message, issue.path if issue.lang else exc.path, line) from None

    def where(needle: str, nth: int = 0) -> str:
        return issue.where(issue.line_of(needle, nth))

    try:
        rendered = markdown.render(issue.body, strings, look)
    except markdown.TooDeep as exc:
        raise _too_deep(issue, exc) from None
    swapped = embeds.swap(rendered.html, _embed_context(issue, settings, strings, where, look))
    sizes = images.ImageSizes(settings.root, settings.base_url, settings.state_path,
                              timeout=min(images.TIMEOUT, settings.http_timeout_seconds),
                              network=_fetch_image_sizes(settings))
    tidied = tidy.tidy(swapped.html, settings.base_url, where, sizes, look)
    sizes.save()
    size_warning = sizes.warning(str(issue.path))
    if size_warning:
        tidied.warnings.append(size_warning)
    opening = headline.split(issue.title, tidied.html)
    text_body = plaintext.from_html(opening.fragment, strings)
    email = render.render(issue, opening.fragment, text_body, settings, folder, strings, lang,
                          headline=opening.headline, look=look)
    lang_line = issue.meta_lines.get("lang") or issue.meta_lines.get("language")
    lang_where = f"{issue.path}:{lang_line}" if lang_line else str(issue.path)
    language_warnings = [f"{lang_where}: {w}" for w in (*choice.warnings, strings_warning) if w]
    source_warnings = [f"{issue.where(line)}: {message}" for line, message in rendered.warnings]
    warnings = [*issue.warnings, *language_warnings, *source_warnings, *swapped.warnings,
                *tidied.warnings,
                *email.warnings]
    values = preview_values(settings, strings)
    built = Built(
        issue,
        email,
        fragment=opening.fragment,
        html=render.personalize(email.html, values, escape=True),
        text=render.personalize(email.text, values, escape=False),
        cards=swapped.cards,
        images=tidied.images,
        preview_values=values,
        lang_reason=choice.reason,
        warnings=warnings,
    )
    built.findings = check.check_html(
        built.html, text=built.text, subject=email.subject, preheader=email.preheader,
        postal_address=settings.postal_address, accept=check.accepted(settings.check_accept))
    built.findings += placeholder_findings(settings)
    return built


def preview_eml(built: Built, settings: Settings) -> bytes:
    """The message as the editor opens it: addressed to the sender, preview values filled."""
    template = message.MessageTemplate(
        built.email, sender=settings.sender, list_name=settings.name,
        unsubscribe_mailto=settings.unsubscribe_mailto,
        name_fallback=built.preview_values["name"],
    )
    return template.render(message.Recipient(settings.sender_address),
                           built.preview_values["unsubscribe_url"])


OUTPUT_FILES = ("email.html", "email.txt", "email.eml")
# Written into every folder publish makes for outputs: only such a folder is ever replaced.
MARKER = ".publish-output"
MARKER_TEXT = "Made by `publish build`; replaced whole by the next build. Keep nothing else here.\n"


def _refuse(out_dir: Path, why: str) -> InputError:
    return InputError(f"will not write the outputs here: {why}; nothing was changed "
                      "(give --out a new or empty folder)", out_dir)


def check_output_folder(out_dir: Path, settings: Settings, legacy_ok: bool = False) -> Path:
    """The resolved folder to replace, or InputError when replacing it could lose anything.

    Only a folder publish made (it holds the marker and nothing but outputs), an empty
    folder, or a folder that does not exist yet may be replaced. `legacy_ok` accepts an
    unmarked folder holding only output files (builds made before the marker existed).
    """
    resolved = out_dir.resolve()
    root = settings.root.resolve()
    protected = {
        root: "it is the newsletter folder",
        (root / settings.build_dir).resolve(): "it is the build folder, home of every issue",
        (root / settings.state_dir).resolve(): "it is the state folder",
        (root / settings.templates_dir).resolve(): "it is the templates folder",
    }
    if resolved in protected:
        raise _refuse(out_dir, protected[resolved])
    if resolved.parent == resolved or root.is_relative_to(resolved):
        raise _refuse(out_dir, "it holds the newsletter folder")
    if resolved.is_relative_to((root / settings.state_dir).resolve()):
        raise _refuse(out_dir, "it is inside the state folder")
    if not os.path.lexists(resolved):
        return resolved
    if not resolved.is_dir():
        raise _refuse(out_dir, "it is a file, not a folder")
    entries = list(resolved.iterdir())
    names = {entry.name for entry in entries}
    strangers = sorted(e.name for e in entries if e.name not in (MARKER, *OUTPUT_FILES)
                       or e.is_symlink() or not e.is_file())
    if strangers:
        shown = ", ".join(strangers[:3]) + (" …" if len(strangers) > 3 else "")
        raise _refuse(out_dir, f"it holds files publish did not make ({shown})")
    if entries and MARKER not in names and not legacy_ok:
        raise _refuse(out_dir, f"it was not made by publish (no {MARKER} file)")
    return resolved


def write_outputs(built: Built, settings: Settings, out_dir: Path,
                  legacy_ok: bool = False) -> dict[str, Path]:
    """Write the three files into a fresh folder beside `out_dir`, then swap it in whole.

    The folder replaced is only ever one publish made for outputs (see check_output_folder).
    """
    contents = {
        "email.html": built.html.encode("utf-8"),
        "email.txt": built.text.encode("utf-8"),
        "email.eml": preview_eml(built, settings),
        MARKER: MARKER_TEXT.encode("utf-8"),
    }
    out_dir = check_output_folder(out_dir, settings, legacy_ok)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as exc:
        raise PublishError(f"cannot write the outputs: {exc.strerror}", out_dir) from None
    try:
        for name, data in contents.items():
            (staging / name).write_bytes(data)
        old = None
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old)
        try:
            os.replace(staging, out_dir)
        except OSError:
            if old is not None:  # put the previous outputs back
                os.replace(old, out_dir)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise PublishError(f"cannot write the outputs: {exc.strerror}", out_dir) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return {name: out_dir / name for name in OUTPUT_FILES}


def build(path: str | Path, settings: Settings, out_dir: str | Path | None = None) -> BuildResult:
    """Build an issue into `out_dir` (default `build/<slug>/` in the newsletter folder)."""
    built = render_issue(path, settings)
    if out_dir:
        files = write_outputs(built, settings, Path(out_dir))
    else:
        target = settings.root / settings.build_dir / built.issue.slug
        files = write_outputs(built, settings, target, legacy_ok=True)
    return BuildResult(built, files["email.html"].parent, files)
