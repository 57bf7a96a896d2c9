"""huddle/web/sdk/types.js must be what scripts/gen_sdk_types.py makes of the schema."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_sdk_types", ROOT / "scripts" / "gen_sdk_types.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_sdk_types", module)
    spec.loader.exec_module(module)
    return module


def test_checked_in_sdk_types_are_current() -> None:
    gen = _generator()
    assert gen.main(["--check"]) == 0, "regenerate with `.venv/bin/python scripts/gen_sdk_types.py`"


def test_every_message_of_the_schema_has_a_typedef() -> None:
    gen = _generator()
    text = (ROOT / "huddle" / "web" / "sdk" / "types.js").read_text()
    schema = json.loads(gen.SCHEMA_PATH.read_text())
    for name in schema["$defs"]:
        assert f"@typedef {{object}} {name}\n" in text or f"}} {name}\n" in text, name


def test_types_follow_the_schema() -> None:
    gen = _generator()
    assert gen.js_type({"anyOf": [{"type": "string"}, {"type": "null"}]}) == "string | null"
    assert gen.js_type({"type": "array", "items": {"$ref": "#/$defs/ChatMessage"}}) == (
        "Array<ChatMessage>"
    )
    assert gen.js_type({"type": "object", "additionalProperties": {"type": "integer"}}) == (
        "Record<string, number>"
    )
    assert gen.js_type({"enum": ["online", "away"]}) == '"online" | "away"'
    lines = gen.typedef(
        "X",
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {}}, "required": ["a"]},
    )
    assert " * @property {number} a" in lines and " * @property {any} [b]" in lines
