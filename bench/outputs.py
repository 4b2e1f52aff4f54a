"""Build every sample issue and corpus post, and compare the outputs with a kept snapshot.

Usage:
    python bench/outputs.py snapshot DIR   # build everything into DIR (keep it)
    python bench/outputs.py compare DIR    # build again, compare byte for byte with DIR

What is compared, per issue: email.html, email.txt, email.eml (its Date, Message-ID and
MIME boundary differ on every build, so they are masked), and summary.json (the build's
warnings and check findings). Exit 1 and a line per differing file when anything differs.
Image sizes are read from local files only (no network), as in the tests.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CORPUS = ROOT.parent / "shared" / "corpus"
FILES = ("email.html", "email.txt", "email.eml", "summary.json")
_VARYING = re.compile(rb"^(Date|Message-ID): .*$|=_publish_[0-9a-f]{24}", re.M)


def sources() -> list[Path]:
    posts = sorted(p for p in CORPUS.rglob("*.md") if p.name != "MANIFEST.md")
    return sorted((ROOT / "issues").glob("*.md")) + posts


def masked(name: str, data: bytes) -> bytes:
    return _VARYING.sub(b"<varies>", data) if name == "email.eml" else data


def build_all(into: Path) -> None:
    from pipeline import build, settings

    with tempfile.TemporaryDirectory() as state:
        config = settings.load(ROOT, env={"PUBLISH_IMAGE_SIZES": "local",
                                          "PUBLISH_STATE_DIR": state})
        for source in sources():
            out = into / f"{source.parent.name}--{source.stem}"
            result = build.build(source, config, out)
            summary = result.summary()
            summary.pop("files")
            summary["issue"] = source.name  # the same wherever the checkout is
            (out / "summary.json").write_text(
                json.dumps(summary, ensure_ascii=False, indent=1, sort_keys=True) + "\n", "utf-8")


def compare(kept: Path, fresh: Path) -> list[str]:
    differences = []
    for folder in sorted(p for p in kept.iterdir() if p.is_dir()):
        for name in FILES:
            old, new = folder / name, fresh / folder.name / name
            if not new.exists():
                differences.append(f"{folder.name}/{name}: missing")
                continue
            before, after = masked(name, old.read_bytes()), masked(name, new.read_bytes())
            if before != after:
                diff = difflib.unified_diff(
                    before.decode("utf-8", "replace").splitlines(),
                    after.decode("utf-8", "replace").splitlines(), lineterm="", n=0)
                shown = "\n    ".join(line[:160] for line in list(diff)[2:8])
                differences.append(f"{folder.name}/{name}: differs\n    {shown}")
    return differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("snapshot", "compare"))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    if args.action == "snapshot":
        args.folder.mkdir(parents=True, exist_ok=True)
        build_all(args.folder)
        print(f"built {len(sources())} issues into {args.folder}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build_all(Path(tmp))
        differences = compare(args.folder, Path(tmp))
    for line in differences:
        print(line)
    print(f"{len(sources())} issues, {len(differences)} differing file(s)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
