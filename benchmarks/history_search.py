"""Search on the history store alone: the store a ``history_load`` run leaves, seeded once
and kept, searched by users in few to all conversations.

Seeding a million messages through the whole node (``history_load``) takes long; this
writes them through the store's own API (``append_many``, as the archiver copies them: ten
messages of each of 100 conversations per transaction), in ``history_load``'s shape: the
same texts (:func:`benchmarks.history_load.text_of`), ``--conversations`` conversations
taking turns, one millisecond apart. The store is kept in ``--data`` (SQLite: its
``history.db``; PostgreSQL: a data folder its server runs on, ``fsync=off``) and reused by
the next run with the same shape, so that runs of different code over one store take
seconds.

Each row of the result is a user in ``n`` conversations (a random choice, the same for
every run) searching one query ``--searches`` times, limit 20: p50 and p99 (ms) and the
hits found. Queries: ``history_load``'s rare and common terms (one message in a thousand
of each conversation, one in five), a common term with a word of the texts, two common
terms never in one message, a term in no message, and the common
and rare Latin terms before the middle of the history (``before_ts``). ``--check`` also
runs each search through every plan and says whether they all answer the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks.common import fmt, ms, percentile, run_main, table, write_json
from benchmarks.history_load import COMMON, RARE, rare_offsets, text_of
from chat import wire as w
from chat.history.postgres import PostgresHistory
from chat.history.sql import SqlHistory
from chat.history.sqlite import SQLiteHistory

T0: Final = 1_700_000_000_000
PER_TX_CONVS: Final = 100  # conversations per transaction while seeding
PER_TX_MESSAGES: Final = 10  # messages of each of them
QUERIES: Final = {
    "rare latin": (RARE["latin rare"], False),
    "rare cjk": (RARE["cjk rare"], False),
    "common latin": (COMMON["latin common"], False),
    "common cjk": (COMMON["cjk common"], False),
    "two terms": (f"{COMMON['latin common']} budget", False),
    "never together": (f"{COMMON['latin common']} {COMMON['cjk common']}", False),
    "absent": ("nowhere", False),
    "rare, first half": (RARE["latin rare"], True),
    "common, first half": (COMMON["latin common"], True),
}
SHAPE_FILE: Final = "shape.json"


def conversations(n: int) -> list[str]:
    return [f"g-{i:04d}" for i in range(n)]


async def seed(store: SqlHistory, messages: int, convs: Sequence[str], say: Any) -> None:
    """``messages`` messages over ``convs``, taking turns, through ``append_many``."""
    rng = random.Random(15)
    offsets = rare_offsets(convs)
    per_conv = messages // len(convs)
    heads = {conv: 0 for conv in convs}
    began = time.monotonic()
    done = 0
    for first in range(1, per_conv + 1, PER_TX_MESSAGES):
        numbers = range(first, min(first + PER_TX_MESSAGES, per_conv + 1))
        for start in range(0, len(convs), PER_TX_CONVS):
            batches = []
            for i, conv in enumerate(convs[start : start + PER_TX_CONVS], start=start):
                events: list[w.ChatMessageEvent] = []
                for n in numbers:
                    heads[conv] += 1
                    msg = w.ChatMessage(
                        seq=n,
                        ts=T0 + (n - 1) * len(convs) + i,
                        sender=f"u{(n + i) % 5}",
                        kind="text",
                        client_id=f"c{n}",
                        text=text_of(rng, n, offsets[conv]),
                    )
                    events.append(
                        w.ChatMessageEvent(
                            seq=0, conv=conv, ev=n, epoch="e1", stamp="s", message=msg
                        )
                    )
                batches.append((conv, events))
            await store.append_many(batches)
            done += sum(len(e) for _, e in batches)
        if first % 100 == 1:
            rate = done / max(time.monotonic() - began, 1e-9)
            say(f"seeded {done:,} of {per_conv * len(convs):,} ({rate:,.0f}/s)")


def queries(messages: int, convs: int) -> dict[str, w.ChatSearch]:
    middle = T0 + messages // 2
    out = {}
    for kind, (query, first_half) in QUERIES.items():
        before = middle if first_half else None
        out[kind] = w.ChatSearch(id="b", query=query, limit=20, before_ts=before)
    return out


async def measure(
    store: SqlHistory, args: argparse.Namespace, all_convs: Sequence[str], say: Any
) -> list[dict[str, Any]]:
    rng = random.Random(7)
    rows = []
    for n in args.members:
        mine = sorted(rng.sample(list(all_convs), min(n, len(all_convs))))
        for kind, req in queries(args.messages, len(all_convs)).items():
            if args.only and kind not in args.only:
                continue
            took = []
            hits: list[w.SearchHit] = []
            for _ in range(args.searches):
                t = time.perf_counter()
                hits = await store.search(mine, req)
                took.append(time.perf_counter() - t)
            checked = None
            if args.check:
                checked = await same_by_every_plan(store, mine, req, hits)
            row = {
                "same_by_every_plan": checked,
                "members": n,
                "query": kind,
                "p50_ms": ms(percentile(took, 50)),
                "p99_ms": ms(percentile(took, 99)),
                "hits": len(hits),
                "answer": [(h.conv, h.message.seq) for h in hits],
            }
            same = "" if checked is None else f" same by every plan: {checked}"
            say(f"{n:5d} {kind:20s} p50 {fmt(row['p50_ms'])} p99 {fmt(row['p99_ms'])} ms{same}")
            rows.append(row)
    return rows


async def same_by_every_plan(
    store: SqlHistory, mine: Sequence[str], req: w.ChatSearch, hits: Sequence[w.SearchHit]
) -> bool:
    """Whether ``hits`` are what every plan answers: the scoped and the bare entries, with
    and without the newest messages read first (the store's settings are put back)."""
    saved = store.scoped_up_to, store.bare_from_share, store.walk_rows, store.newest_rows
    want = [(h.conv, h.message.seq, h.snippet) for h in hits]
    try:
        for scoped_up_to, bare_from_share in ((0, 0.0), (10**6, 2.0)):
            for walk_rows, newest_rows in ((0, 0), (saved[2], saved[3])):
                store.scoped_up_to, store.bare_from_share = scoped_up_to, bare_from_share
                store.walk_rows, store.newest_rows = walk_rows, newest_rows
                got = [(h.conv, h.message.seq, h.snippet) for h in await store.search(mine, req)]
                if got != want:
                    return False
    finally:
        store.scoped_up_to, store.bare_from_share, store.walk_rows, store.newest_rows = saved
    return True


@contextlib.contextmanager
def postgres_at(folder: Path) -> Iterator[str]:
    from tests.postgres import postgres_server  # the tests' server, on a kept folder

    with postgres_server(kept=folder) as server:
        yield server.url()


def kept_shape(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """The store's shape, and whether ``--data`` holds a store of it already (else it must
    be empty)."""
    data: Path = args.data
    data.mkdir(parents=True, exist_ok=True)
    shape = {"store": args.store, "messages": args.messages, "conversations": args.conversations}
    shape_file = data / SHAPE_FILE
    seeded = shape_file.exists() and json.loads(shape_file.read_text()) == shape
    if not seeded and any(data.iterdir()):
        raise SystemExit(f"{data} holds something else than a store of this shape: {shape}")
    return shape, seeded


async def run(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    data: Path = args.data
    shape, seeded = kept_shape(args)
    shape_file = data / SHAPE_FILE
    convs = conversations(args.conversations)
    with contextlib.ExitStack() as stack:
        store: SqlHistory
        if args.store == "sqlite":
            store = await SQLiteHistory.open(data / "history.db")
        else:
            url = stack.enter_context(postgres_at(data / "pg"))
            store = await PostgresHistory.open(url)
        try:
            if not seeded:
                t = time.monotonic()
                await seed(store, args.messages, convs, say)
                if isinstance(store, PostgresHistory):
                    async with store.pool.connection() as conn:
                        await conn.set_autocommit(True)
                        await conn.execute("VACUUM ANALYZE messages")
                say(f"seeded in {time.monotonic() - t:.0f} s")
                await asyncio.to_thread(shape_file.write_text, json.dumps(shape))
            if args.plan == "scoped":
                store.scoped_up_to, store.bare_from_share = 10**6, 2.0
            elif args.plan == "bare":
                store.scoped_up_to, store.bare_from_share = 0, 0.0
            if args.newest_rows is not None:
                store.newest_rows = args.newest_rows
            rows = await measure(store, args, convs, say)
        finally:
            await store.close()
    worst = max((r["p99_ms"] for r in rows if r["p99_ms"] is not None), default=None)
    checked = [r["same_by_every_plan"] for r in rows if r["same_by_every_plan"] is not None]
    summary = {"search_p99_ms": worst, "answers_differ": checked.count(False) if checked else None}
    return {"summary": summary, "shape": shape, "searches": args.searches, "rows": rows}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.history_search", description=__doc__)
    p.add_argument("--store", choices=("sqlite", "postgres"), required=True)
    p.add_argument("--data", type=Path, required=True, help="folder of the kept store")
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--conversations", type=int, default=1000)
    p.add_argument(
        "--members",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[5, 100, 300, 1000],
        help="conversations of each searching user, comma-separated",
    )
    p.add_argument("--searches", type=int, default=20, help="searches timed per row")
    p.add_argument("--only", type=lambda s: s.split(","), default=None, help="query kinds")
    p.add_argument("--plan", choices=("scoped", "bare"), default=None, help="force the search plan")
    p.add_argument(
        "--newest-rows",
        type=int,
        default=None,
        help="the store's newest_rows (0: the newest matches are not read first)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="also search every way (both plans, newest first or not) and compare the hits",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.messages < args.conversations or args.conversations < 1:
        p.error("--messages must be at least --conversations, which must be positive")
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    figures = asyncio.run(run(args, say))
    lines = table(
        [
            (str(r["members"]), r["query"], fmt(r["p50_ms"]), fmt(r["p99_ms"]), str(r["hits"]))
            for r in figures["rows"]
        ],
        ("user in", "query", "p50 ms", "p99 ms", "hits"),
    )
    print("\n".join(lines))
    if args.json:
        write_json(args.json, "history_search", figures)
    return 0


if __name__ == "__main__":
    run_main(main)
