"""A master of the Redis Cluster dies (kill -9) during a chat burst: its replica takes over,
the clients carry on by themselves, every message the node acknowledged is still there and
reached the other member, once, and presence and ringing work for users of that shard."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.crc import key_slot

from huddle.chat import ChatClient
from huddle.client import RequestError
from signaling import protocol as p
from signaling import pubsub_pipe
from signaling.broker import Broker
from signaling.keys import conv_key, node_channel, room_key, user_key
from signaling.redis_client import connect
from tests.conftest import StartNode
from tests.functional.test_presence_functional import next_presence
from tests.helpers import eventually, local_room, make_token
from tests.media import ColorTrack, ToneTrack
from tests.redis_cluster import ClusterNode, RedisCluster

pytestmark = pytest.mark.redis_any("each test brings a cluster of its own")

MESSAGES = 40
# Generous bounds: a failover takes a few seconds with the cluster's 2 s node timeout.
SEND_DEADLINE_S = 30.0


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of the test's own: one of its masters is killed."""
    cluster = RedisCluster(tmp_path / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def _send_until_acknowledged(alice: ChatClient, conv: str, i: int) -> int:
    """Send message ``i``, retrying with the same client id as a client does, until the node
    acknowledges it; its seq."""
    deadline = time.monotonic() + SEND_DEADLINE_S
    while True:
        try:
            sent = await alice.send(conv, f"m{i}", client_id=f"c{i}")
            return sent.seq
        except (RequestError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _health(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        return resp.status, await resp.json()


@pytest.mark.slow
async def test_a_master_killed_during_a_chat_burst_loses_no_acknowledged_message(
    start_node: StartNode, own_cluster: RedisCluster
) -> None:
    node = await start_node(
        redis_url=own_cluster.url, chat_send_per_s=1000, rate_per_s=1000, rate_burst=1000
    )
    alice = ChatClient(await node.client("alice"))
    bob = ChatClient(await node.client("bob"))
    await alice.sync()
    await bob.sync()
    conv = (await alice.create("group", "burst", ["bob"])).conv
    victim = own_cluster.owner(key_slot(conv_key(conv, "meta").encode()))
    # Users whose keys are on the shard that dies too: they sign in after the takeover.
    carol, dave = _users_on(own_cluster, victim, 2)

    seen: list[tuple[int, dict[str, Any]]] = []

    async def watch_health() -> None:
        while True:
            seen.append(await _health(node.url))
            await asyncio.sleep(0.2)

    watching = asyncio.create_task(watch_health())
    acked: dict[int, str] = {}
    for i in range(MESSAGES):
        if i == MESSAGES // 3:
            own_cluster.kill(victim)
        acked[await _send_until_acknowledged(alice, conv, i)] = f"m{i}"
    watching.cancel()
    # Every message acknowledged, once each, in order of sending.
    assert list(acked.values()) == [f"m{i}" for i in range(MESSAGES)]
    assert sorted(acked) == list(range(min(acked), min(acked) + MESSAGES))

    # The replica took over: the shard answers again and the node says so.
    assert own_cluster.owner(key_slot(conv_key(conv, "meta").encode())) is not victim
    deadline = time.monotonic() + 15
    while True:
        status, body = await _health(node.url)
        if status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert status == 200, body
    # While the shard was down the node said so.
    down = [b["redis"] for code, b in seen if code == 503]
    assert down, "never degraded"
    assert any(r["cluster"]["shards_up"] < r["cluster"]["shards"] for r in down)

    # Stored: the history holds every acknowledged message.
    stored = {m.seq: m.text for m in await alice.history(conv, limit=MESSAGES + 5)}
    assert {seq: stored.get(seq) for seq in acked} == acked
    # Delivered: bob got each one, live or read back after pub/sub moved, exactly once.
    await eventually(lambda: {m.seq for m in bob.messages(conv)} >= set(acked), timeout=15)
    seqs = [m.seq for m in bob.messages(conv) if m.seq in acked]
    assert len(seqs) == len(set(seqs))
    # And the conversation goes on live.
    after = await _send_until_acknowledged(alice, conv, MESSAGES)
    await eventually(lambda: after in {m.seq for m in bob.messages(conv)}, timeout=10)

    # Presence and ringing of users on the shard that took over.
    erin = await node.client("erin")
    await erin.request(p.PresenceSubscribe(id="", users=[carol]))
    await node.client(carol)
    await next_presence(erin, carol, "online", timeout=10)
    callee = await node.client(dave)
    await alice.client.request(p.CallInvite(id="", to=dave, media="audio"))
    incoming = await callee.next_event("call.incoming", timeout=10)
    assert incoming.from_ == "alice"


def _users_on(cluster: RedisCluster, shard: ClusterNode, count: int) -> list[str]:
    ranges = cluster.slot_ranges()
    found = []
    for i in range(10_000):
        name = f"user{i}"
        slot = key_slot(user_key(name, "presence").encode())
        if any(first <= slot <= last and port == shard.port for first, last, port in ranges):
            found.append(name)
            if len(found) == count:
                return found
    raise LookupError("no user names on that shard")


async def test_sends_carry_on_after_a_replica_dies(
    start_node: StartNode, own_cluster: RedisCluster
) -> None:
    node = await start_node(redis_url=own_cluster.url, chat_replica_ack_ms=200)
    alice = ChatClient(await node.client("alice"))
    await alice.sync()
    conv = (await alice.create("group", "lonely", [])).conv
    master = own_cluster.owner(key_slot(conv_key(conv, "meta").encode()))
    [replica] = own_cluster.replicas_of(master)
    await alice.send(conv, "before", client_id="c-before")
    own_cluster.kill(replica)
    # Refused while the replica might come back; acknowledged on the master alone once the
    # cluster has failed it.
    sent = await _send_until_acknowledged(alice, conv, 1)
    assert [m.text for m in await alice.history(conv)][-2:] == ["before", "m1"]
    assert (await alice.send(conv, "next")).seq == sent + 1


# The longest a subscriber may go without audio while a master fails over: media flows peer
# to SFU and never through Redis, so the failover must not stall it (a frame comes every
# 20 ms; the bound leaves room for a loaded machine). Audio, since the SFU may pause video
# by itself where it judges a subscriber's downlink full (sfu.paused), Redis or not.
MEDIA_GAP_S = 1.0
# How long media is watched after the promotion.
AFTER_PROMOTION_S = 3.0


def _room_beside(cluster: RedisCluster, channel: str) -> str:
    """A room name whose keys live on the same master as ``channel``."""
    owner = cluster.owner(key_slot(channel.encode()))
    for i in range(10_000):
        name = f"call{i}"
        if cluster.owner(key_slot(room_key(name, "node").encode())) is owner:
            return name
    raise LookupError("no room name on that shard")


@pytest.mark.slow
async def test_a_master_killed_during_a_call_keeps_its_media_and_signaling(
    own_cluster: RedisCluster, start_node: StartNode
) -> None:
    node = await start_node(redis_url=own_cluster.url, ice_addresses=["127.0.0.1"])
    channel = node_channel(node.settings.node_id)
    # The master that dies holds the room's claim and the node's own channel.
    room = _room_beside(own_cluster, channel)
    slot = key_slot(room_key(room, "node").encode())
    victim = own_cluster.owner(slot)
    alice = await node.call("alice", room)
    bob = await node.call("bob", room)
    camera, microphone = ColorTrack((220, 40, 40)), ToneTrack(440.0)
    await alice.publish(camera, microphone, sources={0: "camera", 1: "microphone"})
    audio = None
    for _ in range(2):
        track, info = await bob.next_track()
        if info.kind == "audio":
            audio = track
    assert audio is not None
    arrivals: list[float] = []

    async def listen() -> None:
        while True:
            await audio.recv()
            arrivals.append(time.monotonic())

    listening = asyncio.create_task(listen())
    try:
        await eventually(lambda: len(arrivals) >= 10, timeout=10)
        killed_at = time.monotonic()
        own_cluster.kill(victim)
        deadline = time.monotonic() + 30
        while (await asyncio.to_thread(own_cluster.owner, slot)) is victim:
            assert time.monotonic() < deadline, "no replica took over"
            await asyncio.sleep(0.1)
        promoted_at = time.monotonic()
        await asyncio.sleep(AFTER_PROMOTION_S)
        ended_at = time.monotonic()
    finally:
        listening.cancel()
    heard = [killed_at, *(t for t in arrivals if t >= killed_at), ended_at]
    gap, at = max((b - a, a - killed_at) for a, b in itertools.pairwise(heard))
    assert gap < MEDIA_GAP_S, (
        f"no audio for {gap:.2f} s from {at:.2f} s after the kill "
        f"(promoted {promoted_at - killed_at:.2f} s after)"
    )

    # Signaling after the takeover: a third participant joins and gets alice's media, a
    # track is muted and unpublished, and the stats answer.
    carol = await node.call("carol", room)
    assert {x.identity for x in carol.joined.participants} == {"alice", "bob"}  # type: ignore[union-attr]
    kinds = set()
    for _ in range(2):
        track, info = await carol.next_track(timeout=15)
        assert info.identity == "alice"
        kinds.add(info.kind)
        await asyncio.wait_for(track.recv(), 10)
    assert kinds == {"audio", "video"}
    joined = await bob.client.next_event("call.participant_joined", timeout=10)
    assert joined.participant.identity == "carol"
    await alice.set_state(audio_muted=True)
    state = await bob.client.next_event("call.participant_state", timeout=10)
    assert state.participant.identity == "alice" and state.participant.audio_muted
    stats = await alice.client.request(p.CallStats(id="", room=room))
    assert {t.kind for t in stats.published} == {"audio", "video"}
    assert all(t.subscribers == 2 for t in stats.published)
    await alice.unpublish(microphone)
    sfu_room = local_room(node, room)

    def published() -> list[str]:
        return [t.kind for x in sfu_room.participants.values() for t in x.published.values()]

    await eventually(lambda: published() == ["video"], timeout=10)

    # The room's state agrees with itself: its claim (on the promoted replica) names this
    # node, and the SFU holds the three participants.
    check = connect(own_cluster.url)
    try:
        claim = await check.get(room_key(room, "node"))
    finally:
        await check.aclose()
    assert isinstance(claim, bytes) and claim.decode().split("#")[0] == node.settings.node_id
    assert sorted(x.identity for x in sfu_room.participants.values()) == ["alice", "bob", "carol"]
    for call in (alice, bob, carol):
        await call.close()


# Slots redis-cli moves from one master to another while the chat runs (of 16384; each
# master starts with about 5461, moved from the lowest up).
RESHARD_SLOTS = 3000
CONVERSATIONS = 4


async def _reshard(cluster: RedisCluster, source: ClusterNode, target: ClusterNode) -> None:
    """``redis-cli --cluster reshard``, as an operator runs it, without questions."""
    cli = shutil.which("redis-cli")
    assert cli is not None, "redis-cli not found (Debian's redis-tools)"
    proc = await asyncio.create_subprocess_exec(
        cli,
        "--cluster",
        "reshard",
        f"127.0.0.1:{source.port}",
        "--cluster-from",
        cluster.node_id(source),
        "--cluster-to",
        cluster.node_id(target),
        "--cluster-slots",
        str(RESHARD_SLOTS),
        "--cluster-yes",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()[-2000:]


@pytest.mark.slow
async def test_redis_cli_reshard_under_chat_load_loses_and_repeats_nothing(
    own_cluster: RedisCluster, start_node: StartNode
) -> None:
    sender_node = await start_node(
        redis_url=own_cluster.url, chat_send_per_s=1000, rate_per_s=1000, rate_burst=1000
    )
    reader_node = await start_node(redis_url=own_cluster.url)
    alice = ChatClient(await sender_node.client("alice"))
    bob = ChatClient(await reader_node.client("bob"))
    await alice.sync()
    await bob.sync()
    # The source master's lowest slots move: conversations whose keys are there.
    source = own_cluster.masters()[0]
    first = min(lo for lo, _hi, port in own_cluster.slot_ranges() if port == source.port)
    moving = range(first, first + RESHARD_SLOTS)
    convs: list[str] = []
    for i in range(200):
        conv = (await alice.create("group", f"r{i}", ["bob"])).conv
        if key_slot(conv_key(conv, "meta").encode()) in moving:
            convs.append(conv)
            if len(convs) == CONVERSATIONS:
                break
    assert len(convs) == CONVERSATIONS
    target = next(m for m in own_cluster.masters() if m is not source)

    acked: dict[str, dict[int, str]] = {conv: {} for conv in convs}
    resharded = asyncio.Event()

    async def burst(conv: str) -> None:
        i = 0
        while not resharded.is_set() or i < 10:
            text = f"{conv}-{i}"
            acked[conv][await _send_until_acknowledged_text(alice, conv, text)] = text
            i += 1
            await asyncio.sleep(0.01)

    sending = [asyncio.create_task(burst(conv)) for conv in convs]
    await eventually(lambda: all(len(a) >= 3 for a in acked.values()), timeout=15)
    during = sum(len(a) for a in acked.values())
    await _reshard(own_cluster, source, target)
    resharded.set()
    await asyncio.gather(*sending)
    assert sum(len(a) for a in acked.values()) > during + CONVERSATIONS * 10
    for conv in convs:
        assert own_cluster.owner(key_slot(conv_key(conv, "meta").encode())) is target

    for conv in convs:
        sent = acked[conv]
        # Acknowledged once each, in order of sending, with consecutive seqs.
        assert list(sent.values()) == [f"{conv}-{i}" for i in range(len(sent))]
        assert sorted(sent) == list(range(min(sent), min(sent) + len(sent)))
        stored: dict[int, str | None] = {}
        while len(stored) < len(sent):
            page = await alice.history(conv, after=max(stored, default=min(sent) - 1), limit=100)
            assert page, "history ends early"
            stored.update((m.seq, m.text) for m in page)
        assert {seq: stored.get(seq) for seq in sent} == sent
        # bob (on the other node) got each one once, in order.
        wanted = set(sent)
        await eventually(lambda: {m.seq for m in bob.messages(conv)} >= wanted, 15)  # noqa: B023
        seqs = [m.seq for m in bob.messages(conv) if m.seq in sent]
        assert seqs == sorted(sent), conv

    # Pub/sub and presence after the move: a live message, and a user whose presence key
    # moved signs in on the sender's node while a watcher on the other node listens.
    after = await _send_until_acknowledged_text(alice, convs[0], "after")
    await eventually(lambda: after in {m.seq for m in bob.messages(convs[0])}, timeout=10)
    [mover] = _users_on_slots(moving, 1)
    watcher = await reader_node.client("watcher")
    await watcher.request(p.PresenceSubscribe(id="", users=[mover]))
    await sender_node.client(mover)
    await next_presence(watcher, mover, "online", timeout=10)


async def _send_until_acknowledged_text(alice: ChatClient, conv: str, text: str) -> int:
    """Send ``text``, retrying with the same client id while slots move, until acknowledged."""
    deadline = time.monotonic() + SEND_DEADLINE_S
    while True:
        try:
            return (await alice.send(conv, text, client_id=text)).seq
        except (RequestError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def _users_on_slots(slots: range, count: int) -> list[str]:
    found = []
    for i in range(100_000):
        name = f"mover{i}"
        if key_slot(user_key(name, "presence").encode()) in slots:
            found.append(name)
            if len(found) == count:
                return found
    raise LookupError("no user names on those slots")


async def test_a_broker_whose_whole_cluster_is_gone_fails_quietly(
    own_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(own_cluster.url)
    broker = Broker(client, "alone")
    await broker.start()
    try:
        await broker.subscribe("huddle:{conv:gone}:chan", lambda _data: None)
        assert broker.connected
        own_cluster.stop()
        await eventually(lambda: not broker.connected, timeout=10)
        # The broker probes the lost shard's slots, which finds no node at all: an error
        # it expects, not a failed task left for the garbage collector to report.
        await asyncio.sleep(1.0)
        gc.collect()
        unretrieved = [r for r in caplog.records if "never retrieved" in r.getMessage()]
        assert not unretrieved, unretrieved[0].getMessage()
    finally:
        await broker.stop()
        await client.aclose()


async def test_requests_while_no_node_of_the_cluster_answers_are_unavailable(
    own_cluster: RedisCluster, start_node: StartNode
) -> None:
    node = await start_node(redis_url=own_cluster.url)
    alice = ChatClient(await node.client("alice"))
    await alice.sync()
    conv = (await alice.create("group", "stranded", [])).conv
    own_cluster.stop()
    # However redis-py words it (a connection error, or no reachable node at all, which is
    # no RedisError), the client is told to retry, never of an internal error.
    for i in range(3):
        with pytest.raises(RequestError) as refused:
            await alice.send(conv, f"lost {i}")
        assert refused.value.code == "unavailable"
    # The node says so on /healthz (degraded, not a failed handler), and HTTP requests that
    # need Redis are refused alike.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/healthz") as resp:
            health = await resp.json()
            assert resp.status == 503, health
            assert health["status"] == "degraded", health
        token = {"Authorization": f"Bearer {make_token('alice')}"}
        async with http.get(f"{node.url}/v1/media/usage", headers=token) as resp:
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["error"]["code"] == "unavailable"


def _channels_on(cluster: RedisCluster, shard: ClusterNode, *names: str) -> list[str]:
    """A conversation channel per name, each on ``shard``'s slots."""
    found = []
    for name in names:
        for i in range(10_000):
            channel = f"huddle:{{conv:{name}{i}}}:chan"
            if cluster.owner(key_slot(channel.encode())) is shard:
                found.append(channel)
                break
        else:
            raise LookupError("no channel name on that shard")
    return found


def _serves(node: ClusterNode, slot: int) -> bool:
    """Whether ``node`` says it is the master of ``slot`` (asked alone: a stopped node would
    keep a question of ``RedisCluster.owner`` waiting)."""
    with node.client() as client:
        ranges = client.cluster("SLOTS")
    return any(
        int(first) <= slot <= int(last) and int(master[1]) == node.port
        for first, last, master, *_ in ranges
    )


@pytest.mark.parametrize("comeback", ["failover", "restart", "stopped"])
async def test_a_broker_keeps_what_it_wants_across_a_master_s_failover(
    own_cluster: RedisCluster,
    comeback: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A shard's master killed: a channel subscribed while it is away and one given up
    meanwhile. Once its replica took over (or the master was started again on its port, its
    replica told not to take over), the broker listens there to every channel still wanted
    and not to the one given up, says so, and later messages reach the handlers.

    ``stopped``: the master's process stopped (SIGSTOP) instead, its sockets open and
    silent, as a hung redis-server or a host cut off without a word: the shard's pub/sub
    connection, asked a PING it never answers, is dropped, and the broker follows the slots
    to the replica that took over (without the PING it waited on the silent connection for
    ever). Let go at the end, the old master rejoins as a replica of it. Every shard is
    asked its PINGs sooner than in production, and a shard that answers is never dropped."""
    monkeypatch.setattr(pubsub_pipe, "IDLE_PING_S", 1.0)
    monkeypatch.setattr(pubsub_pipe, "REPLY_TIMEOUT_S", 1.0)
    client, looker = connect(own_cluster.url), connect(own_cluster.url)
    broker = Broker(client, "failing-over")
    victim = own_cluster.masters()[0]
    [replica] = own_cluster.replicas_of(victim)
    owner = replica
    if comeback == "restart":
        owner = victim
        with replica.client() as stays:
            stays.config_set("cluster-replica-no-failover", "yes")
    kept, dropped, added = _channels_on(own_cluster, victim, "kept", "dropped", "added")
    got: list[tuple[str, bytes]] = []
    told: list[int] = []

    def inbox(name: str) -> Callable[[bytes], None]:
        return lambda data: got.append((name, data))

    stopped = contextlib.ExitStack()
    await broker.start()
    try:
        await broker.subscribe(kept, inbox("kept"))
        await broker.subscribe(dropped, dropped_handler := inbox("dropped"))
        await looker.spublish(kept, b"before")
        await eventually(lambda: got == [("kept", b"before")])
        broker.on_reconnect.append(lambda: told.append(broker.reconnects))

        if comeback == "stopped":
            stopped.enter_context(own_cluster.paused(victim))
        else:
            own_cluster.kill(victim)
        await eventually(lambda: not broker.connected, timeout=10)
        await broker.subscribe(added, inbox("added"))
        await broker.unsubscribe(dropped, dropped_handler)
        if comeback == "restart":
            own_cluster.restart(victim)
        await eventually(lambda: _serves(owner, key_slot(kept.encode())), 30)
        await eventually(lambda: broker.connected and told != [], timeout=30)

        async def counts() -> list[int]:
            on = owner.client()
            try:
                reply = on.pubsub_shardnumsub(kept, dropped, added)
            finally:
                on.close()
            return [int(n) for _, n in reply]

        # Redis tells no one when a count changes: ask it again.
        for _ in range(200):
            if (now := await counts()) == [1, 0, 1]:
                break
            await asyncio.sleep(0.05)
        assert now == [1, 0, 1], "subscribers of kept, dropped, added on the owner"
        for channel in (kept, dropped, added):
            await looker.spublish(channel, b"after")
        await eventually(lambda: len(got) == 3, timeout=10)
        assert sorted(got[1:]) == [("added", b"after"), ("kept", b"after")]
        # The shards that answer their PINGs kept their connections.
        drops = [
            r for r in caplog.records if r.getMessage() == "pub/sub connection silent: dropped"
        ]
        silent = [f"127.0.0.1:{victim.port}"] if comeback == "stopped" else []
        assert [getattr(r, "shard", None) for r in drops] == silent
        stopped.close()
        if comeback == "stopped":
            await eventually(lambda: victim.info("replication").get("role") == "slave", 10)
    finally:
        stopped.close()
        await broker.stop()
        await client.aclose()
        await looker.aclose()
