"""Where each key of a TOML file is written, for errors that name the line.

tomllib returns values, not where they were; this reads the text once more, line by line,
for table headers and keys. Lines inside multi-line strings are skipped.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_.\"' -]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
                  r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The 1-based line of each table header and key in a TOML file, by key path.

    Only for pointing at a line in an error: tomllib gives values, not where they were.
    Lines inside multi-line strings are skipped.
    """
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string:
            if in_string in line:
                in_string = None
            continue
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith("[["):
            table = tuple(_parts(header.group(1)))
            found.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            path = (*table, *_parts(key.group(1)))
            found.setdefault(path, number)
            rest = line[key.end():]
            for quotes in ('"""', "'''"):
                if rest.count(quotes) == 1:
                    in_string = quotes
    return found


def _parts(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(
        r"\"[^\"]*\"|'[^']*'|[^.]+", dotted)]
