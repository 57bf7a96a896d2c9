"""Chat membership over real sockets and real Redis: roles, adding and removing, leaving,
renaming, broadcast channels, and each user's own settings (mute) and moderation (silence)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis.asyncio as redis

from chat import wire as w
from huddle.chat import ChatClient
from huddle.client import RequestError
from signaling.keys import conv_key
from signaling.wire import Event
from tests.conftest import StartNode
from tests.helpers import Node, eventually

T = TypeVar("T")
E = TypeVar("E", bound=Event)
# How long a device is given to (wrongly) receive something after a peer on the same node got
# the same publication: the node writes to both sockets in the same step.
QUIET_S = 0.2


# --- helpers ----------------------------------------------------------------------------


async def chat(node: Node, identity: str, device: str | None = None) -> ChatClient:
    client = ChatClient(await node.client(identity, device=device))
    await client.sync()
    return client


async def until(probe: Callable[[], T | None], timeout: float = 5) -> T:
    """The first non-None answer of ``probe``, asked until ``timeout``."""
    async with asyncio.timeout(timeout):
        # The client's reader fills ChatClient.log; polling it needs no hook into the reader.
        while (value := probe()) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return value


def find(
    c: ChatClient, cls: type[E], where: Callable[[E], bool] | None = None
) -> tuple[int, E] | None:
    """The first logged event of type ``cls`` that matches, with its place in the log."""
    for i, event in enumerate(c.log):
        if isinstance(event, cls) and (where is None or where(event)):
            return i, event
    return None


async def wait(
    c: ChatClient, cls: type[E], where: Callable[[E], bool] | None = None, timeout: float = 5
) -> tuple[int, E]:
    return await until(lambda: find(c, cls, where), timeout)


def is_system(conv: str, event: str) -> Callable[[w.ChatMessageEvent], bool]:
    def match(e: w.ChatMessageEvent) -> bool:
        system = e.message.system
        return e.conv == conv and system is not None and system.event == event

    return match


def has_text(conv: str, text: str) -> Callable[[w.ChatMessageEvent], bool]:
    return lambda e: e.conv == conv and e.message.text == text


def texts(c: ChatClient, conv: str) -> list[str]:
    return [m.text for m in c.messages(conv) if m.text is not None]


async def refused(request: Awaitable[object], code: str) -> None:
    with pytest.raises(RequestError) as info:
        await request
    assert info.value.code == code, info.value


async def roles(c: ChatClient, conv: str) -> dict[str, str]:
    reply = await c.request(w.ChatInfo(id="", conv=conv))
    assert isinstance(reply, w.ChatInfoOk)
    return {m.user: m.role for m in reply.members}


async def info(c: ChatClient, conv: str) -> w.ConvSummary:
    reply = await c.request(w.ChatInfo(id="", conv=conv))
    assert isinstance(reply, w.ChatInfoOk)
    return reply.conv


async def listed(c: ChatClient, conv: str) -> w.ConvSummary | None:
    return next((s for s in await c.conversations() if s.conv == conv), None)


async def head(c: ChatClient, conv: str) -> tuple[list[int], int]:
    """The seqs of the newest page of history, and the conversation's last seq."""
    reply = await c.request(w.ChatHistory(id="", conv=conv))
    assert isinstance(reply, w.ChatMessages)
    return [m.seq for m in reply.messages], reply.last_seq


def add(conv: str, *users: str) -> w.ChatAdd:
    return w.ChatAdd(id="", conv=conv, users=list(users))


def remove(conv: str, *users: str) -> w.ChatRemove:
    return w.ChatRemove(id="", conv=conv, users=list(users))


def set_role(conv: str, user: str, role: str) -> w.ChatRole:
    return w.ChatRole(id="", conv=conv, user=user, role=role)  # type: ignore[arg-type]


# --- roles ------------------------------------------------------------------------------


