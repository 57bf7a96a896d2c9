"""A node on a real Redis Cluster (3 masters, 3 replicas on loopback): its data spreads over
the shards, and the features work there."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as RedisCluster_
from redis.crc import key_slot
from redis.exceptions import ResponseError

from chat.wire import ConvSummary
from huddle.chat import ChatClient
from huddle.client import RequestError
from signaling.broker import Broker
from signaling.keys import conv_key
from signaling.redis_client import (
    RedisClient,
    connect,
    execute,
    is_cluster,
    queue_script,
    run_script,
)
from tests.conftest import StartNode
from tests.helpers import eventually
from tests.redis_cluster import RedisCluster

ON_CLUSTER = pytest.mark.parametrize("redis_url", ["cluster"], indirect=True)


@ON_CLUSTER
async def test_a_node_on_a_cluster_spreads_conversations_over_every_shard(
    start_node: StartNode, redis_cluster: RedisCluster
) -> None:
    node = await start_node()
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/healthz") as resp:
        assert resp.status == 200
    alice = ChatClient(await node.client("alice"))
    await alice.sync()
    # Conversation ids are random: made until each master owns one (12 alone miss a shard
    # 2 % of the time; 60 would miss one once in ten billion).
    ports = {master.port for master in redis_cluster.masters()}
    convs: list[ConvSummary] = []
    owners: set[int] = set()
    while owners != ports and len(convs) < 60:
        conv = await alice.create("group", f"g{len(convs)}", [])
        convs.append(conv)
        owners.add(redis_cluster.owner(key_slot(conv_key(conv.conv, "meta").encode())).port)
    assert owners == ports
    for conv in convs:
        await alice.send(conv.conv, f"hello {conv.conv}")
    histories = [await alice.history(c.conv) for c in convs]
    assert [[m.text for m in h][-1] for h in histories] == [f"hello {c.conv}" for c in convs]
    masters = redis_cluster.masters()
    assert len(masters) == 3
    for master in masters:
        client = master.client()
        try:
            keys = client.keys("huddle:{conv:*")
        finally:
            client.close()
        assert keys, f"no conversation on the shard at port {master.port}"


async def test_the_broker_follows_a_moved_slot_and_says_so(redis_cluster: RedisCluster) -> None:
    channel = "huddle:{conv:moving}:chan"
    listener, publisher = connect(redis_cluster.url), connect(redis_cluster.url)
    broker = Broker(listener, "listener")
    got: list[bytes] = []
    told: list[int] = []
    broker.on_reconnect.append(lambda: told.append(1))
    await broker.start()
    try:
        await broker.subscribe(channel, got.append)
        await publisher.spublish(channel, b"before")
        await eventually(lambda: got == [b"before"])
        slot = key_slot(channel.encode())
        source = redis_cluster.owner(slot)
        target = next(m for m in redis_cluster.masters() if m is not source)
        await asyncio.to_thread(redis_cluster.move_slot, slot, target)
        # The publisher follows the move (MOVED); the listener hears of it only from the
        # shard that dropped its subscription.
        await publisher.spublish(channel, b"meanwhile")
        await eventually(lambda: told, timeout=10)
        await publisher.spublish(channel, b"after")
        await eventually(lambda: got[-1:] == [b"after"], timeout=5)
        assert redis_cluster.owner(slot) is target
    finally:
        await broker.stop()
        await listener.aclose()
        await publisher.aclose()


@ON_CLUSTER
async def test_health_and_metrics_show_the_cluster_as_the_node_sees_it(
    start_node: StartNode, redis_cluster: RedisCluster
) -> None:
    node = await start_node()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/healthz") as resp:
            assert resp.status == 200
            redis = (await resp.json())["redis"]
        async with http.get(f"{node.url}/metrics") as resp:
            text = await resp.text()
    assert redis["mode"] == "cluster"
    cluster = redis["cluster"]
    assert (cluster["state"], cluster["slots_ok"]) == ("ok", 16384)
    assert (cluster["shards"], cluster["shards_up"]) == (3, 3)
    assert (cluster["replicas"], cluster["replicas_up"]) == (3, 3)
    addresses = {n["address"] for n in cluster["nodes"] if n["role"] == "master"}
    assert addresses == {f"127.0.0.1:{m.port}" for m in redis_cluster.masters()}
    for line in (
        "huddle_redis_cluster_ok 1.0",
        "huddle_redis_cluster_shards 3.0",
        "huddle_redis_cluster_shards_up 3.0",
        "huddle_redis_cluster_replicas_up 3.0",
        "huddle_redis_cluster_slots_ok 16384.0",
        "huddle_redis_pubsub_restored_total 0.0",
    ):
        assert line in text.splitlines(), line


@ON_CLUSTER
async def test_a_send_is_acknowledged_once_a_replica_has_it(
    start_node: StartNode, redis_cluster: RedisCluster
) -> None:
    node = await start_node(chat_replica_ack_ms=300)
    alice = ChatClient(await node.client("alice"))
    await alice.sync()
    conv = (await alice.create("group", "durable", [])).conv
    master = redis_cluster.owner(key_slot(conv_key(conv, "meta").encode()))
    [replica] = redis_cluster.replicas_of(master)
    with redis_cluster.paused(replica):
        # Stored on the master, but a master dying now would take it along: not acknowledged.
        with pytest.raises(RequestError) as refused:
            await alice.send(conv, "held", client_id="c-held")
        assert refused.value.code == "unavailable"
    # The client retries with the same client id: stored once, acknowledged now.
    sent = await alice.send(conv, "held", client_id="c-held")
    assert [(m.seq, m.text) for m in await alice.history(conv)][-1] == (sent.seq, "held")
    client = replica.client()
    try:
        # What the replica holds (a replica answers reads of its master's slots when asked).
        client.readonly()
        assert client.hget(conv_key(conv, "meta"), "last_seq") == str(sent.seq).encode()
    finally:
        client.close()


@ON_CLUSTER
async def test_a_slot_migrated_under_chat_load_loses_nothing(
    start_node: StartNode, redis_cluster: RedisCluster
) -> None:
    sender_node = await start_node(chat_send_per_s=1000, rate_per_s=1000, rate_burst=1000)
    reader_node = await start_node()
    alice = ChatClient(await sender_node.client("alice"))
    bob = ChatClient(await reader_node.client("bob"))
    await alice.sync()
    await bob.sync()
    conv = (await alice.create("group", "moving", ["bob"])).conv
    slot = key_slot(conv_key(conv, "meta").encode())
    source = redis_cluster.owner(slot)
    target = next(m for m in redis_cluster.masters() if m is not source)

    acked: dict[int, str] = {}

    async def burst() -> None:
        for i in range(60):
            for _ in range(100):
                try:
                    acked[(await alice.send(conv, f"m{i}", client_id=f"c{i}")).seq] = f"m{i}"
                    break
                except RequestError:
                    # A script meeting keys half moved is refused: the client retries.
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.005)

    sending = asyncio.create_task(burst())
    await eventually(lambda: len(acked) >= 5)
    await asyncio.to_thread(redis_cluster.move_slot, slot, target)
    moved_after = len(acked)
    await sending
    assert moved_after < 60, "the slot moved after the burst: nothing was under load"
    assert redis_cluster.owner(slot) is target
    assert list(acked.values()) == [f"m{i}" for i in range(60)]
    stored = {m.seq: m.text for m in await alice.history(conv, limit=80)}
    assert {seq: stored.get(seq) for seq in acked} == acked
    # bob's node followed the channel to its new shard and read back what it missed.
    await eventually(lambda: {m.seq for m in bob.messages(conv)} >= set(acked), timeout=15)
    seqs = [m.seq for m in bob.messages(conv) if m.seq in acked]
    assert len(seqs) == len(set(seqs))


def _calls(cluster: RedisCluster, command: str) -> int:
    """Calls of ``command`` on the cluster's masters so far."""
    total = 0
    for master in cluster.masters():
        client = master.client()
        try:
            stats = client.info("commandstats").get(f"cmdstat_{command}", {})
        finally:
            client.close()
        total += int(stats.get("calls", 0))
    return total


