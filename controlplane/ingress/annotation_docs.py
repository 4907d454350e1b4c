"""docs/annotations.md's key tables, generated from the families' declarations (`Family.fields`).

Each table sits between `<!-- keys: <family> -->` and `<!-- /keys -->`; the text around them is
written by hand. `python -m controlplane.ingress.annotation_docs` rewrites the tables in place;
tests/unit/test_annotation_docs.py fails when the document and the declarations disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from controlplane.ingress.annotations.base import Family
from controlplane.ingress.registry import FAMILIES

DOC = Path(__file__).resolve().parents[2] / "docs" / "annotations.md"
BLOCK = re.compile(r"<!-- keys: (?P<family>[a-z0-9-]+) -->\n.*?<!-- /keys -->", re.S)
HEADER = "| Key | Meridian / Envoy | Default | Difference |\n|---|---|---|---|\n"


def render(family: Family) -> str:
    rows = "".join(f"| {k.cell()} | {k.envoy} | {k.default} | {k.difference} |\n" for k in family.fields)
    return f"<!-- keys: {family.name} -->\n{HEADER}{rows}<!-- /keys -->"


def update(text: str) -> str:
    """`text` with every key table re-rendered from the declarations (unknown families raise)."""
    by_name = {f.name: f for f in FAMILIES}
    return BLOCK.sub(lambda m: render(by_name[m.group("family")]), text)


def families_in(text: str) -> list[str]:
    return [m.group("family") for m in BLOCK.finditer(text)]


def main() -> int:
    text = DOC.read_text()
    new = update(text)
    if "--check" in sys.argv[1:]:
        return 0 if new == text else 1
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