async def test_only_owner_and_admins_manage_members(node: Node) -> None:
    alice, bob, carol = [await chat(node, u) for u in ("alice", "bob", "carol")]
    conv = (await alice.create("group", "team", ["bob", "carol"])).conv
    assert await roles(alice, conv) == {"alice": "owner", "bob": "member", "carol": "member"}

    await refused(bob.request(add(conv, "dave")), "forbidden")
    await refused(bob.request(remove(conv, "carol")), "forbidden")
    await refused(bob.request(w.ChatRename(id="", conv=conv, name="mine")), "forbidden")
    await refused(bob.request(set_role(conv, "bob", "admin")), "forbidden")
    assert await roles(alice, conv) == {"alice": "owner", "bob": "member", "carol": "member"}
    assert (await info(alice, conv)).name == "team"

    await alice.request(set_role(conv, "bob", "admin"))
    _, changed = await wait(carol, w.ChatMessageEvent, is_system(conv, "role_changed"))
    assert changed.message.system is not None
    assert (changed.message.system.users, changed.message.system.role) == (["bob"], "admin")
    await bob.request(add(conv, "dave"))
    assert (await roles(alice, conv))["dave"] == "member"
    # Only the owner hands out roles, and nobody below the owner removes the owner or an admin.
    await refused(bob.request(set_role(conv, "carol", "admin")), "forbidden")
    await refused(bob.request(remove(conv, "alice")), "forbidden")
    await alice.request(set_role(conv, "carol", "admin"))
    await refused(bob.request(remove(conv, "carol")), "forbidden")
    await bob.request(remove(conv, "dave"))
    assert await roles(alice, conv) == {"alice": "owner", "bob": "admin", "carol": "admin"}
    await bob.request(w.ChatRename(id="", conv=conv, name="team 2"))
    assert (await info(carol, conv)).name == "team 2"


async def test_removed_member_is_told_then_cut_off(node: Node) -> None:
    alice, bob, carol = [await chat(node, u) for u in ("alice", "bob", "carol")]
    conv = (await alice.create("group", "team", ["bob", "carol"])).conv
    await alice.send(conv, "before")
    await wait(carol, w.ChatMessageEvent, has_text(conv, "before"))

    await alice.request(remove(conv, "carol"))
    at_removed, removed = await wait(carol, w.ChatMessageEvent, is_system(conv, "member_removed"))
    assert removed.message.system is not None
    assert (removed.message.system.by, removed.message.system.users) == ("alice", ["carol"])
    at_left, left = await wait(carol, w.ChatLeft, lambda e: e.conv == conv)
    assert left.reason == "removed" and at_left > at_removed

    await alice.send(conv, "after")
    await wait(bob, w.ChatMessageEvent, has_text(conv, "after"))
    await asyncio.sleep(QUIET_S)
    assert texts(carol, conv) == ["before"]
    assert max(m.seq for m in carol.messages(conv)) == removed.message.seq
    await refused(carol.send(conv, "still here?"), "not_member")
    await refused(carol.history(conv), "not_member")
    assert await listed(carol, conv) is None
    assert set(await roles(alice, conv)) == {"alice", "bob"}
    assert (await info(alice, conv)).members == 2


@pytest.mark.redis_cluster
async def test_added_members_join_then_get_the_join_message_and_can_send(node: Node) -> None:
    alice, bob, dave = [await chat(node, u) for u in ("alice", "bob", "dave")]
    conv = (await alice.create("group", "team", ["bob"])).conv
    await alice.send(conv, "before dave")

    await alice.request(add(conv, "dave", "bob"))  # bob is already in: only dave is new
    at_joined, joined = await wait(dave, w.ChatJoined, lambda e: e.conv == conv)
    assert (joined.info.role, joined.info.members, joined.info.name) == ("member", 3, "team")
    at_msg, msg = await wait(dave, w.ChatMessageEvent, is_system(conv, "member_joined"))
    assert at_msg > at_joined
    assert msg.message.system is not None and msg.message.system.users == ["dave"]
    assert texts(dave, conv) == []  # what was said before the join is history, not events

    sent = await dave.send(conv, "hi all")
    for c in (alice, bob, dave):
        _, got = await wait(c, w.ChatMessageEvent, has_text(conv, "hi all"))
        assert (got.message.seq, got.message.sender) == (sent.seq, "dave")
    history = await dave.history(conv)
    assert [(m.kind, m.text) for m in history[-3:]] == [
        ("text", "before dave"),
        ("system", None),
        ("text", "hi all"),
    ]


