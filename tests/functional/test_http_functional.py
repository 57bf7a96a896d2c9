"""HTTP endpoints of a live node."""

from __future__ import annotations

import aiohttp

from signaling.auth import verify_token
from tests.conftest import StartNode
from tests.helpers import TEST_KEY, TEST_SECRET, Node


async def test_healthz_reports_node_and_redis(node: Node) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/healthz") as resp:
        body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ok"
    assert body["node"] == node.settings.node_id
    assert body["redis"]["reachable"] is True
    assert body["redis"]["mode"] == "external"
    assert body["uptime_s"] >= 0


async def test_metrics_count_connections_and_messages(node: Node) -> None:
    client = await node.client("alice")
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
        text = await resp.text()
    assert resp.status == 200
    assert "huddle_ws_connections 1.0" in text
    assert 'huddle_ws_messages_in_total{type="hello"} 1.0' in text
    assert 'huddle_ws_messages_out_total{kind="reply"} 1.0' in text
    assert "huddle_redis_up 1.0" in text
    await client.close()


async def test_dev_login_mints_token(node: Node) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{node.url}/v1/dev/login", json={"name": " Ada Lovelace "}) as resp:
            body = await resp.json()
        assert resp.status == 200
        claims = verify_token(body["token"], keys={TEST_KEY: TEST_SECRET})
        assert claims.identity == body["identity"] == "ada-lovelace"
        assert claims.name == "Ada Lovelace"
        bad_bodies = [
            (b"{", "bad_json"),
            (b'{"name": 5}', "invalid_field"),
            (b'{"name": "   "}', "invalid_field"),
            (b'{"name": "!!!"}', "invalid_field"),
        ]
        for bad, code in bad_bodies:
            async with http.post(f"{node.url}/v1/dev/login", data=bad) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == code


async def test_dev_login_off_in_production(start_node: StartNode) -> None:
    node = await start_node(env="production")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{node.url}/v1/dev/login", json={"name": "Ada"}) as resp,
    ):
        body = await resp.json()
    assert resp.status == 404
    assert body["error"]["code"] == "not_found"
    assert "token" not in body


async def test_unknown_paths_and_methods_get_json_errors(node: Node) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/nope") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"
        async with http.delete(f"{node.url}/healthz") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"]["code"] == "method_not_allowed"
        async with http.get(f"{node.url}/v1/ws") as resp:  # not an upgrade
            assert resp.status == 400
            assert "error" in await resp.json()
        async with http.get(f"{node.url}/") as resp:
            assert resp.status == 200
            assert "Huddle" in await resp.text()
