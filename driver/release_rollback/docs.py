"""Pages of docs/ generated from the code's own data: ``python -m release_rollback.docs [DOCS_DIR]``.

``docs/lifecycle.md`` is the run lifecycle (module_utils/lifecycle.py): its state diagram, what each
state prints next, and which command each state allows. A test keeps the committed page equal to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import content

PAGES = {"lifecycle.md": lambda: content.module_utils("lifecycle").markdown()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    docs = Path(args[0]) if args else Path(__file__).resolve().parents[2] / "docs"
    for name, render in PAGES.items():
        (docs / name).write_text(render())
        print(f"wrote {docs / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
