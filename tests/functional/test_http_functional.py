"""HTTP endpoints of a live node."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import aiohttp
import jwt

from huddle.process_metrics import process_collector
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
    cluster = (node.settings.redis_url or "").startswith("redis+cluster://")
    assert body["redis"]["mode"] == ("cluster" if cluster else "external")
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


async def test_metrics_report_the_nodes_process_cpu_and_memory(node: Node) -> None:
    """A load test on another machine reads the node's CPU and memory here."""
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
        text = await resp.text()
    samples = {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("huddle_process_")
    }
    assert samples['huddle_process_cpu_seconds_total{role="node"}'] > 0
    assert samples['huddle_process_resident_memory_bytes{role="node"}'] > 1_000_000
    assert 'huddle_process_cpu_seconds_total{role="redis"}' in samples


def test_process_collector_tells_the_embedded_redis_from_other_children() -> None:
    idle = [
        subprocess.Popen(
            [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
            stdout=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        # Measured once each runs Python: a child still starting up is not yet its size.
        for proc in idle:
            assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        collect = process_collector(lambda: idle[0].pid)
        families = {f.name: f for f in collect()}
        cpu = {s.labels["role"]: s.value for s in families["huddle_process_cpu_seconds"].samples}
        rss = {
            s.labels["role"]: s.value
            for s in families["huddle_process_resident_memory_bytes"].samples
        }
        assert set(cpu) == set(rss) == {"node", "redis", "workers"}
        assert cpu["node"] > 0
        # One child is the "Redis", the other two (and any the test runner has) are workers.
        assert rss["redis"] > 1_000_000
        assert rss["workers"] > 1.5 * rss["redis"]
    finally:
        for proc in idle:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


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


async def _raw_get(node: Node, path: str, *headers: bytes) -> tuple[int, dict[str, object]]:
    """GET ``path`` with header lines as given (bytes that are no UTF-8 included): the
    status and the JSON body."""
    host, port = node.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"GET {path} HTTP/1.1".encode(), b"Host: x", b"Connection: close", *headers]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_malformed_credentials_get_4xx_with_a_json_body(node: Node) -> None:
    """Tokens and signed URLs that are not what they should be: refused in words, as every
    bad request is (a server error before: a time in a string broke the expiry check, bytes
    that are no UTF-8 the token's decoding, a digit that is not ASCII the signed URL's)."""
    in_a_string = jwt.encode(
        {"iss": TEST_KEY, "sub": "ada", "exp": str(int(time.time()) + 600)},
        TEST_SECRET,
        algorithm="HS256",
    )
    for header in (f"Authorization: Bearer {in_a_string}".encode(), b"Authorization: Bearer \xff"):
        status, body = await _raw_get(node, "/v1/media/usage", header)
        assert (status, body["error"]["code"]) == (401, "unauthorized"), body  # type: ignore[index]
    status, body = await _raw_get(node, "/v1/media/m1?exp=%C2%B2&sig=abc")
    assert (status, body["error"]["code"]) == (403, "forbidden"), body  # type: ignore[index]
