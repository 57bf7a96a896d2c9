"""A master of the Redis Cluster dies (kill -9) during a chat burst: its replica takes over,
the clients carry on by themselves, every message the node acknowledged is still there and
reached the other member, once, and presence and ringing work for users of that shard."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.crc import key_slot

from huddle.chat import ChatClient
from huddle.client import RequestError
from signaling import protocol as p
from signaling.keys import conv_key, node_channel, room_key, user_key
from signaling.redis_client import connect
from tests.conftest import StartNode
from tests.functional.test_presence_functional import next_presence
from tests.helpers import eventually, local_room
from tests.media import ColorTrack, ToneTrack
from tests.redis_cluster import ClusterNode, RedisCluster

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
    start_node: StartNode, own_cluster: RedisCluster
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
