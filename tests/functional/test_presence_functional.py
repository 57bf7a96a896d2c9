"""Presence over real sockets and real Redis, on one node and across two."""

from __future__ import annotations

import asyncio

import pytest

from huddle.client import HuddleClient, RequestError
from signaling import protocol as p
from signaling.keys import user_key
from tests.conftest import StartNode
from tests.helpers import Node, cut_pubsub


async def next_presence(
    client: HuddleClient, user: str, status: str, timeout: float = 5
) -> p.UserPresence:
    """The next presence.update for ``user`` reaching ``status``."""
    async with asyncio.timeout(timeout):
        while True:
            event = await client.next_event("presence.update")
            if event.presence.user == user and event.presence.status == status:
                return event.presence  # type: ignore[no-any-return]


async def test_subscribe_returns_current_state(node: Node) -> None:
    await node.client("alice", device="phone")
    bob = await node.client("bob")
    reply = await bob.request(p.PresenceSubscribe(id="", users=["alice", "carol"]))
    by_user = {x.user: x for x in reply.presence}
    assert by_user["alice"].status == "online"
    assert [d.device for d in by_user["alice"].devices] == ["phone"]
    assert by_user["carol"].status == "offline"
    assert by_user["carol"].devices == []
    assert by_user["carol"].last_seen_ms is None


@pytest.mark.redis_cluster
async def test_devices_aggregate_into_user_status(node: Node) -> None:
    bob = await node.client("bob")
    await bob.request(p.PresenceSubscribe(id="", users=["alice"]))
    phone = await node.client("alice", device="phone")
    seen = await next_presence(bob, "alice", "online")
    assert [d.device for d in seen.devices] == ["phone"]

    laptop = await node.client("alice", device="laptop")
    await phone.request(p.PresenceSet(id="", status="away"))
    # One device away, one online: the user is online.
    while True:
        state = await next_presence(bob, "alice", "online")
        if {(d.device, d.status) for d in state.devices} == {
            ("phone", "away"),
            ("laptop", "online"),
        }:
            break
    await laptop.close()
    away = await next_presence(bob, "alice", "away")
    assert [(d.device, d.status) for d in away.devices] == [("phone", "away")]
    await phone.close()
    offline = await next_presence(bob, "alice", "offline")
    assert offline.devices == []
    assert offline.last_seen_ms is not None and offline.last_seen_ms > 0
    assert offline.version > away.version > seen.version


async def test_unsubscribe_stops_updates(node: Node) -> None:
    bob = await node.client("bob")
    await bob.request(p.PresenceSubscribe(id="", users=["alice"]))
    await bob.request(p.PresenceUnsubscribe(id="", users=["alice"]))
    await node.client("alice")
    with pytest.raises(TimeoutError):
        await bob.next_event("presence.update", timeout=0.5)


async def test_subscription_limit(start_node: StartNode) -> None:
    node = await start_node(max_presence_subscriptions=3)
    bob = await node.client("bob")
    await bob.request(p.PresenceSubscribe(id="", users=["a", "b"]))
    with pytest.raises(RequestError) as info:
        await bob.request(p.PresenceSubscribe(id="", users=["c", "d"]))
    assert info.value.code == "too_many_subscriptions"
    # Re-subscribing to already watched users does not count twice.
    reply = await bob.request(p.PresenceSubscribe(id="", users=["a", "b", "c"]))
    assert len(reply.presence) == 3


async def test_events_carry_increasing_seq(node: Node) -> None:
    bob = await node.client("bob")
    await bob.request(p.PresenceSubscribe(id="", users=["alice"]))
    for device in ("a", "b", "c"):
        await node.client("alice", device=device)
    seqs = [(await bob.next_event("presence.update")).seq for _ in range(3)]
    assert seqs == [1, 2, 3]


@pytest.mark.redis_cluster
async def test_two_nodes_share_presence(start_node: StartNode) -> None:
    first = await start_node()
    second = await start_node()
    bob = await second.client("bob")
    await bob.request(p.PresenceSubscribe(id="", users=["alice"]))
    alice = await first.client("alice", device="phone")
    online = await next_presence(bob, "alice", "online")
    assert online.devices[0].device == "phone"
    await alice.close()
    await next_presence(bob, "alice", "offline")


async def test_changes_missed_while_pubsub_was_down_are_resent(node: Node) -> None:
    from signaling.presence import DeviceEntry, PresenceStore
    from signaling.server import HUB

    hub = node.app[HUB]
    bob = await node.client("bob")
    await bob.request(p.PresenceSubscribe(id="", users=["alice"]))
    # A change whose pub/sub message this node never gets (as while its connection is down):
    # the store writes it and publishes on a channel nobody listens to.
    lost = PresenceStore(hub.redis, "elsewhere", 30)
    lost._args = lambda op, entry, now_ms: [  # type: ignore[method-assign]
        op,
        entry.user,
        entry.device,
        entry.session,
        entry.status,
        "elsewhere",
        now_ms + 30000,
        now_ms,
        # A channel nobody listens on, of the user's hash tag as a script on a cluster
        # must publish.
        user_key("alice", "nowhere"),
    ]
    await lost.set(DeviceEntry(user="alice", device="phone", session="s1", status="online"))
    with pytest.raises(TimeoutError):
        await bob.next_event("presence.update", timeout=0.3)
    # The node's pub/sub connections drop and come back: it re-reads what its devices watch.
    await cut_pubsub(hub.redis)
    state = await next_presence(bob, "alice", "online", timeout=5)
    assert [d.device for d in state.devices] == ["phone"]
