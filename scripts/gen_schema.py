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
sys.path.insert(0, str(ROOT / "scripts"))

from generated import write_or_check  # noqa: E402

from signaling.protocol import json_schema  # noqa: E402

SCHEMA_PATH = ROOT / "docs" / "protocol.schema.json"


def render() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    return write_or_check(argv, SCHEMA_PATH, render(), "gen_schema.py", __doc__ or "")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
