"""Chat over real sockets and real Redis: conversations, messages, receipts, history."""

from __future__ import annotations

import asyncio

import pytest

from chat import wire as w
from huddle.chat import ChatClient
from huddle.client import RequestError
from tests.conftest import StartNode
from tests.helpers import Node, eventually


async def chat(node: Node, identity: str, device: str | None = None) -> ChatClient:
    client = ChatClient(await node.client(identity, device=device))
    await client.sync()
    return client


async def next_message(c: ChatClient, timeout: float = 5) -> w.ChatMessage:
    event = await c.client.next_event("chat.message", timeout)
    assert isinstance(event, w.ChatMessageEvent)
    return event.message


@pytest.mark.redis_cluster
async def test_group_message_reaches_every_member_with_sequence_numbers(node: Node) -> None:
    alice, bob, carol = [await chat(node, u) for u in ("alice", "bob", "carol")]
    conv = await alice.create("group", "trip", ["bob", "carol"])
    assert conv.kind == "group" and conv.role == "owner" and conv.members == 3
    for c in (alice, bob, carol):
        created = await next_message(c)
        assert created.kind == "system" and created.system is not None
        assert created.system.event == "created"
    sent = await alice.send(conv.conv, "hello 大家好")
    assert sent.seq == 2 and not sent.duplicate
    for c in (bob, carol, alice):
        msg = await next_message(c)
        assert (msg.seq, msg.sender, msg.text) == (2, "alice", "hello 大家好")
        assert msg.ts == sent.ts
    history = await carol.history(conv.conv)
    assert [m.seq for m in history] == [1, 2]


