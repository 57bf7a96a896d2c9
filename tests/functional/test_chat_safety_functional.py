"""Chat safety over real sockets and real Redis: send rate across nodes, text size, blocking,
word filter, reports, and bad input. Every refused send leaves nothing behind: no message in
history, no sequence number used, no event to anyone, no conversation made."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from itertools import cycle

import pytest
import redis.asyncio as redis

from chat import send_limit
from chat import wire as w
from chat.store import ChatStore, SendCount, direct_id, send_counts_key
from huddle.chat import ChatClient
from huddle.client import RequestError
from signaling.redis_client import RedisClient, is_cluster
from tests.conftest import StartNode
from tests.functional.test_chat_members_functional import (
    QUIET_S,
    chat,
    find,
    has_text,
    head,
    refused,
    set_role,
    texts,
    until,
    wait,
)
from tests.helpers import Node


def identity(c: ChatClient) -> str:
    assert c.client.hello_reply is not None
    return c.client.hello_reply.identity


async def group(owner: ChatClient, *members: ChatClient) -> str:
    """A new group of ``owner`` and ``members``, once every member has its first message."""
    conv = await owner.create("group", "g", [identity(m) for m in members])
    for c in (owner, *members):
        await wait(c, w.ChatMessageEvent, lambda e: e.conv == conv.conv)
    return conv.conv


# --- send rate --------------------------------------------------------------------------


async def attempt(c: ChatClient, conv: str, n: int) -> w.ChatSendOk | str:
    """A send's reply, or the code it was refused with."""
    try:
        return await c.send(conv, f"message {n}")
    except RequestError as exc:
        return exc.code


