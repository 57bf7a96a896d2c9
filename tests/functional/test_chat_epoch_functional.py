"""Redis restored from an older snapshot under live devices: numbers are handed out again, and
every device still ends with the server's history exactly, through an explicit gap (reload
by page) and never a silent skip. Real redis-server with append-only persistence."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
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
from signaling.keys import conv_key, user_key
from signaling.server import HUB
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


@pytest.fixture
async def raw(own_redis: Redis) -> AsyncIterator[redis.Redis]:
    """A plain client of that Redis, to look at it directly."""
    client = redis.Redis.from_url(own_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


@dataclass
class Replica:
    """What a device shows: messages from events, and whole conversations reloaded by page
    whenever the server says the device's copy cannot be brought up to date by events."""

    chat: ChatClient
    convs: dict[str, dict[int, Line]] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)
    gaps: list[str | None] = field(default_factory=list)
    # The user's mute settings, from chat.muted events and, after a feed gap, from the list.
    muted: dict[str, bool] = field(default_factory=dict)
    stale_list: bool = False

    def __post_init__(self) -> None:
        self.chat.client.on("chat.message", self._message)
        self.chat.client.on("chat.muted", self._muted)
        self.chat.on_gap = self._gap

    def _muted(self, event: object) -> None:
        assert isinstance(event, w.ChatMuted)
        self.muted[event.conv] = event.muted

    def _message(self, event: object) -> None:
        assert isinstance(event, w.ChatMessageEvent)
        m = event.message
        self.convs.setdefault(event.conv, {})[m.seq] = (m.seq, m.sender, m.text)

    def _gap(self, conv: str | None) -> None:
        self.gaps.append(conv)
        if conv is not None:
            self.stale.add(conv)
        else:
            self.stale_list = True

    async def settle(self) -> None:
        if self.stale_list:
            self.stale_list = False
            self.muted = {c.conv: c.muted for c in await self.chat.conversations()}
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
    return {
        "cursors": dict(c.cursors),
        "feed": c.feed,
        "epochs": dict(c.epochs),
        "feed_epoch": c.feed_epoch,
        "stamps": dict(c.stamps),
        "feed_stamp": c.feed_stamp,
    }


async def send(chat: ChatClient, conv: str | None, text: str, to: str | None = None) -> None:
    """Send, retrying with the same client id while the node's Redis comes back."""
    await retried(lambda: chat.send(conv, text, to=to, client_id=f"cid-{text}"))


async def retried(request: Callable[[], Awaitable[object]]) -> None:
    for _ in range(200):
        try:
            await request()
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


async def test_a_log_written_past_the_cursors_while_nobody_followed_it_is_a_gap(
    own_redis: Redis, node: Node, raw: redis.Redis, tmp_path: Path
) -> None:
    """Redis goes back in time while every device is away, and a conversation and bob's
    feed are written past the devices' cursors before any of them is back: no node followed
    either log, so none saw them go back, and their epochs are unchanged. The stamp of the
    event at each cursor is what tells the devices' numbers apart from the new ones."""
    idle = set(await raw.pubsub_channels())  # the node's own channels
    alice = await device(node, "alice", "a")
    phone = await device(node, "bob", "phone")
    carol = await device(node, "carol", "c")
    conv = (await alice.chat.create("group", "g", ["bob", "carol"])).conv
    others = [(await alice.chat.create("group", f"o{i}", ["bob"])).conv for i in range(3)]
    for i in range(3):
        await send(alice.chat, conv, f"kept {i}")
    devices = {"alice": alice, "bob": phone, "carol": carol}
    await eventually(lambda: all(d.chat.cursors.get(conv) == 4 for d in devices.values()))
    await eventually(lambda: phone.chat.feed == 4)  # joined g and o0..o2
    await own_redis.snapshot(tmp_path / "snap")

    for i in range(4):
        await send(alice.chat, conv, f"lost {i}")
    for on in (True, False):
        await phone.chat.request(w.ChatMute(id="", conv=others[0], muted=on))
    await eventually(lambda: all(d.chat.cursors.get(conv) == 8 for d in devices.values()))
    await eventually(lambda: phone.chat.feed == 6 and phone.muted == {others[0]: False})
    away = {user: saved(d) for user, d in devices.items()}
    assert all(conv in a["stamps"] for a in away.values())  # type: ignore[operator]
    assert away["bob"]["feed_stamp"]
    for d in devices.values():
        await d.chat.client.close()
    # Every channel of the devices is unsubscribed (not only forgotten by the node) before
    # Redis stops.
    for _ in range(500):
        if set(await raw.pubsub_channels()) == idle:
            break
        await asyncio.sleep(0.01)
    assert set(await raw.pubsub_channels()) == idle
    assert not node.app[HUB].chat.router.feeds

    own_redis.restore(tmp_path / "snap")
    # Written through connections that do not sync: still nobody follows either log.
    writer = ChatClient(await node.client("alice", device="writer"))
    for i in range(6):
        await send(writer, conv, f"new {i}")
    bob = ChatClient(await node.client("bob", device="writer"))
    for other in others:
        await retried(lambda o=other: bob.request(w.ChatMute(id="", conv=o)))  # type: ignore[misc]
    server = await history(writer, conv)
    assert [t for _, _, t in server] == [
        None,
        *(f"kept {i}" for i in range(3)),
        *(f"new {i}" for i in range(6)),
    ]
    server_muted = {c.conv: c.muted for c in await bob.conversations() if c.conv in others}
    assert server_muted == dict.fromkeys(others, True)
    assert not node.app[HUB].chat.router.feeds
    # Both logs are past the devices' cursors again.
    assert int(await raw.hget(conv_key(conv, "meta"), "last_ev") or 0) == 10
    assert int(await raw.hget(user_key("bob", "chat"), "fev") or 0) == 7

    for user, before in devices.items():
        back = await device(node, user, f"{user}-back", **away[user])
        assert conv in back.gaps, user
        assert back.chat.epochs[conv] == before.chat.epochs[conv]
        await back.settle()
        assert back.lines(conv) == server, user
        if user == "bob":
            # The feed too: its events past the cursor are not the ones the phone missed,
            # so it reloads the conversation list rather than replaying them.
            assert None in back.gaps and back.chat.feed_gap
            assert {c: back.muted[c] for c in others} == server_muted
    # Back in step: a device that reconnects now resumes by replay, without a gap.
    again = await device(node, "carol", "again", **saved(back))
    assert again.gaps == [] and again.chat.log == []