async def test_scripts_in_a_cluster_pipeline_go_by_digest_once_each_shard_has_them(
    redis_cluster: RedisCluster,
) -> None:
    client = connect(redis_cluster.url)
    assert isinstance(client, RedisCluster_)
    keys = [f"huddle:{{conv:script{i}}}:n" for i in range(12)]
    try:
        script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        await client.script_flush()
        for expected in (2, 4):
            pipe = client.pipeline(transaction=False)
            for key in keys:
                queue_script(pipe, script, [key], [2])
            before = _calls(redis_cluster, "eval"), _calls(redis_cluster, "evalsha")
            assert await execute(pipe) == [expected] * len(keys)
            sent_text = _calls(redis_cluster, "eval") - before[0]
            by_digest = _calls(redis_cluster, "evalsha") - before[1]
            # First on shards without the script: refused by digest, run again with its text.
            # Then by digest alone.
            assert (sent_text, by_digest) == ((len(keys), len(keys)) if expected == 2 else (0, 12))
        failing = client.register_script("return redis.error_reply('refused')")
        pipe = client.pipeline(transaction=False)
        queue_script(pipe, failing, [keys[0]], [])
        with pytest.raises(ResponseError, match="refused"):
            await execute(pipe)
    finally:
        for key in keys:
            await client.delete(key)
        await client.aclose()


@pytest.mark.redis_cluster
async def test_run_script_loads_the_script_follows_a_lost_connection_and_reports_errors(
    redis_client: RedisClient, redis_url: str
) -> None:
    key = "huddle:{conv:run}:n"
    script = redis_client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    # No Redis has it yet: sent with its text, then by digest.
    await redis_client.script_flush()
    assert await run_script(redis_client, script, [key], [2]) == 2
    assert await run_script(redis_client, script, [key], [b"3"]) == 5
    # The connections the calls used are closed under them: the next call reconnects.
    if not is_cluster(redis_client):
        killer = connect(redis_url)
        assert isinstance(killer, Redis)
        try:
            assert await killer.client_kill_filter(_type="normal", skipme=True) >= 1
        finally:
            await killer.aclose()
    assert await run_script(redis_client, script, [key], [1]) == 6
    assert int(await redis_client.get(key) or 0) == 6
    failing = redis_client.register_script("return redis.error_reply('refused')")
    with pytest.raises(ResponseError, match="refused"):
        await run_script(redis_client, failing, [key], [])
    # Refused or not, the pool's connections stay usable.
    assert await run_script(redis_client, script, [key], [1]) == 7