async def test_outsider_cannot_probe_membership_with_add(node: Node) -> None:
    alice, mallory = await chat(node, "alice"), await chat(node, "mallory")
    conv = (await alice.create("group", "private", ["bob"])).conv
    before = await head(alice, conv)
    # Whether bob is in the group is not mallory's to learn: the answer must not depend on it.
    await refused(mallory.request(add(conv, "carol")), "not_member")
    await refused(mallory.request(add(conv, "bob")), "not_member")
    assert await head(alice, conv) == before


async def test_group_size_is_limited(start_node: StartNode) -> None:
    node = await start_node(chat_max_members=3)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    await refused(alice.create("group", "big", ["bob", "carol", "dave"]), "conversation_full")
    assert await alice.conversations() == []

    conv = (await alice.create("group", "small", ["bob", "carol"])).conv
    before = await head(alice, conv)
    await refused(alice.request(add(conv, "dave")), "conversation_full")
    assert await head(alice, conv) == before
    assert set(await roles(alice, conv)) == {"alice", "bob", "carol"}
    assert (await info(alice, conv)).members == 3

    await alice.request(remove(conv, "carol"))
    await alice.request(add(conv, "dave"))
    assert set(await roles(bob, conv)) == {"alice", "bob", "dave"}


# --- leaving ----------------------------------------------------------------------------


