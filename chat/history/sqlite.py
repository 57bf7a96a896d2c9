"""The embedded history store: one SQLite file in the node's data folder (aiosqlite runs
each connection in a thread of its own).

WAL journal, so that reads never wait for the archiver's writes; ``synchronous=FULL``, since
Redis trims what the store says it has: a commit must survive a power cut. One connection
writes and one reads, each behind a lock (a connection runs one transaction at a time).

Search: an FTS5 table of each message's terms (chat.hits.message_terms, the same terms the
Redis index has, CJK bigrams included), one token per term: the tokenizer keeps every
character class a term can hold and folds nothing (the terms are folded already). Each
token is the term prefixed by its conversation's scope (a short hash, :func:`search_scope`),
so that a search reads the entries of the user's conversations only: with bare terms a
common one (one message in five) had 200,000 entries over a million messages, all read and
joined to their rows (200 ms) to keep the user's newest 20. The query then has a branch per
conversation, which costs a user in many of them more than reading every entry: a second
table (``message_search_bare``) holds the bare terms, searched for such users (chat.history.sql
chooses, see chat.history.sql.SCOPED_UP_TO). Either table's matches are read newest first
by row id before they are all read (:meth:`SQLiteHistory._floors`): a common term's newest
matches hold the answer, and the rest is not read.
Contentless (``content=''``) and ``detail=none``: it keeps only which rows hold a term, the
least that answers "every term, newest first"; removing a row's terms therefore needs the
terms it was indexed under, which are made again from the stored message. A change to how
chat.text makes terms needs a migration that rebuilds the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

import aiosqlite
import psutil

from chat import wire as w
from chat.history.sql import Migration, NewMessage, Span, SqlHistory, Tx, time_bounds
from chat.history.store import HistoryError

BUSY_TIMEOUT_MS: Final = 10_000
FTS_TOKENIZER: Final = "unicode61 remove_diacritics 0 categories 'L* N* Co M* S*'"
# Bytes of a conversation's hash in its index tokens (a shared prefix costs candidates,
# never hits).
SCOPE_BYTES: Final = 5
# The table of bare terms (schema 4).
BARE: Final = "message_search_bare"
# Search, the newest matches first (SQLiteHistory._floors): how many are read at first, by
# how much that grows while they hold fewer candidates than the search wants, and up to
# how many (beyond, every match is read, as it is without this step); and the candidates
# kept, in multiples of the search's limit, for the exact check to drop some.
NEWEST_FIRST: Final = 1000
NEWEST_GROWTH: Final = 8
NEWEST_UP_TO: Final = 64_000
NEWEST_ROOM: Final = 2


class _Tx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        cursor = await self.conn.execute(sql, params)
        await cursor.close()

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.conn.execute_fetchall(sql, params)]

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cursor = await self.conn.executemany(sql, rows)
        await cursor.close()


async def _v1_tables(store: SqlHistory, tx: Tx) -> None:
    for statement in (
        "CREATE TABLE conversations (conv TEXT PRIMARY KEY, ev INTEGER NOT NULL, "
        "epoch TEXT NOT NULL, last_seq INTEGER NOT NULL)",
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, conv TEXT NOT NULL, "
        "seq INTEGER NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL, reply_to INTEGER, "
        "body BLOB NOT NULL, reactions BLOB, UNIQUE (conv, seq))",
        "CREATE INDEX messages_thread ON messages (conv, reply_to, seq) WHERE reply_to IS NOT NULL",
        "CREATE INDEX messages_ts ON messages (conv, ts)",
        "CREATE TABLE edits (conv TEXT NOT NULL, seq INTEGER NOT NULL, "
        "version INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (conv, seq, version))",
        "CREATE TABLE reads (conv TEXT NOT NULL, user_id TEXT NOT NULL, "
        "read_seq INTEGER NOT NULL, PRIMARY KEY (conv, user_id))",
    ):
        await tx.execute(statement)


async def _v2_search(store: SqlHistory, tx: Tx) -> None:
    # Its entries are made by the next step, which makes them again anyway.
    await _create_search(tx)


async def _v3_scoped_search(store: SqlHistory, tx: Tx) -> None:
    """Index tokens scoped by conversation (see the module's docstring): the entries are
    all made again."""
    await tx.execute("DROP TABLE message_search")
    await _create_search(tx)
    await tx.executemany(
        "INSERT INTO message_search (rowid, terms) VALUES (?, ?)",
        [(row_id, _scoped(conv, terms)) for row_id, conv, terms in await store.stored_terms(tx)],
    )


async def _v4_bare_search(store: SqlHistory, tx: Tx) -> None:
    """The bare terms beside the scoped ones, for users in many conversations."""
    await _create_search(tx, BARE)
    await tx.executemany(
        f"INSERT INTO {BARE} (rowid, terms) VALUES (?, ?)",
        [(row_id, " ".join(terms)) for row_id, _, terms in await store.stored_terms(tx)],
    )


async def _create_search(tx: Tx, table: str = "message_search") -> None:
    await tx.execute(
        f"CREATE VIRTUAL TABLE {table} USING fts5(terms, content='', detail=none, "
        f'tokenize="{FTS_TOKENIZER}")'
    )


def search_scope(conv: str) -> str:
    """The prefix of ``conv``'s index tokens: hex digits, which the tokenizer keeps in the
    token. Two conversations may share one (the search keeps the conversations asked for),
    which only costs them some candidates of the other."""
    return hashlib.blake2b(conv.encode(), digest_size=SCOPE_BYTES).hexdigest()


def _scoped(conv: str, terms: Sequence[str]) -> str:
    scope = search_scope(conv)
    return " ".join(scope + t for t in terms)


def _quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _fts(terms: Sequence[str], convs: Sequence[str], *, scoped: bool) -> tuple[str, str]:
    """The FTS5 table and query of a search for rows with every one of ``terms``: bare,
    or in one of the conversations ``convs`` (only their entries are read)."""
    if not scoped:
        return BARE, " AND ".join(_quoted(t) for t in terms)
    query = " OR ".join(
        "(" + " AND ".join(_quoted(scope + t) for t in terms) + ")"
        for scope in sorted({search_scope(c) for c in convs})
    )
    return "message_search", query


class SQLiteHistory(SqlHistory):
    migrations: Sequence[Migration] = (
        _v1_tables,
        _v2_search,
        _v3_scoped_search,
        _v4_bare_search,
    )
    newest_rows = NEWEST_FIRST

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    def thread_cpu_seconds(self) -> float | None:
        # aiosqlite runs each connection on a thread of its own (its _thread); read from
        # /proc by psutil, which answers for a thread that has ended too (by leaving it out).
        ids = {
            thread.native_id
            for conn in (self._writer, self._reader)
            if (thread := getattr(conn, "_thread", None)) is not None
        }
        try:
            threads = psutil.Process().threads()
        except psutil.Error:
            return None
        return float(sum(t.user_time + t.system_time for t in threads if t.id in ids))

    @classmethod
    async def open(cls, path: Path, *, schema: int | None = None) -> SQLiteHistory:
        """Open (or create) the store at ``path`` and bring its schema up to date
        (``schema``: to that version only, for tests of upgrades)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        try:
            await writer.execute_fetchall("PRAGMA journal_mode=WAL")
            reader = await _connect(path)
        except BaseException:
            await writer.close()
            raise
        store = cls(path, writer, reader)
        try:
            await store.migrate(schema)
        except BaseException:
            await store.close()
            raise
        return store

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Tx]:
        async with self._write_lock:
            # IMMEDIATE: take the write lock now, so that a read made in the transaction is
            # still true when it writes (another process may write the same file).
            await self._writer.execute_fetchall("BEGIN IMMEDIATE")
            try:
                yield _Tx(self._writer)
            except BaseException as exc:
                await self._writer.rollback()
                if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
                    # Refused for what was written (the same again on every try): a
                    # HistoryError, so that the archiver tells that conversation from the
                    # others of its pass.
                    raise HistoryError(f"the history store refused it: {exc}") from None
                raise
            await self._writer.commit()

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Tx]:
        async with self._read_lock:
            await self._reader.execute_fetchall("BEGIN")
            try:
                yield _Tx(self._reader)
            finally:
                await self._reader.rollback()

    async def _lock_schema(self, tx: Tx) -> None:
        """BEGIN IMMEDIATE holds the file's write lock already."""

    async def _lock_conversation(self, tx: Tx, conv: str) -> None:
        """BEGIN IMMEDIATE holds the file's write lock already."""

    async def _plan(self, tx: Tx) -> None:
        """The FTS5 table of each plan is the only way SQLite reads its matches."""

    def _walk(
        self, terms: Sequence[str], convs: Sequence[str], req: w.ChatSearch
    ) -> tuple[str, str, list[Any]] | None:
        # Testing each message against FTS5 (rowid = ? AND MATCH) costs about 1 ms.
        return None

    async def _insert(self, tx: Tx, rows: Sequence[NewMessage]) -> None:
        # Row ids are given here rather than taken from each insert, so that the rows and
        # their search entries go in a few statements (the write lock is held: no other
        # writer takes ids meanwhile).
        [(top,)] = await tx.rows("SELECT COALESCE(MAX(id), 0) FROM messages")
        first = int(top) + 1
        await tx.executemany(
            "INSERT INTO messages (id, conv, seq, ts, sender, reply_to, body, reactions) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (first + k, r.conv, r.seq, r.ts, r.sender, r.reply_to, r.body, r.reactions)
                for k, r in enumerate(rows)
            ],
        )
        await self._index_many(
            tx, [(first + k, r.conv, r.terms) for k, r in enumerate(rows) if r.terms]
        )

    async def _index(self, tx: Tx, row_id: int, conv: str, terms: Sequence[str]) -> None:
        await self._index_many(tx, [(row_id, conv, terms)])

    async def _index_many(self, tx: Tx, rows: Sequence[tuple[int, str, Sequence[str]]]) -> None:
        await tx.executemany(
            "INSERT INTO message_search (rowid, terms) VALUES (?, ?)",
            [(row_id, _scoped(conv, terms)) for row_id, conv, terms in rows],
        )
        await tx.executemany(
            f"INSERT INTO {BARE} (rowid, terms) VALUES (?, ?)",
            [(row_id, " ".join(terms)) for row_id, _, terms in rows],
        )

    async def _unindex(self, tx: Tx, row_id: int, conv: str, terms: Sequence[str]) -> None:
        await tx.execute(
            "INSERT INTO message_search (message_search, rowid, terms) VALUES ('delete', ?, ?)",
            (row_id, _scoped(conv, terms)),
        )
        await tx.execute(
            f"INSERT INTO {BARE} ({BARE}, rowid, terms) VALUES ('delete', ?, ?)",
            (row_id, " ".join(terms)),
        )

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, Any]:
        # One parameter whatever the number of values (SQLite limits parameters).
        return f"{column} IN (SELECT value FROM json_each(?))", json.dumps(list(values))

    def _match(
        self,
        terms: Sequence[str],
        convs: Sequence[str],
        *,
        scoped: bool,
        span: Span | None = None,
    ) -> tuple[str, str, list[Any]]:
        table, query = _fts(terms, convs, scoped=scoped)
        source = f"{table} JOIN messages m ON m.id = {table}.rowid"
        if span is None:
            return source, f"{table} MATCH ?", [query]
        # Row ids: FTS5 seeks to them in its lists of rows, the others are not read.
        low, high = span
        match = f"{table} MATCH ? AND {table}.rowid >= ?"
        if high is None:
            return source, match, [query, low]
        return source, f"{match} AND {table}.rowid < ?", [query, low, high]

    async def _floors(
        self,
        tx: Tx,
        terms: Sequence[str],
        convs: Sequence[str],
        req: w.ChatSearch,
        *,
        share: tuple[int, int],
        scoped: bool,
    ) -> AsyncIterator[tuple[Span, int]]:
        # FTS5 gives its matches by row id, newest first if asked, and reads no further than
        # the LIMIT: the newest matches of a term in every conversation cost the same however
        # many there are in all (a term in one message of five had 200,000 over a million,
        # all read, to keep a user's newest 20: 190 ms). Row ids are given in the order the
        # store took the messages, which is nearly their time order, not exactly (the
        # archiver copies several conversations at once; seed() copies a whole one late):
        # the time of the newest hits is taken from them, then the ids of every message of
        # the user's conversations since that time, through the (conv, ts) index.
        if self.newest_rows <= 0:
            return
        table, query = _fts(terms, convs, scoped=scoped)
        in_convs, convs_param = self._in("m.conv", convs)
        bounds, bound_params = time_bounds(req, "m.ts")
        wanted = [in_convs, *bounds]
        wanted_params = [convs_param, *bound_params]
        if req.sender is not None:
            wanted.append("m.sender = ?")
            wanted_params.append(req.sender)
        # Before a time: the matches from about that time back (the id of each
        # conversation's last message before it, through the (conv, ts) index; the span
        # read after holds every message of the time, whatever this finds).
        below: list[str] = []
        below_params: list[Any] = []
        if req.before_ts is not None:
            [(ceiling,)] = await tx.rows(
                "SELECT MAX((SELECT m.id FROM messages m WHERE m.conv = c.value AND m.ts < ? "
                "ORDER BY m.ts DESC LIMIT 1)) FROM json_each(?) c",
                [req.before_ts, convs_param],
            )
            if ceiling is None:
                return  # none of their messages is of that time
            below, below_params = [" AND rowid <= ?"], [int(ceiling)]
        stamps: list[int] = []
        window = self.newest_rows
        while True:
            rows = await tx.rows(
                f"SELECT m.ts, {' AND '.join(wanted)} FROM (SELECT rowid FROM {table} "
                f"WHERE {table} MATCH ?{''.join(below)} ORDER BY rowid DESC LIMIT ?) f "
                "JOIN messages m ON m.id = f.rowid",
                [*wanted_params, query, *below_params, window],
            )
            if len(rows) < window:
                return  # every match (of the time asked) read: few to read again
            stamps = sorted((int(ts) for ts, ok in rows if ok), reverse=True)
            if len(stamps) >= req.limit:
                break
            if window >= NEWEST_UP_TO:
                return
            window = min(window * NEWEST_GROWTH, NEWEST_UP_TO)
        # Some candidates may not be hits (the exact check): some room below the newest.
        oldest = stamps[min(len(stamps), NEWEST_ROOM * req.limit) - 1]
        [(low, high)] = await tx.rows(
            f"SELECT MIN(m.id), MAX(m.id) FROM messages m "
            f"WHERE {' AND '.join([in_convs, *bounds])} AND m.ts >= ?",
            [convs_param, *bound_params, oldest],
        )
        yield (int(low), int(high) + 1), oldest

    async def backup(self, target: Path) -> None:
        """Copy the whole store into ``target`` with SQLite's online backup, while it is in
        use: the copy is one consistent state."""
        target.parent.mkdir(parents=True, exist_ok=True)
        async with aiosqlite.connect(target) as copy, self._write_lock:
            await self._writer.backup(copy)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            await self._reader.close()
        await self._writer.close()


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level None: transactions are begun and ended by this module only.
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute_fetchall(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await conn.execute_fetchall("PRAGMA synchronous=FULL")
        # What is deleted (a recall, retention) is overwritten, not left in free pages.
        await conn.execute_fetchall("PRAGMA secure_delete=ON")
    except BaseException:
        await conn.close()
        raise
    return conn
