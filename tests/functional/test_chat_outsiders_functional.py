"""Chat gives outsiders no existence oracle, over real sockets and real Redis: a user with no
role in a conversation gets, for every request, the same answer whether the conversation
exists or not, and whether the message number it names exists or not. Members still get
precise errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from chat import wire as w
from chat.store import direct_id
from huddle.chat import ChatClient
from huddle.client import RequestError
from tests.conftest import StartNode
from tests.functional.test_chat_members_functional import chat, find, refused, wait
from tests.helpers import Node

# The outsider sends many requests in a row: neither rate limit may be what answers them.
LIMITS: dict[str, Any] = {"rate_per_s": 1000.0, "rate_burst": 1000, "chat_send_per_s": 1000}
MISSING_SEQ = 999

Make = Callable[[str, int], Any]
# Every chat request that names a conversation (and, where it has one, a message number).
REQUESTS: dict[str, Make] = {
    "send": lambda c, s: w.ChatSend(id="", conv=c, client_id="o-send", text="hi"),
    "send reply_to": lambda c, s: w.ChatSend(
        id="", conv=c, client_id="o-reply", text="hi", reply_to=s
    ),
    "edit": lambda c, s: w.ChatEdit(id="", conv=c, seq=s, text="changed"),
    "recall": lambda c, s: w.ChatRecall(id="", conv=c, seq=s),
    "react": lambda c, s: w.ChatReact(id="", conv=c, seq=s, emoji="👍"),
    "unreact": lambda c, s: w.ChatReact(id="", conv=c, seq=s, emoji="👍", remove=True),
    "read": lambda c, s: w.ChatRead(id="", conv=c, seq=s),
    "typing": lambda c, s: w.ChatTyping(id="", conv=c),
    "history": lambda c, s: w.ChatHistory(id="", conv=c, around=s),
    "thread": lambda c, s: w.ChatThread(id="", conv=c, root=s),
    "edits": lambda c, s: w.ChatEdits(id="", conv=c, seq=s),
    "info": lambda c, s: w.ChatInfo(id="", conv=c),
    "add": lambda c, s: w.ChatAdd(id="", conv=c, users=["mallory2"]),
    "remove a member": lambda c, s: w.ChatRemove(id="", conv=c, users=["bob"]),
    "remove nobody": lambda c, s: w.ChatRemove(id="", conv=c, users=["nobody"]),
    "leave": lambda c, s: w.ChatLeave(id="", conv=c),
    "rename": lambda c, s: w.ChatRename(id="", conv=c, name="mine"),
    "role": lambda c, s: w.ChatRole(id="", conv=c, user="bob", role="admin"),
    "silence": lambda c, s: w.ChatSilence(id="", conv=c, user="bob", seconds=60),
    "follow": lambda c, s: w.ChatFollow(id="", conv=c),
    "unfollow": lambda c, s: w.ChatUnfollow(id="", conv=c),
    "mute": lambda c, s: w.ChatMute(id="", conv=c),
    "report": lambda c, s: w.ChatReport(id="", conv=c, seq=s, reason="spam"),
    "reports": lambda c, s: w.ChatReports(id="", conv=c),
    "search": lambda c, s: w.ChatSearch(id="", conv=c, query="hello"),
}


async def answer(c: ChatClient, request: Any) -> object:
    """The whole reply to ``request`` but its ``re``: an error's code and message, or the ok."""
    try:
        reply = await c.request(request)
    except RequestError as exc:
        return ("error", exc.code, exc.message)
    return msgspec.structs.replace(reply, re="")


