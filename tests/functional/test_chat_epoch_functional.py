"""Redis restored from an older snapshot under live devices: numbers are handed out again, and
every device still ends with the server's history exactly, through an explicit gap (reload
by page) and never a silent skip. Real redis-server with append-only persistence."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as redis
from aiohttp import web

from chat import wire as w
from huddle.app import create_app
from huddle.chat import ChatClient
from huddle.client import RequestError
from huddle.redis_server import spawn_sync
from tests import conftest
from tests.helpers import Node, eventually

FAST = {"chat_send_per_s": 1000, "rate_per_s": 1000, "rate_burst": 1000}
Line = tuple[int, str, str | None]  # seq, sender, text


@dataclass
class Redis:
    dir: Path
    proc: subprocess.Popen[bytes]
    url: str

    async def snapshot(self, dest: Path) -> None:
        """A consistent copy of the append-only files as they are now."""
        client = redis.Redis.from_url(self.url)
        try:
            await client.bgrewriteaof()
            while True:
                info = await client.info("persistence")
                if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                    break
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        _copy_aof(self.dir / "appendonlydir", dest)

    def restore(self, snapshot: Path) -> None:
        """Stop Redis, put the snapshot's files back, start it again on the same socket."""
        self.stop()
        shutil.rmtree(self.dir / "appendonlydir")
        shutil.copytree(snapshot, self.dir / "appendonlydir")
        self.proc, url = spawn_sync(self.dir)
        assert url == self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _copy_aof(aof: Path, dest: Path) -> None:
    """The files the manifest names: those of a finished rewrite still being deleted are not."""
    manifest = next(aof.glob("*.manifest"))
    dest.mkdir()
    shutil.copy(manifest, dest)
    for line in manifest.read_text().splitlines():
        shutil.copy(aof / line.split()[1], dest)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[Redis]:
    proc, url = spawn_sync(tmp_path / "r")
    r = Redis(tmp_path / "r", proc, url)
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
async def node(own_redis: Redis, tmp_path: Path) -> AsyncIterator[Node]:
    """A node of its own on that Redis."""
    settings = conftest.test_settings(own_redis.url, tmp_path / "node", **FAST)
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    node = Node(app=runner.app, runner=runner, settings=settings)
    try:
        yield node
    finally:
        await node.stop()


@dataclass
class Replica:
    """What a device shows: messages from events, and whole conversations reloaded by page
    whenever the server says the device's copy cannot be brought up to date by events."""

    chat: ChatClient
    convs: dict[str, dict[int, Line]] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)
    gaps: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.chat.client.on("chat.message", self._message)
        self.chat.on_gap = self._gap

    def _message(self, event: object) -> None:
        assert isinstance(event, w.ChatMessageEvent)
        m = event.message
        self.convs.setdefault(event.conv, {})[m.seq] = (m.seq, m.sender, m.text)

    def _gap(self, conv: str | None) -> None:
        self.gaps.append(conv)
        if conv is not None:
            self.stale.add(conv)

    async def settle(self) -> None:
        while self.stale:
            conv = self.stale.pop()
            self.convs[conv] = {m[0]: m for m in await history(self.chat, conv)}

    def lines(self, conv: str) -> list[Line]:
        return [self.convs.get(conv, {})[s] for s in sorted(self.convs.get(conv, {}))]


async def history(chat: ChatClient, conv: str) -> list[Line]:
    """Every message of ``conv`` the server has, by page."""
    out: list[Line] = []
    before: int | None = None
    while True:
        page = await chat.history(conv, limit=100, **({"before": before} if before else {}))
        out[:0] = [(m.seq, m.sender, m.text) for m in page]
        if len(page) < 100:
            return out
        before = page[0].seq


async def device(node: Node, user: str, name: str, **state: object) -> Replica:
    chat = ChatClient(await node.client(user, device=name), **state)  # type: ignore[arg-type]
    replica = Replica(chat)
    await chat.sync()
    return replica


def saved(r: Replica) -> dict[str, object]:
    c = r.chat
    return {"cursors": dict(c.cursors), "feed": c.feed, "epochs": dict(c.epochs),
            "feed_epoch": c.feed_epoch}  # fmt: skip


async def send(chat: ChatClient, conv: str | None, text: str, to: str | None = None) -> None:
    """Send, retrying with the same client id while the node's Redis comes back."""
    cid = f"cid-{text}"
    for _ in range(200):
        try:
            await chat.send(conv, text, to=to, client_id=cid)
            return
        except RequestError as exc:
            assert exc.code == "unavailable", exc
            await asyncio.sleep(0.05)
    raise AssertionError("Redis did not come back")


