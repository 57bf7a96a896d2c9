"""The command line shared by the scripts that write a checked-in file from the code
(gen_schema.py, gen_sdk_types.py): no argument rewrites it, ``--check`` exits 1 while it
is stale, ``-`` prints it."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(argv: list[str], path: Path, text: str, script: str, usage: str) -> int:
    if argv == ["-"]:
        sys.stdout.write(text)
        return 0
    if argv == ["--check"]:
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run scripts/{script}", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(usage, file=sys.stderr)
        return 2
    path.write_text(text)
    print(f"wrote {path.relative_to(Path(__file__).resolve().parent.parent)}", file=sys.stderr)
    return 0
