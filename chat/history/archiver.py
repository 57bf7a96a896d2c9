"""The archiver: copies each conversation's log from Redis into the history store, in
order, exactly once.

Every node runs one. It archives a conversation shortly after this node logged an event in
it (``note``, called by chat.store.ChatStore after each write), batching the events of the
pause, and every ``SWEEP_S`` it looks at every conversation for one whose store lags its
log: what another node logged and could not archive before it died, or what failed here.
Each pass reads the log after the store's head and appends it (chat.history.store: events
at or below the head are skipped, in the same transaction as the head moves), so two nodes
archiving the same conversation, or a pass repeated after a crash, store every event once.

After each pass Redis keeps only a hot window of the conversation (:meth:`Archiver.trim`,
chat/lua/trim.lua): the last ``window_events`` events of its log and as many messages, none
older than ``window_days`` once a trim pass (every ``TRIM_SWEEP_S``) looks at the clock,
and never anything the store does not have yet. Below the window (``cold_seq`` of the
conversation's meta) chat.service reads messages from the store.

Redis's log also keeps its own bound (``chat_replay_events``). A conversation whose log no
longer holds the event after the store's head (it outgrew that bound before the store had
it, or it is older than the store) is copied whole from Redis's messages instead
(:meth:`Archiver.seed`), then followed by its log again. One whose log was made anew
(another epoch: Redis lost it), or that the store refuses otherwise (an event this version
cannot read), is reported once and left out of the passes (``stuck``); each sweep tries it
again, alone, so that it is archived once it can be (its store's copy deleted, the node
upgraded).

Nothing stops the archiver but its cancellation. A pass or a sweep that failed (the store
or Redis away for a moment) is tried again after ``RETRY_FIRST_S``, twice as long after each
further failure up to ``RETRY_MAX_S``, not only at the next sweep; a conversation that failed
alone while the others were archived is noted again after a backoff of its own, holding
back no other. An error nothing expected (a bug, a cancellation raised below that was not
meant for it) is logged and the loop begins again after the backoff, with a sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Final

from chat import wire as w
from chat.history.events import decode_event
from chat.history.store import Head, HistoryError, HistoryGap, HistoryStore, StoreBusy
from chat.store import ChatStore
from signaling.keys import conv_key
from signaling.tasks import TaskCpu

log = logging.getLogger("huddle.chat")
# How long after the first write not yet archived a pass begins: the events of the pause, in
# every conversation written in, go in one pass. A pass costs about as much per conversation
# as per event (a read of its log, its head moved, round trips to the store's thread), so the
# longer the pause the less each event costs: measured with 20 busy conversations, ~140 µs
# of node CPU per event at one event per conversation and pass, ~35 at ten. The pause counts
# from that first write, not from the end of the last pass: under steady writes a pass that
# took longer than the pause is followed by the next at once, and an event waits at most
# the pause and two passes (the one under way when it came, and its own). Nothing waits for
# it: Redis keeps every event until the store has it, and a search archives first.
# This is the pause of a store that says none (HistoryStore.archive_pause_s: SQLite's);
# PostgreSQL's is shorter (chat.history.postgres.ARCHIVE_PAUSE_S), its pass costing the
# node less per event.
ARCHIVE_DELAY_S: Final = 0.5
# Events read from each conversation's log per pass, and conversations per pass: a pass is
# one Redis round trip and one transaction.
ARCHIVE_BATCH: Final = 500
PASS_CONVS: Final = 500
# Trims after a pass made at once (each one its conversation's, two Redis round trips).
TRIMS_AT_ONCE: Final = 16
# How often every conversation is checked for a store that lags its log.
SWEEP_S: Final = 60.0
# A failed pass or sweep is tried again after this, doubled after each further failure, up
# to RETRY_MAX_S (the store or Redis came back: it catches up in seconds, not at the next
# sweep; still away: the log says so about once every RETRY_MAX_S).
RETRY_FIRST_S: Final = 0.5
RETRY_MAX_S: Final = 30.0
# A pass that failed this many times in a row is tried next with each conversation alone
# (a conversation whose data fails it, in a way no handler knows, then holds back no other),
# until ISOLATE_MISSES of them fail in a row (the store or Redis is away: the rest waits).
ISOLATE_AFTER: Final = 2
ISOLATE_MISSES: Final = 2
# Copying a conversation whole: messages read per round trip, and tries at reading them
# while no event comes (a busy conversation is tried again by the next sweep).
SEED_PAGE: Final = 1000
SEED_TRIES: Final = 5
# How often every conversation's window is trimmed by age (a write trims by count at once).
TRIM_SWEEP_S: Final = 3600.0
DAY_MS: Final = 86_400_000
_META_PATTERN: Final = conv_key("*", "meta")
# The search index Redis kept before search moved to the store: one sorted set per term.
_OLD_INDEX_PATTERN: Final = conv_key("*", "ix:*")
_PREFIX, _SUFFIX = conv_key("", "meta").split("}", 1)[0], "}:meta"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _backoff(failures: int) -> float:
    """The wait before trying again after ``failures`` failures in a row."""
    return min(RETRY_MAX_S, RETRY_FIRST_S * (1 << min(failures - 1, 16)))


def _conv_of(meta_key: bytes | str) -> str | None:
    key = meta_key.decode() if isinstance(meta_key, bytes) else meta_key
    if not key.startswith(_PREFIX) or not key.endswith(_SUFFIX):
        return None
    return key[len(_PREFIX) : -len(_SUFFIX)] or None


class Archiver:
    def __init__(
        self,
        chat: ChatStore,
        history: HistoryStore,
        window_events: int = 2000,
        window_days: float = 0,
    ) -> None:
        self.chat = chat
        self.history = history
        self.window_events = window_events
        self.window_days = window_days
        # A trim after a write waits until this many messages or events are past the
        # window, so that its cost is shared by many.
        self.trim_step = max(1, window_events // 10)
        self._due: set[str] = set()
        # When the first of the due conversations was noted (None: none since the last pass).
        self._noted_at: float | None = None
        self._wake = asyncio.Event()
        # Conversations whose log cannot be copied (see the module's note), reported once.
        self.stuck: dict[str, str] = {}
        # Failures in a row of whole passes or sweeps (the store or Redis away), and when the
        # next pass may begin after one.
        self.failures = 0
        self._retry_at = 0.0
        # Conversations that failed alone: failures in a row, and the time before which no
        # pass takes them (each is noted again then), so the others' passes do not wait.
        self._tries: dict[str, tuple[int, float]] = {}
        self._next_trim = 0.0
        # Times the loop began again after an error nothing expected.
        self.restarts = 0
        # Its passes, sweeps and trims on the event loop's thread (the store's own thread,
        # SQLite's, is the store's: HistoryStore.thread_cpu_seconds).
        self.cpu = TaskCpu()

    def note(self, conv: str) -> None:
        """``conv``'s log has a new event."""
        if self._noted_at is None:
            self._noted_at = time.monotonic()
        self._due.add(conv)
        self._wake.set()

    def pause_left(self) -> float:
        """Seconds until the next pass is due: the pause (:attr:`pause_s`) after the first
        conversation noted since the last pass was taken, 0 when that is past (and when
        none is noted)."""
        if self._noted_at is None:
            return 0.0
        return max(0.0, self._noted_at + self.pause_s - time.monotonic())

    @property
    def pause_s(self) -> float:
        """The pause before a pass: the store's (HistoryStore.archive_pause_s), else
        ``ARCHIVE_DELAY_S``."""
        own = self.history.archive_pause_s
        return ARCHIVE_DELAY_S if own is None else own

    def take_due(self) -> list[str]:
        """The conversations noted since the last pass, in order; the next pause counts
        from the next note."""
        convs, self._due, self._noted_at = sorted(self._due), set(), None
        return convs

    async def archive(self, conv: str) -> Head:
        """Copy what the store lacks of ``conv``'s log; replies the store's head after."""
        head = await self.history.head(conv) or Head(0, "", 0)
        stream = conv_key(conv, "events")
        while True:
            batch = await self.chat.events_after(stream, head.ev, ARCHIVE_BATCH)
            if not batch:
                return head
            head = await self.history.append(conv, [decode_event(blob) for _, blob in batch])
            if len(batch) < ARCHIVE_BATCH:
                return head

    async def archive_many(self, convs: Sequence[str]) -> list[str]:
        """One pass over ``convs``: what the store lacks of each (up to ``ARCHIVE_BATCH``
        events), read in one Redis round trip and stored in one transaction; a
        conversation with more is noted again. Should the pass fail on one of them (a log
        that lost events, another epoch), each is archived alone instead: replies those
        that failed then for another reason (the store or Redis away), to try again."""
        heads = await self.history.heads(convs)
        streams = {conv: conv_key(conv, "events") for conv in convs}
        logs = await self.chat.logs_after(
            {streams[c]: heads[c].ev if c in heads else 0 for c in convs}, ARCHIVE_BATCH
        )
        try:
            batches = [
                (conv, [decode_event(fields[b"e"]) for _, fields in logs[streams[conv]]])
                for conv in convs
                if streams[conv] in logs
            ]
            if not batches:
                return []
            new = await self.history.append_many(batches)
        except HistoryError:
            return [conv for conv in convs if not await self._archive_one(conv)]
        trims: list[tuple[str, Head]] = []
        for (conv, events), head in zip(batches, new, strict=True):
            if len(events) >= ARCHIVE_BATCH:
                self.note(conv)
            # A trim is due only when the head crossed a step (see ``trim``).
            before = heads[conv].ev if conv in heads else 0
            if head.ev // self.trim_step > before // self.trim_step:
                trims.append((conv, head))
        # Several at once: each is two round trips to Redis, which one after the other kept
        # the next pass waiting.
        for start in range(0, len(trims), TRIMS_AT_ONCE):
            await asyncio.gather(
                *(self.trim(conv, head) for conv, head in trims[start : start + TRIMS_AT_ONCE])
            )
        return []

    async def catch_up(self, convs: Sequence[str]) -> None:
        """Archive now whatever the store lacks of ``convs`` (a search is about to read
        them): one Redis round trip and one store query, one pass per lagging one."""
        lagging = sorted(await self._lagging(list(convs)) - set(self.stuck))
        for start in range(0, len(lagging), PASS_CONVS):
            try:
                await self.archive_many(lagging[start : start + PASS_CONVS])
            except Exception as exc:
                # The search answers from what the store has.
                log.warning("chat archiving failed", extra={"error": str(exc)})

    async def seed(self, conv: str) -> Head | None:
        """Copy ``conv`` whole from Redis (messages, reactions, earlier versions, read
        positions) as it stands at its log's last event; None when events kept coming
        while it was read (nothing is stored then)."""
        for _ in range(SEED_TRIES):
            before = await self.chat.log_state(False, conv)
            meta = await self.chat.meta(conv)
            if meta is None:
                return None
            if meta.cold_seq > 0:
                # Messages below the window are only in another store: Redis has no whole
                # copy to give (several nodes, each with a store of its own).
                raise HistoryGap(
                    f"{conv}: the log lost events this store lacks, and messages up to "
                    f"{meta.cold_seq} are no longer in Redis"
                )
            messages: list[w.ChatMessage] = []
            for start in range(1, meta.last_seq + 1, SEED_PAGE):
                end = min(meta.last_seq, start + SEED_PAGE - 1)
                messages += await self.chat.messages(conv, range(start, end + 1))
            edits = {m.seq: await self.chat.edits(conv, m.seq) for m in messages if m.edited}
            raw = await self.chat.redis.hgetall(conv_key(conv, "reads"))
            # Every event moves the log's head: the same head after the reads means that
            # they saw the conversation as it stood at that event.
            if await self.chat.log_state(False, conv) != before:
                continue
            reads = {_text(u): int(r) for u, r in raw.items()}
            for msg in messages:
                msg.thread = None  # made again from the replies
            head = Head(before.head, before.epoch, meta.last_seq)
            log.info("chat history copied whole", extra={"conv": conv, "ev": before.head})
            return await self.history.seed(conv, head, messages, edits, reads)
        return None

    async def trim(self, conv: str, head: Head, by_age: bool = False) -> tuple[int, int] | None:
        """Let what the store has (up to ``head``) and is past the window leave Redis;
        replies (events left in the log, cold_seq), None when nothing was to trim."""
        last_ev, last_seq, cold, trimmed, epoch = await self.chat.window_state(conv)
        if epoch != head.epoch:
            return None
        ev = min(head.ev, last_ev - self.window_events)
        seq = min(head.last_seq, last_seq - self.window_events)
        if by_age and self.window_days > 0:
            cutoff = int(time.time() * 1000) - int(self.window_days * DAY_MS)
            old = min(head.last_seq, await self.history.last_before(conv, cutoff))
            if old > seq:
                seq = old
                if old >= last_seq:
                    ev = head.ev  # nothing recent: the log goes with the messages
        elif seq - cold < self.trim_step and ev - trimmed < self.trim_step:
            return None
        if seq <= cold and ev <= trimmed:
            return None
        return await self.chat.trim(conv, head.epoch, ev, seq, head.ev)

    async def trim_all(self) -> int:
        """Trim every conversation's window, by count and by age; replies how many
        conversations were looked at."""
        n = 0
        convs: list[str] = []
        async for key in self.chat.redis.scan_iter(match=_META_PATTERN, count=1000):
            conv = _conv_of(key)
            if conv is not None and conv not in self.stuck:
                convs.append(conv)
            if len(convs) >= 1000:
                n += await self._trim_some(convs)
                convs = []
        return n + await self._trim_some(convs)

    async def _trim_some(self, convs: list[str]) -> int:
        heads = await self.history.heads(convs)
        for conv, head in heads.items():
            await self.trim(conv, head, by_age=True)
        return len(heads)

    async def behind(self) -> set[str]:
        """Every conversation whose log has events the store lacks."""
        found: set[str] = set()
        keys: list[str] = []
        async for key in self.chat.redis.scan_iter(match=_META_PATTERN, count=1000):
            conv = _conv_of(key)
            if conv is not None:
                keys.append(conv)
            if len(keys) >= 1000:
                found |= await self._lagging(keys)
                keys = []
        if keys:
            found |= await self._lagging(keys)
        return found

    async def _lagging(self, convs: list[str]) -> set[str]:
        async with self.chat.redis.pipeline(transaction=False) as pipe:
            for conv in convs:
                pipe.hget(conv_key(conv, "meta"), "last_ev")
            last: list[bytes | None] = await pipe.execute()
        heads = await self.history.heads(convs)
        return {
            conv
            for conv, ev in zip(convs, last, strict=True)
            if int(ev or 0) > (heads[conv].ev if conv in heads else 0)
        }

    async def drop_old_index(self) -> int:
        """Delete the search terms Redis held before search moved to the store (a node of
        an earlier version wrote them); replies how many keys were deleted."""
        deleted = 0
        batch: list[bytes | str] = []
        async for key in self.chat.redis.scan_iter(match=_OLD_INDEX_PATTERN, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.chat.redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await self.chat.redis.unlink(*batch)
        return deleted

    async def run(self) -> None:
        """Archive what is noted, and sweep now and every ``SWEEP_S``, until cancelled: an
        error that ends a round of the loop is logged, and the loop begins again (with a
        sweep) after a backoff that grows with every such restart. The CPU this takes on
        the event loop's thread adds up in ``cpu``."""
        await self.cpu.timed(self._run())

    async def _run(self) -> None:
        try:
            if await self.drop_old_index():
                log.info("search terms left Redis for the history store")
        except Exception as exc:
            log.warning("old search index not deleted", extra={"error": str(exc)})
        self._next_trim = time.monotonic() + TRIM_SWEEP_S
        while True:
            try:
                await self._loop()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                # Raised below without this task being cancelled: the loop goes on.
                log.exception("chat archiver cancelled from below; it goes on")
            except Exception:
                log.exception("chat archiver failed; it goes on")
            self.restarts += 1
            await asyncio.sleep(_backoff(self.restarts))

    def _failed(self) -> float:
        """Count a failure; replies how long to wait before trying again."""
        self.failures += 1
        return _backoff(self.failures)

    async def _loop(self) -> None:
        next_sweep = 0.0
        while True:
            now = time.monotonic()
            if now >= self._next_trim:
                self._next_trim = now + TRIM_SWEEP_S
                try:
                    await self.trim_all()
                except Exception as exc:
                    log.warning("chat window trim failed", extra={"error": str(exc)})
            if now >= next_sweep:
                # The stuck ones too: tried again alone (see _pass), archived once they can be.
                try:
                    self._due |= await self.behind()
                    next_sweep = now + SWEEP_S
                    if not self._retry_at:
                        self.failures = 0
                except Exception as exc:
                    log.warning("chat archive sweep failed", extra={"error": str(exc)})
                    next_sweep = now + self._failed()
            if not self._due:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(
                        max(0.0, min(next_sweep, self._next_trim) - time.monotonic())
                    ):
                        await self._wake.wait()
                self._wake.clear()
                continue
            if self._noted_at is None:
                self._noted_at = time.monotonic()  # a sweep's finds: the pause from now
            delay = max(self.pause_left(), self._retry_at - time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)
            self._wake.clear()
            await self._pass(self.take_due())

    async def _pass(self, convs: list[str]) -> None:
        """Archive ``convs``: the stuck ones alone, the others in passes of ``PASS_CONVS``.
        A pass that failed is due again after a backoff, which every pass waits for (the
        store or Redis is away); a conversation that failed alone is noted again after a
        backoff of its own, and tried alone until it is archived."""
        if self._tries:
            # Those still in their own backoff wait for it (noted again at its end).
            now = time.monotonic()
            convs = [c for c in convs if self._tries.get(c, (0, 0.0))[1] <= now]
        # The stuck ones (reported once) and those that failed alone before: tried alone.
        stuck = [c for c in convs if c in self.stuck or c in self._tries]
        convs = [c for c in convs if c not in self.stuck and c not in self._tries]
        alone: list[str] = []
        for conv in stuck:
            if not await self._archive_one(conv):
                alone.append(conv)
        again: list[str] = []
        for start in range(0, len(convs), PASS_CONVS):
            chunk = convs[start : start + PASS_CONVS]
            try:
                alone += await self.archive_many(chunk)
            except Exception as exc:
                log.warning("chat archiving failed", extra={"convs": len(chunk), "error": str(exc)})
                if self.failures < ISOLATE_AFTER or len(chunk) < 2:
                    again += chunk
                    continue
                failed, rest = await self._isolate(chunk)
                alone += failed
                again += rest
        if self._tries:
            for conv in set(stuck + convs) - set(alone) - set(again):
                self._tries.pop(conv, None)
        loop = asyncio.get_running_loop()
        for conv in alone:
            tries = self._tries.get(conv, (0, 0.0))[0] + 1
            wait = _backoff(tries)
            self._tries[conv] = (tries, time.monotonic() + wait)
            loop.call_later(wait, self.note, conv)
        if not again:
            self.failures, self._retry_at = 0, 0.0
            return
        self._retry_at = time.monotonic() + self._failed()
        if self._noted_at is None:
            self._noted_at = time.monotonic()
        self._due.update(again)

    async def _isolate(self, convs: list[str]) -> tuple[list[str], list[str]]:
        """Archive each of ``convs`` alone, until ``ISOLATE_MISSES`` fail in a row; replies
        those that failed alone while others did not, and the rest (those that failed in
        that row, and those not tried)."""
        failed: list[str] = []
        missed = 0
        for i, conv in enumerate(convs):
            if await self._archive_one(conv):
                missed = 0
                continue
            failed.append(conv)
            missed += 1
            if missed >= ISOLATE_MISSES:
                return failed[:-missed], failed[-missed:] + convs[i + 1 :]
        return failed, []

    async def _archive_one(self, conv: str) -> bool:
        """Archive ``conv`` alone; False when it failed for a reason that may pass (the
        store or Redis away, events kept coming while it was copied whole): to try again
        soon. A log that cannot be copied goes into ``stuck``, reported once; it leaves
        once archived."""
        try:
            try:
                head = await self.archive(conv)
            except HistoryGap:
                if await self.seed(conv) is None:
                    return False  # kept changing: tried again after the backoff
                head = await self.archive(conv)
            await self.trim(conv, head)
        except StoreBusy as exc:
            # Another writer holds it (see chat.history.postgres.LOCK_TIMEOUT_MS).
            log.warning("chat archiving failed", extra={"conv": conv, "error": str(exc)})
            return False
        except HistoryError as exc:
            # A gap, another epoch, an event it cannot read (one of a newer version): the
            # same again until something changes; each sweep tries it.
            if conv not in self.stuck:
                log.error("chat log cannot be archived", extra={"conv": conv, "error": str(exc)})
            self.stuck[conv] = str(exc)
            return True
        except Exception as exc:
            log.warning("chat archiving failed", extra={"conv": conv, "error": str(exc)})
            return False
        if self.stuck.pop(conv, None) is not None:
            log.info("chat log archived again", extra={"conv": conv})
        return True
