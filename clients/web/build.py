"""The widget's build: src/ into one ES module (nps.mjs), one classic script (nps.js) and its type
declarations (nps.d.ts). Plain text work, so no JavaScript toolchain is needed: the module is the
core plus its export line; the classic script is the core and the script-tag glue in one function
scope. Comments and indentation are left out. Ingest serves what `build()` returns; `python -m
clients.web.build` writes it to dist/ (for npm), puts each script's size and subresource-integrity
hash in docs/widget.md, prints them, and fails when a script is over the 8 KiB gzipped budget."""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
SRC = HERE / "src"
BUDGET_GZIPPED = 8 * 1024
SCRIPTS = ("nps.mjs", "nps.js")


def version() -> str:
    found = re.search(r'^const VERSION = "([^"]+)";$', (SRC / "core.js").read_text(), re.M)
    if found is None:
        raise ValueError("src/core.js names no VERSION")
    return found.group(1)


def _compact(source: str) -> str:
    """Each line without its indentation; comment-only lines (// and a JSDoc block's) left out.
    Safe for this source: its only multi-line string is the CSS, where indentation means nothing."""
    kept = []
    for line in source.splitlines():
        text = line.strip()
        if not text or text.startswith(("//", "/**", "* ", "*/")) or text == "*":
            continue
        kept.append(text)
    return "\n".join(kept) + "\n"


def build() -> dict[str, bytes]:
    core = (SRC / "core.js").read_text()
    banner = f"/*! NPS feedback loop widget {version()} | docs/widget.md */\n"
    module = banner + _compact(core + (SRC / "module.js").read_text())
    classic = banner + '(function(){"use strict";\n' + _compact(core + (SRC / "classic.js").read_text()) + "})();\n"
    return {"nps.mjs": module.encode(), "nps.js": classic.encode(), "nps.d.ts": (SRC / "nps.d.ts").read_bytes()}


def gzipped(data: bytes) -> int:
    return len(gzip.compress(data, 9, mtime=0))


def integrity(data: bytes) -> str:
    """The `integrity` attribute's value for a <script> of these bytes."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


DOC = HERE.parents[1] / "docs" / "widget.md"
BEGIN, END = "<!-- widget-integrity:begin -->", "<!-- widget-integrity:end -->"


def integrity_table(built: dict[str, bytes]) -> str:
    rows = [
        f"| `/widget/{version()}/{name}` | {gzipped(built[name]):,} | `{integrity(built[name])}` |" for name in SCRIPTS
    ]
    return "\n".join(["| file | bytes gzipped | integrity |", "|---|---|---|", *rows])


def documented(doc: str, built: dict[str, bytes]) -> str:
    """docs/widget.md with this build's table between its markers."""
    head, rest = doc.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{integrity_table(built)}\n{END}{rest.split(END, 1)[1]}"


def main() -> int:
    built = build()
    if DOC.exists():
        DOC.write_text(documented(DOC.read_text(), built))
    out = HERE / "dist"
    out.mkdir(exist_ok=True)
    over = []
    for name, data in built.items():
        (out / name).write_bytes(data)
        if name in SCRIPTS:
            size = gzipped(data)
            print(f"{name:8} {len(data):6,} bytes, {size:5,} gzipped  {integrity(data)}")
            if size > BUDGET_GZIPPED:
                over.append(name)
    if over:
        print(f"over the {BUDGET_GZIPPED:,}-byte gzipped budget: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
