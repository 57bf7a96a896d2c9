"""A node's periodic presence refresh (signaling.presence.PresenceStore.refresh) against
real Redis: live devices are extended, lost ones registered again, replaced ones left."""

from __future__ import annotations

import json
import time

import pytest

from signaling.presence import (
    EXPIRY_INDEX,
    REFRESH_BATCH,
    DeviceEntry,
    PresenceStore,
    _member,
    devices_key,
)
from signaling.redis_client import RedisClient, is_cluster

pytestmark = pytest.mark.redis_cluster


async def _device(client: RedisClient, user: str, device: str) -> dict[str, object] | None:
    raw = await client.hget(devices_key(user), device)
    return None if raw is None else dict(json.loads(raw))


async def test_refresh_extends_live_devices_and_registers_lost_ones(
    redis_client: RedisClient,
) -> None:
    short, long = PresenceStore(redis_client, "n1", 30), PresenceStore(redis_client, "n1", 600)
    phone = DeviceEntry(user="alice", device="phone", session="s1", status="online")
    tablet = DeviceEntry(user="alice", device="tablet", session="s2", status="away")
    bobs = DeviceEntry(user="bob", device="phone", session="s3", status="online")
    for entry in (phone, tablet, bobs):
        await short.set(entry)
    # Bob's phone is another session's now (it reconnected elsewhere); Alice's tablet was
    # lost (as while Redis was down).
    await short.set(DeviceEntry(user="bob", device="phone", session="s4", status="online"))
    replaced = await _device(redis_client, "bob", "phone")
    await redis_client.hdel(devices_key("alice"), "tablet")

    before = int(time.time() * 1000)
    assert await long.refresh([phone, tablet, bobs]) == 3
    got = await _device(redis_client, "alice", "phone")
    assert got is not None and got["k"] == "s1" and int(str(got["x"])) >= before + 590_000
    again = await _device(redis_client, "alice", "tablet")
    assert again is not None and (again["k"], again["s"]) == ("s2", "away")
    assert await _device(redis_client, "bob", "phone") == replaced
    for entry in (phone, tablet):
        score = await redis_client.zscore(EXPIRY_INDEX, _member(entry))
        assert score is not None and score >= before + 590_000
    snapshot = await long.get_one("alice")
    assert [d.device for d in snapshot.devices] == ["phone", "tablet"]


async def test_refresh_of_many_devices_is_one_script_call_per_batch(
    redis_client: RedisClient,
) -> None:
    store = PresenceStore(redis_client, "n1", 30)
    entries = [
        DeviceEntry(user=f"u{i}", device="d", session=f"s{i}", status="online")
        for i in range(REFRESH_BATCH + 20)
    ]
    for entry in entries:
        await store.set(entry)
    longer = PresenceStore(redis_client, "n1", 600)
    await longer.refresh(entries[:1])  # its script loaded
    if not is_cluster(redis_client):
        await redis_client.config_resetstat()
    before = int(time.time() * 1000)
    assert await longer.refresh(entries) == len(entries)
    for entry in entries:
        got = await _device(redis_client, entry.user, "d")
        assert got is not None and int(str(got["x"])) >= before + 590_000, entry
    if not is_cluster(redis_client):
        stats = await redis_client.info("commandstats")
        # Two batches: one call each (not one per device).
        assert int(stats["cmdstat_evalsha"]["calls"]) == 2, stats