class World:
    """alice and bob in a group, a direct conversation and a channel, each with a message that
    bob wrote; alice blocked mallory, who is in none of them."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def setup(self) -> None:
        self.alice = await chat(self.node, "alice")
        self.bob = await chat(self.node, "bob")
        self.mallory = await chat(self.node, "mallory")
        self.group = (await self.alice.create("group", "g", ["bob"])).conv
        await wait(self.bob, w.ChatMessageEvent, lambda e: e.conv == self.group)
        self.channel = (await self.alice.create("channel", "c", ["bob"])).conv
        await wait(self.bob, w.ChatMessageEvent, lambda e: e.conv == self.channel)
        self.direct = (await self.alice.send(to="bob", text="hello bob")).conv
        for conv in (self.group, self.channel, self.direct):
            await self.bob.send(conv, "hello there")
        await self.alice.request(w.ChatBlock(id="", user="mallory"))
        # Ids of the same shapes that name nothing.
        self.no_group, self.no_channel = "g-" + "N" * 16, "c-" + "N" * 16
        self.no_direct = direct_id("alice", "nobody")


@pytest.fixture
async def world(start_node: StartNode) -> World:
    made = World(await start_node(**LIMITS))
    await made.setup()
    return made


async def test_outsiders_get_one_answer_for_existing_and_missing_conversations_and_messages(
    world: World,
) -> None:
    mallory = world.mallory
    pairs = (
        (world.group, world.no_group),
        (world.direct, world.no_direct),
        (world.channel, world.no_channel),
    )
    leaks: dict[tuple[str, str], dict[str, object]] = {}
    for name, make in REQUESTS.items():
        for real, missing in pairs:
            if name == "follow" and real == world.channel:
                continue  # anyone who knows a channel's id may follow it
            # The message bob wrote is number 2 in every conversation.
            variants = {
                "existing message": await answer(mallory, make(real, 2)),
                "missing message": await answer(mallory, make(real, MISSING_SEQ)),
                "missing conversation": await answer(mallory, make(missing, 2)),
            }
            first = variants["missing conversation"]
            refused = isinstance(first, tuple) and first[0] == "error"
            if not refused or any(v != first for v in variants.values()):
                leaks[name, real[:2]] = variants
    assert not leaks, "\n".join(f"{k}: {v}" for k, v in leaks.items())

    # Nothing of it reached anyone: no event, no message, no membership.
    for c in (world.alice, world.bob):
        assert find(c, w.ChatMessageEvent, lambda e: e.message.sender == "mallory") is None
        assert find(c, w.ChatReaction) is None
        assert find(c, w.ChatReadEvent, lambda e: e.user == "mallory") is None
    assert await mallory.conversations() == []


async def test_outsiders_follow_answers_alike_for_groups_directs_and_nothing(
    world: World,
) -> None:
    mallory = world.mallory
    answers = [
        await answer(mallory, w.ChatFollow(id="", conv=conv))
        for conv in (world.group, world.no_group, world.direct, world.no_direct, world.no_channel)
    ]
    assert answers[0] == ("error", "unknown_conversation", "no channel has this id")
    assert all(a == answers[0] for a in answers), answers
    # A channel is public to whoever knows its id.
    followed = await mallory.request(w.ChatFollow(id="", conv=world.channel))
    assert followed.conv.role == "follower"


async def test_sync_reports_unknown_and_foreign_conversations_alike(world: World) -> None:
    fresh = ChatClient(
        await world.node.client("mallory", device="second"),
        cursors={world.group: 0, world.no_group: 0, world.direct: 0, world.no_direct: 0},
        feed=0,
    )
    reply = await fresh.sync()
    assert sorted(reply.removed) == sorted(
        [world.group, world.no_group, world.direct, world.no_direct]
    )
    assert reply.heads == {} and reply.gaps == []
    await wait(world.bob, w.ChatMessageEvent, lambda e: e.conv == world.group)
    assert not [e for e in fresh.log if getattr(e, "conv", None) in (world.group, world.direct)]


async def test_members_still_get_precise_errors(world: World) -> None:
    alice, bob = world.alice, world.bob
    await refused(bob.send(world.group, "re: nothing", reply_to=MISSING_SEQ), "unknown_message")
    await refused(bob.send(world.direct, "re: nothing", reply_to=MISSING_SEQ), "unknown_message")
    await refused(
        bob.request(w.ChatEdit(id="", conv=world.group, seq=MISSING_SEQ, text="x")),
        "unknown_message",
    )
    await refused(
        bob.request(w.ChatReact(id="", conv=world.group, seq=MISSING_SEQ, emoji="👍")),
        "unknown_message",
    )
    await refused(
        bob.request(w.ChatReport(id="", conv=world.group, seq=MISSING_SEQ, reason="x")),
        "unknown_message",
    )
    await refused(bob.request(w.ChatFollow(id="", conv=world.group)), "forbidden")
    await refused(bob.request(w.ChatRename(id="", conv=world.group, name="x")), "forbidden")
    with pytest.raises(RequestError) as nobody:
        await alice.request(w.ChatRole(id="", conv=world.group, user="nobody", role="admin"))
    assert nobody.value.code == "not_member" and "nobody" in nobody.value.message
    with pytest.raises(RequestError) as unsilenced:
        await alice.request(w.ChatSilence(id="", conv=world.group, user="nobody", seconds=5))
    assert unsilenced.value.code == "not_member" and "nobody" in unsilenced.value.message
    with pytest.raises(RequestError) as removed:
        await alice.request(w.ChatRemove(id="", conv=world.group, users=["nobody"]))
    assert removed.value.code == "not_member" and "nobody" in removed.value.message
    # A reply to an existing message still works, and to a user who blocked the sender, a
    # member is told so.
    assert (await bob.send(world.group, "re: hello", reply_to=2)).seq == 3
    await alice.request(w.ChatBlock(id="", user="bob"))
    await refused(bob.send(world.direct, "hello?"), "blocked")
    await refused(bob.send(to="alice", text="hello?"), "blocked")


async def test_a_removed_member_is_an_outsider(world: World) -> None:
    alice, bob = world.alice, world.bob
    await alice.request(w.ChatRemove(id="", conv=world.group, users=["bob"]))
    await wait(bob, w.ChatLeft, lambda e: e.conv == world.group)
    for name in ("send reply_to", "history", "react", "role"):
        make = REQUESTS[name]
        gone = await answer(bob, make(world.group, 2))
        never = await answer(bob, make(world.no_group, 2))
        assert gone == never, (name, gone, never)
        assert isinstance(gone, tuple) and gone[1] == "not_member"
