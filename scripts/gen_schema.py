"""Write docs/protocol.schema.json from the protocol types (``signaling.protocol.json_schema``).

    .venv/bin/python scripts/gen_schema.py          # rewrite the checked-in schema
    .venv/bin/python scripts/gen_schema.py --check  # exit 1 if it is stale
    .venv/bin/python scripts/gen_schema.py -        # print it instead

tests/unit/test_protocol_doc.py fails while the checked-in file differs from the types.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from signaling.protocol import json_schema  # noqa: E402

SCHEMA_PATH = ROOT / "docs" / "protocol.schema.json"


def render() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["-"]:
        sys.stdout.write(text)
        return 0
    if argv == ["--check"]:
        current = SCHEMA_PATH.read_text() if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH} is stale: run scripts/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
