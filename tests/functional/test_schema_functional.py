"""GET /v1/schema on a live node serves the schema generated from the protocol types."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from signaling import protocol as p
from tests.helpers import Node

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol.schema.json"


async def test_schema_endpoint_serves_exactly_json_schema(node: Node) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/v1/schema") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body == json.loads(json.dumps(p.json_schema()))
    assert body["protocol"] == p.PROTOCOL_VERSION
    assert set(body["client_messages"]) == set(p.CLIENT_MESSAGES)
    assert set(body["server_events"]) == set(p.SERVER_EVENTS)


async def test_served_schema_is_the_checked_in_one(node: Node) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/v1/schema") as resp:
        body = await resp.json()
    checked_in = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert body == checked_in, "regenerate with `.venv/bin/python scripts/gen_schema.py`"


async def test_schema_needs_no_authentication_and_only_allows_get(node: Node) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.head(f"{node.url}/v1/schema") as resp:
            assert resp.status == 200
        async with http.post(f"{node.url}/v1/schema", json={}) as resp:
            assert resp.status == 405
            body = await resp.json()
    assert body["error"]["code"] == "method_not_allowed"
