"""The history store in SQL, written once for both databases (chat.history.sqlite and
chat.history.postgres): they differ only in how they run a transaction, how they index
search terms and a few clauses, which they supply.

Tables (each database's migrations create them):
- ``conversations``: each conversation's :class:`Head` (last event applied, its log epoch,
  last message seq);
- ``messages``: one row per message, ``body`` the message as Redis stores it (JSON of
  chat.wire.ChatMessage, without thread summary and reactions), ``reactions`` (JSON, emoji
  -> users) beside it so that a reaction never rewrites the body;
- ``edits``: earlier versions of edited messages;
- ``reads``: each member's read position;
- ``schema_version``: the one number of the schema (see :meth:`SqlHistory.migrate`).

Statements are written with ``?`` placeholders; the PostgreSQL side turns them into
psycopg's. No statement holds another ``?`` or any ``%``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, NamedTuple, Protocol

import msgspec

from chat import hits as found
from chat import wire as w
from chat.history import events as apply
from chat.history.store import (
    EpochChanged,
    Head,
    HistoryError,
    HistoryGap,
    LogEvent,
    SchemaTooNew,
)
from chat.hits import message_terms
from chat.text import query_terms

ENCODER: Final = msgspec.json.Encoder()
MESSAGE_DECODER: Final = msgspec.json.Decoder(w.ChatMessage)
REACTIONS_DECODER: Final = msgspec.json.Decoder(dict[str, list[str]])
# Search: candidates read per round, and rounds at most (a round reads older candidates when
# filters or the exact check dropped too many).
CANDIDATES_PER_ROUND: Final = 100
MAX_ROUNDS: Final = 10
# Search plans: each term is indexed twice, scoped by its conversation and bare. Through the
# scoped entries only those of the user's conversations are read, but the query has a
# branch per conversation; through the bare ones every match in every conversation is read
# and kept if it is theirs (reading the newest first stops once they hold the answer, but
# a rare term's matches are all read). So a user whose conversations hold at least
# BARE_FROM_SHARE of the store's messages (the others' matches are then few enough beside
# theirs), or who is in more than SCOPED_UP_TO conversations (a query of that many branches
# costs more than reading all matches: a user in all of 1,000 conversations took 0.9 s on
# SQLite and 2 s on PostgreSQL for a term in one message of five, over a million messages),
# is searched through the bare entries. In a store of conversations of even size,
# BARE_FROM_SHARE is a number of conversations that follows the store's (100 of 1,000).
# Each plan forced over a million messages, the bare one was as fast or faster from 50-100
# conversations of 1,000 on (SQLite 11-15 ms against 15-23 for a common term at 100),
# while the scoped one grew with them (SQLite 90-140 ms at 1,000; PostgreSQL 0.5-4.6 s at
# 200). See benchmarks/README.md (history_search).
SCOPED_UP_TO: Final = 250
BARE_FROM_SHARE: Final = 0.1


class Tx(Protocol):
    """One transaction (or snapshot read) on the database."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class NewMessage(NamedTuple):
    """A message row to insert, with the search terms it is indexed under."""

    conv: str
    seq: int
    ts: int
    sender: str
    reply_to: int | None
    body: bytes
    terms: list[str]
    reactions: bytes | None = None


_READ_TO: Final = (
    "INSERT INTO reads (conv, user_id, read_seq) VALUES (?, ?, ?) "
    "ON CONFLICT (conv, user_id) DO UPDATE SET read_seq = CASE "
    "WHEN excluded.read_seq > reads.read_seq THEN excluded.read_seq "
    "ELSE reads.read_seq END"
)
_MOVE_HEAD: Final = (
    "INSERT INTO conversations (conv, ev, epoch, last_seq) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (conv) DO UPDATE SET ev = excluded.ev, epoch = excluded.epoch, "
    "last_seq = excluded.last_seq"
)


def _row(conv: str, msg: w.ChatMessage) -> NewMessage:
    stored = (
        msg
        if msg.thread is None and msg.reactions is None
        else msgspec.structs.replace(msg, thread=None, reactions=None)
    )
    return NewMessage(
        conv=conv,
        seq=msg.seq,
        ts=msg.ts,
        sender=msg.sender,
        reply_to=msg.reply_to,
        body=ENCODER.encode(stored),
        terms=message_terms(msg),
        reactions=ENCODER.encode(msg.reactions) if msg.reactions else None,
    )


