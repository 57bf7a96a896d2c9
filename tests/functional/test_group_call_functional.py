"""A group's call (room ``conv:CONV``): only the group's members join it, and the group's
history records it started and ended, on one node and across two."""

from __future__ import annotations

import pytest

from chat import wire as w
from huddle.chat import ChatClient
from huddle.client import RequestError
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import eventually


def records(c: ChatClient, conv: str) -> list[w.SystemInfo]:
    return [
        m.system
        for m in c.messages(conv)
        if m.system is not None and m.system.event.startswith("call_")
    ]


async def refused(c: ChatClient, room: str) -> str:
    with pytest.raises(RequestError) as caught:
        await c.request(p.CallJoin(id="", room=room))
    assert caught.value.code == p.ErrorCode.FORBIDDEN
    return caught.value.message


async def test_members_only_and_recorded_in_the_group(start_node: StartNode) -> None:
    first = await start_node(room_empty_grace_s=0.2)
    second = await start_node(room_empty_grace_s=0.2)
    alice = ChatClient(await first.client("alice"))
    bob = ChatClient(await second.client("bob"))  # on the other node: relayed to the room
    carol = ChatClient(await first.client("carol"))
    for c in (alice, bob, carol):
        await c.sync()
    group = await alice.create("group", "Trip", ["bob"])
    channel = await alice.create("channel", "News", ["bob"])
    direct = await alice.send(None, "hi", to="bob")
    room = f"conv:{group.conv}"

    # Outsiders get one answer whether the conversation exists or not; channels and direct
    # conversations have no conversation call (direct calls ring).
    outsider = await refused(carol, room)
    assert outsider == (await refused(carol, "conv:nosuchconversation")).replace(
        "nosuchconversation", group.conv
    )
    await refused(bob, f"conv:{channel.conv}")
    await refused(bob, f"conv:{direct.conv}")

    joined = await alice.request(p.CallJoin(id="", room=room))
    assert joined.participants == []
    second_join = await bob.request(p.CallJoin(id="", room=room))
    assert [x.identity for x in second_join.participants] == ["alice"]
    await eventually(lambda: len(records(bob, group.conv)) == 1)
    started = records(bob, group.conv)[0]
    assert (started.event, started.by, started.users) == ("call_started", "alice", ["alice"])
    assert started.call

    # A member who leaves the group can no longer join its call.
    await bob.request(p.CallLeave(id="", room=room))
    await bob.request(w.ChatLeave(id="", conv=group.conv))
    await refused(bob, room)

    await alice.request(p.CallLeave(id="", room=room))
    await eventually(lambda: len(records(alice, group.conv)) == 2, timeout=5)
    ended = records(alice, group.conv)[1]
    assert (ended.event, ended.call, ended.by, ended.users) == (
        "call_ended",
        started.call,
        "alice",
        ["alice", "bob"],
    )
    assert ended.duration_s is not None and ended.duration_s >= 0

    # Stored once, in order; the next call in the group is a new one.
    history = [m.system for m in await alice.history(group.conv) if m.system]
    assert [s.event for s in history if s.event.startswith("call_")] == [
        "call_started",
        "call_ended",
    ]
    await alice.request(p.CallJoin(id="", room=room))
    await eventually(lambda: len(records(alice, group.conv)) == 3)
    assert records(alice, group.conv)[2].call not in (None, started.call)
