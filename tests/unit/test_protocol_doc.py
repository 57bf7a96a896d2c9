"""docs/protocol.md and docs/protocol.schema.json must agree with signaling/protocol.py.

The doc's conventions, which these tests rely on:
- message sections are level-3 headings of the form "### `TYPE`": requests under
  "## Client requests", events under "## Server events", and the error frame ("### `error`")
  under "## Errors";
- a request section has one line "Reply:" followed by a ```json block with the ``ok`` reply;
- every ```json block of a message section is a complete frame: the section's own type, an
  ``ok`` reply (only after "Reply:") or an ``error``;
- error codes are rows "| `code` | ..." under "### Error codes", close codes rows
  "| 4001 | `name` | ..." under "## Close codes", settings "| `name` | default | ..." under
  "## Limits and sizes".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from huddle.config import Settings
from signaling import protocol as p

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "protocol.md"
SCHEMA_PATH = ROOT / "docs" / "protocol.schema.json"
REGENERATE = ".venv/bin/python scripts/gen_schema.py"

REQUESTS_PART = "Client requests"
EVENTS_PART = "Server events"
ERRORS_PART = "Errors"
ERROR_CODES_HEADING = "Error codes"
CLOSE_CODES_HEADING = "Close codes"
LIMITS_HEADING = "Limits and sizes"

MESSAGE_HEADING = re.compile(r"^`([^`]+)`$")
ERROR_ROW = re.compile(r"^\|\s*`([a-z_]+)`\s*\|")
CLOSE_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([a-z_]+)`\s*\|")
SETTING_ROW = re.compile(r"^\|\s*`([a-z_]+)`\s*\|\s*([0-9.]+)\s*\|")


@dataclass
class JsonBlock:
    text: str
    line: int
    after_reply: bool  # a "Reply:" line precedes it in its section

    def load(self) -> Any:
        return json.loads(self.text)


@dataclass
class Section:
    level: int
    title: str
    part: str  # title of the enclosing "## " section (its own title for level 2)
    line: int
    lines: list[str] = field(default_factory=list)
    blocks: list[JsonBlock] = field(default_factory=list)
    reply_lines: int = 0

    @property
    def message_type(self) -> str | None:
        m = MESSAGE_HEADING.match(self.title) if self.level == 3 else None
        return m.group(1) if m else None


def parse_doc(text: str) -> list[Section]:
    """Split the doc into headed sections, with the ```json blocks of each."""
    sections: list[Section] = [Section(level=1, title="", part="", line=0)]
    part = ""
    fence: str | None = None
    block: list[str] = []
    block_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        current = sections[-1]
        if fence is not None:
            if line.strip() == "```":
                if fence == "json":
                    reply = current.reply_lines > 0
                    current.blocks.append(JsonBlock("\n".join(block), block_line, reply))
                fence = None
            else:
                block.append(line)
            continue
        if line.startswith("```"):
            fence = line[3:].strip()
            block, block_line = [], number
            continue
        heading = re.match(r"^(#{1,6}) (.+)$", line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2).strip()
            if level <= 2:
                part = title
            sections.append(Section(level=level, title=title, part=part, line=number))
            continue
        if line.strip() == "Reply:":
            current.reply_lines += 1
        current.lines.append(line)
    assert fence is None, "a code fence is not closed"
    return sections


@pytest.fixture(scope="module")
def sections() -> list[Section]:
    return parse_doc(DOC_PATH.read_text(encoding="utf-8"))


def message_sections(sections: list[Section], part: str) -> dict[str, Section]:
    found: dict[str, Section] = {}
    for s in sections:
        kind = s.message_type
        if kind is not None and s.part == part:
            assert kind not in found, f"`{kind}` is documented twice (line {s.line})"
            found[kind] = s
    return found


def section_titled(sections: list[Section], title: str) -> Section:
    matches = [s for s in sections if s.title == title]
    assert len(matches) == 1, f"expected one section titled {title!r}, found {len(matches)}"
    return matches[0]


def check_frame(raw: Any, cls: type[p.Message], where: str) -> p.Message:
    """``raw`` converts to ``cls`` and holds no field that ``cls`` would drop or change."""
    assert isinstance(raw, dict), f"{where}: a frame must be a JSON object"
    try:
        message = msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        pytest.fail(f"{where}: not a valid {cls.__name__}: {exc}")
    built = msgspec.to_builtins(message)
    extra = {k: v for k, v in raw.items() if built.get(k, object()) != v}
    assert not extra, f"{where}: fields unknown to {cls.__name__} or not kept as is: {extra}"
    return message


# --- headings ---------------------------------------------------------------------------


