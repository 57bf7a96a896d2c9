"""Slow HTTP clients against a live node: headers that never finish and bodies that stall
are cut off in the configured time, while other clients stay answered throughout."""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import time

import aiohttp
import pytest

from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import Node, make_token

HEADER_S = 1.5
BODY_S = 1.0
# Bounds for "closed within the configured time": generous, the machine is shared.
MARGIN_S = 3.0
SLOW_CONNECTIONS = 300

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis_any(
        "HTTP and WebSocket handshakes cut off by the node: no Redis in what it checks"
    ),
]


def _fd_budget(wanted: int) -> int:
    """Slow connections this process can hold (each is two descriptors: client and node),
    with the soft descriptor limit raised towards the hard one if it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * wanted + 256
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(0, min(wanted, (soft - 256) // 2))


async def _read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> bytes | None:
    """Everything the node sends until it closes; None if still open after ``limit_s``."""
    data = b""
    try:
        async with asyncio.timeout(limit_s):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


async def _slow_headers(port: int, i: int) -> tuple[float, bytes | None]:
    """Headers sent a byte every 0.25 s, never finished: seconds until the node closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    head = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: {'a' * 200}".encode()

    async def trickle() -> None:
        for byte in head:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.25)

    sender = asyncio.create_task(trickle())
    try:
        data = await _read_until_closed(reader, HEADER_S + 2 * MARGIN_S)
    finally:
        sender.cancel()
        writer.close()
    return time.monotonic() - opened, data


async def _stalled_upload(port: int, token: str, i: int) -> tuple[float, bytes | None]:
    """An upload whose body comes a byte every 2.5x the idle timeout after a first chunk:
    seconds from that chunk until the node closed, and what it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /v1/media?name=slow{i}.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n"
        "Content-Length: 100000\r\n\r\n".encode()
        + b"x" * 100
    )
    sent = time.monotonic()

    async def trickle() -> None:
        while True:
            await asyncio.sleep(2.5 * BODY_S)
            writer.write(b"x")

    sender = asyncio.create_task(trickle())
    try:
        data = await _read_until_closed(reader, BODY_S + 2 * MARGIN_S)
    finally:
        sender.cancel()
        writer.close()
    return time.monotonic() - sent, data


async def _steady(node: Node, token: str, stop: asyncio.Event) -> list[float]:
    """Another client's health checks and authenticated requests, round after round:
    the seconds each round took."""
    rounds: list[float] = []
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            started = time.monotonic()
            async with http.get(f"{node.url}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{node.url}/v1/media/usage", headers=auth) as resp:
                assert resp.status == 200
                assert "quota" in await resp.json()
            rounds.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
    return rounds


def _counter(metrics: str, kind: str) -> float:
    prefix = f'huddle_http_timeouts_total{{kind="{kind}"}} '
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"no {prefix!r} in /metrics")


async def test_slow_headers_and_stalled_bodies_are_cut_off_while_others_are_served(
    start_node: StartNode,
) -> None:
    count = _fd_budget(SLOW_CONNECTIONS)
    assert count >= 100, "too few file descriptors for the test"
    node = await start_node(http_header_timeout_s=HEADER_S, http_body_idle_s=BODY_S)
    token = make_token("mallory")
    # A WebSocket is upgraded: neither deadline applies to it.
    watcher = await node.client("carol")

    stop = asyncio.Event()
    steady = asyncio.create_task(_steady(node, make_token("alice"), stop))
    headers = [_slow_headers(node.port, i) for i in range(count // 2)]
    bodies = [_stalled_upload(node.port, token, i) for i in range(count - count // 2)]
    results = await asyncio.gather(*headers, *bodies)
    stop.set()
    rounds = await steady

    header_results, body_results = results[: len(headers)], results[len(headers) :]
    for took, data in header_results:
        assert data is not None, "a connection whose headers never ended stayed open"
        assert data == b"", "a request with unfinished headers got an answer"
        assert took < HEADER_S + MARGIN_S
    for took, data in body_results:
        assert data is not None, "an upload whose body stalled stayed open"
        assert data.startswith(b"HTTP/1.1 408 "), data[:200]
        body = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "request_timeout"
        assert took < BODY_S + MARGIN_S

    # The other client was answered all along, and promptly: a node held up by the slow
    # connections would answer it only as their deadlines passed (a round of HEADER_S or
    # more). The worst round is bounded more loosely: it can come while this very process
    # opens the slow connections (measured 2.3 s once, the machine's load at 7 on 2 cores).
    assert len(rounds) >= 10
    assert statistics.median(rounds) < 0.5, rounds
    assert max(rounds) < HEADER_S + MARGIN_S, rounds

    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
        metrics = await resp.text()
    assert _counter(metrics, "header") >= len(headers)
    assert _counter(metrics, "body") >= len(bodies)

    reply = await watcher.request(p.PresenceSubscribe(id="", users=["alice"]))
    assert isinstance(reply, p.PresenceSubscribeOk)


async def test_stalled_json_body_gets_408_and_idle_keepalive_is_closed(
    start_node: StartNode,
) -> None:
    node = await start_node(http_header_timeout_s=HEADER_S, http_body_idle_s=BODY_S)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(
            b"POST /v1/dev/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n"
            b'{"name": '
        )
        sent = time.monotonic()
        data = await _read_until_closed(reader, BODY_S + 2 * MARGIN_S)
    finally:
        writer.close()
    assert data is not None, "a JSON body that stalled stayed open"
    assert data.startswith(b"HTTP/1.1 408 ")
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
    assert time.monotonic() - sent < BODY_S + MARGIN_S

    # A keep-alive connection has the header deadline from the end of its last response.
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        answered = time.monotonic()
        writer.write(b"GET /heal")
        rest = await _read_until_closed(reader, HEADER_S + 2 * MARGIN_S)
    finally:
        writer.close()
    assert rest == b"", "an idle keep-alive connection with unfinished headers stayed open"
    assert HEADER_S * 0.8 < time.monotonic() - answered < HEADER_S + MARGIN_S
