"""One contract for both history stores: SQLite in the test's folder, and a real PostgreSQL
(tests/postgres.py) with a fresh database per test.

Events are made as the Redis scripts log them (numbered from 1 with no holes, each carrying
its log's epoch); the stores must copy them exactly once, in order, and answer reads as the
Redis reads do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chat import wire as w
from chat.history.events import decode_event, page_range
from chat.history.postgres import GIN_PENDING_LIST_KB, PostgresHistory
from chat.history.postgres import search_scope as pg_scope
from chat.history.sql import CANDIDATES_PER_ROUND, NewMessage, Span, SqlHistory, Tx
from chat.history.sqlite import SQLiteHistory, search_scope
from chat.history.store import (
    EpochChanged,
    Head,
    HistoryError,
    HistoryGap,
    LogEvent,
    SchemaTooNew,
)
from chat.hits import message_terms
from chat.text import highlight
from tests.postgres import Postgres, postgres

__all__ = ["postgres"]

Opener = Callable[..., Awaitable[SqlHistory]]
CONV = "g-contract"
T0 = 1_700_000_000_000


class Log:
    """A conversation's log as chat/lua/log.lua writes it."""

    def __init__(self, conv: str = CONV, epoch: str = "e1") -> None:
        self.conv = conv
        self.epoch = epoch
        self.ev = 0
        self.seq = 0

    def _next(self) -> dict[str, Any]:
        self.ev += 1
        return {"seq": 0, "conv": self.conv, "ev": self.ev, "epoch": self.epoch, "stamp": "s"}

    def message(
        self,
        text: str | None = "hello",
        *,
        sender: str = "ann",
        ts: int | None = None,
        reply_to: int | None = None,
        kind: w.MessageKind = "text",
        media: w.MediaRef | None = None,
        system: w.SystemInfo | None = None,
    ) -> w.ChatMessageEvent:
        self.seq += 1
        msg = w.ChatMessage(
            seq=self.seq,
            ts=T0 + self.seq if ts is None else ts,
            sender=sender,
            kind=kind,
            client_id=None if kind == "system" else f"c{self.seq}",
            text=text,
            media=media,
            system=system,
            reply_to=reply_to,
        )
        return w.ChatMessageEvent(**self._next(), message=msg)

    def edit(self, seq: int, text: str) -> w.ChatEdited:
        return w.ChatEdited(**self._next(), msg_seq=seq, text=text, edited_ts=T0 + 10**6)

    def recall(self, seq: int, by: str = "ann") -> w.ChatRecalled:
        return w.ChatRecalled(**self._next(), msg_seq=seq, by=by)

    def react(self, seq: int, emoji: str, user: str, users: list[str]) -> w.ChatReaction:
        return w.ChatReaction(
            **self._next(), msg_seq=seq, emoji=emoji, user=user, added=user in users, users=users
        )

    def read(self, user: str, seq: int) -> w.ChatReadEvent:
        return w.ChatReadEvent(**self._next(), user=user, read_seq=seq)


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the store under test; every call opens the same database again."""
    if request.param == "sqlite":
        path = tmp_path / "history.db"

        async def open_sqlite(schema: int | None = None) -> SqlHistory:
            return await SQLiteHistory.open(path, schema=schema)

        return open_sqlite
    server: Postgres = request.getfixturevalue("postgres")
    url = server.create_database()

    async def open_postgres(schema: int | None = None) -> SqlHistory:
        return await PostgresHistory.open(url, schema=schema)

    return open_postgres


@pytest.fixture
async def store(opener: Opener) -> AsyncIterator[SqlHistory]:
    opened = await opener()
    try:
        yield opened
    finally:
        await opened.close()


def seqs(msgs: list[w.ChatMessage]) -> list[int]:
    return [m.seq for m in msgs]


def search(query: str, **filters: Any) -> w.ChatSearch:
    return w.ChatSearch(id="s", query=query, **filters)


async def test_appends_in_order_and_pages_as_chat_history(store: SqlHistory) -> None:
    log = Log()
    assert await store.head(CONV) is None
    assert await store.page(CONV) == []
    events = [log.message(f"message {i}") for i in range(1, 31)]
    assert await store.append(CONV, events) == Head(30, "e1", 30)
    assert await store.head(CONV) == Head(30, "e1", 30)
    page = await store.page(CONV)
    assert seqs(page) == list(range(1, 31))
    assert page == [e.message for e in events]
    for params in (
        {"limit": 10},
        {"before": 11, "limit": 5},
        {"before": 3, "limit": 5},
        {"before": 1, "limit": 5},
        {"after": 25, "limit": 10},
        {"after": 30, "limit": 10},
        {"after": 0, "limit": 4},
        {"around": 15, "limit": 6},
        {"around": 2, "limit": 6},
        {"before": 99, "limit": 3},
        {"around": 15, "before": 2, "limit": 6},
        {"around": 15, "after": 20, "limit": 6},
        {"before": 11, "after": 2, "limit": 5},
    ):
        start, end = page_range(
            30,
            before=params.get("before"),
            after=params.get("after"),
            around=params.get("around"),
            limit=params["limit"],
        )
        got = await store.page(CONV, **params)
        assert seqs(got) == list(range(start, end + 1)), params
    assert seqs(await store.page(CONV, before=11, limit=5)) == [6, 7, 8, 9, 10]
    # ``around`` wins over ``before`` (it cut the page to nothing before).
    assert seqs(await store.page(CONV, around=15, before=2, limit=6)) == list(range(12, 18))
    assert seqs(await store.messages(CONV, [7, 3, 99, 3])) == [3, 7]
    assert await store.messages(CONV, []) == []
    assert await store.messages("g-other", [1]) == []
    assert await store.heads([CONV, "g-other", CONV]) == {CONV: Head(30, "e1", 30)}
    assert await store.heads([]) == {}
    assert await store.conversations() == [CONV]


async def test_a_retried_batch_is_applied_once(store: SqlHistory) -> None:
    log = Log()
    events = [log.message(f"m{i}") for i in range(1, 21)]
    await store.append(CONV, events[:10])
    assert await store.append(CONV, events[:10]) == Head(10, "e1", 10)
    assert await store.append(CONV, events[4:15]) == Head(15, "e1", 15)
    assert await store.append(CONV, events) == Head(20, "e1", 20)
    assert await store.append(CONV, []) == Head(20, "e1", 20)
    assert seqs(await store.page(CONV)) == list(range(1, 21))
    hits = await store.search([CONV], search("m7"))
    assert [h.message.seq for h in hits] == [7]


async def test_two_archivers_racing_apply_each_event_once(opener: Opener) -> None:
    log = Log()
    events = [log.message(f"m{i}") for i in range(1, 41)]
    first, second = await opener(), await opener()
    try:
        heads = await asyncio.gather(
            *(s.append(CONV, events[:n]) for n in (20, 40) for s in (first, second))
        )
        assert Head(40, "e1", 40) in heads
        assert seqs(await second.page(CONV)) == list(range(1, 41))
    finally:
        await first.close()
        await second.close()


async def test_archivers_racing_over_many_conversations_apply_each_event_once(
    opener: Opener,
) -> None:
    """Passes over overlapping sets of conversations, from two connections at once (on
    PostgreSQL every conversation of a pass is locked in one statement): each event
    stored once, every conversation whole, no pass refused."""
    convs = [f"g-{i}" for i in range(6)]
    events = {}
    for conv in convs:
        log = Log(conv)
        events[conv] = [log.message(f"{conv} m{i}") for i in range(1, 21)]
    first, second = await opener(), await opener()
    try:
        passes = [
            [(conv, events[conv][:n]) for conv in convs[lo:hi]]
            for n, lo, hi in ((10, 0, 4), (20, 2, 6), (20, 0, 6), (15, 1, 5), (20, 0, 3))
        ]
        await asyncio.gather(*(s.append_many(p) for p in passes for s in (first, second)))
        assert await second.heads(convs) == {conv: Head(20, "e1", 20) for conv in convs}
        for conv in convs:
            page = await second.page(conv)
            assert page == [e.message for e in events[conv]]
    finally:
        await first.close()
        await second.close()


async def test_a_gap_is_refused_and_nothing_of_its_batch_applied(store: SqlHistory) -> None:
    log = Log()
    events = [log.message(f"m{i}") for i in range(1, 11)]
    await store.append(CONV, events[:5])
    with pytest.raises(HistoryGap):
        await store.append(CONV, events[6:])
    with pytest.raises(HistoryGap):
        await store.append(CONV, [events[5], events[7]])  # 6 follows, 8 does not
    assert await store.head(CONV) == Head(5, "e1", 5)
    assert seqs(await store.page(CONV)) == [1, 2, 3, 4, 5]
    assert await store.messages(CONV, [6, 7, 8]) == []
    assert await store.found_by(CONV, ["m6"]) == []
    assert await store.append(CONV, events[5:]) == Head(10, "e1", 10)
    new = Log("g-new")
    new.message("first")
    with pytest.raises(HistoryGap):
        await store.append("g-new", [new.message("second")])  # a log starts at event 1
    assert await store.head("g-new") is None


async def test_another_epoch_is_refused(store: SqlHistory) -> None:
    log = Log(epoch="e1")
    await store.append(CONV, [log.message("a"), log.message("b")])
    reborn = Log(epoch="e2")  # the log made anew: its numbers start again
    with pytest.raises(EpochChanged):
        await store.append(CONV, [reborn.message("other a")])
    later = Log(epoch="e2")
    later.ev, later.seq = 2, 2
    with pytest.raises(EpochChanged):
        await store.append(CONV, [later.message("c")])
    assert await store.head(CONV) == Head(2, "e1", 2)
    # A log written before epochs existed takes its first epoch without a break.
    old = Log(conv="g-old", epoch="")
    await store.append("g-old", [old.message("a")])
    old.epoch = "e9"
    assert await store.append("g-old", [old.message("b")]) == Head(2, "e9", 2)


async def test_bad_events_are_refused(store: SqlHistory) -> None:
    other = Log(conv="g-other")
    with pytest.raises(HistoryError):
        await store.append(CONV, [other.message("x")])
    with pytest.raises(HistoryError):
        decode_event(b'{"type":"chat.user_typing","seq":0,"conv":"c","user":"u","typing":true}')
    with pytest.raises(HistoryError):
        decode_event(b"not json")
    channel_receipt = w.ChatReadEvent(seq=0, conv=CONV, fev=3, user="ann", read_seq=1)
    with pytest.raises(HistoryError):
        await store.append(CONV, [channel_receipt])
    log = Log()
    event = log.message("round trip")
    assert decode_event(msgspec.json.encode(event)) == event


async def test_edits_reactions_receipts_and_recall(store: SqlHistory) -> None:
    log = Log()
    await store.append(CONV, [log.message("the first draft"), log.message("other")])
    await store.append(
        CONV,
        [
            log.edit(1, "the second draft"),
            log.edit(1, "the final text"),
            log.react(1, "👍", "bob", ["bob"]),
            log.react(1, "👍", "cid", ["bob", "cid"]),
            log.react(1, "🎉", "bob", ["bob"]),
            log.react(1, "🎉", "bob", []),
            log.read("bob", 1),
            log.read("cid", 2),
            log.read("bob", 2),
        ],
    )
    [msg] = await store.messages(CONV, [1])
    assert (msg.text, msg.edited, msg.edited_ts) == ("the final text", True, T0 + 10**6)
    assert msg.reactions == {"👍": ["bob", "cid"]}
    versions = await store.edits(CONV, 1)
    assert [v.text for v in versions] == ["the first draft", "the second draft"]
    assert await store.reads(CONV) == {"ann": 2, "bob": 2, "cid": 2}
    assert [h.message.seq for h in await store.search([CONV], search("final"))] == [1]
    assert await store.search([CONV], search("draft")) == []
    assert await store.found_by(CONV, ["draft"]) == []
    assert await store.found_by(CONV, ["final", "text"]) == [1]

    await store.append(CONV, [log.recall(1, by="bob")])
    [gone] = await store.messages(CONV, [1])
    assert gone == w.ChatMessage(
        seq=1,
        ts=T0 + 1,
        sender="ann",
        kind="text",
        client_id="c1",
        recalled=True,
        recalled_by="bob",
        reactions={"👍": ["bob", "cid"]},
    )
    assert await store.edits(CONV, 1) == []
    assert await store.search([CONV], search("final")) == []
    assert await store.search([CONV], search("text")) == []
    assert await store.found_by(CONV, ["final"]) == []
    assert await store.found_by(CONV, ["other"]) == [2]
    # Changes to a recalled message, or to one no longer stored, change nothing.
    head = await store.append(CONV, [log.edit(1, "back again"), log.edit(99, "nothing")])
    assert head == Head(log.ev, "e1", 2)
    assert (await store.messages(CONV, [1]))[0].text is None


def mixed(log: Log) -> list[Any]:
    """Messages, and changes to them, interleaved."""
    return [
        log.message("alpha one"),
        log.message("beta two", sender="bob"),
        log.edit(1, "alpha edited"),
        log.message("gamma three", reply_to=1),
        log.react(2, "👍", "ann", ["ann"]),
        log.read("cid", 2),
        log.recall(2, by="bob"),
        log.message("delta four", sender="cid"),
        log.edit(1, "alpha edited again"),
        log.read("bob", 4),
    ]


async def test_one_batch_or_one_event_at_a_time_store_the_same(store: SqlHistory) -> None:
    together, apart = mixed(Log("g-together")), mixed(Log("g-apart"))
    await store.append("g-together", together)
    for event in apart:
        await store.append("g-apart", [event])
    heads = [await store.head(c) for c in ("g-together", "g-apart")]
    assert heads[0] == heads[1] == Head(10, "e1", 4)
    every = [1, 2, 3, 4]
    assert await store.messages("g-together", every) == await store.messages("g-apart", every)
    [first, second, third, _] = await store.messages("g-together", every)
    assert (first.text, first.thread) == (
        "alpha edited again",
        w.ThreadSummary(count=1, last_seq=3),
    )
    assert (second.recalled, second.reactions, third.reply_to) == (True, {"👍": ["ann"]}, 1)
    assert [v.text for v in await store.edits("g-together", 1)] == ["alpha one", "alpha edited"]
    assert await store.reads("g-together") == await store.reads("g-apart")
    assert await store.reads("g-together") == {"ann": 3, "bob": 4, "cid": 4}
    for query in ("alpha", "edited", "beta", "delta"):
        found = await store.search(["g-together", "g-apart"], search(query))
        assert sorted(h.conv for h in found) == (
            [] if query == "beta" else ["g-apart", "g-together"]
        ), query


async def test_several_conversations_in_one_transaction(store: SqlHistory) -> None:
    """append_many stores as append does, each conversation from its own head; any refused
    batch applies none of them."""
    one, two, alone = mixed(Log("g-one")), mixed(Log("g-two")), mixed(Log("g-alone"))
    await store.append("g-two", two[:3])
    heads = await store.append_many([("g-two", two), ("g-one", one[:6])])
    assert heads == [Head(10, "e1", 4), await store.head("g-one")]
    assert await store.append_many([("g-one", one)]) == [Head(10, "e1", 4)]
    await store.append("g-alone", alone)
    every = [1, 2, 3, 4]
    for conv in ("g-one", "g-two"):
        assert await store.messages(conv, every) == await store.messages("g-alone", every)
        assert await store.reads(conv) == await store.reads("g-alone")
        assert await store.edits(conv, 1) == await store.edits("g-alone", 1)

    # Messages and receipts only (stored together for every conversation), beside a batch
    # with changes, from different heads; then one at a time elsewhere: the same.
    def plain(conv: str) -> list[LogEvent]:
        log = Log(conv)
        return [
            log.message("m1", sender="ann"),
            log.message("m2", sender="bob"),
            log.read("cid", 2),
            log.message("m3", sender="ann"),
        ]

    convs = ("g-p1", "g-p2", "g-p3")
    await store.append("g-p2", plain("g-p2")[:2])
    edited = Log("g-edited")
    changes: list[LogEvent] = [edited.message("x"), edited.edit(1, "x2"), edited.message("y")]
    batches: list[tuple[str, Sequence[LogEvent]]] = [(c, plain(c)) for c in convs]
    batches.append(("g-edited", changes))
    assert await store.append_many(batches) == [Head(4, "e1", 3)] * 3 + [Head(3, "e1", 2)]
    for c in convs:
        q = c.replace("g-p", "g-q")
        await store.append(q, plain(q))
        assert (await store.head(c), await store.reads(c)) == (
            await store.head(q),
            {"ann": 3, "bob": 2, "cid": 2},
        )
        assert await store.reads(q) == await store.reads(c)
        mine, theirs = await store.messages(c, [1, 2, 3]), await store.messages(q, [1, 2, 3])
        assert [(m.seq, m.text, m.sender) for m in mine] == [
            (m.seq, m.text, m.sender) for m in theirs
        ]
        assert await store.found_by(c, ["m3"]) == [3]
    late, gap = Log("g-late"), Log("g-gap")
    gap.message("skipped")
    with pytest.raises(HistoryGap):
        await store.append_many([("g-late", [late.message("x")]), ("g-gap", [gap.message("y")])])
    assert await store.head("g-late") is None and await store.head("g-gap") is None


async def test_seed_stores_a_conversation_whole(store: SqlHistory) -> None:
    log = Log()
    events = mixed(log)
    await store.append("g-model", [msgspec.structs.replace(e, conv="g-model") for e in events])
    model = await store.messages("g-model", [1, 2, 3, 4])
    for msg in model:
        msg.thread = None
    edits = {1: await store.edits("g-model", 1)}
    reads = await store.reads("g-model")
    # The store had an old part of the conversation; the log lost what followed it.
    await store.append(CONV, events[:2])
    head = Head(10, "e1", 4)
    assert await store.seed(CONV, head, model, edits, reads) == head
    assert await store.messages(CONV, [1, 2, 3, 4]) == await store.messages("g-model", [1, 2, 3, 4])
    assert await store.edits(CONV, 1) == edits[1]
    assert await store.reads(CONV) == reads
    assert await store.found_by(CONV, ["alpha", "again"]) == [1]
    assert await store.found_by(CONV, ["beta"]) == []
    # The log goes on from the seeded head; a seed behind the store changes nothing.
    assert await store.append(CONV, [log.message("epsilon five")]) == Head(11, "e1", 5)
    assert await store.seed(CONV, head, [], {}, {}) == Head(11, "e1", 5)
    assert len(await store.page(CONV)) == 5


async def test_recall_leaves_no_text_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = await SQLiteHistory.open(path)
    log = Log()
    secret = "quartz-lantern-meets-at-dawn-by-the-old-mill"
    scope = search_scope(CONV)
    try:
        others = [log.message(f"other message {i}") for i in range(40)]
        await store.append(CONV, [*others, log.message(f"plan: {secret}")])
        await store.append(CONV, [log.edit(n, f"other edited {n}") for n in range(1, 40)])
        await store.append(CONV, [log.edit(41, f"plan v2: {secret}"), log.recall(41)])
        async with store._read() as tx:
            # Nothing is left in the search index of the recalled words (the index is read
            # directly: the join with the messages would hide entries left behind).
            rows = await tx.rows(
                "SELECT rowid FROM message_search WHERE message_search MATCH ?",
                (f'"{scope}quartz"',),
            )
            assert rows == []
        await store.expire(CONV, T0 + 11)
        async with store._read() as tx:
            assert await tx.rows(
                "SELECT rowid FROM message_search WHERE message_search MATCH ?",
                (f'"{scope}other"',),
            ) == [(n,) for n in range(11, 41)]
    finally:
        await store.close()
    for name in (path, Path(f"{path}-wal")):
        if name.exists():
            assert secret.encode() not in name.read_bytes()


async def test_own_sends_move_the_read_position(store: SqlHistory) -> None:
    log = Log()
    created = w.SystemInfo(event="created", by="ann")
    await store.append(CONV, [log.message(None, kind="system", system=created, sender="ann")])
    assert await store.reads(CONV) == {}  # a conversation change is nobody's send
    await store.append(CONV, [log.message("hi", sender="bob"), log.read("ann", 2)])
    assert await store.reads(CONV) == {"ann": 2, "bob": 2}
    await store.append(CONV, [log.read("bob", 1), log.message("yo", sender="ann")])
    assert await store.reads(CONV) == {"ann": 3, "bob": 2}
    call = log.message(None, kind="system", system=created, sender="bob")
    call.message.client_id = "call-1-ended"  # a call record is stored by a send
    await store.append(CONV, [call])
    assert await store.reads(CONV) == {"ann": 3, "bob": 4}


async def test_threads(store: SqlHistory) -> None:
    log = Log()
    await store.append(
        CONV,
        [
            log.message("root"),
            log.message("reply a", reply_to=1),
            log.message("unrelated"),
            log.message("reply b", reply_to=1),
            log.message("reply c", reply_to=1),
        ],
    )
    root, unrelated = await store.messages(CONV, [1, 3])
    assert root.thread == w.ThreadSummary(count=3, last_seq=5)
    assert unrelated.thread is None
    assert seqs(await store.thread(CONV, 1, 0, 50)) == [2, 4, 5]
    assert seqs(await store.thread(CONV, 1, 2, 1)) == [4]
    assert await store.thread(CONV, 3, 0, 50) == []
    [paged_root] = await store.page(CONV, around=1, limit=1)
    assert paged_root.thread == w.ThreadSummary(count=3, last_seq=5)


async def test_search_rules(store: SqlHistory) -> None:
    a, b, c = Log("g-a"), Log("g-b"), Log("g-c")
    pdf = w.MediaRef(id="f1", name="Quarterly-Report.pdf", size=10, mime="application/pdf")
    await store.append(
        "g-a",
        [
            a.message("Meet at the CAFÉ tomorrow", sender="ann", ts=T0 + 100),
            a.message("我们在京都车站见面", sender="bob", ts=T0 + 200),
            a.message("東京 と 京都", sender="bob", ts=T0 + 300),  # bigrams of 東京都, apart
            a.message(None, kind="file", media=pdf, ts=T0 + 400),
            a.message(
                None,
                kind="system",
                system=w.SystemInfo(event="renamed", by="ann", name="cafe"),
                ts=T0 + 500,
            ),
            a.message("東京都に住んでいます cafe", sender="ann", ts=T0 + 600),
        ],
    )
    await store.append("g-b", [b.message("cafe in room b", sender="cid", ts=T0 + 700)])
    await store.append("g-c", [c.message("cafe nobody may see", sender="cid", ts=T0 + 800)])
    both = ["g-a", "g-b"]

    hits = await store.search(both, search("cafe"))
    assert [(h.conv, h.message.seq) for h in hits] == [("g-b", 1), ("g-a", 6), ("g-a", 1)]
    first = next(h for h in hits if h.conv == "g-a" and h.message.seq == 1)
    marked = highlight("Meet at the CAFÉ tomorrow", "cafe")
    assert (first.snippet, first.ranges) == (marked.snippet, marked.ranges)
    assert first.snippet[first.ranges[0][0] : first.ranges[0][1]] == "CAFÉ"
    assert [h.message.seq for h in await store.search(["g-a"], search("车站"))] == [2]
    assert [h.message.seq for h in await store.search(["g-a"], search("京都车站"))] == [2]
    assert [h.message.seq for h in await store.search(["g-a"], search("東京都"))] == [6]
    assert [h.message.seq for h in await store.search(["g-a"], search("quarterly"))] == [4]
    assert await store.search(["g-a"], search("renamed")) == []
    assert [h.conv for h in await store.search(["g-c"], search("nobody"))] == ["g-c"]
    assert await store.search(both, search("nobody")) == []
    assert await store.search([], search("cafe")) == []
    assert await store.search(both, search("!!!")) == []
    by_ann = await store.search(both, search("cafe", sender="ann"))
    assert [(h.conv, h.message.seq) for h in by_ann] == [("g-a", 6), ("g-a", 1)]
    window = await store.search(both, search("cafe", after_ts=T0 + 100, before_ts=T0 + 700))
    assert [(h.conv, h.message.seq) for h in window] == [("g-a", 6), ("g-a", 1)]
    assert len(await store.search(both, search("cafe", limit=2))) == 2


async def test_search_reads_past_candidates_the_exact_check_drops(store: SqlHistory) -> None:
    """Newer messages holding every bigram of the query but never the query itself fill more
    than one round of candidates; the older real match is still found."""
    log = Log()
    events = [log.message("京都の話", ts=T0)]
    events += [log.message("東京 京都", ts=T0 + i) for i in range(1, CANDIDATES_PER_ROUND + 30)]
    events += [log.message("東京都", ts=T0 - 5)]
    await store.append(CONV, events)
    hits = await store.search([CONV], search("東京都"))
    assert [h.message.seq for h in hits] == [len(events)]


async def test_expire_deletes_old_history(store: SqlHistory) -> None:
    log = Log()
    await store.append(
        CONV,
        [
            log.message("ancient words", ts=T0 - 10 * 86_400_000),
            log.message("old words", ts=T0 - 5 * 86_400_000),
            log.message("fresh words", ts=T0),
        ],
    )
    await store.append(CONV, [log.edit(1, "ancient edited words")])
    await store.append("g-keep", [Log("g-keep").message("old words elsewhere", ts=T0 - 10**10)])
    assert await store.expire(CONV, T0 - 86_400_000) == 2
    assert await store.expire(CONV, T0 - 86_400_000) == 0
    assert seqs(await store.page(CONV)) == [3]
    assert await store.edits(CONV, 1) == []
    assert [h.message.seq for h in await store.search([CONV, "g-keep"], search("words"))] == [
        3,
        1,
    ]
    assert [h.conv for h in await store.search([CONV, "g-keep"], search("old"))] == ["g-keep"]
    assert await store.found_by(CONV, ["words"]) == [3]
    assert await store.head(CONV) == Head(4, "e1", 3)
    # The log goes on after it, and changes to deleted messages change nothing.
    assert await store.append(CONV, [log.react(1, "👍", "bob", ["bob"]), log.message("next")])
    assert seqs(await store.page(CONV)) == [3, 4]


async def test_delete_forgets_the_conversation(store: SqlHistory) -> None:
    log = Log()
    await store.append(CONV, [log.message("bye now"), log.read("bob", 1)])
    await store.delete(CONV)
    assert await store.head(CONV) is None
    assert await store.page(CONV) == []
    assert await store.reads(CONV) == {}
    assert await store.search([CONV], search("bye")) == []
    assert await store.found_by(CONV, ["bye"]) == []
    fresh = Log()
    assert await store.append(CONV, [fresh.message("again")]) == Head(1, "e1", 1)


async def test_history_survives_reopening(opener: Opener) -> None:
    log = Log()
    first = await opener()
    try:
        await store_some(first, log)
    finally:
        await first.close()
    again = await opener()
    try:
        assert await again.head(CONV) == Head(log.ev, "e1", 3)
        assert [m.text for m in await again.page(CONV)] == ["one", "two", "three"]
    finally:
        await again.close()


async def store_some(store: SqlHistory, log: Log) -> None:
    await store.append(CONV, [log.message("one"), log.message("two"), log.message("three")])


async def _write_old_message(tx: Tx, conv: str, message: w.ChatMessage) -> None:
    """A stored message as every older schema wrote its row (message 1 of ``conv``)."""
    await tx.execute(
        "INSERT INTO messages (conv, seq, ts, sender, reply_to, body) VALUES (?, ?, ?, ?, ?, ?)",
        (conv, 1, message.ts, "ann", None, msgspec.json.encode(message)),
    )


async def _write_old_head(tx: Tx, conv: str) -> None:
    """The head of ``conv`` as every older schema wrote it, its one message stored."""
    await tx.execute(
        "INSERT INTO conversations (conv, ev, epoch, last_seq) VALUES (?, ?, ?, ?)",
        (conv, 1, "e1", 1),
    )


async def test_upgrade_from_schema_version_1(opener: Opener) -> None:
    log = Log()
    old = await opener(schema=1)
    try:
        assert await old.schema_version() == 1
        # Rows as a version 1 store wrote them: it had no search index.
        event = log.message("written before search existed")
        async with old._write() as tx:
            await _write_old_message(tx, CONV, event.message)
            await _write_old_head(tx, CONV)
    finally:
        await old.close()
    new = await opener()
    try:
        assert await new.schema_version() == len(new.migrations) >= 2
        hits = await new.search([CONV], search("before search"))
        assert [h.message.seq for h in hits] == [1]
        await new.append(CONV, [log.message("after the upgrade")])
        assert [h.message.seq for h in await new.search([CONV], search("upgrade"))] == [2]
    finally:
        await new.close()
    again = await opener()  # opening an up-to-date store changes nothing
    try:
        assert await again.schema_version() == len(again.migrations)
        assert len(await again.search([CONV], search("before"))) == 1
    finally:
        await again.close()


async def test_upgrade_scopes_the_search_index_by_conversation(opener: Opener) -> None:
    """A version 2 store indexed bare terms; the upgrade scopes them by conversation, so
    that searches find them and changes after it remove exactly what was indexed."""
    log = Log()
    old = await opener(schema=2)
    try:
        event = log.message("indexed before the scopes")
        async with old._write() as tx:
            await _write_old_message(tx, CONV, event.message)
            # The bare terms version 2 indexed the row under.
            bare = ["indexed", "before", "the", "scopes"]
            if isinstance(old, SQLiteHistory):
                await tx.execute(
                    "INSERT INTO message_search (rowid, terms) "
                    "SELECT id, ? FROM messages WHERE seq = 1",
                    (" ".join(bare),),
                )
            else:
                await tx.execute("UPDATE messages SET terms = ? WHERE seq = 1", (bare,))
            await _write_old_head(tx, CONV)
    finally:
        await old.close()
    new = await opener()
    try:
        assert await new.schema_version() == len(new.migrations) >= 3
        assert [h.message.seq for h in await new.search([CONV], search("scopes"))] == [1]
        assert await new.search(["g-other"], search("scopes")) == []
        async with new._read() as tx:
            if isinstance(new, SQLiteHistory):
                left = await tx.rows(
                    "SELECT rowid FROM message_search WHERE message_search MATCH ?", ('"scopes"',)
                )
            else:
                left = await tx.rows("SELECT id FROM messages WHERE terms @> ?", (["scopes"],))
        assert left == []
        await new.append(CONV, [log.edit(1, "edited after the upgrade")])
        assert await new.search([CONV], search("scopes")) == []
        assert await new.found_by(CONV, ["scopes"]) == []
        assert await new.found_by(CONV, ["edited"]) == [1]
        await new.append(CONV, [log.recall(1)])
        assert await new.found_by(CONV, ["edited"]) == []
        assert await new.search([CONV], search("upgrade")) == []
    finally:
        await new.close()


async def test_upgrade_indexes_bare_terms_beside_the_scoped_ones(opener: Opener) -> None:
    """A version 3 store indexed scoped terms only; the upgrade indexes the bare ones too,
    so that a user in many conversations (the bare plan) finds the old messages, and changes
    after it remove them from both."""
    log = Log()
    other = Log("g-other")
    old = await opener(schema=3)
    try:
        async with old._write() as tx:
            for conv, event in (
                (CONV, log.message("indexed before the bare terms")),
                ("g-other", other.message("bare elsewhere")),
            ):
                msg = event.message
                await _write_old_message(tx, conv, msg)
                # The scoped terms version 3 indexed the row under, and no others.
                terms = message_terms(msg)
                if isinstance(old, SQLiteHistory):
                    await tx.execute(
                        "INSERT INTO message_search (rowid, terms) "
                        "SELECT id, ? FROM messages WHERE conv = ? AND seq = 1",
                        (" ".join(search_scope(conv) + t for t in terms), conv),
                    )
                else:
                    await tx.execute(
                        "UPDATE messages SET terms = ? WHERE conv = ? AND seq = 1",
                        ([pg_scope(conv) + t for t in terms], conv),
                    )
                await _write_old_head(tx, conv)
    finally:
        await old.close()
    new = await opener()
    try:
        assert await new.schema_version() == len(new.migrations) >= 4
        many = [CONV, "g-other", *(f"g-{i}" for i in range(new.scoped_up_to))]
        assert len(many) > new.scoped_up_to  # the bare plan
        for convs in ([CONV], many):
            assert [h.message.seq for h in await new.search(convs, search("before bare"))] == [1]
        assert [h.conv for h in await new.search(many, search("bare"))] == ["g-other", CONV]
        assert await new.found_by(CONV, ["bare", "terms"]) == [1]  # both agree
        await new.append(CONV, [log.edit(1, "edited after the upgrade")])
        assert await new.search(many, search("bare")) != []
        assert [h.conv for h in await new.search(many, search("bare"))] == ["g-other"]
        assert await new.found_by(CONV, ["bare"]) == []
        assert await new.found_by(CONV, ["edited"]) == [1]
        await new.append(CONV, [log.recall(1)])
        assert await new.found_by(CONV, ["edited"]) == []
        assert await new.search(many, search("upgrade")) == []
    finally:
        await new.close()


async def test_upgrade_from_the_first_schema_4_of_postgres(postgres: Postgres) -> None:
    """PostgreSQL's schema 4 as first written kept the bare terms in a column of their own;
    the next upgrade drops it and indexes them as schema 4 does now."""
    url = postgres.create_database()
    log = Log()
    old = await PostgresHistory.open(url, schema=3)
    try:
        await old.append(CONV, [log.message("indexed in a column")])
        async with old._write() as tx:
            for statement in (
                "ALTER TABLE messages ADD COLUMN bare_terms TEXT[]",
                "UPDATE messages SET bare_terms = ARRAY(SELECT substr(t, 11) FROM unnest(terms) t)",
                "CREATE INDEX messages_bare_terms ON messages USING GIN (bare_terms)",
                "UPDATE schema_version SET version = 4",
            ):
                await tx.execute(statement)
    finally:
        await old.close()
    new = await PostgresHistory.open(url)
    try:
        assert await new.schema_version() == len(new.migrations) == 5
        async with new._read() as tx:
            columns = await tx.rows(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'messages' AND column_name = 'bare_terms'"
            )
            indexes = await tx.rows(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'messages' "
                "AND indexname IN ('messages_bare_terms', 'messages_order') ORDER BY indexname"
            )
        assert columns == []
        assert indexes == [("messages_bare_terms",), ("messages_order",)]
        new.scoped_up_to = 0  # the bare plan
        assert [h.message.seq for h in await new.search([CONV], search("column"))] == [1]
        await new.append(CONV, [log.message("another in the index")])
        assert await new.found_by(CONV, ["index"]) == [2]
    finally:
        await new.close()


async def test_postgres_stores_each_messages_terms_as_its_array(postgres: Postgres) -> None:
    """A pass's arrays go to PostgreSQL as text (chat.history.postgres.text_array): a
    message's terms column holds exactly its scoped terms, as an array of strings, whatever
    they are (``null`` is a word, not a missing element; quotes, backslashes, braces, commas
    and spaces are no term of chat.text, yet stored as given), both indexes find them, and
    conversations and users of any name get their heads and read positions."""
    store = await PostgresHistory.open(postgres.create_database())
    odd = ["null", "NULL", 'say "hi"', "back\\slash", "{braces}", "a,b", "two words", "東京"]
    try:
        log = Log()
        await store.append_many(
            [(CONV, [log.message("null NULL Null nil"), log.message("東京 null 會議")])]
        )
        other = Log("g-other")
        await store.append_many([(other.conv, [other.message("plain words")])])
        async with store._write() as tx:
            await store._insert(
                tx,
                [
                    NewMessage("g-odd", 1, T0, "ann", None, b"{}", odd),
                    NewMessage("g-odd", 2, T0, "ann", None, b"{}", []),
                ],
            )
            rows = await tx.rows("SELECT conv, seq, terms FROM messages ORDER BY conv, seq")
        expected = {
            (CONV, 1): message_terms(log_message_text("null NULL Null nil")),
            (CONV, 2): message_terms(log_message_text("東京 null 會議")),
            ("g-other", 1): message_terms(log_message_text("plain words")),
            ("g-odd", 1): odd,
        }
        got = {(conv, int(seq)): terms for conv, seq, terms in rows}
        assert got[("g-odd", 2)] is None  # no terms: no array
        for (conv, seq), terms in expected.items():
            assert got[(conv, seq)] == [pg_scope(conv) + t for t in terms], (conv, seq)
        assert await store.found_by(CONV, ["null"]) == [1, 2]
        assert await store.found_by(CONV, ["東京"]) == [2]
        assert await store.found_by("g-odd", ['say "hi"', "back\\slash"]) == [1]
        quoted = Log('g-"q\\{,}')
        user = 'b "o" \\ b, {null}'
        events: list[LogEvent] = [quoted.message("quoted", sender=user), quoted.read("NULL", 1)]
        heads = await store.append_many([(quoted.conv, events), (CONV, [log.read(user, 2)])])
        assert heads == [Head(2, "e1", 1), Head(3, "e1", 2)]
        assert await store.heads([quoted.conv, CONV]) == {quoted.conv: heads[0], CONV: heads[1]}
        assert await store.reads(quoted.conv) == {user: 1, "NULL": 1}
        assert (await store.reads(CONV))[user] == 2
    finally:
        await store.close()


async def test_postgres_search_indexes_move_their_pending_terms_in_small_steps(
    postgres: Postgres,
) -> None:
    """Every connection of the store keeps GIN's pending list short (GIN_PENDING_LIST_KB,
    not PostgreSQL's 4 MB): an archiving pass moves a little of it, not, one in a few, the
    list of the passes before it."""
    store = await PostgresHistory.open(postgres.create_database(), max_size=3)
    try:

        async def setting(_: int) -> str:
            async with store._read() as tx:
                await asyncio.sleep(0.05)  # the three at once: each on a connection of its own
                [(value,)] = await tx.rows("SHOW gin_pending_list_limit")
            return str(value)

        values = await asyncio.gather(*(setting(i) for i in range(3)))
        assert values == [f"{GIN_PENDING_LIST_KB}kB"] * 3
        assert GIN_PENDING_LIST_KB < 4096  # PostgreSQL's own: 4MB
    finally:
        await store.close()


def log_message_text(text: str) -> w.ChatMessage:
    return w.ChatMessage(seq=1, ts=T0, sender="ann", kind="text", text=text)


def watch_newest(store: SqlHistory) -> list[bool | None]:
    """For each search that read the newest matches first (``_floors``), whether it kept
    what it found there (else it read every match after them), filled in as it searches;
    None for a search that did not."""
    kept: list[bool | None] = []
    floors, match = store._floors, store._match

    async def watched_floors(*args: Any, **kwargs: Any) -> AsyncIterator[tuple[Span, int]]:
        kept.append(None)
        async for floor in floors(*args, **kwargs):
            kept[-1] = True
            yield floor

    def watched_match(*args: Any, **kwargs: Any) -> tuple[str, str, list[Any]]:
        if kwargs.get("span") is None and kept and kept[-1]:
            kept[-1] = False  # every match read after the newest
        return match(*args, **kwargs)

    store._floors = watched_floors  # type: ignore[method-assign]
    store._match = watched_match  # type: ignore[method-assign]
    return kept


async def test_both_search_plans_answer_the_same(store: SqlHistory) -> None:
    """The same searches through the scoped entries and through the bare ones (the
    threshold forced both ways), after a walk over the newest messages or not, reading the
    newest matches first or not: the same hits in the same order. The conversations are
    stored one after the other, each over the whole time, so that the order the store took
    the messages in is far from their time order."""
    texts = [
        "plan the budget meeting",
        "会议室 in 东京",
        "我们在京都车站见面 meeting",
        "東京 と 京都",
        "東京都に住んでいます",
        "Meet at the CAFÉ for the budget",
        "zephyr 麒麟 meeting",
        "another meeting notes",
    ]
    convs = [f"g-{i}" for i in range(6)]
    for i, conv in enumerate(convs):
        log = Log(conv)
        events = [
            log.message(texts[(i + k) % len(texts)], sender=f"u{k % 3}", ts=T0 + 10 * k + i)
            for k in range(30)
        ]
        await store.append(conv, events)
        await store.append(conv, [log.edit(2, "edited meeting 会议"), log.recall(3)])
    # Stored last, as a conversation copied whole from Redis is (seed): messages of every
    # time, at the same times as g-0's (the order then goes by seq and conversation).
    log = Log("g-6")
    late = [log.message(texts[k % len(texts)], ts=T0 + 10 * k) for k in range(30)]
    head = Head(log.ev, log.epoch, log.seq)
    await store.seed("g-6", head, [e.message for e in late], {}, {})
    queries = [
        search("meeting"),
        search("会议"),
        search("京都车站"),
        search("東京都"),
        search("cafe budget"),
        search("zephyr 麒麟"),
        search("meeting", sender="u1"),
        search("meeting", after_ts=T0 + 50, before_ts=T0 + 200),
        search("meeting", limit=3),
        search("zephyr budget"),  # both in many messages, never in one
        search("edited"),
        search("nothing here"),
    ]
    mine = [*convs[:4], "g-6"]
    answers: dict[
        tuple[int, int, int], list[list[tuple[str, int, str, list[tuple[int, int]]]]]
    ] = {}
    # Walks (PostgreSQL's): none, one shorter than the answers to some queries, and one
    # over every message. The newest matches read first: none, and from one match to a
    # few (each growing until it holds enough candidates or every match).
    walks = (0, 10, 10**6) if store.walk_rows else (0,)
    newests = (0, 1, 2, 5) if store.newest_rows else (0,)
    if isinstance(store, PostgresHistory):
        store.walk_from = 1
        store.newest_estimate = False
    kept = watch_newest(store)
    for threshold in (0, 10**6):
        for walk in walks:
            for newest in newests:
                store.scoped_up_to, store.walk_rows, store.newest_rows = threshold, walk, newest
                store.bare_from_share = 2.0 if threshold else 0.0  # all scoped, or all bare
                if isinstance(store, PostgresHistory):
                    # After a window of no hit: the windows go on, or every match at once.
                    store.few_reads = (0, 10**6)[(walk + newest) % 2]
                answers[threshold, walk, newest] = [
                    [
                        (h.conv, h.message.seq, h.snippet, h.ranges)
                        for h in await store.search(mine, q)
                    ]
                    for q in queries
                ]
    first = answers[0, 0, 0]
    assert len(answers) == 2 * len(walks) * len(newests)
    assert all(answer == first for answer in answers.values())
    if store.newest_rows:
        # Both ends were taken: answers from the newest matches alone, and reads of every
        # match after them.
        assert kept.count(True) > 0 and kept.count(False) > 0
    meeting, *_ = first
    assert len(meeting) == 20 and {conv for conv, *_ in meeting} <= set(mine)
    assert [len(a) for a in first[-3:]] == [0, 4, 0]
    # g-6's messages are among the newest hits, before g-0's of the same time.
    stamps = [(h.conv, h.message.ts) for h in await store.search(mine, search("meeting"))]
    assert ("g-6", T0 + 260) in stamps
    assert stamps.index(("g-6", T0 + 260)) < stamps.index(("g-0", T0 + 260))


async def test_search_after_a_window_of_no_hit_reads_every_match_if_they_are_few(
    postgres: Postgres,
) -> None:
    """PostgreSQL's windows of the newest messages: once one holds no hit, every match is
    read at once if they are fewer than few_reads (none if there are none: two words never
    in one message), else the windows grow on (a word missing from the newest messages
    only); the same hits either way."""
    store = await PostgresHistory.open(postgres.create_database())
    try:
        log = Log("g-0")
        texts = ["alpha one", "beta two", "gamma three", *["alpha four"] * 7, *["beta"] * 30]
        await store.append("g-0", [log.message(t, ts=T0 + k) for k, t in enumerate(texts)])
        store.walk_rows, store.newest_rows, store.newest_estimate = 0, 1, False
        windows: list[int] = []
        floors = store._floors

        async def watched(*args: Any, **kwargs: Any) -> AsyncIterator[tuple[Span, int]]:
            async for floor in floors(*args, **kwargs):
                windows[-1] += 1
                yield floor

        rounds: list[int] = []
        read_rounds = store._rounds

        async def counted(*args: Any, **kwargs: Any) -> list[w.SearchHit]:
            rounds[-1] += 1
            return await read_rounds(*args, **kwargs)

        store._floors = watched  # type: ignore[method-assign]
        store._rounds = counted  # type: ignore[method-assign]
        hits: dict[tuple[str, int], list[int]] = {}
        read: dict[tuple[str, int], int] = {}  # windows taken
        reads: dict[tuple[str, int], int] = {}  # readings of the matches (windows, every)
        for query in ("alpha beta", "alpha", "gamma"):
            for few in (0, 3, 10**6):
                store.few_reads = few
                windows.append(0)
                rounds.append(0)
                found = await store.search(["g-0"], search(query))
                hits[query, few] = [h.message.seq for h in found]
                read[query, few], reads[query, few] = windows[-1], rounds[-1]
        for query, seqs_found in (("alpha beta", []), ("alpha", [10, 9, 8, 7, 6, 5, 4, 1])):
            assert hits[query, 0] == hits[query, 3] == hits[query, 10**6] == seqs_found
        assert hits["gamma", 0] == [3]
        # Without the count: windows of the newest 1 and 8 messages, then one of 64 holds
        # every message (not read: every match is).
        assert read["alpha beta", 0] == read["alpha", 0] == read["gamma", 0] == 2
        # Never together, or one match: no match is few, after the first window.
        assert read["alpha beta", 3] == read["gamma", 3] == 1
        # Eight alphas, none among the newest 30 messages: not few under 3, the windows
        # grow on; few under a million.
        assert read["alpha", 3] == 2 and read["alpha", 10**6] == 1
        # Every match read after the windows, but none when the count found none.
        assert reads["alpha beta", 0] == 3 and reads["alpha beta", 3] == 1
        assert reads["gamma", 3] == 2 and reads["alpha", 10**6] == 2
    finally:
        await store.close()


async def test_search_plan_follows_the_users_share_of_the_messages(store: SqlHistory) -> None:
    """The bare entries for a user whose conversations hold a tenth of the messages or
    more, or who is in more than scoped_up_to conversations; the scoped ones otherwise."""
    assert store.bare_from_share == 0.1
    sizes = {"g-big": 100, **{f"g-small{i}": 5 for i in range(20)}}  # 200 messages
    for conv, size in sizes.items():
        log = Log(conv)
        await store.append(conv, [log.message(f"word {k}") for k in range(size)])
    plans: list[bool] = []
    match = store._match

    def watched(*args: Any, **kwargs: Any) -> tuple[str, str, list[Any]]:
        plans.append(kwargs["scoped"])
        return match(*args, **kwargs)

    store._match = watched  # type: ignore[method-assign]
    small = [f"g-small{i}" for i in range(20)]
    for convs, scoped in (
        (["g-big"], False),  # 100 of 200
        (small[:2], True),  # 10 of 200
        (small[:3], True),  # 15 of 200
        (small[:4], False),  # 20 of 200
        (small, False),
        (["g-none", "g-small0"], True),  # no messages in one: 5 of 200
    ):
        plans.clear()
        hits = await store.search(convs, search("word"))
        assert plans and set(plans) == {scoped}, convs
        assert {h.conv for h in hits} == set(convs) - {"g-none"}
    store.scoped_up_to = 1
    plans.clear()
    await store.search(small[:2], search("word"))
    assert plans and set(plans) == {False}


async def test_a_newer_schema_is_refused(opener: Opener) -> None:
    store = await opener()
    try:
        async with store._write() as tx:
            await tx.execute("UPDATE schema_version SET version = ?", (99,))
    finally:
        await store.close()
    with pytest.raises(SchemaTooNew, match="99"):
        await opener()