def test_every_client_request_has_a_section(sections: list[Section]) -> None:
    documented = set(message_sections(sections, REQUESTS_PART))
    expected = set(p.CLIENT_MESSAGES)
    assert documented == expected, (
        f"missing: {expected - documented}, extra: {documented - expected}"
    )


def test_every_server_event_has_a_section(sections: list[Section]) -> None:
    documented = set(message_sections(sections, EVENTS_PART))
    expected = set(p.SERVER_EVENTS)
    assert documented == expected, (
        f"missing: {expected - documented}, extra: {documented - expected}"
    )


def test_error_frame_section_and_no_stray_message_headings(sections: list[Section]) -> None:
    assert set(message_sections(sections, ERRORS_PART)) == {"error"}
    stray = [
        (s.line, s.title)
        for s in sections
        if s.message_type and s.part not in (REQUESTS_PART, EVENTS_PART, ERRORS_PART)
    ]
    assert not stray, f"message-style headings outside the message parts: {stray}"


# --- examples ---------------------------------------------------------------------------


def test_every_json_block_is_valid_json(sections: list[Section]) -> None:
    blocks = [b for s in sections for b in s.blocks]
    assert len(blocks) > 20
    for b in blocks:
        try:
            b.load()
        except json.JSONDecodeError as exc:
            pytest.fail(f"docs/protocol.md:{b.line}: invalid JSON: {exc}")


@pytest.mark.parametrize("kind", sorted(p.CLIENT_MESSAGES))
def test_request_section_examples(sections: list[Section], kind: str) -> None:
    section = message_sections(sections, REQUESTS_PART)[kind]
    assert section.reply_lines == 1, f"`{kind}` needs exactly one 'Reply:' line"
    requests = replies = 0
    for b in section.blocks:
        where = f"docs/protocol.md:{b.line}"
        raw = b.load()
        assert isinstance(raw, dict), f"{where}: not a frame"
        if raw.get("type") == "ok":
            assert b.after_reply, f"{where}: an ok reply must come after 'Reply:'"
            check_frame(raw, p.REPLIES[kind], where)
            replies += 1
        elif raw.get("type") == "error":
            error = check_frame(raw, p.Error, where)
            assert isinstance(error, p.Error)
            assert error.code in p.ERROR_CODES, f"{where}: unknown error code {error.code!r}"
        else:
            try:
                request = p.decode_request(b.text)
            except p.ProtocolError as exc:
                pytest.fail(f"{where}: example refused: {exc.code}: {exc.message}")
            assert isinstance(request, p.CLIENT_MESSAGES[kind]), f"{where}: not a `{kind}`"
            check_frame(raw, p.CLIENT_MESSAGES[kind], where)
            requests += 1
    assert requests >= 1, f"`{kind}` has no request example"
    assert replies >= 1, f"`{kind}` has no reply example"
    first_after_reply = next(b for b in section.blocks if b.after_reply)
    assert first_after_reply.load().get("type") == "ok", "the block after 'Reply:' is the reply"


@pytest.mark.parametrize("kind", sorted(p.SERVER_EVENTS))
def test_event_section_examples(sections: list[Section], kind: str) -> None:
    section = message_sections(sections, EVENTS_PART)[kind]
    assert section.blocks, f"`{kind}` has no example"
    for b in section.blocks:
        where = f"docs/protocol.md:{b.line}"
        event = check_frame(b.load(), p.SERVER_EVENTS[kind], where)
        assert isinstance(event, p.Event)
        assert event.seq >= 1, f"{where}: seq starts at 1"


def test_error_section_examples(sections: list[Section]) -> None:
    section = message_sections(sections, ERRORS_PART)["error"]
    assert section.blocks, "`error` has no example"
    for b in section.blocks:
        where = f"docs/protocol.md:{b.line}"
        error = check_frame(b.load(), p.Error, where)
        assert isinstance(error, p.Error)
        assert error.code in p.ERROR_CODES, f"{where}: unknown error code {error.code!r}"


def test_typed_examples_outside_message_sections_are_valid(sections: list[Section]) -> None:
    """Frames shown in the conventions sections must be valid too (``ok`` has no type info)."""
    checked = 0
    for s in sections:
        if s.message_type:
            continue
        for b in s.blocks:
            raw = b.load()
            kind = raw.get("type") if isinstance(raw, dict) else None
            where = f"docs/protocol.md:{b.line}"
            if kind in p.CLIENT_MESSAGES:
                assert isinstance(p.decode_request(b.text), p.CLIENT_MESSAGES[kind])
                check_frame(raw, p.CLIENT_MESSAGES[kind], where)
            elif kind in p.SERVER_EVENTS:
                check_frame(raw, p.SERVER_EVENTS[kind], where)
            elif kind == "error":
                check_frame(raw, p.Error, where)
            elif kind == "ok":
                check_frame(raw, p.Ok, where)
            else:
                continue
            checked += 1
    assert checked >= 3