async def test_same_client_id_is_stored_once(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    first = await alice.send(to="bob", text="once", client_id="c-1")
    again = await alice.send(to="bob", text="once", client_id="c-1")
    assert again.duplicate and (again.seq, again.ts, again.conv) == (
        first.seq,
        first.ts,
        first.conv,
    )
    assert [m.text for m in await bob.history(first.conv)] == ["once"]


@pytest.mark.redis_cluster
async def test_direct_conversation_made_on_first_message(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    sent = await alice.send(to="bob", text="hi bob")
    joined = await bob.client.next_event("chat.joined")
    assert isinstance(joined, w.ChatJoined) and joined.conv == sent.conv
    assert joined.info.kind == "direct" and joined.info.name == "alice"
    msg = await next_message(bob)
    assert msg.text == "hi bob"
    reply = await bob.send(to="alice", text="hi alice")
    assert reply.conv == sent.conv and reply.seq == 2
    listed = await bob.conversations()
    assert [(c.conv, c.peer, c.last_seq) for c in listed] == [(sent.conv, "alice", 2)]


async def test_non_member_is_refused(node: Node) -> None:
    alice, mallory = await chat(node, "alice"), await chat(node, "mallory")
    conv = await alice.create("group", "private", [])
    with pytest.raises(RequestError) as info:
        await mallory.send(conv.conv, "let me in")
    assert info.value.code == "not_member"
    with pytest.raises(RequestError) as info:
        await mallory.history(conv.conv)
    assert info.value.code == "not_member"
    await asyncio.sleep(0.1)
    assert [m.seq for m in await alice.history(conv.conv)] == [1]


async def group(node: Node, *users: str) -> tuple[list[ChatClient], str]:
    clients = [await chat(node, u) for u in users]
    conv = await clients[0].create("group", "g", list(users[1:]))
    # Members follow the new conversation once its first event reached them.
    await eventually(lambda: all(c.cursors.get(conv.conv, 0) >= 1 for c in clients))
    return clients, conv.conv


@pytest.mark.redis_cluster
async def test_edit_keeps_history_and_flags_the_message(node: Node) -> None:
    (alice, bob), conv = await group(node, "alice", "bob")
    sent = await alice.send(conv, "teh plan", mentions=["bob"])
    edited = await alice.request(w.ChatEdit(id="", conv=conv, seq=sent.seq, text="the plan"))
    event = await bob.client.next_event("chat.edited")
    assert (event.msg_seq, event.text, event.edited_ts) == (sent.seq, "the plan", edited.ts)
    [msg] = await bob.history(conv, after=1)
    assert (msg.text, msg.edited, msg.mentions) == ("the plan", True, None)
    versions = await bob.request(w.ChatEdits(id="", conv=conv, seq=sent.seq))
    assert [(v.text, v.mentions) for v in versions.versions] == [("teh plan", ["bob"])]
    with pytest.raises(RequestError) as info:
        await bob.request(w.ChatEdit(id="", conv=conv, seq=sent.seq, text="mine now"))
    assert info.value.code == "forbidden"


async def test_recall_window_for_senders_and_any_time_for_admins(start_node: StartNode) -> None:
    node = await start_node(chat_recall_window_s=0.3)
    (alice, bob), conv = await group(node, "alice", "bob")
    quick = await bob.send(conv, "oops")
    await bob.request(w.ChatRecall(id="", conv=conv, seq=quick.seq))
    event = await alice.client.next_event("chat.recalled")
    assert (event.msg_seq, event.by) == (quick.seq, "bob")
    late = await bob.send(conv, "too late to take back")
    await asyncio.sleep(0.4)
    with pytest.raises(RequestError) as info:
        await bob.request(w.ChatRecall(id="", conv=conv, seq=late.seq))
    assert info.value.code == "recall_window_passed"
    await alice.request(w.ChatRecall(id="", conv=conv, seq=late.seq))  # the owner may
    history = {m.seq: m for m in await bob.history(conv)}
    assert history[quick.seq].recalled and history[quick.seq].text is None
    assert history[late.seq].recalled_by == "alice"
    with pytest.raises(RequestError) as info:
        await alice.request(w.ChatReact(id="", conv=conv, seq=late.seq, emoji="👍"))
    assert info.value.code == "recalled"


@pytest.mark.redis_cluster
async def test_reactions_aggregate_per_emoji(node: Node) -> None:
    (alice, bob, carol), conv = await group(node, "alice", "bob", "carol")
    sent = await alice.send(conv, "vote")
    for c, emoji in ((bob, "👍"), (carol, "👍"), (carol, "🎉")):
        await c.request(w.ChatReact(id="", conv=conv, seq=sent.seq, emoji=emoji))
    await bob.request(w.ChatReact(id="", conv=conv, seq=sent.seq, emoji="👍", remove=True))
    events = [await alice.client.next_event("chat.reaction") for _ in range(4)]
    assert [(e.user, e.emoji, e.added, e.users) for e in events] == [
        ("bob", "👍", True, ["bob"]),
        ("carol", "👍", True, ["bob", "carol"]),
        ("carol", "🎉", True, ["carol"]),
        ("bob", "👍", False, ["carol"]),
    ]
    [msg] = await alice.history(conv, after=1)
    assert msg.reactions == {"👍": ["carol"], "🎉": ["carol"]}


@pytest.mark.redis_cluster
async def test_threads_count_replies_and_list_them(node: Node) -> None:
    (alice, bob), conv = await group(node, "alice", "bob")
    root = await alice.send(conv, "root")
    r1 = await bob.send(conv, "reply 1", reply_to=root.seq)
    r2 = await alice.send(conv, "reply to the reply", reply_to=r1.seq)
    [msg] = await alice.history(conv, around=root.seq, limit=1)
    assert msg.thread == w.ThreadSummary(count=2, last_seq=r2.seq)
    replies = await alice.request(w.ChatThread(id="", conv=conv, root=root.seq))
    assert [(m.seq, m.reply_to) for m in replies.messages] == [
        (r1.seq, root.seq),
        (r2.seq, root.seq),
    ]
    with pytest.raises(RequestError) as info:
        await alice.send(conv, "to nothing", reply_to=999)
    assert info.value.code == "unknown_message"


async def test_history_pages_both_ways_and_jumps(start_node: StartNode) -> None:
    node = await start_node(chat_send_per_s=1000)
    (alice, bob), conv = await group(node, "alice", "bob")
    for i in range(30):
        await alice.send(conv, f"m{i}")  # seqs 2..31
    newest = await bob.history(conv, limit=10)
    assert [m.seq for m in newest] == list(range(22, 32))
    older = await bob.history(conv, before=22, limit=10)
    assert [m.seq for m in older] == list(range(12, 22))
    newer = await bob.history(conv, after=5, limit=3)
    assert [m.seq for m in newer] == [6, 7, 8]
    around = await bob.history(conv, around=15, limit=5)
    assert [m.seq for m in around] == [13, 14, 15, 16, 17]
    # ``around`` wins over ``before`` and ``after`` (docs/protocol.md): the same page.
    assert await bob.history(conv, around=15, before=2, after=20, limit=5) == around
    assert await bob.history(conv, before=22, after=5, limit=10) == older


async def test_typing_is_ephemeral(node: Node) -> None:
    (alice, bob), conv = await group(node, "alice", "bob")
    await alice.request(w.ChatTyping(id="", conv=conv))
    event = await bob.client.next_event("chat.user_typing")
    assert (event.conv, event.user, event.typing) == (conv, "alice", True)
    # Never stored: a device resuming from the start replays no typing.
    again = ChatClient(await node.client("bob", device="other"), cursors={conv: 0})
    await again.sync()
    assert not [e for e in again.log if isinstance(e, w.ChatTypingEvent)]
    assert [e.__struct_config__.tag for e in again.log if getattr(e, "conv", "") == conv]


async def test_sticker_and_system_messages(node: Node) -> None:
    (alice, bob), conv = await group(node, "alice", "bob")
    sent = await alice.send(conv, kind="sticker", sticker="cat-wave")
    [msg] = await bob.history(conv, after=sent.seq - 1)
    assert (msg.kind, msg.sticker, msg.text) == ("sticker", "cat-wave", None)
    with pytest.raises(RequestError) as info:
        await alice.send(conv, kind="image")
    assert info.value.code == "bad_message_content"