def _plain(
    conv: str, head: Head, events: Sequence[LogEvent]
) -> tuple[Head, list[w.ChatMessage], dict[str, int]] | None:
    """A batch that only adds messages (numbered above the head's last) and moves read
    positions: the head after it, its messages and the read positions. None for any other
    batch, and for one the checks of ``append`` refuse (applied one by one, it raises)."""
    ev, epoch, last_seq = head
    added: list[w.ChatMessage] = []
    reads: dict[str, int] = {}
    for event in events:
        if event.conv != conv or event.ev is None:
            return None
        if event.epoch and epoch and event.epoch != epoch:
            return None
        if event.ev <= ev:
            continue
        if event.ev != ev + 1:
            return None
        if isinstance(event, w.ChatMessageEvent):
            msg = event.message
            if msg.seq <= last_seq:
                return None
            added.append(msg)
            last_seq = msg.seq
            for user, seq in apply.reads_moved(msg):
                reads[user] = max(reads.get(user, 0), seq)
        elif isinstance(event, w.ChatReadEvent):
            reads[event.user] = max(reads.get(event.user, 0), event.read_seq)
        else:
            return None
        epoch = event.epoch or epoch
        ev = event.ev
    return Head(ev, epoch, last_seq), added, reads


# Of the rows a search reads: from the first (a row id or a time), up to but not including
# the second if not None (see SqlHistory._floors).
Span = tuple[int, int | None]


def time_bounds(req: w.ChatSearch, column: str) -> tuple[list[str], list[Any]]:
    """The conditions on ``column`` (a time in ms) of the time a search asks for, from
    ``after_ts`` (included) to ``before_ts`` (not), and their parameters."""
    bounds: list[str] = []
    params: list[Any] = []
    if req.after_ts is not None:
        bounds.append(f"{column} >= ?")
        params.append(req.after_ts)
    if req.before_ts is not None:
        bounds.append(f"{column} < ?")
        params.append(req.before_ts)
    return bounds, params