def test_http_error_examples_have_the_json_error_shape(sections: list[Section]) -> None:
    bodies = [b.load() for s in sections if s.part == "HTTP endpoints" for b in s.blocks if b.text]
    errors = [body["error"] for body in bodies if isinstance(body, dict) and set(body) == {"error"}]
    assert len(errors) >= 3
    for error in errors:
        assert set(error) == {"code", "message"}
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


# --- tables -----------------------------------------------------------------------------


def test_error_code_table_lists_every_code(sections: list[Section]) -> None:
    table = section_titled(sections, ERROR_CODES_HEADING)
    rows = [m.group(1) for line in table.lines if (m := ERROR_ROW.match(line))]
    assert len(rows) == len(set(rows)), f"duplicate rows: {rows}"
    assert set(rows) == p.ERROR_CODES, (
        f"missing: {p.ERROR_CODES - set(rows)}, unknown: {set(rows) - p.ERROR_CODES}"
    )


def test_close_code_table_lists_every_code_with_its_number(sections: list[Section]) -> None:
    table = section_titled(sections, CLOSE_CODES_HEADING)
    rows = [(m.group(2), int(m.group(1))) for line in table.lines if (m := CLOSE_ROW.match(line))]
    documented = dict(rows)
    assert len(documented) == len(rows), f"duplicate rows: {rows}"
    expected = {k.lower(): v for k, v in vars(p.CloseCode).items() if not k.startswith("_")}
    assert documented == expected


def test_limits_table_matches_settings_defaults(sections: list[Section]) -> None:
    table = section_titled(sections, LIMITS_HEADING)
    rows = {m.group(1): m.group(2) for line in table.lines if (m := SETTING_ROW.match(line))}
    for required in ("max_frame_bytes", "rate_per_s", "rate_burst", "flood_strikes"):
        assert required in rows, f"{required} missing from the limits table"
    for name, value in rows.items():
        assert name in Settings.model_fields, f"{name} is not a setting"
        default = Settings.model_fields[name].default
        assert float(value) == float(default), f"{name}: doc says {value}, default is {default}"


# --- the checked-in schema --------------------------------------------------------------


def test_checked_in_schema_matches_the_types() -> None:
    assert SCHEMA_PATH.exists(), f"{SCHEMA_PATH} is missing: generate it with `{REGENERATE}`"
    checked_in = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    current = json.loads(json.dumps(p.json_schema()))
    assert checked_in == current, (
        f"docs/protocol.schema.json is stale: regenerate it with `{REGENERATE}`"
    )


def test_schema_lists_the_registries() -> None:
    schema = p.json_schema()
    assert set(schema["client_messages"]) == set(p.CLIENT_MESSAGES)
    assert set(schema["server_events"]) == set(p.SERVER_EVENTS)
    assert schema["replies"] == {k: v.__name__ for k, v in p.REPLIES.items()}
    assert set(schema["error_codes"]) == p.ERROR_CODES
    for kind, name in [*schema["client_messages"].items(), *schema["server_events"].items()]:
        definition = schema["$defs"][name]
        assert definition["properties"]["type"] == {"enum": [kind]}
    for name in schema["replies"].values():
        assert schema["$defs"][name]["properties"]["type"] == {"enum": ["ok"]}


# --- the parser itself ------------------------------------------------------------------


def test_parser_finds_headings_blocks_and_replies() -> None:
    doc = "\n".join(
        [
            "## Client requests",
            "### `ping`",
            "```json",
            '{"id": "p", "type": "ping"}',
            "```",
            "Reply:",
            "```json",
            '{"type": "ok", "re": "p", "server_time_ms": 1}',
            "```",
            "```text",
            "### `not-a-heading`",
            "```",
            "## Server events",
            "### `auth.expiring`",
        ]
    )
    parsed = parse_doc(doc)
    assert set(message_sections(parsed, REQUESTS_PART)) == {"ping"}
    assert set(message_sections(parsed, EVENTS_PART)) == {"auth.expiring"}
    ping = message_sections(parsed, REQUESTS_PART)["ping"]
    assert [b.after_reply for b in ping.blocks] == [False, True]
    assert ping.reply_lines == 1
    with pytest.raises(AssertionError, match="fields unknown"):
        check_frame({"id": "p", "type": "ping", "extra": 1}, p.Ping, "x")