@pytest.mark.redis_cluster
async def test_send_rate_is_per_user_across_nodes(start_node: StartNode) -> None:
    # The connection limiter is set far above the chat limit: only the latter may refuse here.
    limits = {"chat_send_per_s": 5, "rate_per_s": 1000.0, "rate_burst": 1000}
    one, two = await start_node(**limits), await start_node(**limits)
    a1, a2 = await chat(one, "alice", "one"), await chat(two, "alice", "two")
    conv = (await a1.create("group", "rate", [])).conv

    # 12 sends spanning at most two wall-clock seconds put more than 5 in one of them; start
    # just after a second begins so that they all fall in it.
    await asyncio.sleep(1.02 - time.time() % 1)
    replies = await asyncio.gather(
        *(attempt(c, conv, n) for n, c in zip(range(12), cycle((a1, a2)), strict=False))
    )
    accepted = [r for r in replies if isinstance(r, w.ChatSendOk)]
    codes = [r for r in replies if isinstance(r, str)]
    assert codes and set(codes) == {"rate_limited"}, replies
    per_second = Counter(r.ts // 1000 for r in accepted)
    # Each node decides alone until the other's sends reach it (chat.send_limit): a burst
    # through two nodes at once is held to twice the limit at most.
    assert max(per_second.values()) <= 2 * 5, per_second
    # Refusals used no sequence numbers: the accepted ones follow the "created" message.
    seqs, last_seq = await head(a2, conv)
    assert last_seq == 1 + len(accepted)
    assert sorted(r.seq for r in accepted) == seqs[1:]


@pytest.mark.redis_cluster
async def test_send_limit_counts_sends_through_other_nodes(start_node: StartNode) -> None:
    limits = {"chat_send_per_s": 6, "rate_per_s": 1000.0, "rate_burst": 1000}
    nodes = [await start_node(**limits) for _ in range(3)]
    a1, a2, a3 = [await chat(n, "alice", f"d{i}") for i, n in enumerate(nodes)]
    conv = (await a1.create("group", "rate", [])).conv

    # The limit's worth through node one; then through each other node one send, let
    # through before that node has heard of the others (the tolerance: what a node lets
    # through before its sends are reconciled), and, once reconciled, one more: refused.
    # Tried again if the second ends before the last reply, since the limit is per second.
    for _ in range(5):
        await asyncio.sleep(1.02 - time.time() % 1)
        second = int(time.time())
        first = await asyncio.gather(*(attempt(a1, conv, n) for n in range(6)))
        later: list[w.ChatSendOk | str] = []
        for other in (a2, a3):
            later.append(await attempt(other, conv, len(later)))
            await asyncio.sleep(4 * send_limit.RECONCILE_S)
            later.append(await attempt(other, conv, len(later)))
        if int(time.time()) != second:
            continue
        assert all(isinstance(r, w.ChatSendOk) and r.ts // 1000 == second for r in first), first
        assert [isinstance(r, w.ChatSendOk) for r in later] == [True, False] * 2, later
        assert later[1] == later[3] == "rate_limited", later
        break
    else:
        raise AssertionError("no attempt fitted in one second")


@pytest.mark.redis_cluster
async def test_send_counts_of_many_users_are_added_in_one_call_per_slot(
    redis_client: RedisClient,
) -> None:
    store = ChatStore(redis_client, 100, 100)
    users = [f"u{i}" for i in range(30)]
    sends = [(u, 1000, i + 1) for i, u in enumerate(users)]
    # The script loaded first (a Redis that never ran it answers the first call NOSCRIPT).
    await store.add_sends([("someone", 999, 1)])
    before = await _script_calls(redis_client)
    assert await store.add_sends(sends) == [i + 1 for i in range(30)]
    assert await store.add_sends([(users[3], 1000, 2), (users[0], 1001, 5)]) == [6, 5]
    if not is_cluster(redis_client):
        # Not one call per user: the node reports every sender's counts 20 times a second.
        assert await _script_calls(redis_client) - before == 2
    if is_cluster(redis_client):
        assert int(await redis_client.get(f"huddle:{{user:{users[3]}}}:sends:1000") or 0) == 6
        assert 0 < await redis_client.pttl(f"huddle:{{user:{users[0]}}}:sends:1001") <= 2000
    else:
        # One hash per second for every user's counter (no key and no life for each user).
        assert int(await redis_client.hget(send_counts_key(1000), users[3]) or 0) == 6
        assert await redis_client.hlen(send_counts_key(1000)) == 30
        assert 0 < await redis_client.pttl(send_counts_key(1001)) <= 2000


@pytest.mark.single_redis(
    "on one Redis the send script counts the send; a cluster keeps the counter in another "
    "slot, reconciled aside (test_send_limit_counts_sends_through_other_nodes)"
)
async def test_on_one_redis_a_send_is_counted_in_its_own_script_call(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    node = await start_node(chat_send_per_s=100)
    alice = await chat(node, "alice")
    conv = (await alice.create("group", "count", [])).conv
    await alice.send(conv, "warm")
    await asyncio.sleep(4 * send_limit.RECONCILE_S)
    calls: list[str] = []
    async with redis_client.monitor() as monitor:

        async def listen() -> None:
            while True:
                got = await monitor.next_command()
                # The node's own commands (not those the scripts run).
                if got["client_type"] != "lua":
                    calls.append(got["command"])

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.1)
        sent = [await alice.send(conv, f"m{i}") for i in range(3)]
        # Past the reconcile's pause: nothing of the counts is left to report.
        await asyncio.sleep(4 * send_limit.RECONCILE_S)
        await redis_client.ping()
        await until(lambda: True if "PING" in calls else None)
        listener.cancel()
    seconds = {r.ts // 1000 for r in sent}
    counted = [
        int(await redis_client.hget(send_counts_key(second), identity(alice)) or 0)
        for second in seconds
    ]
    # Each second's counters live on their own (SEND_COUNTER_MS), set by the node's first
    # send of the second, not by every user's.
    lives = [await redis_client.pttl(send_counts_key(second)) for second in seconds]
    assert all(0 < life <= 2000 for life in lives), lives
    # The warm-up's send may share a second with them.
    assert len(sent) <= sum(counted) <= len(sent) + 1, counted
    # No call for the counters beside the sends.
    assert not [c for c in calls if ":sends:" in c and not c.startswith("EVALSHA")], calls
    evals = [c for c in calls if c.startswith("EVALSHA")]
    assert len(evals) == len(sent), calls
    assert all("{conv:" in c for c in evals), calls


@pytest.mark.single_redis("the send script counts sends on one Redis only (see above)")
async def test_a_second_s_send_counters_get_their_life_once(redis_client: redis.Redis) -> None:
    """Users who each send once in a second (the usual pace) share that second's hash: its
    life is set by the node's first send of the second, not once for every user."""
    store = ChatStore(redis_client, 100, 100)
    users = [f"u{i}" for i in range(6)]
    convs = [direct_id(u, "peer") for u in users]
    for conv, user in zip(convs, users, strict=True):
        await store.ensure_direct(conv, user, "peer", 1)
        await store.make_direct_blocks(conv)
    calls: list[str] = []
    for _ in range(5):
        await asyncio.sleep(1.02 - time.time() % 1)
        second = int(time.time())
        calls.clear()
        async with redis_client.monitor() as monitor:

            async def listen() -> None:
                while True:
                    got = await monitor.next_command()
                    calls.append(got["command"])

            listener = asyncio.create_task(listen())
            await asyncio.sleep(0.05)
            counts = [SendCount(second) for _ in users]
            for user, conv, count in zip(users, convs, counts, strict=True):
                msg = w.ChatMessage(seq=-2, ts=second * 1000, sender=user, kind="text", text="hi")
                await store.send(conv, msg, count=count)
            await redis_client.ping()
            await until(lambda: True if "PING" in calls else None)
            listener.cancel()
        if int(time.time()) != second:
            continue
        assert [c.total for c in counts] == [1] * len(users)
        assert await redis_client.hgetall(send_counts_key(second)) == {
            u.encode(): b"1" for u in users
        }
        assert 0 < await redis_client.pttl(send_counts_key(second)) <= 2000
        lives = [c for c in calls if c.startswith("PEXPIRE")]
        assert lives == [f"PEXPIRE {send_counts_key(second)} 2000"], calls
        break
    else:
        raise AssertionError("no attempt fitted in one second")


async def _script_calls(client: RedisClient) -> int:
    if is_cluster(client):
        return 0
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


async def test_direct_sends_after_the_first_keep_every_check(
    node: Node, redis_client: redis.Redis
) -> None:
    alice, bob, eve = await chat(node, "alice"), await chat(node, "bob"), await chat(node, "eve")
    dm = (await alice.send(to="bob", text="one")).conv
    await alice.send(dm, "two")
    await bob.send(dm, "three")
    # Someone else, on the node that knows the conversation's users: still not a member.
    await refused(eve.send(dm, "let me in"), "not_member")
    assert (await head(alice, dm))[1] == 3

    # The conversation's keys lost: a send by name makes it anew, as the first one did.
    await redis_client.delete(*await redis_client.keys(f"huddle:{{conv:{dm}}}:*"))
    again = await alice.send(to="bob", text="still there?")
    assert again.conv == dm
    assert [m.text for m in await alice.history(dm)][-1] == "still there?"


# --- size -------------------------------------------------------------------------------


async def test_text_over_the_limit_is_refused_and_leaves_nothing(start_node: StartNode) -> None:
    node = await start_node(chat_max_text_chars=20)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = await group(alice, bob)
    before = await head(alice, conv)
    for text in ("x" * 21, "大" * 21, "x" * 5000):
        await refused(alice.send(conv, text), "message_too_large")
        assert await head(alice, conv) == before

    fits = await alice.send(conv, "大" * 20)  # the limit counts characters, not bytes
    await wait(bob, w.ChatMessageEvent, has_text(conv, "大" * 20))
    await refused(
        alice.request(w.ChatEdit(id="", conv=conv, seq=fits.seq, text="y" * 21)),
        "message_too_large",
    )
    stored = (await bob.history(conv))[-1]
    assert (stored.text, stored.edited) == ("大" * 20, False)
    await asyncio.sleep(QUIET_S)
    assert texts(bob, conv) == ["大" * 20]
    assert find(bob, w.ChatEdited) is None


# --- blocking ---------------------------------------------------------------------------


def block(user: str, blocked: bool = True) -> w.ChatBlock:
    return w.ChatBlock(id="", user=user, blocked=blocked)


@pytest.mark.redis_cluster
async def test_blocked_sender_is_refused_until_unblocked(node: Node) -> None:
    alice, carol = await chat(node, "alice"), await chat(node, "carol")
    phone, laptop = await chat(node, "bob", "phone"), await chat(node, "bob", "laptop")
    dm = (await alice.send(to="bob", text="hi")).conv
    await wait(laptop, w.ChatMessageEvent, has_text(dm, "hi"))

    await phone.request(block("alice"))
    _, blocked = await wait(laptop, w.ChatBlocked, lambda e: e.user == "alice")
    assert blocked.blocked
    before = await head(alice, dm)
    await refused(alice.send(to="bob", text="by name"), "blocked")
    await refused(alice.send(dm, "by conversation"), "blocked")
    assert await head(alice, dm) == before

    # Blocked before any direct conversation: none is made.
    await phone.request(block("carol"))
    await refused(carol.send(to="bob", text="hello?"), "blocked")
    assert await carol.conversations() == []
    assert [c.conv for c in await laptop.conversations()] == [dm]
    await refused(phone.request(block("bob")), "bad_message_content")

    await phone.request(block("alice", blocked=False))
    _, unblocked = await wait(laptop, w.ChatBlocked, lambda e: e.user == "alice" and not e.blocked)
    assert unblocked.fev > blocked.fev
    again = await alice.send(dm, "sorry")
    assert again.seq == before[1] + 1
    await wait(laptop, w.ChatMessageEvent, has_text(dm, "sorry"))
    assert texts(laptop, dm) == ["hi", "sorry"]


@pytest.mark.redis_cluster
async def test_a_block_holds_for_the_next_send_through_every_node(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    """A direct send reads the blocks from the conversation's own copy: a block (and its
    end) made through one node is in force for the very next send through any node, which
    knows the conversation's users already."""
    limits = {"chat_send_per_s": 100}
    one, two = await start_node(**limits), await start_node(**limits)
    alice1, alice2 = await chat(one, "alice", "d1"), await chat(two, "alice", "d2")
    bob = await chat(two, "bob")
    dm = (await alice1.send(to="bob", text="hi")).conv
    await alice2.send(to="bob", text="hi again")
    await bob.send(dm, "hello")

    for blocker in (bob, await chat(one, "bob", "other")):
        await blocker.request(block("alice"))
        for sender in (alice1, alice2):
            await refused(sender.send(to="bob", text="by name"), "blocked")
            await refused(sender.send(dm, "by conversation"), "blocked")
            await refused(sender.send(dm, "a reply", reply_to=1), "blocked")
        # Whoever blocks still writes to the one they blocked.
        await blocker.send(dm, "I can still write")
        await blocker.request(block("alice", blocked=False))
        for sender in (alice1, alice2):
            await sender.send(to="bob", text="by name")
            await sender.send(dm, "by conversation")
    # Both ways at once, and back.
    await bob.request(block("alice"))
    await alice1.request(block("bob"))
    await refused(alice2.send(dm, "no"), "blocked")
    await refused(bob.send(dm, "no"), "blocked")
    await alice1.request(block("bob", blocked=False))
    await bob.send(dm, "yes")
    await refused(alice2.send(dm, "no"), "blocked")
    await bob.request(block("alice", blocked=False))
    await alice2.send(dm, "yes")
    history = [m.text for m in await bob.history(dm)]
    assert "no" not in history and "a reply" not in history
    assert history[-2:] == ["yes", "yes"]


@pytest.mark.redis_cluster
async def test_blocks_of_a_conversation_made_before_its_copy_hold(
    node: Node, redis_client: redis.Redis
) -> None:
    """A direct conversation without the copy of its users' blocks (made before the copy
    existed, or its keys lost) gets one from their lists at its next send."""
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    dm = (await alice.send(to="bob", text="hi")).conv
    await bob.request(block("alice"))
    await redis_client.hdel(f"huddle:{{conv:{dm}}}:meta", "blocks")
    await redis_client.delete(f"huddle:{{conv:{dm}}}:blocks")
    await refused(alice.send(dm, "by conversation"), "blocked")
    await refused(alice.send(to="bob", text="by name"), "blocked")
    assert await redis_client.smembers(f"huddle:{{conv:{dm}}}:blocks") == {b"bob"}
    await bob.request(block("alice", blocked=False))
    await alice.send(dm, "again")
    await bob.send(dm, "welcome back")
    assert [m.text for m in await bob.history(dm)] == ["hi", "again", "welcome back"]


@pytest.mark.redis_cluster
async def test_send_refusals_come_in_the_documented_order(node: Node) -> None:
    """docs/protocol.md, chat.send's checks: membership and blocks before the file, the
    message replied to before a silenced member's refusal, whichever of them the send
    script makes."""
    alice, bob, eve = await chat(node, "alice"), await chat(node, "bob"), await chat(node, "eve")
    conv = await group(alice, bob)
    await alice.request(w.ChatSilence(id="", conv=conv, user="bob", seconds=60))
    await refused(bob.send(conv, "re: nothing", reply_to=99), "unknown_message")
    await refused(bob.send(conv, "re: the first", reply_to=1), "silenced")
    dm = (await alice.send(to="bob", text="hi")).conv
    await alice.send(dm, "known here now")
    await bob.request(block("alice"))
    await refused(alice.send(dm, kind="image", media="no-such-file"), "blocked")
    await refused(alice.send(to="bob", kind="image", media="no-such-file"), "blocked")
    await refused(alice.send(dm, "re: nothing", reply_to=99), "blocked")
    await refused(eve.send(dm, kind="image", media="no-such-file"), "not_member")
    await refused(eve.send(conv, "re: hi", reply_to=1, kind="image", media="x"), "not_member")


@pytest.mark.single_redis(
    "counts the node's commands with MONITOR, which one server answers for all; a cluster "
    "client has none (each master sees only its own slots)"
)
async def test_a_direct_send_is_one_redis_call(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    """Once a node knows a direct conversation, a send there (by name or by conversation,
    a reply too) is one script call: every check runs in it."""
    node = await start_node(chat_send_per_s=100)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    dm = (await alice.send(to="bob", text="hi")).conv
    await alice.send(dm, "warm")
    await bob.request(block("carol"))
    # Past the router's second look at the logs it followed (chat.router.SUBSCRIBE_SETTLE_S).
    await asyncio.sleep(1)
    calls: list[str] = []
    async with redis_client.monitor() as monitor:

        async def listen() -> None:
            while True:
                got = await monitor.next_command()
                # The node's commands about the conversation or anyone's blocks (not the
                # script's own, nor the send counters reconciled aside).
                command = got["command"]
                if got["client_type"] == "lua":
                    continue
                if "{conv:" in command or ":blocked" in command or command == "PING":
                    calls.append(command.split(" ", 1)[0].upper())

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.1)
        sent = [
            await alice.send(dm, "by conversation"),
            await alice.send(to="bob", text="by name"),
            await alice.send(dm, "a reply", reply_to=1),
            await bob.send(dm, "back"),
        ]
        await redis_client.ping()
        await until(lambda: True if "PING" in calls else None)
        listener.cancel()
    assert [r.seq for r in sent] == [3, 4, 5, 6]
    assert calls[: len(sent)] == ["EVALSHA"] * len(sent), calls
    assert calls[len(sent) :] == ["PING"], calls


@pytest.mark.single_redis("reads the send script's commands with MONITOR (see above)")
async def test_a_send_looks_up_no_blocks_or_silences_nobody_has(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    """The send script reads the counts of blockers and silenced members, and a direct
    conversation's two users, in the conversation's meta: where the counts are 0, a
    one-to-one or group send runs no look-up in the blocks or silenced keys, nor a
    one-to-one send in members; where they are not, it does, and refuses."""
    node = await start_node(chat_send_per_s=100)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    dm = (await alice.send(to="bob", text="hi")).conv
    conv = await group(alice, bob)
    await asyncio.sleep(1)  # past the router's second look (see above)

    async def script_commands(*sends: object) -> list[str]:
        calls: list[str] = []
        async with redis_client.monitor() as monitor:

            async def listen() -> None:
                while True:
                    got = await monitor.next_command()
                    if got["client_type"] == "lua" or got["command"] == "PING":
                        calls.append(got["command"])

            listener = asyncio.create_task(listen())
            await asyncio.sleep(0.1)
            for send in sends:
                await send  # type: ignore[misc]
            await redis_client.ping()
            await until(lambda: True if "PING" in calls else None)
            listener.cancel()
        return calls[:-1]

    calls = await script_commands(alice.send(dm, "one"), bob.send(conv, "two"))
    assert len([c for c in calls if c.startswith("SPUBLISH")]) == 2, calls
    looked = [c for c in calls if ":blocks" in c or ":silenced" in c]
    assert looked == [], calls
    # A direct conversation's members are its peers, read with the rest of its meta; a
    # group's are looked up.
    members = [c.split(" ", 2)[1] for c in calls if ":members" in c]
    assert members == [f"huddle:{{conv:{conv}}}:members"], calls

    await bob.request(block("alice"))
    await alice.request(w.ChatSilence(id="", conv=conv, user="bob", seconds=60))
    refusals: list[str] = []

    async def refusal(send: object, code: str) -> None:
        await refused(send, code)  # type: ignore[arg-type]
        refusals.append(code)

    calls = await script_commands(
        refusal(alice.send(dm, "no"), "blocked"), refusal(bob.send(conv, "no"), "silenced")
    )
    assert refusals == ["blocked", "silenced"]
    assert any(c.startswith("SISMEMBER") and ":blocks" in c for c in calls), calls
    assert any(c.startswith("HGET") and ":silenced" in c for c in calls), calls


# --- word filter ------------------------------------------------------------------------


async def test_word_filter_refuses_matching_text_and_edits(start_node: StartNode) -> None:
    node = await start_node(chat_word_filter=["bad\\s*word", "禁止"])
    alice, bob, carol = [await chat(node, u) for u in ("alice", "bob", "carol")]
    conv = await group(alice, bob)
    before = await head(alice, conv)
    for text in ("a BAD word", "BadWord!", "bad \t WORD", "これは禁止です"):
        await refused(alice.send(conv, text), "content_filtered")
        assert await head(alice, conv) == before
    await refused(alice.send(to="carol", text="bad word"), "content_filtered")
    assert await carol.conversations() == []

    clean = ["good words", "bad", "word bad", "禁 止"]
    sent = [await alice.send(conv, text) for text in clean]
    await refused(
        alice.request(w.ChatEdit(id="", conv=conv, seq=sent[0].seq, text="now a bad word")),
        "content_filtered",
    )
    history = await bob.history(conv)
    assert [(m.text, m.edited) for m in history[1:]] == [(t, False) for t in clean]
    await wait(bob, w.ChatMessageEvent, has_text(conv, clean[-1]))
    await asyncio.sleep(QUIET_S)
    assert texts(bob, conv) == clean
    assert find(bob, w.ChatEdited) is None


# --- reports ----------------------------------------------------------------------------


async def reports(c: ChatClient, conv: str) -> list[tuple[int, str, str]]:
    reply = await c.request(w.ChatReports(id="", conv=conv))
    assert isinstance(reply, w.ChatReportsOk)
    return [(r.seq, r.by, r.reason) for r in reply.reports]


def report(conv: str, seq: int, reason: str) -> w.ChatReport:
    return w.ChatReport(id="", conv=conv, seq=seq, reason=reason)


async def test_members_report_messages_and_admins_review_them(node: Node) -> None:
    alice, bob, carol, mallory = [await chat(node, u) for u in ("alice", "bob", "carol", "mallory")]
    conv = await group(alice, bob, carol)
    spam = await bob.send(conv, "buy now")
    assert await reports(alice, conv) == []

    await carol.request(report(conv, spam.seq, "spam"))
    await alice.request(report(conv, spam.seq, "advertising"))
    assert await reports(alice, conv) == [
        (spam.seq, "alice", "advertising"),
        (spam.seq, "carol", "spam"),
    ]
    await refused(reports(carol, conv), "forbidden")
    await refused(carol.request(report(conv, 99, "no such message")), "unknown_message")
    await refused(mallory.request(report(conv, spam.seq, "outsider")), "not_member")
    assert len(await reports(alice, conv)) == 2

    await alice.request(set_role(conv, "carol", "admin"))
    assert [r[1] for r in await reports(carol, conv)] == ["alice", "carol"]


async def test_nobody_reviews_reports_of_a_direct_conversation(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    sent = await alice.send(to="bob", text="hi")
    await bob.request(report(sent.conv, sent.seq, "rude"))
    for c in (alice, bob):
        await refused(reports(c, sent.conv), "forbidden")


# --- bad input --------------------------------------------------------------------------


async def test_bad_sends_are_refused_with_codes(node: Node) -> None:
    alice = await chat(node, "alice")
    conv = (await alice.create("group", "g", [])).conv
    before = await head(alice, conv)
    await refused(alice.send(conv, "both", to="bob"), "bad_message_content")
    await refused(alice.send(None, "neither"), "bad_message_content")
    await refused(alice.send(conv, None), "bad_message_content")
    await refused(alice.send(conv, " \n\t "), "bad_message_content")
    await refused(alice.send(conv, None, kind="sticker"), "bad_message_content")
    await refused(alice.send(to="alice", text="myself"), "bad_message_content")
    # An unknown conversation gets the answer of one the user is not in (no existence oracle).
    await refused(alice.send("g-unknown", "anyone?"), "not_member")
    await refused(alice.history("g-unknown"), "not_member")
    assert await head(alice, conv) == before
    assert [c.conv for c in await alice.conversations()] == [conv]


async def test_field_of_the_wrong_type_is_an_invalid_field_error(node: Node) -> None:
    alice = await chat(node, "alice")
    conv = (await alice.create("group", "g", [])).conv
    await alice.client.send_raw('{"id":"x","type":"chat.send","conv":5,"client_id":"a"}')
    error = await until(
        lambda: next((e for e in alice.client.unmatched_errors if e.re == "x"), None)
    )
    assert error.code == "invalid_field" and "conv" in error.message
    assert (await head(alice, conv))[1] == 1
    assert (await alice.send(conv, "still connected")).seq == 2


async def test_refused_direct_send_makes_no_conversation(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    await refused(alice.send(to="bob", text="re: nothing", reply_to=7), "unknown_message")
    await refused(alice.send(to="bob", kind="image", media="no-such-file"), "unknown_media")
    await asyncio.sleep(QUIET_S)
    assert await alice.conversations() == []
    assert await bob.conversations() == []
    assert find(bob, w.ChatJoined) is None