# A schema step: migrations[i] takes the schema from version i to i + 1.
Migration = Callable[["SqlHistory", Tx], Awaitable[None]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _blob(value: Any) -> bytes:
    """A BLOB or BYTEA column's value (psycopg may give a memoryview)."""
    return bytes(value)


def _decoded(rows: Sequence[tuple[Any, ...]]) -> list[tuple[str, int, int, w.ChatMessage]]:
    """(conversation, seq, ts, message) of rows (conv, seq, ts, body, reactions)."""
    out = []
    for conv, seq, ts, body, reactions in rows:
        msg = MESSAGE_DECODER.decode(_blob(body))
        if reactions:
            msg.reactions = REACTIONS_DECODER.decode(_blob(reactions))
        out.append((_text(conv), int(seq), int(ts), msg))
    return out


class SqlHistory(ABC):
    """A :class:`chat.history.store.HistoryStore` over one SQL database."""

    migrations: Sequence[Migration] = ()
    # The archiver's pause before a pass into this store (HistoryStore.archive_pause_s):
    # None, chat.history.archiver.ARCHIVE_DELAY_S.
    archive_pause_s: float | None = None
    # Whether a row's search terms go with the row (PostgreSQL: a column of it), so that
    # deleting the row deletes them; else they are removed by :meth:`_unindex` first.
    terms_in_row: bool = False
    # The search plan's thresholds (see SCOPED_UP_TO); tests set them to force either plan.
    scoped_up_to: int = SCOPED_UP_TO
    bare_from_share: float = BARE_FROM_SHARE
    # Messages a search reads newest first before it asks an index (see _walk); tests set
    # it to force or skip that step.
    walk_rows: int = 0
    # Matches (SQLite) or messages (PostgreSQL) a search reads newest first, at first,
    # before it reads every match (see _floors); 0: none. Tests set it to force or skip
    # that step.
    newest_rows: int = 0

    def thread_cpu_seconds(self) -> float | None:
        """No thread of its own (SQLite's connections run on theirs: it says so)."""
        return None

    # --- what each database supplies --------------------------------------------------------

    @abstractmethod
    def _write(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A write transaction: committed when the block ends, rolled back on an error."""

    @abstractmethod
    def _read(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A read of one consistent state."""

    @abstractmethod
    async def _insert(self, tx: Tx, rows: Sequence[NewMessage]) -> None:
        """Insert new message rows (their seqs are free) and index their terms."""

    @abstractmethod
    async def _index(self, tx: Tx, row_id: int, conv: str, terms: Sequence[str]) -> None:
        """Make message row ``row_id`` of ``conv`` findable by ``terms`` (it has none yet),
        scoped and bare."""

    @abstractmethod
    async def _unindex(self, tx: Tx, row_id: int, conv: str, terms: Sequence[str]) -> None:
        """Remove the terms ``row_id`` of ``conv`` was indexed under (exactly those), scoped
        and bare."""

    @abstractmethod
    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, Any]:
        """A condition ``column`` is one of ``values``, and its one parameter."""

    @abstractmethod
    def _match(
        self,
        terms: Sequence[str],
        convs: Sequence[str],
        *,
        scoped: bool,
        span: Span | None = None,
    ) -> tuple[str, str, list[Any]]:
        """Search: the FROM clause joining ``messages m`` to the index, the condition that
        a row has every one of ``terms`` (it may also hold rows of conversations other
        than ``convs``, as long as it holds every one of theirs), and its parameters;
        through the entries scoped by conversation or the bare ones; of the rows in
        ``span`` only, if given (as :meth:`_floors` gives it)."""

    @abstractmethod
    def _floors(
        self,
        tx: Tx,
        terms: Sequence[str],
        convs: Sequence[str],
        req: w.ChatSearch,
        *,
        share: tuple[int, int],
        scoped: bool,
    ) -> AsyncIterator[tuple[Span, int]]:
        """Search, before :meth:`_match` reads every match (``share``: the messages of
        ``convs`` and of all, as :meth:`_share` gives them): ``(span, oldest)`` pairs, each
        reaching further back than the one before, such that every message of ``convs``
        (in the time ``req`` asks for) of ``oldest`` or later is in ``span`` (row ids or
        times, as the database reads them best: from the first, below the second if not
        None), ``oldest`` chosen so that those rows likely hold the answer; none when the
        database has no such step or it would not pay. The search reads the matches in
        each span in turn, and keeps what it finds once its last hit is of ``oldest`` or
        later (the answer is then the one of every match); else it reads every match."""

    async def _few(
        self, tx: Tx, terms: Sequence[str], convs: Sequence[str], *, scoped: bool
    ) -> int | None:
        """Search, after a span of :meth:`_floors` held no hit: the number of every match
        (of :meth:`_match` without a span) if reading them reads so few rows that it costs
        no more than the next, longer span (the search then reads them at once, which
        answers the same; none at all: nothing to read), else None. None here: the spans
        go on."""
        return None

    @abstractmethod
    async def _lock_conversation(self, tx: Tx, conv: str) -> None:
        """Keep other processes from appending to ``conv`` until this transaction ends,
        so that two archivers copying the same events apply them once."""

    async def _read_to_many(self, tx: Tx, rows: Sequence[tuple[str, str, int]]) -> None:
        """Move read positions forward: (conv, user, seq) rows, one per conversation and
        user."""
        await tx.executemany(_READ_TO, rows)

    async def _move_heads(self, tx: Tx, rows: Sequence[tuple[str, int, str, int]]) -> None:
        """Set the heads of conversations: (conv, ev, epoch, last_seq) rows, one per
        conversation."""
        await tx.executemany(_MOVE_HEAD, rows)

    async def _lock_conversations(self, tx: Tx, convs: Sequence[str]) -> None:
        """``_lock_conversation`` for each of ``convs``, in their order (a database may
        take them all in one statement)."""
        for conv in convs:
            await self._lock_conversation(tx, conv)

    @abstractmethod
    async def _plan(self, tx: Tx) -> None:
        """Set up the read transaction ``tx`` for a search (a database may steer its
        planner)."""

    @abstractmethod
    def _walk(
        self, terms: Sequence[str], convs: Sequence[str], req: w.ChatSearch
    ) -> tuple[str, str, list[Any]] | None:
        """Search, first: the newest stored messages of every conversation (of the time
        ``req`` asks for), a bounded number of them, as a FROM clause, the condition that a
        row has every one of ``terms`` and the parameters of both; None when the database
        has no such walk, or when it would not pay for a user in ``convs``. A search that
        finds enough hits there is done (they are the newest of all), else it asks
        :meth:`_match`."""

    @abstractmethod
    async def _lock_schema(self, tx: Tx) -> None:
        """Keep other processes from migrating at the same time (held until commit)."""

    # --- schema -----------------------------------------------------------------------------

    async def migrate(self, target: int | None = None) -> int:
        """Bring the schema to ``target`` (default: the newest), one transaction for all the
        steps; replies the version. A database newer than this code is refused."""
        newest = len(self.migrations)
        want = newest if target is None else target
        async with self._write() as tx:
            await self._lock_schema(tx)
            await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            rows = await tx.rows("SELECT version FROM schema_version")
            current = int(rows[0][0]) if rows else 0
            if current > newest:
                raise SchemaTooNew(
                    f"the history database has schema version {current}; this version of "
                    f"Huddle knows up to {newest}: run a newer one"
                )
            for step in self.migrations[current:want]:
                await step(self, tx)
            if not rows:
                await tx.execute("INSERT INTO schema_version (version) VALUES (?)", (current,))
            if want > current:
                await tx.execute("UPDATE schema_version SET version = ?", (want,))
            return max(current, want)

    async def schema_version(self) -> int:
        async with self._read() as tx:
            rows = await tx.rows("SELECT version FROM schema_version")
        return int(rows[0][0]) if rows else 0

    @staticmethod
    async def stored_terms(tx: Tx, where: str = "1 = 1") -> list[tuple[int, str, list[str]]]:
        """(row id, conversation, search terms) of every stored message matching ``where``
        that has terms: for a migration that adds or rebuilds an index (each does it with
        the statements of its own schema, not of the newest)."""
        rows: list[tuple[int, str, list[str]]] = []
        for row_id, conv, body in await tx.rows(
            f"SELECT id, conv, body FROM messages WHERE {where}"
        ):
            terms = message_terms(MESSAGE_DECODER.decode(_blob(body)))
            if terms:
                rows.append((int(row_id), _text(conv), terms))
        return rows

    # --- the log, applied ---------------------------------------------------------------

    async def head(self, conv: str) -> Head | None:
        async with self._read() as tx:
            return await self._head(tx, conv)

    async def heads(self, convs: Sequence[str]) -> dict[str, Head]:
        if not convs:
            return {}
        where, param = self._in("conv", list(dict.fromkeys(convs)))
        async with self._read() as tx:
            rows = await tx.rows(
                f"SELECT conv, ev, epoch, last_seq FROM conversations WHERE {where}", (param,)
            )
        return {_text(c): Head(int(ev), _text(e), int(s)) for c, ev, e, s in rows}

    async def _head(self, tx: Tx, conv: str) -> Head | None:
        rows = await tx.rows(
            "SELECT ev, epoch, last_seq FROM conversations WHERE conv = ?", (conv,)
        )
        if not rows:
            return None
        ev, epoch, last_seq = rows[0]
        return Head(int(ev), _text(epoch), int(last_seq))

    async def append(self, conv: str, events: Sequence[LogEvent]) -> Head:
        async with self._write() as tx:
            return await self._append(tx, conv, events)

    async def append_many(self, batches: Sequence[tuple[str, Sequence[LogEvent]]]) -> list[Head]:
        # Conversations locked in one order: two archivers never wait for each other in turn.
        order = sorted(range(len(batches)), key=lambda i: batches[i][0])
        convs = [batches[i][0] for i in order]
        out: dict[int, Head] = {}
        async with self._write() as tx:
            if len(set(convs)) != len(convs):
                for i in order:
                    out[i] = await self._append(tx, batches[i][0], batches[i][1])
                return [out[i] for i in range(len(batches))]
            await self._lock_conversations(tx, convs)
            where, param = self._in("conv", convs)
            stored = {
                _text(c): Head(int(ev), _text(e), int(s))
                for c, ev, e, s in await tx.rows(
                    f"SELECT conv, ev, epoch, last_seq FROM conversations WHERE {where}", (param,)
                )
            }
            # Batches of new messages and receipts only (nearly all of them) go in a few
            # statements for every conversation together; the others one by one.
            added: list[tuple[str, w.ChatMessage]] = []
            reads: list[tuple[str, str, int]] = []
            moved: list[tuple[str, Head]] = []
            for i in order:
                conv, events = batches[i]
                head = stored.get(conv, Head(0, "", 0))
                plan = _plain(conv, head, events)
                if plan is None:
                    out[i] = await self._append(tx, conv, events)
                    continue
                new, msgs, read = plan
                out[i] = new
                added += [(conv, m) for m in msgs]
                reads += [(conv, user, seq) for user, seq in sorted(read.items())]
                if new != head:
                    moved.append((conv, new))
            if added:
                await self._insert(tx, [_row(conv, msg) for conv, msg in added])
            if reads:
                await self._read_to_many(tx, reads)
            if moved:
                await self._move_heads(tx, [(conv, *head) for conv, head in moved])
        return [out[i] for i in range(len(batches))]

    async def _append(self, tx: Tx, conv: str, events: Sequence[LogEvent]) -> Head:
        await self._lock_conversation(tx, conv)
        head = await self._head(tx, conv) or Head(0, "", 0)
        if not events:
            return head
        ev, epoch, last_seq = head
        # Consecutive messages are inserted together, and read positions moved once at
        # the end (they only move forward): a few statements per batch, not per event.
        added: list[w.ChatMessage] = []
        reads: dict[str, int] = {}
        for event in events:
            if event.conv != conv:
                raise HistoryError(f"an event of {event.conv!r} given for {conv!r}")
            number = apply.event_number(event)
            if event.epoch and epoch and event.epoch != epoch:
                raise EpochChanged(
                    f"{conv}: event {number} is of log epoch {event.epoch!r}; "
                    f"the store has epoch {epoch!r} up to event {ev}"
                )
            if number <= ev:
                continue  # applied before: an archiver retrying a batch
            if number != ev + 1:
                raise HistoryGap(f"{conv}: event {number} given after event {ev}")
            epoch = event.epoch or epoch
            ev = number
            if isinstance(event, w.ChatMessageEvent):
                msg = event.message
                added.append(msg)
                last_seq = max(last_seq, msg.seq)
                for user, seq in apply.reads_moved(msg):
                    reads[user] = max(reads.get(user, 0), seq)
                continue
            if isinstance(event, w.ChatReadEvent):
                reads[event.user] = max(reads.get(event.user, 0), event.read_seq)
                continue
            await self._add(tx, conv, added)
            added = []
            await self._change(tx, conv, event)
        await self._add(tx, conv, added)
        await self._read_to(tx, conv, reads)
        new = Head(ev, epoch, last_seq)
        if new != head:
            await tx.execute(_MOVE_HEAD, (conv, *new))
        return new

    async def _change(
        self, tx: Tx, conv: str, event: w.ChatEdited | w.ChatRecalled | w.ChatReaction
    ) -> None:
        """Apply a change to one stored message."""
        rows = await tx.rows(
            "SELECT id, body, reactions FROM messages WHERE conv = ? AND seq = ?",
            (conv, event.msg_seq),
        )
        if not rows:
            return  # deleted since (retention): nothing left to change
        row_id, body, raw_reactions = int(rows[0][0]), _blob(rows[0][1]), rows[0][2]
        if isinstance(event, w.ChatReaction):
            before = REACTIONS_DECODER.decode(_blob(raw_reactions)) if raw_reactions else None
            after = apply.reacted(before, event)
            await tx.execute(
                "UPDATE messages SET reactions = ? WHERE id = ?",
                (ENCODER.encode(after) if after else None, row_id),
            )
            return
        old = MESSAGE_DECODER.decode(body)
        if old.recalled:
            return  # the scripts refuse to change a recalled message
        new = (
            apply.edited(old, event)
            if isinstance(event, w.ChatEdited)
            else apply.recalled(old, event)
        )
        if isinstance(event, w.ChatEdited):
            rows = await tx.rows(
                "SELECT COUNT(*) FROM edits WHERE conv = ? AND seq = ?", (conv, old.seq)
            )
            await tx.execute(
                "INSERT INTO edits (conv, seq, version, body) VALUES (?, ?, ?, ?)",
                (conv, old.seq, int(rows[0][0]) + 1, body),
            )
        else:
            # A recall deletes every earlier version, as in Redis (rewrite.lua).
            await tx.execute("DELETE FROM edits WHERE conv = ? AND seq = ?", (conv, old.seq))
        old_terms = message_terms(old)
        if old_terms:
            await self._unindex(tx, row_id, conv, old_terms)
        await tx.execute("UPDATE messages SET body = ? WHERE id = ?", (ENCODER.encode(new), row_id))
        new_terms = message_terms(new)
        if new_terms:
            await self._index(tx, row_id, conv, new_terms)

    async def _read_to(self, tx: Tx, conv: str, reads: dict[str, int]) -> None:
        """Move each user's read position forward to the seq given (never back)."""
        if not reads:
            return
        await tx.executemany(_READ_TO, [(conv, user, seq) for user, seq in sorted(reads.items())])

    async def seed(
        self,
        conv: str,
        head: Head,
        messages: Sequence[w.ChatMessage],
        edits: dict[int, list[w.ChatMessage]],
        reads: dict[str, int],
    ) -> Head:
        """Store the conversation as it stood at event ``head.ev``, copied whole from Redis
        (its messages with their reactions, earlier versions and read positions), in place
        of what the store had of it: for a log that no longer holds the events after the
        store's head. A store already at or past ``head.ev`` (in its epoch) is left as it
        is. Replies the head now."""
        async with self._write() as tx:
            await self._lock_conversation(tx, conv)
            current = await self._head(tx, conv)
            if current is not None and current.ev >= head.ev and current.epoch == head.epoch:
                return current
            await self._forget(tx, conv, "seq > ?", (0,))
            await tx.execute("DELETE FROM reads WHERE conv = ?", (conv,))
            await self._add(tx, conv, messages)
            versions = [
                (conv, seq, n, ENCODER.encode(version))
                for seq, earlier in sorted(edits.items())
                for n, version in enumerate(earlier, start=1)
            ]
            if versions:
                await tx.executemany(
                    "INSERT INTO edits (conv, seq, version, body) VALUES (?, ?, ?, ?)", versions
                )
            await self._read_to(tx, conv, reads)
            await tx.execute(
                "INSERT INTO conversations (conv, ev, epoch, last_seq) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (conv) DO UPDATE SET ev = excluded.ev, epoch = excluded.epoch, "
                "last_seq = excluded.last_seq",
                (conv, *head),
            )
            return head

    async def _add(self, tx: Tx, conv: str, msgs: Sequence[w.ChatMessage]) -> None:
        if not msgs:
            return
        seqs = [m.seq for m in msgs]
        where, param = self._in("seq", seqs)
        taken = await tx.rows(
            f"SELECT seq FROM messages WHERE conv = ? AND {where} LIMIT 1", (conv, param)
        )
        if taken or len(set(seqs)) != len(seqs):
            seq = taken[0][0] if taken else seqs[0]
            raise HistoryError(f"{conv}: message {seq} is stored already, from another event")
        await self._insert(tx, [_row(conv, msg) for msg in msgs])

    # --- reads --------------------------------------------------------------------------

    async def page(
        self,
        conv: str,
        *,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
        limit: int = 50,
    ) -> list[w.ChatMessage]:
        async with self._read() as tx:
            head = await self._head(tx, conv)
            last = head.last_seq if head else 0
            start, end = apply.page_range(
                last, before=before, after=after, around=around, limit=limit
            )
            if end < start:
                return []
            return await self._load(tx, conv, "seq >= ? AND seq <= ?", (start, end))

    async def last_before(self, conv: str, before_ts: int) -> int:
        rows = await self._read_rows(
            "SELECT MAX(seq) FROM messages WHERE conv = ? AND ts < ?", (conv, before_ts)
        )
        return int(rows[0][0] or 0) if rows else 0

    async def _read_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._read() as tx:
            return await tx.rows(sql, params)

    async def messages(self, conv: str, seqs: Sequence[int]) -> list[w.ChatMessage]:
        if not seqs:
            return []
        where, param = self._in("seq", list(dict.fromkeys(seqs)))
        async with self._read() as tx:
            return await self._load(tx, conv, where, (param,))

    async def thread(self, conv: str, root: int, after: int, limit: int) -> list[w.ChatMessage]:
        async with self._read() as tx:
            return await self._load(
                tx, conv, "reply_to = ? AND seq > ?", (root, after), limit=limit
            )

    async def _load(
        self, tx: Tx, conv: str, where: str, params: Sequence[Any], limit: int | None = None
    ) -> list[w.ChatMessage]:
        """Messages of ``conv`` matching ``where``, in seq order, with thread summaries and
        reactions as chat.store.ChatStore.messages gives them."""
        sql = f"SELECT body, reactions FROM messages WHERE conv = ? AND {where} ORDER BY seq"
        args: list[Any] = [conv, *params]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        out = []
        for body, reactions in await tx.rows(sql, args):
            msg = MESSAGE_DECODER.decode(_blob(body))
            if reactions:
                msg.reactions = REACTIONS_DECODER.decode(_blob(reactions))
            out.append(msg)
        await self._threads(tx, conv, out)
        return out

    async def _threads(self, tx: Tx, conv: str, msgs: Sequence[w.ChatMessage]) -> None:
        roots = [m.seq for m in msgs if m.reply_to is None]
        if not roots:
            return
        where, param = self._in("reply_to", roots)
        rows = await tx.rows(
            f"SELECT reply_to, COUNT(*), MAX(seq) FROM messages WHERE conv = ? AND {where} "
            "GROUP BY reply_to",
            (conv, param),
        )
        summaries = {int(r): w.ThreadSummary(count=int(n), last_seq=int(s)) for r, n, s in rows}
        for msg in msgs:
            msg.thread = summaries.get(msg.seq)

    async def edits(self, conv: str, seq: int) -> list[w.ChatMessage]:
        async with self._read() as tx:
            rows = await tx.rows(
                "SELECT body FROM edits WHERE conv = ? AND seq = ? ORDER BY version", (conv, seq)
            )
        return [MESSAGE_DECODER.decode(_blob(b)) for (b,) in rows]

    async def reads(self, conv: str) -> dict[str, int]:
        async with self._read() as tx:
            rows = await tx.rows("SELECT user_id, read_seq FROM reads WHERE conv = ?", (conv,))
        return {_text(u): int(s) for u, s in rows}

    async def search(self, convs: Sequence[str], req: w.ChatSearch) -> list[w.SearchHit]:
        terms = query_terms(req.query)
        if not terms or not convs:
            return []
        members = list(dict.fromkeys(convs))
        in_convs, convs_param = self._in("m.conv", members)
        where = [in_convs]
        params: list[Any] = [convs_param]
        if req.sender is not None:
            where.append("m.sender = ?")
            params.append(req.sender)
        bounds, bound_params = time_bounds(req, "m.ts")
        where += bounds
        params += bound_params
        out: list[w.SearchHit] = []
        async with self._read() as tx:
            share = await self._share(tx, members)
            scoped = self._scoped(members, share)
            await self._plan(tx)
            walk = self._walk(terms, members, req)
            if walk is not None:
                out = await self._rounds(tx, walk, where, params, req)
            if len(out) < req.limit:
                out = await self._matched(tx, terms, members, share, scoped, where, params, req)
            by_conv: dict[str, list[w.ChatMessage]] = {}
            for hit in out:
                by_conv.setdefault(hit.conv, []).append(hit.message)
            for conv, msgs in by_conv.items():
                await self._threads(tx, conv, msgs)
        return out[: req.limit]

    async def _share(self, tx: Tx, members: Sequence[str]) -> tuple[int, int]:
        """The messages of a user in ``members`` and of everyone, from each conversation's
        last seq (messages deleted since count: for a share, not an exact count)."""
        where, param = self._in("conv", members)
        [(theirs,)] = await tx.rows(
            f"SELECT COALESCE(SUM(last_seq), 0) FROM conversations WHERE {where}", (param,)
        )
        [(every,)] = await tx.rows("SELECT COALESCE(SUM(last_seq), 0) FROM conversations")
        return int(theirs), int(every)

    def _scoped(self, members: Sequence[str], share: tuple[int, int]) -> bool:
        """Whether a user in ``members``, whose conversations hold ``share`` (of all the
        messages), is searched through the scoped entries (see SCOPED_UP_TO)."""
        theirs, every = share
        if len(members) > self.scoped_up_to:
            return False
        return not every or theirs < self.bare_from_share * every

    async def _matched(
        self,
        tx: Tx,
        terms: Sequence[str],
        members: Sequence[str],
        share: tuple[int, int],
        scoped: bool,
        where: Sequence[str],
        params: Sequence[Any],
        req: w.ChatSearch,
    ) -> list[w.SearchHit]:
        """The newest hits through the index: of the newest matches first (see
        :meth:`_floors`), else of every match.

        The same answer either way: every message of the user's conversations of
        ``oldest`` or later is among the rows read first, and the rounds read candidates
        newest first in both. So when the last hit of the first reading is of ``oldest``
        or later, every hit was found in the part of both readings that holds exactly the
        same candidates in the same order."""
        floors = self._floors(tx, terms, members, req, share=share, scoped=scoped)
        async for span, oldest in floors:
            plan = self._match(terms, members, scoped=scoped, span=span)
            out = await self._rounds(tx, plan, where, params, req)
            if len(out) >= req.limit and out[req.limit - 1].message.ts >= oldest:
                return out
            if not out:
                few = await self._few(tx, terms, members, scoped=scoped)
                if few == 0:
                    return []  # no match anywhere
                if few is not None:
                    break  # a span of nothing, and every match is few rows: read them now
        plan = self._match(terms, members, scoped=scoped)
        return await self._rounds(tx, plan, where, params, req)

    async def _rounds(
        self,
        tx: Tx,
        plan: tuple[str, str, list[Any]],
        where: Sequence[str],
        params: Sequence[Any],
        req: w.ChatSearch,
    ) -> list[w.SearchHit]:
        """The newest hits of a search (at most ``req.limit``) among the rows of ``plan``
        (its FROM clause, condition and the parameters of both, in that order) that match
        ``where``."""
        source, match, match_params = plan
        out: list[w.SearchHit] = []
        below: tuple[int, int, str] | None = None
        for _ in range(MAX_ROUNDS):
            conditions = [match, *where]
            args = [*match_params, *params]
            if below is not None:
                conditions.append(
                    "(m.ts < ? OR (m.ts = ? AND (m.seq < ? OR (m.seq = ? AND m.conv < ?))))"
                )
                args += [below[0], below[0], below[1], below[1], below[2]]
            # At least as many candidates as hits are still wanted: most candidates are
            # hits, and a round costs a query.
            asked = max(CANDIDATES_PER_ROUND, req.limit - len(out))
            order = "ORDER BY m.ts DESC, m.seq DESC, m.conv DESC LIMIT ?"
            rows = await tx.rows(
                f"SELECT m.conv, m.seq, m.ts, m.body, m.reactions FROM {source} "
                f"WHERE {' AND '.join(conditions)} {order}",
                [*args, asked],
            )
            for conv, seq, ts, msg in _decoded(rows):
                out += found.hits(conv, [msg], req)
                below = (ts, seq, conv)
                if len(out) >= req.limit:
                    break
            if len(out) >= req.limit or len(rows) < asked:
                break
        return out

    async def conversations(self) -> list[str]:
        async with self._read() as tx:
            rows = await tx.rows("SELECT conv FROM conversations ORDER BY conv")
        return [_text(c) for (c,) in rows]

    async def found_by(self, conv: str, terms: Sequence[str]) -> list[int]:
        """The seqs of ``conv`` whose search entries hold every one of ``terms`` (as
        chat.text makes them), before any exact check: what the index itself holds. The
        scoped and the bare entries must say the same (else :class:`HistoryError`)."""
        if not terms:
            return []
        found: list[list[int]] = []
        async with self._read() as tx:
            for scoped in (True, False):
                source, match, match_params = self._match(terms, [conv], scoped=scoped)
                rows = await tx.rows(
                    f"SELECT m.seq FROM {source} WHERE {match} AND m.conv = ? ORDER BY m.seq",
                    (*match_params, conv),
                )
                found.append([int(s) for (s,) in rows])
        if found[0] != found[1]:
            raise HistoryError(
                f"{conv}: the scoped search entries find {found[0]}, the bare ones {found[1]}"
            )
        return found[0]

    # --- deletion -----------------------------------------------------------------------

    async def expire(self, conv: str, before_ts: int) -> int:
        async with self._write() as tx:
            return await self._forget(tx, conv, "ts < ?", (before_ts,))

    async def delete(self, conv: str) -> None:
        async with self._write() as tx:
            await self._forget(tx, conv, "seq > ?", (0,))
            await tx.execute("DELETE FROM reads WHERE conv = ?", (conv,))
            await tx.execute("DELETE FROM conversations WHERE conv = ?", (conv,))

    async def _forget(self, tx: Tx, conv: str, where: str, params: Sequence[Any]) -> int:
        """Delete the messages of ``conv`` matching ``where``, their earlier versions and
        their search entries; replies how many."""
        rows = await tx.rows(
            f"SELECT id, seq, body FROM messages WHERE conv = ? AND {where}", (conv, *params)
        )
        if not rows:
            return 0
        if not self.terms_in_row:
            for row_id, _, body in rows:
                terms = message_terms(MESSAGE_DECODER.decode(_blob(body)))
                if terms:
                    await self._unindex(tx, int(row_id), conv, terms)
        await tx.execute(
            f"DELETE FROM edits WHERE conv = ? AND seq IN "
            f"(SELECT seq FROM messages WHERE conv = ? AND {where})",
            (conv, conv, *params),
        )
        await tx.execute(f"DELETE FROM messages WHERE conv = ? AND {where}", (conv, *params))
        return len(rows)

    @abstractmethod
    async def close(self) -> None:
        """Release the database's connections."""
