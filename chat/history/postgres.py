"""The shared history store: PostgreSQL, for several nodes (psycopg 3, async, a pool).

Search: each message row carries its terms (chat.hits.message_terms, the same terms the
Redis index has) in a ``text[]`` column with a GIN index, queried with ``@>`` (has every
term). Chosen over PostgreSQL's own full-text search and over pg_trgm because both stores
then find exactly the same candidates: text search configurations have no parser for
Chinese, Japanese or Korean and would split and stem differently from chat.text, and
trigrams cannot find a two-character CJK word. The terms go with the row, so deleting the
row or setting them to NULL (a recall) removes its search entries. Each term is prefixed by
its conversation's scope (a short hash, :func:`search_scope`) and a search asks for any of
the user's scopes with ``&&``: the index then gives the rows of the user's conversations
only, not every row of a common term in all of them. A user in many conversations is
searched through the bare terms instead (``@>``), keeping the rows of their conversations:
the scoped query's array grows with their conversations, the bare one's does not
(chat.history.sql chooses, see chat.history.sql.SCOPED_UP_TO). The bare terms are not
stored: a GIN index on the expression ``huddle_bare_terms(terms)`` (the scoped ones without
their scopes) holds them, so that adding it rewrote no row (a rewrite of every row left the
table and its other index twice their size until a vacuum, and searches several times
slower). Before either, a
user in many conversations has the newest messages read first (:meth:`PostgresHistory._walk`,
an index on ``(ts, seq, conv)``): a common term is found there in a few ms. After it, the
matches of a window of the newest messages are read (:meth:`PostgresHistory._floors`: the
GIN index's bitmap ANDed with the time range's), and every match only if the window held
too few: a term not among the newest 4,000 messages no longer has every one of its matches
read from the table (200,000 for a term in one message of five over a million: 1-2 s). A
window of no hit has the matches counted (:meth:`PostgresHistory._few`): when they are few
(two common terms never in one message) they are read at once, without longer windows
(none: nothing to read).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from chat import wire as w
from chat.history.sql import Migration, NewMessage, Span, SqlHistory, Tx, time_bounds
from chat.history.store import HistoryError, StoreBusy

POOL_MAX: Final = 8
# Hex digits of a conversation's hash in front of its terms.
SCOPE_HEX: Final = 10
# The function of a row's terms that gives them bare (schema 4): its index is on this
# function of the terms, and a search must ask in the same words to use it.
BARE_TERMS: Final = "huddle_bare_terms"
# Search: the newest messages read first (see PostgresHistory._walk), for a user in at
# least WALK_FROM conversations (fewer have too few of the newest messages for it to pay:
# 4,000 rows over 1,000 busy conversations hold 4 of a term in one message of five for a
# user in 5).
WALK_ROWS: Final = 4000
WALK_FROM: Final = 50
# Search, the newest matches next (PostgresHistory._floors): a window of at least
# NEWEST_ROWS messages, grown NEWEST_GROWTH times while it holds too few hits, made to hold
# NEWEST_ROOM times the hits asked for by the estimate, and only when reading every match
# would read at least NEWEST_FROM_READS rows.
NEWEST_ROWS: Final = 4000
NEWEST_GROWTH: Final = 8
NEWEST_ROOM: Final = 2
NEWEST_FROM_READS: Final = 2000
# The scoped plan up to this many conversations (chat.history.sql.SCOPED_UP_TO): an overlap
# with 200 scopes took 0.5 s for a common term and 4.6 s for two never together over a
# million messages, where the bare plan took 44 and 65 ms.
SCOPED_UP_TO: Final = 100
OPEN_TIMEOUT_S: Final = 10.0
# The one more connection made to say why the pool could not connect within OPEN_TIMEOUT_S.
WHY_TIMEOUT_S: Final = 3
# How long a request waits for a connection of the pool (psycopg_pool.PoolTimeout after):
# with the server away, a read or an archiving pass fails within this, not the pool's 30 s.
POOL_WAIT_S: Final = 5.0
# The search indexes' pending list (GIN's fast update: new rows' terms wait in a list that
# an insert moves into the index once it outgrows this), per connection of the store. At
# PostgreSQL's 4 MB, one archiving pass in a few moved the list of the passes before it:
# 1,000 conversations of 5 events took 500-1,000 ms where the others took 200-400 (the
# server's CPU 400-600 ms against 110-200), and the lag's tail was made of those passes.
# A smaller list is moved a little in every pass instead, for the same work over time; a
# search reads every entry of the list, so it reads fewer.
GIN_PENDING_LIST_KB: Final = 512
# The archiver's pause before a pass into this store (chat.history.archiver.ARCHIVE_DELAY_S,
# 0.5 s, for SQLite): shorter, as a pass of PostgreSQL's costs the node less per event
# since 96a710d (see benchmarks/README.md, archive lag).
ARCHIVE_PAUSE_S: Final = 0.3
# How long a statement waits for a lock (lock_timeout) before the store says StoreBusy: a
# conversation is locked by one archiving pass at a time (a pass takes well under a second),
# and a node stopped in the middle of its transaction (frozen, cut off from the server with
# no keepalive) holds its locks until its session ends. Unbounded, a pass of every other node
# touching one of those conversations waited with them, holding its own, and archived
# nothing more. Migrations wait for one another without a bound.
LOCK_TIMEOUT_MS: Final = 5000
# pg_advisory_xact_lock key held while migrating, so that nodes starting together migrate
# one after the other.
SCHEMA_LOCK: Final = 0x48_75_64_64_6C_65  # "Huddle"


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class _Tx:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.conn.execute(_pg(sql), params)

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = await self.conn.execute(_pg(sql), params)
        return list(await cursor.fetchall()) if cursor.description else []

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.conn.cursor() as cursor:
            await cursor.executemany(_pg(sql), rows)


async def _v1_tables(store: SqlHistory, tx: Tx) -> None:
    for statement in (
        "CREATE TABLE conversations (conv TEXT PRIMARY KEY, ev BIGINT NOT NULL, "
        "epoch TEXT NOT NULL, last_seq BIGINT NOT NULL)",
        "CREATE TABLE messages (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "conv TEXT NOT NULL, seq BIGINT NOT NULL, ts BIGINT NOT NULL, sender TEXT NOT NULL, "
        "reply_to BIGINT, body BYTEA NOT NULL, reactions BYTEA, UNIQUE (conv, seq))",
        "CREATE INDEX messages_thread ON messages (conv, reply_to, seq) WHERE reply_to IS NOT NULL",
        "CREATE INDEX messages_ts ON messages (conv, ts)",
        "CREATE TABLE edits (conv TEXT NOT NULL, seq BIGINT NOT NULL, "
        "version INTEGER NOT NULL, body BYTEA NOT NULL, PRIMARY KEY (conv, seq, version))",
        "CREATE TABLE reads (conv TEXT NOT NULL, user_id TEXT NOT NULL, "
        "read_seq BIGINT NOT NULL, PRIMARY KEY (conv, user_id))",
    ):
        await tx.execute(statement)


async def _v2_search(store: SqlHistory, tx: Tx) -> None:
    await tx.execute("ALTER TABLE messages ADD COLUMN terms TEXT[]")
    await tx.execute("CREATE INDEX messages_terms ON messages USING GIN (terms)")
    # The rows are indexed by the next step (which also scopes what this one indexed when
    # it was the newest).


async def _v3_scoped_search(store: SqlHistory, tx: Tx) -> None:
    """Terms scoped by conversation (see the module's docstring), made from the bare ones
    in the database itself."""
    await tx.execute(
        "UPDATE messages SET terms = ARRAY(SELECT left(md5(conv), ?) || t FROM unnest(terms) t) "
        "WHERE terms IS NOT NULL",
        (SCOPE_HEX,),
    )
    await tx.executemany(
        "UPDATE messages SET terms = ? WHERE id = ?",
        [
            (_scoped(conv, terms), row_id)
            for row_id, conv, terms in await store.stored_terms(tx, "terms IS NULL")
        ],
    )


async def _v4_bare_search(store: SqlHistory, tx: Tx) -> None:
    """The bare terms beside the scoped ones (see the module's docstring): an index on
    them, made from the scoped ones."""
    await _bare_search(tx)


async def _v5_bare_search_again(store: SqlHistory, tx: Tx) -> None:
    """Schema 4 as it was first written kept the bare terms in a column of their own (its
    upgrade rewrote every row) and had no messages_order: the column goes, with its index,
    and the store gets what schema 4 makes now. A store that schema 4 made as it is now
    keeps what it has."""
    await tx.execute("ALTER TABLE messages DROP COLUMN IF EXISTS bare_terms")
    await _bare_search(tx)


async def _bare_search(tx: Tx) -> None:
    await tx.execute(
        f"CREATE OR REPLACE FUNCTION {BARE_TERMS}(text[]) RETURNS text[] "
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE "
        f"AS $$ SELECT ARRAY(SELECT substr(t, {SCOPE_HEX + 1}) FROM unnest($1) t) $$"
    )
    await tx.execute(
        "CREATE INDEX IF NOT EXISTS messages_bare_terms ON messages "
        f"USING GIN ({BARE_TERMS}(terms))"
    )
    # Newest first across conversations: for a common term, the planner walks this and
    # stops at the newest matches of the user's conversations, rather than reading every
    # match in every conversation (200,000 of a term in a message of five over a million).
    await tx.execute("CREATE INDEX IF NOT EXISTS messages_order ON messages (ts, seq, conv)")
    # The planner's figures for the indexed expression, without waiting for autovacuum.
    await tx.execute("ANALYZE messages")


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Each new connection of the pool: its settings (GIN_PENDING_LIST_KB,
    LOCK_TIMEOUT_MS)."""
    await conn.execute(f"SET gin_pending_list_limit = {int(GIN_PENDING_LIST_KB)}")
    await conn.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_MS)}")
    await conn.commit()


