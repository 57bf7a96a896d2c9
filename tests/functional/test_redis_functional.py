"""The embedded Redis and recovery from a Redis outage, with real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from huddle.chat import ChatClient
from huddle.client import HuddleClient, RequestError
from huddle.redis_server import spawn_sync
from signaling import protocol as p
from signaling.keys import conv_key, media_owner_key
from signaling.redis_client import RedisClient
from tests.conftest import StartNode
from tests.functional.test_presence_functional import next_presence
from tests.helpers import NodeProcess, make_token


async def _health(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        return resp.status, await resp.json()


async def _media_usage(url: str, user: str) -> tuple[int, dict[str, Any], str | None]:
    """``GET /v1/media/usage`` as ``user``: its status, body and ``Retry-After``."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{url}/v1/media/usage", headers={"Authorization": f"Bearer {make_token(user)}"}
        ) as resp,
    ):
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def _wait_health(url: str, status: int, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = await _health(url)
        if code == status:
            return body
        assert time.monotonic() < deadline, f"health stayed {code}: {body}"
        await asyncio.sleep(0.05)


async def test_embedded_redis_lifecycle_restart_and_persistence(tmp_path: Path) -> None:
    data = tmp_path / "data"
    node = NodeProcess(data, redis_url=None)
    try:
        health = await node.wait_healthy()
        assert health["redis"]["mode"] == "embedded"
        redis_pid = health["redis"]["pid"]
        child = psutil.Process(redis_pid)
        assert child.ppid() == node.proc.pid
        assert "redis-server" in child.name()
        # Unix socket only: the embedded Redis listens on no TCP port.
        assert not [c for c in child.net_connections(kind="tcp") if c.status == "LISTEN"]

        async with HuddleClient(node.url, make_token("watcher")) as watcher:
            await watcher.hello()
            await watcher.request(p.PresenceSubscribe(id="", users=["alice"]))
            async with HuddleClient(node.url, make_token("alice")) as alice:
                await alice.hello()
            # Alice's departure is written (and published) before Redis is killed...
            await next_presence(watcher, "alice", "offline")
        # ...and on disk: with `appendfsync everysec` Redis may hold an append back for up
        # to two seconds while a background fsync runs; a kill loses at most that.
        await asyncio.sleep(2.5)
        # Kill Redis: the node restarts it and keeps serving.
        os.kill(redis_pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:
            code, body = await _health(node.url)
            if code == 200 and body["redis"]["pid"] not in (None, redis_pid):
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)
        assert body["redis"]["restarts"] == 1
        async with HuddleClient(node.url, make_token("bob")) as bob:
            await bob.hello()
            reply = await bob.request(p.PresenceSubscribe(id="", users=["alice"]))
            seen_before = reply.presence[0].last_seen_ms
            assert reply.presence[0].status == "offline"
            assert seen_before is not None  # written before the kill, kept by the AOF
        # A clean stop stops Redis too, and the data survives a node restart.
        assert node.terminate() == 0
        assert not psutil.pid_exists(body["redis"]["pid"]) or (
            psutil.Process(body["redis"]["pid"]).status() == psutil.STATUS_ZOMBIE
        )
        assert any((data / "redis" / "appendonlydir").iterdir())
    finally:
        node.close()

    again = NodeProcess(data, redis_url=None)
    try:
        await again.wait_healthy()
        async with HuddleClient(again.url, make_token("bob")) as bob:
            await bob.hello()
            reply = await bob.request(p.PresenceSubscribe(id="", users=["alice"]))
            assert reply.presence[0].last_seen_ms == seen_before
    finally:
        again.close()


async def test_external_redis_outage_degrades_and_recovers(tmp_path: Path) -> None:
    redis_dir = tmp_path / "redis"
    proc, url = spawn_sync(redis_dir)
    node = NodeProcess(tmp_path / "node", redis_url=url)
    try:
        health = await node.wait_healthy()
        assert health["redis"]["mode"] == "external"
        async with HuddleClient(node.url, make_token("bob")) as bob:
            await bob.hello()
            await bob.request(p.PresenceSubscribe(id="", users=["alice"]))

            proc.terminate()
            proc.wait(10)
            degraded = await _wait_health(node.url, 503)
            assert degraded["status"] == "degraded"
            assert degraded["redis"]["reachable"] is False
            assert degraded["redis"]["pubsub"] is False
            # Requests needing Redis fail with a clear code meanwhile; the socket stays up.
            with pytest.raises(RequestError) as refused:
                await bob.request(p.PresenceSubscribe(id="", users=["carol"]), timeout=15)
            assert refused.value.code == "unavailable", refused.value
            assert (await bob.request(p.Ping(id=""))).server_time_ms > 0
            # HTTP alike: 503 with the same code, not a 500 "internal".
            status, body, retry_after = await _media_usage(node.url, "bob")
            assert status == 503, body
            assert body["error"]["code"] == "unavailable"
            assert retry_after is not None

            proc, _ = spawn_sync(redis_dir)
            healthy = await _wait_health(node.url, 200)
            assert healthy["redis"]["pubsub"] is True
            async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
                assert "huddle_redis_pubsub_restored_total 1.0" in await resp.text()
            # Pub/sub resubscribed by itself: bob hears alice connect after the outage.
            deadline = time.monotonic() + 10
            async with HuddleClient(node.url, make_token("alice")) as alice:
                await alice.hello()
                state = await next_presence(bob, "alice", "online", timeout=10)
            assert time.monotonic() < deadline
            assert state.devices
    finally:
        node.close()
        proc.terminate()
        proc.wait(10)


async def test_chat_messages_survive_a_redis_kill_with_fsync_always(tmp_path: Path) -> None:
    """With `--redis-fsync always` every acknowledged message is on disk before its reply:
    killing the embedded Redis right after the last send loses none of them."""
    node = NodeProcess(
        tmp_path / "data",
        redis_url=None,
        args=["--redis-fsync", "always", "--chat-send-per-s", "1000"],
    )
    try:
        health = await node.wait_healthy()
        redis_pid = health["redis"]["pid"]
        async with HuddleClient(node.url, make_token("alice")) as ws:
            await ws.hello()
            alice = ChatClient(ws)
            conv = (await alice.create("group", "durable", [])).conv
            sent = [await alice.send(conv, f"m{i}") for i in range(40)]
        os.kill(redis_pid, signal.SIGKILL)  # no pause: nothing had time to be synced later
        deadline = time.monotonic() + 15
        while True:
            code, body = await _health(node.url)
            if code == 200 and body["redis"]["pid"] not in (None, redis_pid):
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)
        async with HuddleClient(node.url, make_token("alice")) as ws:
            await ws.hello()
            history = await ChatClient(ws).history(conv, limit=100)
        assert [m.seq for m in history if m.kind == "text"] == [s.seq for s in sent]
    finally:
        node.close()


