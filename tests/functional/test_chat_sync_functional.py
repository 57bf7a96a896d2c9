"""Chat sync: devices resume from their cursors with no loss and no repeats, across nodes."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import redis.asyncio as redis

from chat import wire as w
from huddle.chat import ChatClient
from signaling.keys import conv_key
from signaling.server import HUB
from tests.conftest import StartNode
from tests.helpers import Node, cut_pubsub, eventually


async def chat(node: Node, identity: str, device: str | None = None, **kw: object) -> ChatClient:
    client = ChatClient(await node.client(identity, device=device), **kw)  # type: ignore[arg-type]
    await client.sync()
    return client


def conv_events(c: ChatClient, conv: str) -> list[int]:
    return [e.ev for e in c.log if getattr(e, "conv", None) == conv and getattr(e, "ev", None)]  # type: ignore[attr-defined]


@pytest.mark.redis_cluster
async def test_resume_replays_every_kind_of_missed_event_once(node: Node) -> None:
    alice = await chat(node, "alice")
    bob = await chat(node, "bob", device="phone")
    conv = (await alice.create("group", "g", ["bob"])).conv
    first = await alice.send(conv, "before")
    await eventually(lambda: bob.cursors.get(conv, 0) >= 2)
    seen_before = len(bob.log)
    cursors, feed = dict(bob.cursors), bob.feed
    await bob.client.close()

    # While bob is away: a message, an edit, a reaction, a receipt, a recall, a new member.
    second = await alice.send(conv, "while away")
    await alice.request(w.ChatEdit(id="", conv=conv, seq=second.seq, text="while away (edited)"))
    await alice.request(w.ChatReact(id="", conv=conv, seq=first.seq, emoji="👍"))
    laptop = await chat(node, "bob", device="laptop")
    await laptop.read(conv, second.seq)
    third = await alice.send(conv, "to be recalled")
    await alice.request(w.ChatRecall(id="", conv=conv, seq=third.seq))
    await alice.request(w.ChatAdd(id="", conv=conv, users=["carol"]))
    other = await alice.create("group", "new while away", ["bob"])

    back = await chat(node, "bob", device="phone", cursors=cursors, feed=feed)
    assert back.log, "nothing replayed"
    kinds = [e.__struct_config__.tag for e in back.log if getattr(e, "conv", None) == conv]
    assert kinds == [
        "chat.message",
        "chat.edited",
        "chat.reaction",
        "chat.receipt",
        "chat.message",
        "chat.recalled",
        "chat.message",
    ]
    evs = conv_events(back, conv)
    assert evs == list(range(cursors[conv] + 1, cursors[conv] + 1 + len(evs)))
    joined = [e for e in back.log if isinstance(e, w.ChatJoined)]
    assert [j.conv for j in joined] == [other.conv]
    assert seen_before > 0
    # Live again: the next message arrives once.
    await alice.send(conv, "live")
    await eventually(lambda: any(m.text == "live" for m in back.messages(conv)))
    await asyncio.sleep(0.2)
    assert len([m for m in back.messages(conv) if m.text == "live"]) == 1


@pytest.mark.redis_cluster
async def test_read_on_one_device_clears_unread_on_the_other(node: Node) -> None:
    alice = await chat(node, "alice")
    phone = await chat(node, "bob", device="phone")
    laptop = await chat(node, "bob", device="laptop")
    sent = await alice.send(to="bob", text="one")
    await alice.send(sent.conv, "two")
    await eventually(lambda: laptop.cursors.get(sent.conv, 0) >= 2)
    assert [c.unread for c in await laptop.conversations()] == [2]
    await phone.read(sent.conv, 2)
    receipt = await laptop.client.next_event("chat.receipt")
    assert (receipt.user, receipt.read_seq) == ("bob", 2)
    assert [c.unread for c in await laptop.conversations()] == [0]
    # The sender sees the receipt too.
    seen = await alice.client.next_event("chat.receipt")
    assert (seen.user, seen.read_seq) == ("bob", 2)


async def test_too_far_behind_is_an_explicit_gap(start_node: StartNode) -> None:
    node = await start_node(
        chat_replay_events=100,
        chat_sync_max_events=50,
        chat_send_per_s=1000,
        rate_per_s=1000,
        rate_burst=1000,
    )
    alice = await chat(node, "alice")
    bob = await chat(node, "bob")
    conv = (await alice.create("group", "busy", ["bob"])).conv
    await eventually(lambda: bob.cursors.get(conv, 0) >= 1)
    cursors = dict(bob.cursors)
    await bob.client.close()
    for i in range(80):
        await alice.send(conv, f"m{i}")
    back = await chat(node, "bob", cursors=cursors, feed=bob.feed)
    assert back.gaps == [conv]
    assert back.messages(conv) == []  # nothing replayed for a gap: reload by page
    page = await back.history(conv, limit=100)
    assert [m.text for m in page][-1] == "m79" and len(page) == 81
    await alice.send(conv, "after the gap")
    await eventually(lambda: [m.text for m in back.messages(conv)] == ["after the gap"])


@pytest.mark.redis_cluster
async def test_two_nodes_deliver_live_and_subscribe_only_to_their_conversations(
    start_node: StartNode,
) -> None:
    one, two = await start_node(), await start_node()
    alice = await chat(one, "alice")
    bob = await chat(two, "bob")
    conv = (await alice.create("group", "across", ["bob"])).conv
    unrelated = (await alice.create("group", "alice only", [])).conv
    sent = await alice.send(conv, "from node one")
    event = await bob.client.next_event("chat.message")
    while event.message.kind == "system":
        event = await bob.client.next_event("chat.message")
    assert event.message.text == "from node one" and event.message.seq == sent.seq
    reply = await bob.send(conv, "from node two")
    event = await alice.client.next_event("chat.message")
    while event.message.seq != reply.seq:
        event = await alice.client.next_event("chat.message")
    assert event.message.text == "from node two"
    assert conv in two.app[HUB].chat.router.feeds
    assert unrelated not in two.app[HUB].chat.router.feeds


async def test_lost_pubsub_messages_are_read_back_from_the_log(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    one, two = (
        await start_node(chat_send_per_s=1000, rate_per_s=1000, rate_burst=1000),
        await start_node(chat_send_per_s=1000, rate_per_s=1000, rate_burst=1000),
    )
    alice = await chat(one, "alice")
    bob = await chat(two, "bob")
    conv = (await alice.create("group", "flaky", ["bob"])).conv
    await eventually(lambda: bob.cursors.get(conv, 0) >= 1)
    sends = [asyncio.ensure_future(alice.send(conv, f"m{i}")) for i in range(30)]
    await asyncio.sleep(0.01)
    await cut_pubsub(redis_client)
    await asyncio.gather(*sends)
    await eventually(lambda: len(bob.messages(conv)) == 31, timeout=15)
    seqs = [m.seq for m in bob.messages(conv)]
    assert seqs == list(range(1, 32))


async def test_torture_disconnects_lose_and_repeat_nothing(start_node: StartNode) -> None:
    """Two nodes, three senders, one receiver that keeps dropping and resuming on either."""
    nodes = [
        await start_node(chat_send_per_s=1000, rate_per_s=1000, rate_burst=1000),
        await start_node(chat_send_per_s=1000, rate_per_s=1000, rate_burst=1000),
    ]
    rng = random.Random(7)
    senders = [await chat(nodes[i % 2], f"s{i}") for i in range(3)]
    conv = (await senders[0].create("group", "torture", ["s1", "s2", "r"])).conv
    direct = (await senders[1].send(to="r", text="direct 0")).conv
    receiver = await chat(nodes[0], "r", device="phone")
    cursors, feed = dict(receiver.cursors), receiver.feed
    received: list[tuple[str, int, int]] = []  # (conv, ev, message seq or 0)
    stop = asyncio.Event()
    sent: dict[str, set[int]] = {conv: set(), direct: set()}

    async def send_loop(i: int) -> None:
        n = 0
        while not stop.is_set():
            target = direct if i == 1 and n % 3 == 0 else conv
            reply = await senders[i].send(target, f"{i}-{n}")
            sent[target].add(reply.seq)
            n += 1
            await asyncio.sleep(rng.uniform(0.001, 0.01))

    loops = [asyncio.ensure_future(send_loop(i)) for i in range(3)]
    current = receiver
    for round_ in range(12):
        await asyncio.sleep(rng.uniform(0.05, 0.2))
        for e in current.log:
            if isinstance(e, w.ChatMessageEvent):
                received.append((e.conv, e.ev, e.message.seq))
        cursors, feed = dict(current.cursors), current.feed
        await current.client.close()
        await asyncio.sleep(rng.uniform(0.0, 0.1))
        current = await chat(nodes[round_ % 2], "r", device="phone", cursors=cursors, feed=feed)
    stop.set()
    await asyncio.gather(*loops)
    heads = {c.conv: c.ev for c in await current.conversations()}
    await eventually(lambda: all(current.cursors.get(c, 0) >= heads[c] for c in sent), timeout=15)
    for e in current.log:
        if isinstance(e, w.ChatMessageEvent):
            received.append((e.conv, e.ev, e.message.seq))
    for c in (conv, direct):
        evs = [ev for cv, ev, _ in received if cv == c]
        assert len(evs) == len(set(evs)), f"repeated events in {c}"
        assert evs == sorted(evs), f"out of order in {c}"
        seqs = {seq for cv, _, seq in received if cv == c}
        assert sent[c] <= seqs, f"lost messages in {c}: {sorted(sent[c] - seqs)[:10]}"


async def test_resume_after_the_node_restarts(start_node: StartNode) -> None:
    first = await start_node()
    alice = await chat(first, "alice")
    bob = await chat(first, "bob")
    conv = (await alice.create("group", "g", ["bob"])).conv
    await eventually(lambda: bob.cursors.get(conv, 0) >= 1)
    cursors, feed = dict(bob.cursors), bob.feed
    await first.stop()  # both devices lose their node
    second = await start_node()
    alice = await chat(second, "alice", cursors=alice.cursors, feed=alice.feed)
    sent = [await alice.send(conv, f"after restart {i}") for i in range(3)]
    bob = await chat(second, "bob", cursors=cursors, feed=feed)
    assert [m.seq for m in bob.messages(conv)] == [s.seq for s in sent]


@pytest.mark.single_redis(
    "cuts the node's pub/sub and writes the log in one transaction on one server; a cluster "
    "cannot route CLIENT KILL within a transaction"
)
async def test_events_missed_in_flight_and_trimmed_meanwhile_are_a_live_gap(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    """The node's pub/sub is cut while more events than the log keeps are written: when it
    reads them back, the oldest are gone, so its live readers get a ``trimmed`` gap there,
    never a silent jump."""
    node = await start_node(chat_sync_max_events=5)
    alice = await chat(node, "alice")
    bob = await chat(node, "bob", device="phone")
    conv = (await alice.create("group", "trimmed", ["bob"])).conv
    await alice.send(conv, "before")
    head = int(await redis_client.hget(conv_key(conv, "meta"), "last_ev") or 0)
    await eventually(lambda: bob.cursors.get(conv, 0) >= head)
    gaps: list[tuple[str | None, int | None]] = []
    bob.on_gap = lambda c: gaps.append((c, bob.cursors.get(c) if c else None))
    newest: Any = await redis_client.xrevrange(conv_key(conv, "events"), count=1)
    template = newest[0][1][b"e"].decode()
    assert f'"ev":{head},' in template
    # One transaction: the node's pub/sub connection is cut, then 250 events are logged
    # (published to nobody) and the log trimmed to its newest ones (MAXLEN ~ 5 frees whole
    # stream nodes of 100 entries).
    async with redis_client.pipeline(transaction=True) as pipe:
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        for n in range(head + 1, head + 251):
            blob = template.replace(f'"ev":{head},', f'"ev":{n},').replace(
                '"stamp":"', f'"stamp":"x{n}-'
            )
            pipe.hincrby(conv_key(conv, "meta"), "last_ev", 1)
            pipe.xadd(
                conv_key(conv, "events"), {"e": blob}, id=f"{n}-1", maxlen=5, approximate=True
            )
        await pipe.execute()
    last = head + 250
    oldest: Any = await redis_client.xrange(conv_key(conv, "events"), count=1)
    first_kept = int(oldest[0][0].decode().split("-")[0])
    assert head + 1 < first_kept <= last  # some of the missed events are gone
    await eventually(lambda: bob.cursors.get(conv, 0) >= last, timeout=15)
    assert gaps == [(conv, first_kept - 1)]
    assert bob.gaps == [conv]
    # Besides the gap, bob received every kept event, in order, once.
    assert [ev for ev in conv_events(bob, conv) if ev > head] == list(range(first_kept, last + 1))


async def test_live_events_during_a_log_check_are_not_a_rollback(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node looks at a log after pub/sub reconnects. Events keep arriving live while it
    reads: a head read before they were published is behind what the node passed on by
    then, and must not be taken for a log gone back in time (a needless gap for everyone)."""
    node = await start_node(chat_send_per_s=1000, rate_per_s=1000, rate_burst=1000)
    alice = await chat(node, "alice")
    bob = await chat(node, "bob", device="phone")
    conv = (await alice.create("group", "checked", ["bob"])).conv
    await alice.send(conv, "first")
    router = node.app[HUB].chat.router
    feed = router.feeds[conv]
    # bob has the conversation (its epoch) and everything the node passed on: a feed not
    # yet past its first event would equal a cursor bob does not have yet.
    await eventually(lambda: conv in bob.epochs and bob.cursors.get(conv, 0) == feed.last > 0)
    epoch = bob.epochs[conv]
    read_state = router.store.log_state
    raced: list[int] = []

    async def state_then_live_events(user_feed: bool, name: str) -> Any:
        state = await read_state(user_feed, name)
        if name == conv and not raced:
            raced.append(feed.last)
            for i in range(3):
                await alice.send(conv, f"live {i}")
            await eventually(lambda: feed.last >= raced[0] + 3)
            raced.append(feed.last)
        return state

    monkeypatch.setattr(router.store, "log_state", state_then_live_events)
    await cut_pubsub(redis_client)
    # The check read the head, three events went out live, and the check came to its verdict.
    await eventually(lambda: len(raced) == 2 and not feed.checking, timeout=10)
    await alice.send(conv, "after")
    await eventually(lambda: [m.text for m in bob.messages(conv)][-1:] == ["after"])
    assert bob.gaps == []
    assert bob.epochs[conv] == epoch
    texts = [m.text for m in bob.messages(conv) if m.kind != "system"]
    assert texts == ["first", "live 0", "live 1", "live 2", "after"]
