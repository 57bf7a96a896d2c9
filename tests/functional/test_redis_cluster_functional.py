"""A node on a real Redis Cluster (3 masters, 3 replicas on loopback): its data spreads over
the shards, and the features work there."""

from __future__ import annotations

import aiohttp
import pytest

from huddle.chat import ChatClient
from tests.conftest import StartNode
from tests.redis_cluster import RedisCluster

pytestmark = pytest.mark.parametrize("redis_url", ["cluster"], indirect=True)


async def test_a_node_on_a_cluster_spreads_conversations_over_every_shard(
    start_node: StartNode, redis_cluster: RedisCluster
) -> None:
    node = await start_node()
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/healthz") as resp:
        assert resp.status == 200
    alice = ChatClient(await node.client("alice"))
    await alice.sync()
    convs = [await alice.create("group", f"g{i}", []) for i in range(12)]
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