def search_scope(conv: str) -> str:
    """The prefix of ``conv``'s terms: the start of its MD5 in hex, which PostgreSQL makes
    too (the upgrade to schema 3). Two conversations may share one (the search keeps the
    conversations asked for), which only costs them some candidates of the other."""
    return hashlib.md5(conv.encode()).hexdigest()[:SCOPE_HEX]


def _scoped(conv: str, terms: Sequence[str]) -> list[str]:
    scope = search_scope(conv)
    return [scope + t for t in terms]


def text_array(values: Sequence[str], prefix: str = "") -> str:
    """``values``, each after ``prefix``, as PostgreSQL writes a ``text[]``: every element
    quoted (a search term ``null`` stays the string), backslashes and double quotes
    escaped. Given as text, not as a list: psycopg dumps a list in Python element by
    element (for the terms of COPY's rows, a third of an archiving pass's CPU on the event
    loop's thread); this is two joins."""
    if not values:
        return "{}"
    flat = "".join(values)
    if '"' in flat or "\\" in flat:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + prefix + f'","{prefix}'.join(values) + '"}'


def _ints_literal(values: Sequence[int]) -> str:
    """``values`` as PostgreSQL writes a ``bigint[]`` (see text_array)."""
    return "{" + ",".join(map(str, values)) + "}"


