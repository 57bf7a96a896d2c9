"""A conversation a device joined while away is replayed on resume, right after its feed."""

from __future__ import annotations

from chat import wire as w
from huddle.chat import ChatClient
from tests.helpers import Node


async def chat(node: Node, identity: str, device: str, **kw: object) -> ChatClient:
    client = ChatClient(await node.client(identity, device=device), **kw)  # type: ignore[arg-type]
    await client.sync()
    return client


async def test_conversations_joined_while_away_are_replayed_from_the_join(node: Node) -> None:
    alice = await chat(node, "alice", "a")
    bob = await chat(node, "bob", "phone")
    cursors, feed = dict(bob.cursors), bob.feed
    assert feed is not None
    await bob.client.close()

    # While bob is away: a group made with him, and an older group he is added to.
    made = (await alice.create("group", "made with bob", ["bob"])).conv
    await alice.send(made, "hello bob")
    older = (await alice.create("group", "older", ["carol"])).conv
    await alice.send(older, "before bob")
    await alice.request(w.ChatAdd(id="", conv=older, users=["bob"]))
    await alice.send(older, "after bob")

    back = await chat(node, "bob", "phone", cursors=cursors, feed=feed)
    tags = [(e.__struct_config__.tag, getattr(e, "conv", None)) for e in back.log]
    joined = {e.conv: e for e in back.log if isinstance(e, w.ChatJoined)}
    assert set(joined) == {made, older}
    # The feed comes first, then each new conversation from the event the user joined at.
    feed_part = [t for t in tags if t[0] == "chat.joined"]
    assert tags[: len(feed_part)] == feed_part
    for conv, texts in ((made, [None, "hello bob"]), (older, [None, "after bob"])):
        events = [e for e in back.log if isinstance(e, w.ChatMessageEvent) and e.conv == conv]
        assert [e.ev for e in events] == list(range(joined[conv].ev, joined[conv].ev + 2))
        assert [e.message.text for e in events] == texts
        assert events[0].message.kind == "system"
        assert back.cursors[conv] == events[-1].ev
    assert "before bob" not in [m.text for m in back.messages(older)]
    assert not back.gaps


async def test_first_sync_replays_no_conversation(node: Node) -> None:
    alice = await chat(node, "alice", "a")
    conv = (await alice.create("group", "g", ["bob"])).conv
    await alice.send(conv, "hi")
    fresh = await chat(node, "bob", "new")
    assert [e for e in fresh.log if getattr(e, "conv", None) == conv] == []
    assert fresh.cursors[conv] == 2