async def test_restored_snapshot_of_a_log_is_a_gap_for_every_device(
    own_redis: Redis, node: Node, tmp_path: Path
) -> None:
    alice = await device(node, "alice", "a")
    phone = await device(node, "bob", "phone")
    laptop = await device(node, "bob", "laptop")
    carol = await device(node, "carol", "c")
    conv = (await alice.chat.create("group", "g", ["bob", "carol"])).conv
    for i in range(3):
        await send(alice.chat, conv, f"kept {i}")
    devices = (phone, laptop, carol)
    head = 4
    await eventually(lambda: all(d.chat.cursors.get(conv) == head for d in devices))
    await own_redis.snapshot(tmp_path / "snap")

    for i in range(5):
        await send(alice.chat, conv, f"lost {i}")
    await eventually(lambda: all(d.chat.cursors.get(conv) == head + 5 for d in devices))
    away = saved(laptop)
    await laptop.chat.client.close()
    for i in range(3):
        await send(alice.chat, conv, f"lost later {i}")
    await eventually(lambda: phone.chat.cursors.get(conv) == head + 8)

    own_redis.restore(tmp_path / "snap")
    # More new events than were lost: the numbers pass every device's cursor again.
    for i in range(12):
        await send(alice.chat, conv, f"new {i}")
    server = await history(alice.chat, conv)
    assert [t for _, _, t in server][-1] == "new 11"
    assert not [t for _, _, t in server if t and t.startswith("lost")]

    back = await device(node, "bob", "laptop", **away)
    for d in (phone, carol, back):
        await eventually(lambda d=d: conv in d.gaps, timeout=15)  # type: ignore[misc]
        await d.settle()
        await eventually(lambda d=d: d.lines(conv) == server, timeout=15)  # type: ignore[misc]
    # Every event is numbered in the new epoch, and each device's cursor has caught up.
    assert len({d.chat.epochs[conv] for d in (phone, carol, back)}) == 1
    assert back.chat.epochs[conv] != away["epochs"][conv]  # type: ignore[index]
    await eventually(lambda: all(d.chat.cursors[conv] == len(server) for d in (phone, carol, back)))
    # A device that reconnects now has missed nothing: no gap, nothing replayed twice.
    again = await device(node, "bob", "phone2", **saved(phone))
    assert again.gaps == [] and again.chat.log == []
    await send(alice.chat, conv, "after")
    await eventually(lambda: again.lines(conv) == [(len(server) + 1, "alice", "after")])
    await eventually(lambda: phone.lines(conv) == [*server, (len(server) + 1, "alice", "after")])


async def test_a_log_lost_entirely_comes_back_with_a_new_epoch(
    own_redis: Redis, node: Node, tmp_path: Path
) -> None:
    """The snapshot is from before alice and bob's direct conversation (and bob's feed)
    existed: both are made again under the same ids, numbered from 1 again."""
    alice = await device(node, "alice", "a")
    phone = await device(node, "bob", "phone")
    tablet = await device(node, "bob", "tablet")
    await own_redis.snapshot(tmp_path / "snap")

    for i in range(4):
        await send(alice.chat, None, f"old {i}", to="bob")
    conv = next(iter(alice.chat.cursors))
    await eventually(lambda: all(d.chat.cursors.get(conv) == 4 for d in (phone, tablet)))
    old_epoch = tablet.chat.epochs[conv]
    away = saved(tablet)
    await tablet.chat.client.close()

    own_redis.restore(tmp_path / "snap")
    for i in range(9):
        await send(alice.chat, None, f"again {i}", to="bob")
    server = await history(alice.chat, conv)
    assert [t for _, _, t in server] == [f"again {i}" for i in range(9)]

    back = await device(node, "bob", "tablet", **away)
    assert back.gaps == [conv, None] and back.chat.feed_gap  # the feed was made anew too
    assert back.chat.epochs.get(conv) != old_epoch
    for d in (phone, back):
        await eventually(lambda d=d: conv in d.gaps, timeout=15)  # type: ignore[misc]
        await d.settle()
        await eventually(lambda d=d: d.lines(conv) == server, timeout=15)  # type: ignore[misc]
    await eventually(lambda: all(d.chat.cursors[conv] == len(server) for d in (phone, back)))
    new_epoch = phone.chat.epochs[conv]
    assert new_epoch != old_epoch and back.chat.epochs.get(conv) in (None, new_epoch)
