"""Two real node processes sharing one real Redis behave as one service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from huddle.client import HuddleClient
from signaling import protocol as p
from tests.functional.test_presence_functional import next_presence
from tests.helpers import NodeProcess, make_token

FAST_PRESENCE = ["--presence-ttl-s", "2", "--presence-refresh-s", "0.5",
                 "--presence-sweep-s", "0.25"]  # fmt: skip


@pytest.fixture
def two_nodes(redis_url: str, redis_client: object, tmp_path: Path) -> Iterator[list[NodeProcess]]:
    nodes = [
        NodeProcess(tmp_path / f"n{i}", redis_url=redis_url, args=FAST_PRESENCE) for i in range(2)
    ]
    try:
        yield nodes
    finally:
        for n in nodes:
            n.close()


async def test_presence_across_processes_and_crash(two_nodes: list[NodeProcess]) -> None:
    a, b = two_nodes
    health_a = await a.wait_healthy()
    health_b = await b.wait_healthy()
    assert health_a["node"] != health_b["node"]
    async with (
        HuddleClient(b.url, make_token("bob")) as bob,
        HuddleClient(a.url, make_token("alice")) as alice,
    ):
        await bob.hello()
        await bob.request(p.PresenceSubscribe(id="", users=["alice", "carol"]))
        await alice.hello(device="phone")
        online = await next_presence(bob, "alice", "online")
        assert [d.device for d in online.devices] == ["phone"]
        assert (await alice.request(p.Ping(id=""))).server_time_ms > 0

        # Carol connects to node A, which then dies without a word (SIGKILL).
        async with HuddleClient(a.url, make_token("carol")) as carol:
            await carol.hello()
            await next_presence(bob, "carol", "online")
            killed_at = time.monotonic()
            a.kill()
            offline = await next_presence(bob, "carol", "offline", timeout=10)
            took = time.monotonic() - killed_at
        # TTL 2 s + sweep 0.25 s: well inside the 60 s the issue allows at default settings.
        assert took < 6, took
        assert offline.devices == []
        assert offline.last_seen_ms is not None
        # Node B and its clients are unaffected.
        assert (await bob.request(p.Ping(id=""))).server_time_ms > 0
