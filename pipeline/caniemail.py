"""Which mail clients lack a feature, from caniemail.com's data, compacted for `check`.

`data/caniemail.json` is the pinned full table (654 KB, every client and every test
date; see data/CANIEMAIL.md). `check` needs, per feature, only its title and which of
the clients it judges lack it in their latest test, so it reads a compact table made from
the full one (about 20 KB, read in a millisecond). After updating the full table:

    python -m pipeline.caniemail        # rewrites data/caniemail-compact.json

A test checks that the compact table is exactly what the full one says.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).with_name("data")
FULL = DATA / "caniemail.json"
COMPACT = DATA / "caniemail-compact.json"
# The clients `check` judges support for, as caniemail names them.
TARGETS = {
    ("gmail", "desktop-webmail"): "Gmail (web)",
    ("gmail", "ios"): "Gmail (iOS)",
    ("gmail", "android"): "Gmail (Android)",
    ("outlook", "windows"): "Outlook (Windows)",
    ("outlook", "macos"): "Outlook (macOS)",
    ("outlook", "outlook-com"): "Outlook.com",
    ("apple-mail", "macos"): "Apple Mail (macOS)",
    ("apple-mail", "ios"): "Apple Mail (iOS)",
    ("yahoo", "desktop-webmail"): "Yahoo (web)",
}


def lacking(feature: dict) -> list[str]:
    """The target clients whose latest test of `feature` says no (in TARGETS order)."""
    labels = []
    for (family, platform), label in TARGETS.items():
        versions = feature["stats"].get(family, {}).get(platform)
        if versions and list(versions.values())[-1].startswith("n"):
            labels.append(label)
    return labels


def compact(full: dict) -> dict:
    """The compact table for a full caniemail table: slug -> [title, lacking clients]."""
    return {
        "source": {key: full.get(key) for key in ("api_version", "last_update_date")},
        "features": {feature["slug"]: [feature["title"], lacking(feature)]
                     for feature in full["data"]},
    }


@lru_cache(maxsize=1)
def features() -> dict[str, tuple[str, list[str]]]:
    """slug -> (title, target clients lacking it), from the compact table."""
    table = json.loads(COMPACT.read_text("utf-8"))["features"]
    return {slug: (title, lacks) for slug, (title, lacks) in table.items()}


def write_compact() -> int:
    table = compact(json.loads(FULL.read_text("utf-8")))
    rows = [f"{json.dumps(slug)}: {json.dumps(row, ensure_ascii=False)}"
            for slug, row in sorted(table["features"].items())]
    COMPACT.write_text(f'{{"source": {json.dumps(table["source"])},\n"features": {{\n'
                       + ",\n".join(rows) + "\n}}\n", "utf-8")
    return len(rows)


if __name__ == "__main__":
    print(f"{COMPACT}: {write_compact()} features", file=sys.stderr)