async def _why(url: str, exc: psycopg.Error) -> str:
    """What kept the pool from connecting. Its timeout says only that it gave up (the
    causes went to its log, once a try): one more connection gives the server's or libpq's
    own words, e.g. that the database does not exist or the password is wrong."""
    if not isinstance(exc, PoolTimeout):
        return str(exc)
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=WHY_TIMEOUT_S)
    except psycopg.Error as again:
        return f"{exc}: {again}"
    await conn.close()
    return str(exc)  # it connects now: the server came up just too late


class PostgresHistory(SqlHistory):
    migrations: Sequence[Migration] = (
        _v1_tables,
        _v2_search,
        _v3_scoped_search,
        _v4_bare_search,
        _v5_bare_search_again,
    )
    archive_pause_s = ARCHIVE_PAUSE_S
    terms_in_row = True
    walk_rows = WALK_ROWS
    walk_from = WALK_FROM
    scoped_up_to = SCOPED_UP_TO
    newest_rows = NEWEST_ROWS
    # Whether the first window follows the estimate (PostgresHistory._window); tests turn
    # it off to take windows of newest_rows messages.
    newest_estimate = True
    # After a window of no hit, every match is read at once if they are fewer than this
    # (PostgresHistory._few); tests set it to take either way.
    few_reads = NEWEST_FROM_READS

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @classmethod
    async def open(
        cls, url: str, *, schema: int | None = None, max_size: int = POOL_MAX
    ) -> PostgresHistory:
        """Connect to the database at ``url`` and bring its schema up to date (``schema``:
        to that version only, for tests of upgrades)."""
        # check: a connection the server ended meanwhile (a restart, a failover) is not
        # lent out, but replaced, at the cost of a round trip per checkout.
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            configure=_configure,
            check=AsyncConnectionPool.check_connection,
            timeout=POOL_WAIT_S,
        )
        try:
            await pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
        except psycopg.Error as exc:
            await pool.close()
            why = await _why(url, exc)
            raise HistoryError(f"cannot reach the history database: {why}") from None
        store = cls(pool)
        try:
            await store.migrate(schema)
        except BaseException:
            await pool.close()
            raise
        return store

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Tx]:
        try:
            async with self.pool.connection() as conn, conn.transaction():
                yield _Tx(conn)
        except psycopg.errors.LockNotAvailable as exc:
            raise StoreBusy(f"the history database: {exc}") from None
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            # Refused for what was written (the same again on every try): a HistoryError,
            # so that the archiver tells that conversation from the others of its pass.
            raise HistoryError(f"the history database refused it: {exc}") from None

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Tx]:
        # REPEATABLE READ: the statements of one read see one snapshot.
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield _Tx(conn)

    async def _lock_schema(self, tx: Tx) -> None:
        # Another node's migration may take minutes: waited for, however long.
        await tx.execute("SET LOCAL lock_timeout = 0")
        await tx.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))

    async def _lock_conversation(self, tx: Tx, conv: str) -> None:
        await tx.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (conv,))

    async def _lock_conversations(self, tx: Tx, convs: Sequence[str]) -> None:
        # One round trip for a pass's conversations (500 of them took 500 before), taken in
        # the array's order as the rows of unnest come.
        await tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(c, 0)) FROM unnest(?::text[]) AS c",
            (text_array(convs),),
        )

    async def _read_to_many(self, tx: Tx, rows: Sequence[tuple[str, str, int]]) -> None:
        # One statement of arrays, not one per row (psycopg's work per row was most of it),
        # each array as text (text_array).
        await tx.execute(
            "INSERT INTO reads (conv, user_id, read_seq) "
            "SELECT * FROM unnest(?::text[], ?::text[], ?::bigint[]) "
            "ON CONFLICT (conv, user_id) DO UPDATE SET read_seq = CASE "
            "WHEN excluded.read_seq > reads.read_seq THEN excluded.read_seq "
            "ELSE reads.read_seq END",
            (
                text_array([conv for conv, _, _ in rows]),
                text_array([user for _, user, _ in rows]),
                _ints_literal([seq for _, _, seq in rows]),
            ),
        )

    async def _move_heads(self, tx: Tx, rows: Sequence[tuple[str, int, str, int]]) -> None:
        await tx.execute(
            "INSERT INTO conversations (conv, ev, epoch, last_seq) "
            "SELECT * FROM unnest(?::text[], ?::bigint[], ?::text[], ?::bigint[]) "
            "ON CONFLICT (conv) DO UPDATE SET ev = excluded.ev, epoch = excluded.epoch, "
            "last_seq = excluded.last_seq",
            (
                text_array([conv for conv, _, _, _ in rows]),
                _ints_literal([ev for _, ev, _, _ in rows]),
                text_array([epoch for _, _, epoch, _ in rows]),
                _ints_literal([seq for _, _, _, seq in rows]),
            ),
        )

    async def _insert(self, tx: Tx, rows: Sequence[NewMessage]) -> None:
        assert isinstance(tx, _Tx)
        # COPY: a pass's messages in one stream (as an insert per row, psycopg spent about
        # 55 µs of the node's CPU on each), the terms as text (text_array).
        scopes: dict[str, str] = {}
        async with (
            tx.conn.cursor() as cursor,
            cursor.copy(
                "COPY messages (conv, seq, ts, sender, reply_to, body, reactions, terms) FROM STDIN"
            ) as copy,
        ):
            for r in rows:
                await copy.write_row(
                    (
                        r.conv,
                        r.seq,
                        r.ts,
                        r.sender,
                        r.reply_to,
                        r.body,
                        r.reactions,
                        text_array(
                            r.terms,
                            scopes.get(r.conv) or scopes.setdefault(r.conv, search_scope(r.conv)),
                        )
                        if r.terms
                        else None,
                    )
                )

    async def _index(self, tx: Tx, row_id: int, conv: str, terms: Sequence[str]) -> None:
        await tx.execute(
            "UPDATE messages SET terms = ? WHERE id = ?", (_scoped(conv, terms), row_id)
        )

    async def _unindex(self, tx: Tx, row_id: int, conv: str, terms: Sequence[str]) -> None:
        await tx.execute("UPDATE messages SET terms = NULL WHERE id = ?", (row_id,))

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, Any]:
        return f"{column} = ANY(?)", list(values)

    def _match(
        self,
        terms: Sequence[str],
        convs: Sequence[str],
        *,
        scoped: bool,
        span: Span | None = None,
    ) -> tuple[str, str, list[Any]]:
        # The matches are read through a GIN index, whatever the planner thinks: in a
        # subquery it cannot walk messages_order into (OFFSET 0 keeps it apart), with
        # sequential scans off (_plan). Left to itself it took an overlap with 200 scopes
        # for half the table and scanned it (30 s), and walked messages_order for two
        # common terms that are never together (4.7 s). A span is of times: the matches
        # then, the GIN index's bitmap ANDed with messages_order's (only those rows are
        # read from the table).
        since, since_params = "", []
        if span is not None:
            since, since_params = " AND ts >= ?", [span[0]]
            if span[1] is not None:
                since, since_params = f"{since} AND ts < ?", [*since_params, span[1]]
        if not scoped:
            return (
                f"(SELECT * FROM messages WHERE {BARE_TERMS}(terms) @> ?::text[]{since} "
                "OFFSET 0) m",
                "TRUE",
                [list(terms), *since_params],
            )
        # Each term in one of the conversations' scopes: the index gives their rows only. A
        # row's terms are all of its own conversation's scope, so "every term, each in one
        # of the scopes" is "every term in the row's scope".
        scopes = sorted({search_scope(c) for c in convs})
        overlap = " AND ".join(["terms && ?::text[]"] * len(terms))
        return (
            f"(SELECT * FROM messages WHERE {overlap}{since} OFFSET 0) m",
            "TRUE",
            [*[[scope + t for scope in scopes] for t in terms], *since_params],
        )

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
        # The matches of the newest messages first: the time of the window's oldest
        # message, found in messages_order, is the floor. The window is as long as the
        # search likely needs (from the planner's estimate of the matches and the user's
        # share of the messages), and grows while it holds too few hits. Skipped when
        # reading every match reads few rows anyway (a rare term: 1,000 over a million
        # messages).
        if self.newest_rows <= 0:
            return
        window = self.newest_rows
        up_to: float | None = None
        if self.newest_estimate:
            needed = await self._window(tx, terms, share, req, scoped=scoped)
            if needed is None:
                return
            window, up_to = max(window, needed[0]), needed[1]
        if self.walk_rows > 0 and len(convs) >= self.walk_from:
            window = max(window, self.walk_rows * NEWEST_GROWTH)  # the walk read its newest
        bounds, params = time_bounds(req, "ts")
        within = f"WHERE {' AND '.join(bounds)} " if bounds else ""
        while up_to is None or window <= up_to:
            rows = await tx.rows(
                f"SELECT ts FROM messages {within}ORDER BY ts DESC OFFSET ? LIMIT 1",
                [*params, window - 1],
            )
            if not rows:
                return  # the window holds every message of the time asked
            oldest = int(rows[0][0])
            yield (oldest, req.before_ts), oldest
            window *= NEWEST_GROWTH

    async def _window(
        self,
        tx: Tx,
        terms: Sequence[str],
        share: tuple[int, int],
        req: w.ChatSearch,
        *,
        scoped: bool,
    ) -> tuple[int, float] | None:
        """How many of the newest messages likely hold enough hits for ``req`` (a few
        times its limit), and the most worth reading so (half the messages: beyond, the
        term is rarer in the user's conversations than in the others, and every match is
        read); None when reading every match reads few rows."""
        [(plan,)] = await tx.rows(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM messages WHERE {BARE_TERMS}(terms) @> ?::text[]",
            [list(terms)],
        )
        matches = float(plan[0]["Plan"]["Plan Rows"])
        mine, every = share
        theirs = matches * mine / every if every else matches  # in the user's conversations
        if (theirs if scoped else matches) < NEWEST_FROM_READS or theirs <= 0:
            return None
        return int(NEWEST_ROOM * req.limit * float(every) / theirs) + 1, float(every) / 2

    async def _few(
        self, tx: Tx, terms: Sequence[str], convs: Sequence[str], *, scoped: bool
    ) -> int | None:
        # A window sized from the planner's estimate held no hit: the estimate was wrong.
        # It multiplies the terms' shares, so two common terms never in one message look
        # common together, and each longer window built both terms' bitmaps again, and
        # its time range's, to find nothing (300-1,000 conversations over a million
        # messages: 140 ms before every match was read). Counting the matches, up to
        # few_reads (NEWEST_FROM_READS), costs one bitmap of the terms: if there are fewer,
        # reading them all is cheap, and it is what the windows would end with (none:
        # nothing to read). Else (a common term missing from the newest messages only)
        # the windows go on.
        source, match, params = self._match(terms, convs, scoped=scoped)
        [(count,)] = await tx.rows(
            f"SELECT count(*) FROM (SELECT 1 FROM {source} WHERE {match} LIMIT ?) c",
            [*params, self.few_reads],
        )
        return int(count) if int(count) < self.few_reads else None

    def _walk(
        self, terms: Sequence[str], convs: Sequence[str], req: w.ChatSearch
    ) -> tuple[str, str, list[Any]] | None:
        if self.walk_rows <= 0 or len(convs) < self.walk_from:
            return None
        # A common term in a user's busy conversations is among the newest messages:
        # found there in a few ms, where the index gives every match in every
        # conversation, or in all of the user's, to sort (over a million messages, 200,000
        # or 20,000 rows: 100 ms to a second). The newest of the time asked for: the walk
        # starts at its end.
        bounds, params = time_bounds(req, "ts")
        within = f"WHERE {' AND '.join(bounds)} " if bounds else ""
        newest = "ORDER BY ts DESC, seq DESC, conv DESC"
        return (
            f"(SELECT * FROM messages {within}{newest} LIMIT {int(self.walk_rows)}) m",
            # Each row's own scope, made as the upgrade to schema 3 made it: cheaper per row
            # than the bare terms' function (4,000 rows: 10 ms against 30).
            "m.terms @> ARRAY["
            + ", ".join([f"left(md5(m.conv), {SCOPE_HEX}) || ?::text"] * len(terms))
            + "]",
            [*params, *terms],
        )

    async def _plan(self, tx: Tx) -> None:
        await tx.execute("SET LOCAL enable_seqscan = off")
        # A plan for the values of each search: psycopg prepares a statement run five times,
        # and PostgreSQL may then keep a generic plan, blind to how few rows a window's time
        # holds (it read every match of a common term again: 260-290 ms against 40-70).
        await tx.execute("SET LOCAL plan_cache_mode = force_custom_plan")

    async def close(self) -> None:
        await self.pool.close()