async def test_embedded_redis_shows_a_new_pid_only_with_its_restart_counted(
    tmp_path: Path,
) -> None:
    """/healthz reads pid and restarts together: a new pid never shows beside the old count."""
    from huddle.redis_server import EmbeddedRedis

    embedded = EmbeddedRedis(tmp_path)
    await embedded.start()
    try:
        old_pid = embedded.pid
        assert old_pid is not None and embedded.restarts == 0
        os.kill(old_pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        seen_none = False
        while embedded.pid in (None, old_pid):
            seen_none = seen_none or embedded.pid is None
            assert time.monotonic() < deadline, "redis was not restarted"
            assert embedded.restarts == 0
            await asyncio.sleep(0.001)
        # The first moment the new pid is visible, the restart is already counted.
        assert embedded.restarts == 1
        assert seen_none
        assert embedded.running
    finally:
        await embedded.stop()


async def test_a_redis_error_that_is_no_outage_fails_the_request_as_internal(
    start_node: StartNode, redis_client: RedisClient
) -> None:
    """Only Redis out of reach (or failing over) is worth a retry: a script that fails on a key
    of the wrong type fails the same way every time, and a client told "unavailable" would
    retry it forever. The node goes on serving everything else."""
    node = await start_node()
    alice = ChatClient(await node.client("alice"))
    await alice.sync()
    broken = (await alice.create("group", "broken", [])).conv
    fine = (await alice.create("group", "fine", [])).conv
    await redis_client.delete(conv_key(broken, "members"))
    await redis_client.set(conv_key(broken, "members"), "not a hash")

    with pytest.raises(RequestError) as failed:
        await alice.send(broken, "hello")
    assert failed.value.code == "internal", failed.value
    # HTTP alike: a 500 "internal", not a 503 with Retry-After.
    assert alice.client.hello_reply is not None
    user = alice.client.hello_reply.identity
    await redis_client.set(media_owner_key(user, "media_uploads"), "not a hash")
    status, body, retry_after = await _media_usage(node.url, "alice")
    assert status == 500, body
    assert body["error"]["code"] == "internal"
    assert retry_after is None
    sent = await alice.send(fine, "still here")
    assert sent.seq > 1
