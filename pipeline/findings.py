"""A finding of `publish check` or the build: what is wrong, where, and how to fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # error | warning
    message: str
    hint: str
    where: str = ""  # the element, as a short snippet
    file: str = ""  # the issue file and line a finding from the build points at
    line: int | None = None

    def __str__(self) -> str:
        at = f" at {self.where}" if self.where else ""
        place = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else "")
        return f"{place}{self.severity} {self.rule}: {self.message}{at} — {self.hint}"

    def as_dict(self) -> dict:
        return asdict(self)


def snippet(element) -> str:
    attrs = " ".join(f'{k}="{v if isinstance(v, str) else " ".join(v)}"'[:70]
                     for k, v in element.attrs.items() if k in ("src", "href", "id", "class"))
    return f"<{element.name}{' ' + attrs if attrs else ''}>"