async def test_member_leaves(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = (await alice.create("group", "team", ["bob"])).conv
    await bob.request(w.ChatLeave(id="", conv=conv))
    _, left = await wait(bob, w.ChatLeft, lambda e: e.conv == conv)
    assert left.reason == "left"
    _, msg = await wait(alice, w.ChatMessageEvent, is_system(conv, "member_left"))
    assert msg.message.system is not None and msg.message.system.by == "bob"
    assert await listed(bob, conv) is None
    assert await roles(alice, conv) == {"alice": "owner"}
    await refused(bob.send(conv, "back?"), "not_member")


@pytest.mark.redis_cluster
async def test_owner_leaving_hands_over_to_an_admin(node: Node) -> None:
    alice, bob, zed = [await chat(node, u) for u in ("alice", "bob", "zed")]
    conv = (await alice.create("group", "team", ["bob", "zed"])).conv
    await alice.request(set_role(conv, "zed", "admin"))

    await alice.request(w.ChatLeave(id="", conv=conv))
    assert await roles(bob, conv) == {"bob": "member", "zed": "owner"}
    _, msg = await wait(bob, w.ChatMessageEvent, is_system(conv, "member_left"))
    assert msg.message.system is not None
    assert (msg.message.system.by, msg.message.system.users) == ("alice", ["zed"])
    assert msg.message.system.role == "owner"
    _, left = await wait(alice, w.ChatLeft, lambda e: e.conv == conv)
    assert left.reason == "left"
    assert await listed(alice, conv) is None
    assert (await listed(zed, conv) or pytest.fail("zed lost the group")).role == "owner"
    await zed.request(add(conv, "carol"))  # the new owner manages the group
    assert (await roles(bob, conv))["carol"] == "member"


async def test_owner_leaving_without_admins_hands_over_to_the_oldest_member(node: Node) -> None:
    alice, zed = await chat(node, "alice"), await chat(node, "zed")
    conv = (await alice.create("group", "team", ["zed"])).conv
    await alice.request(add(conv, "abe"))  # joined later, though first by name

    await alice.request(w.ChatLeave(id="", conv=conv))
    assert await roles(zed, conv) == {"zed": "owner", "abe": "member"}
    assert await listed(alice, conv) is None


async def test_rename_is_announced_and_listed(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = (await alice.create("group", "old name", ["bob"])).conv
    await alice.request(w.ChatRename(id="", conv=conv, name="新しい名前"))
    for c in (alice, bob):
        _, msg = await wait(c, w.ChatMessageEvent, is_system(conv, "renamed"))
        assert msg.message.system is not None
        assert (msg.message.system.by, msg.message.system.name) == ("alice", "新しい名前")
    summary = await listed(bob, conv) or pytest.fail("the group left bob's list")
    assert summary.name == "新しい名前"


# --- broadcast channels -----------------------------------------------------------------


async def follow(c: ChatClient, conv: str) -> w.ConvSummary:
    reply = await c.request(w.ChatFollow(id="", conv=conv))
    assert isinstance(reply, w.ChatCreateOk)
    return reply.conv


async def test_channel_followers_read_and_react_but_do_not_post(node: Node) -> None:
    alice, bob, carol = [await chat(node, u) for u in ("alice", "bob", "carol")]
    conv = (await alice.create("channel", "news", [])).conv
    assert (await follow(bob, conv)).role == "follower"
    assert (await follow(carol, conv)).members == 3
    assert (await info(alice, conv)).members == 3
    summary = await listed(bob, conv) or pytest.fail("the channel is not on bob's list")
    assert (summary.kind, summary.role, summary.name) == ("channel", "follower", "news")

    post = await alice.send(conv, "issue 1")
    for c in (bob, carol):
        _, got = await wait(c, w.ChatMessageEvent, has_text(conv, "issue 1"))
        assert got.message.seq == post.seq
    await refused(bob.send(conv, "me too"), "forbidden")
    await refused(bob.request(add(conv, "dave")), "forbidden")

    await bob.request(w.ChatReact(id="", conv=conv, seq=post.seq, emoji="👍"))
    for c in (alice, bob, carol):
        _, reaction = await wait(c, w.ChatReaction, lambda e: e.conv == conv)
        assert (reaction.msg_seq, reaction.emoji, reaction.user) == (post.seq, "👍", "bob")
        assert reaction.added and reaction.users == ["bob"]

    await carol.request(w.ChatUnfollow(id="", conv=conv))
    _, left = await wait(carol, w.ChatLeft, lambda e: e.conv == conv)
    assert left.reason == "unfollowed"
    assert (await info(alice, conv)).members == 2
    assert await listed(carol, conv) is None
    await alice.send(conv, "issue 2")
    await wait(bob, w.ChatMessageEvent, has_text(conv, "issue 2"))
    await asyncio.sleep(QUIET_S)
    assert texts(carol, conv) == ["issue 1"]
    assert texts(bob, conv) == ["issue 1", "issue 2"]


async def test_only_channels_can_be_followed(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = (await alice.create("group", "private", [])).conv
    # To an outsider a group is no channel it could find: the answer for an unknown id.
    await refused(follow(bob, conv), "unknown_conversation")
    await refused(follow(alice, conv), "forbidden")
    assert await roles(alice, conv) == {"alice": "owner"}
    assert await bob.conversations() == []


# --- the user's own settings and moderation ---------------------------------------------


@pytest.mark.redis_cluster
async def test_mute_is_listed_and_reaches_the_users_other_devices(node: Node) -> None:
    alice = await chat(node, "alice")
    phone, laptop = await chat(node, "bob", "phone"), await chat(node, "bob", "laptop")
    conv = (await alice.create("group", "team", ["bob"])).conv

    await phone.request(w.ChatMute(id="", conv=conv, muted=True))
    _, muted = await wait(laptop, w.ChatMuted, lambda e: e.conv == conv)
    assert muted.muted
    assert (await listed(laptop, conv) or pytest.fail("not listed")).muted
    assert not (await listed(alice, conv) or pytest.fail("not listed")).muted

    await phone.request(w.ChatMute(id="", conv=conv, muted=False))
    _, unmuted = await wait(laptop, w.ChatMuted, lambda e: e.conv == conv and not e.muted)
    assert unmuted.fev > muted.fev
    assert not (await listed(phone, conv) or pytest.fail("not listed")).muted

    outsider = await chat(node, "carol")
    await refused(outsider.request(w.ChatMute(id="", conv=conv)), "not_member")


def silence(conv: str, user: str, seconds: int) -> w.ChatSilence:
    return w.ChatSilence(id="", conv=conv, user=user, seconds=seconds)


async def test_admins_silence_members_for_a_while(node: Node) -> None:
    alice, bob, carol = [await chat(node, u) for u in ("alice", "bob", "carol")]
    conv = (await alice.create("group", "team", ["bob", "carol"])).conv
    await refused(carol.request(silence(conv, "bob", 60)), "forbidden")
    await bob.send(conv, "still talking")

    await alice.request(silence(conv, "bob", 60))
    before = await head(alice, conv)
    await refused(bob.send(conv, "hello?"), "silenced")
    assert await head(alice, conv) == before
    await carol.send(conv, "others still talk")
    await refused(bob.request(silence(conv, "alice", 60)), "forbidden")

    await alice.request(silence(conv, "bob", 0))
    await bob.send(conv, "back")
    await alice.request(silence(conv, "bob", 1))
    await refused(bob.send(conv, "too soon"), "silenced")
    await asyncio.sleep(1.1)
    await bob.send(conv, "it ran out")
    assert [m.text for m in await alice.history(conv)][1:] == [
        "still talking",
        "others still talk",
        "back",
        "it ran out",
    ]


async def test_admin_cannot_silence_the_owner_or_other_admins(node: Node) -> None:
    alice, bob, carol = [await chat(node, u) for u in ("alice", "bob", "carol")]
    conv = (await alice.create("group", "team", ["bob", "carol"])).conv
    for user in ("bob", "carol"):
        await alice.request(set_role(conv, user, "admin"))
    await refused(bob.request(silence(conv, "alice", 60)), "forbidden")
    await refused(bob.request(silence(conv, "carol", 60)), "forbidden")
    await alice.send(conv, "owner speaks")
    await carol.send(conv, "admin speaks")
    await refused(bob.request(silence(conv, "nobody", 60)), "not_member")


async def test_info_shows_the_users_own_read_position_and_mute(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = (await alice.create("group", "g", ["bob"])).conv
    for text in ("one", "two", "three"):
        await alice.send(conv, text)
    await bob.read(conv, 2)
    await bob.request(w.ChatMute(id="", conv=conv))
    reply = await bob.request(w.ChatInfo(id="", conv=conv))
    assert (reply.conv.read_seq, reply.conv.unread, reply.conv.muted) == (2, 2, True)
    assert {m.user: m.role for m in reply.members} == {"alice": "owner", "bob": "member"}


async def members(c: ChatClient, conv: str) -> list[w.MemberInfo]:
    reply = await c.request(w.ChatInfo(id="", conv=conv))
    assert isinstance(reply, w.ChatInfoOk)
    return reply.members


async def test_info_gives_each_members_read_position_except_in_channels(node: Node) -> None:
    alice, bob, carol = [await chat(node, u) for u in ("alice", "bob", "carol")]
    group = (await alice.create("group", "trip", ["bob", "carol"])).conv
    first = await alice.send(group, "one")
    second = await alice.send(group, "two")
    await bob.read(group, first.seq)
    # A device that comes later learns who has read what before it came.
    late = await chat(node, "carol", device="tablet")
    reads = {m.user: m.read for m in await members(late, group)}
    assert reads == {"alice": second.seq, "bob": first.seq, "carol": 0}
    await carol.read(group, second.seq)
    reads = {m.user: m.read for m in await members(bob, group)}
    assert reads["carol"] == second.seq

    news = (await alice.create("channel", "news", [])).conv
    await follow(bob, news)
    post = await alice.send(news, "issue 1")
    await bob.read(news, post.seq)
    assert [m.read for m in await members(bob, news)] == [None, None]


@pytest.mark.redis_cluster
async def test_the_list_pages_through_conversations_sharing_a_last_ts(
    node: Node, redis_client: redis.Redis
) -> None:
    """Paged after the last conversation received, (last_ts, conv), nothing is skipped or
    repeated, however many conversations share one last_ts across a page boundary."""
    alice = ChatClient(await node.client("alice"))
    convs = [
        (await alice.request(w.ChatCreate(id="", kind="group", name=f"g{i}"))).conv.conv
        for i in range(7)
    ]
    # Several share a last_ts (as messages in one millisecond, or conversations not yet
    # written to, at 0, do).
    for conv, ts in zip(convs, [500, 400, 400, 400, 400, 0, 0], strict=True):
        await redis_client.hset(conv_key(conv, "meta"), "last_ts", ts)
    expected = [s.conv for s in await alice.conversations()]
    assert sorted(expected) == sorted(convs)
    for limit in (1, 2, 3):
        got: list[str] = []
        request = w.ChatList(id="", limit=limit)
        while True:
            reply = await alice.request(request)
            got += [s.conv for s in reply.conversations]
            if len(reply.conversations) < limit:
                break
            last = reply.conversations[-1]
            request = w.ChatList(id="", limit=limit, before_ts=last.last_ts, before_conv=last.conv)
        assert got == expected, limit
    # Without before_conv, a page leaves out every conversation of that last_ts.
    reply = await alice.request(w.ChatList(id="", before_ts=400))
    assert {s.last_ts for s in reply.conversations} == {0}
    # before_conv alone names no place in the list.
    frame = {"type": "chat.list", "id": "alone", "before_conv": convs[0]}
    await alice.client.send_raw(json.dumps(frame))
    await eventually(lambda: alice.client.unmatched_errors)
    [error] = alice.client.unmatched_errors
    assert (error.re, error.code, "before_conv" in error.message) == (
        "alone",
        "invalid_field",
        True,
    )


@pytest.mark.redis_cluster
async def test_a_new_member_or_follower_has_only_what_came_since_unread(node: Node) -> None:
    """Added to a busy group (or back after a removal), the messages from before are
    history, not unread: only the message that says the user was added is. A new follower
    of a channel has nothing unread until the next post."""
    alice, carol = await chat(node, "alice"), await chat(node, "carol")
    conv = (await alice.create("group", "busy", ["bob"])).conv
    for i in range(6):
        await alice.send(conv, f"before {i}")
    await alice.request(w.ChatAdd(id="", conv=conv, users=["carol"]))
    _, joined = await wait(carol, w.ChatJoined, lambda e: e.conv == conv)
    assert joined.info.unread == 1, joined.info  # "alice added carol"
    assert (await info(carol, conv)).unread == 1
    summary = await listed(carol, conv) or pytest.fail("not on carol's list")
    assert (summary.unread, summary.read_seq) == (1, summary.last_seq - 1)
    # Removed, then added back after more messages: those count no more than the first.
    await alice.request(w.ChatRemove(id="", conv=conv, users=["carol"]))
    for i in range(3):
        await alice.send(conv, f"away {i}")
    await alice.request(w.ChatAdd(id="", conv=conv, users=["carol"]))
    await until(lambda: len([e for e in carol.log if isinstance(e, w.ChatJoined)]) == 2 or None)
    assert (await info(carol, conv)).unread == 1
    await alice.send(conv, "welcome back")
    assert (await info(carol, conv)).unread == 2

    channel = (await alice.create("channel", "news", [])).conv
    for i in range(2):
        await alice.send(channel, f"post {i}")
    assert (await follow(carol, channel)).unread == 0
    assert (await info(carol, channel)).unread == 0
    await alice.send(channel, "post 5")
    assert (await info(carol, channel)).unread == 1
