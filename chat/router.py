"""Chat events to this node's devices: per-conversation pub/sub, replay, no loss, no repeats.

Each conversation numbers its events without holes (``ev``), and so does each user's feed
(``fev``). The node subscribes to a conversation's channel while one of its devices reads it
and remembers the last number it passed on; a number that skips ahead means pub/sub lost
something, which is re-read from the conversation's log before going on. Each device has its
own position per conversation and never gets an event at or below it, so replay after a
reconnect and live delivery can overlap without repeating anything.

Where a device resumes, and whether a followed log is still the one the node knew, are the
pure rules of chat.resume: a log made anew (another epoch) or gone back in time (Redis back
from an older snapshot: numbers handed out again) is a gap for every device on it, in the
``chat.sync`` reply or, for a connection already following it, as a ``chat.gap`` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol

import msgspec

from chat import wire as w
from chat.resume import (
    GapReason,
    LogState,
    Position,
    check_cursor,
    check_follow,
    check_page,
    resume,
)
from chat.store import ChatStore, conv_channel, feed_channel
from signaling.keys import conv_key, user_key
from signaling.protocol import EncodedEvent

if TYPE_CHECKING:
    from signaling.broker import Broker

log = logging.getLogger("huddle.chat")
# Replay is read from Redis in pages of this many events.
REPLAY_PAGE: Final = 500
# After subscribing to a feed, its head is read again this much later (see _follow).
SUBSCRIBE_SETTLE_S: Final = 0.5
# A replay waits while this many frames are queued for the device (slow-consumer guard).
REPLAY_QUEUE_HIGH: Final = 500


class Reader(Protocol):
    """What the router needs of a connection."""

    closed: bool

    @property
    def identity(self) -> str: ...

    def send_event(self, event: EncodedEvent) -> None: ...

    def queued(self) -> int: ...


class _SysHead(msgspec.Struct):
    event: str
    users: list[str] | None = None
    by: str | None = None


class _MsgHead(msgspec.Struct):
    system: _SysHead | None = None


class _Head(msgspec.Struct):
    """The routing fields of a stored event; the rest is passed on as is."""

    type: str
    conv: str | None = None
    ev: int | None = None
    fev: int | None = None
    epoch: str | None = None
    feed_epoch: str | None = None
    stamp: str | None = None
    user: str | None = None
    message: _MsgHead | None = None
    reason: str | None = None


_head: Final = msgspec.json.Decoder(_Head)


def feed_id(user: str) -> str:
    # Conversation ids never contain "@".
    return "@" + user


class Feed:
    """One conversation (or one user's feed) as this node follows it."""

    def __init__(self, fid: str) -> None:
        self.fid = fid
        self.user_feed = fid.startswith("@")
        self.name = name = fid[1:] if self.user_feed else fid
        self.stream = user_key(name, "feed") if self.user_feed else conv_key(name, "events")
        self.channel = feed_channel(name) if self.user_feed else conv_channel(name)
        self.last = 0
        # The epoch of ``last``, and the event passed on under it (b"": not known).
        self.epoch = ""
        self.last_blob = b""
        self.checking = False
        self.recheck = False
        self.readers: dict[Reader, int] = {}
        self.ready: asyncio.Future[None] | None = None
        self.filling = False
        self.backlog: list[tuple[int, bytes]] = []
        self.handler: Callable[[bytes], None] | None = None


class Probe(NamedTuple):
    """What the log holds at a cursor's own number: the first event numbered so or above
    (None: none), and that event's stamp."""

    first: int | None
    stamp: str | None


class Attached(NamedTuple):
    """A reader's position in a log after ``Router.attach``, and the gap it had, if any."""

    ev: int
    epoch: str
    gap: GapReason | None


def _probe(entries: list[tuple[int, bytes]]) -> Probe:
    return Probe(entries[0][0], _head.decode(entries[0][1]).stamp) if entries else Probe(None, None)


def gap_event(feed: Feed, ev: int, reason: GapReason) -> EncodedEvent:
    if feed.user_feed:
        event = w.ChatGap(seq=0, fev=ev, feed_epoch=feed.epoch or None, reason=reason)
    else:
        event = w.ChatGap(seq=0, conv=feed.name, ev=ev, epoch=feed.epoch or None, reason=reason)
    return EncodedEvent(event)


class Router:
    def __init__(
        self, store: ChatStore, broker: Broker, spawn: Callable[[Any], None], max_replay: int
    ) -> None:
        self.store = store
        self.broker = broker
        self.spawn = spawn
        self.max_replay = max_replay
        self.feeds: dict[str, Feed] = {}
        self.attached: dict[Reader, set[str]] = {}
        broker.on_reconnect.append(self._on_reconnect)

    # --- attaching readers --------------------------------------------------------------

    async def attach(self, reader: Reader, fid: str, cursor: Position | None) -> Attached:
        """Replay what ``reader`` missed after ``cursor`` (None: nothing), then go live.

        Replies the reader's position, its epoch, and the gap when the events after the
        cursor cannot be replayed (chat.resume): the reader then starts at the head."""
        stamped = cursor is not None and bool(cursor.stamp) and cursor.ev > 0
        feed, probed = await self._follow(fid, cursor.ev if stamped and cursor else None)
        fids = self.attached.setdefault(reader, set())
        if fid in fids:  # live already, or being replayed by another request
            return Attached(feed.readers.get(reader, feed.last), feed.epoch, None)
        fids.add(fid)
        epoch = feed.epoch
        plan = resume(cursor, LogState(feed.last, epoch), self.max_replay)
        sent, gap = plan.after, plan.gap
        # The event at a stamped cursor must still be the device's (chat.resume.check_cursor).
        # One event more is read for it, never one round trip more: with the log's state
        # when this node starts following the log, else as the first of the replay; the
        # last event passed on is known already.
        unchecked = stamped and gap is None
        if unchecked and probed is None and sent == feed.last and feed.last_blob:
            probed = Probe(feed.last, _head.decode(feed.last_blob).stamp)
        if unchecked and probed is not None and cursor is not None:
            unchecked = False
            gap = check_cursor(cursor, probed.first, probed.stamp)
            if gap is not None:
                sent = feed.last
        while (sent < feed.last or unchecked) and not reader.closed:
            back = 1 if unchecked else 0
            entries = await self.store.events_after(feed.stream, sent - back, REPLAY_PAGE + back)
            if unchecked and cursor is not None:
                # Read from the cursor itself: a rare extra round trip only when nothing
                # follows it and this node has not passed the event on.
                unchecked = False
                first = _probe(entries[:1])
                gap = check_cursor(cursor, first.first, first.stamp)
                if gap is not None:
                    sent = feed.last
                    break
                entries = [e for e in entries if e[0] > sent]
                if sent >= feed.last:
                    break
            gap = check_page(sent, entries[0][0] if entries else None)
            if gap is not None:
                sent = max(feed.last, entries[-1][0] if entries else 0)
                break
            for ev, blob in entries:
                reader.send_event(EncodedEvent.from_blob(blob))
                sent = ev
            # The connection's writer drains the queue; polling keeps Reader small.
            while reader.queued() > REPLAY_QUEUE_HIGH and not reader.closed:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        if epoch and feed.epoch != epoch:
            # The log was found made anew or gone back while this replay read it.
            sent, gap = feed.last, "epoch_changed"
        if fid not in self.attached.get(reader, ()):
            return Attached(sent, feed.epoch, gap)  # detached (left, disconnected) meanwhile
        feed.readers[reader] = sent
        return Attached(sent, feed.epoch, gap)

    def detach(self, reader: Reader, fid: str) -> None:
        fids = self.attached.get(reader)
        if fids is not None:
            fids.discard(fid)
        feed = self.feeds.get(fid)
        if feed is None:
            return
        feed.readers.pop(reader, None)
        if not feed.readers and feed.ready is not None and feed.ready.done():
            self._drop(feed)

    def forget(self, reader: Reader) -> None:
        for fid in list(self.attached.pop(reader, ())):
            self.detach(reader, fid)

    def readers_of(self, user: str) -> list[Reader]:
        return [r for r in self.attached if r.identity == user]

    def attached_to(self, reader: Reader) -> set[str]:
        return set(self.attached.get(reader, ()))

    async def _follow(self, fid: str, probe: int | None = None) -> tuple[Feed, Probe | None]:
        """The feed, followed from now on. A feed followed anew reads its state with the
        event numbered ``probe``, replied beside it (None: not read)."""
        probed: Probe | None = None
        feed = self.feeds.get(fid)
        if feed is None:
            feed = self.feeds[fid] = Feed(fid)
            feed.ready = asyncio.get_running_loop().create_future()
            try:
                feed.handler = lambda payload: self._on_message(feed, payload)
                await self.broker.subscribe(feed.channel, feed.handler)
                # Subscribed first: whatever is published after this read arrives live.
                if probe is None:
                    state = await self.store.log_state(feed.user_feed, feed.name)
                else:
                    state, stored = await self.store.log_state_at(
                        feed.user_feed, feed.name, feed.stream, probe
                    )
                    probed = _probe([stored] if stored else [])
                    if stored is not None and stored[0] == max(feed.last, state.head):
                        feed.last_blob = stored[1]  # the event under ``last`` is known too
                feed.last, feed.epoch = max(feed.last, state.head), state.epoch
            except BaseException as exc:
                self._drop(feed)
                feed.ready.set_exception(exc)
                feed.ready.exception()  # retrieved: waiters re-raise it
                raise
            feed.ready.set_result(None)
            # SUBSCRIBE is not confirmed before the head is read: an event published in
            # between would only be noticed with the next one. Look once more shortly.
            self.spawn(self._recheck(feed))
        elif feed.ready is not None and not feed.ready.done():
            await asyncio.shield(feed.ready)
        return feed, probed

    def _drop(self, feed: Feed) -> None:
        if self.feeds.get(feed.fid) is feed:
            del self.feeds[feed.fid]
        if feed.handler is not None:
            self.spawn(self.broker.unsubscribe(feed.channel, feed.handler))

    # --- live events --------------------------------------------------------------------

    def _on_message(self, feed: Feed, payload: bytes) -> None:
        try:
            head = _head.decode(payload)
        except msgspec.DecodeError:
            log.warning("malformed chat event", extra={"feed": feed.fid})
            return
        number = head.fev if feed.user_feed else head.ev
        if number is None:
            self._ephemeral(feed, head, payload)
            return
        epoch = head.feed_epoch if feed.user_feed else head.epoch
        if epoch and epoch != feed.epoch:
            if feed.epoch:
                # Another epoch: the log was made anew or went back in time. Hold the
                # events back until the log is looked at again.
                feed.backlog.append((number, payload))
                self.spawn(self._catch_up(feed))
                return
            feed.epoch = epoch  # the log's first epoch: nothing came before it to lose
        if feed.filling:
            feed.backlog.append((number, payload))
            return
        if number <= feed.last:
            # Mostly an event already read back from the log. But Redis may have come back
            # from an older snapshot (pub/sub reconnects without a word): numbers are then
            # handed out again, so look at the log.
            if not feed.checking:
                self.spawn(self._catch_up(feed))
            return
        if number > feed.last + 1:
            feed.filling = True
            feed.backlog.append((number, payload))
            self.spawn(self._fill(feed))
            return
        self._deliver(feed, number, payload, head)

    def _ephemeral(self, feed: Feed, head: _Head, payload: bytes) -> None:
        event = EncodedEvent.from_blob(payload)
        for reader in list(feed.readers):
            if reader.identity != head.user:
                reader.send_event(event)

    async def _fill(self, feed: Feed) -> None:
        """Pub/sub skipped numbers: read them from the log, then the held-back events."""
        try:
            while True:
                pending = sorted((b for b in feed.backlog if b[0] > feed.last), key=lambda b: b[0])
                feed.backlog = []
                if not pending:
                    return
                target = pending[-1][0]
                numbers = [n for n, _ in pending]
                if numbers == list(range(feed.last + 1, target + 1)) and all(b for _, b in pending):
                    for number, blob in pending:
                        self._deliver(feed, number, blob, _head.decode(blob))
                    continue
                try:
                    entries = await self.store.events_after(
                        feed.stream, feed.last, target - feed.last
                    )
                except Exception as exc:
                    log.warning("chat replay failed", extra={"error": str(exc)})
                    feed.backlog = pending + feed.backlog
                    await asyncio.sleep(0.5)
                    continue
                for number, blob in entries:
                    if feed.last < number <= target:
                        if number > feed.last + 1:
                            self._skip(feed, number - 1)
                        self._deliver(feed, number, blob, _head.decode(blob))
                if feed.last < target:
                    self._skip(feed, target)
        finally:
            feed.filling = False

    async def _recheck(self, feed: Feed) -> None:
        await asyncio.sleep(SUBSCRIBE_SETTLE_S)
        if self.feeds.get(feed.fid) is feed:
            try:
                await self._catch_up(feed)
            except Exception as exc:
                log.warning("chat re-check failed", extra={"error": str(exc)})

    def _on_reconnect(self) -> None:
        for feed in list(self.feeds.values()):
            self.spawn(self._catch_up(feed))
            # Redis may take writes before the channels are subscribed again: look once more.
            self.spawn(self._recheck(feed))

    async def _catch_up(self, feed: Feed) -> None:
        """Events published while pub/sub was down were lost in flight: read them. Redis may
        also have come back older, or without the log: then every reader has a gap."""
        if feed.checking:
            feed.recheck = True  # an event of another epoch came while this one was read
            return
        feed.checking = True
        try:
            while True:
                feed.recheck = False
                fill = await self._check(feed)
                if not feed.recheck:
                    break
        finally:
            feed.checking = False
        if fill and not feed.filling:
            feed.filling = True
            await self._fill(feed)

    async def _check(self, feed: Feed) -> bool:
        """Compare the log with what the node passed on; True when events are to be read."""
        # What was passed on is taken before the log is read: live events keep coming while
        # the reads are awaited, and a head read before they were published must not look
        # like a log gone back in time.
        known, known_blob = Position(feed.last, feed.epoch), feed.last_blob
        state = await self.store.log_state(feed.user_feed, feed.name)
        same: bool | None = None
        if known_blob and state.epoch == known.epoch and state.head >= known.ev:
            stored = await self.store.events_after(feed.stream, known.ev - 1, 1)
            if stored and stored[0][0] == known.ev:
                same = stored[0][1] == known_blob
        verdict = check_follow(known, state, same)
        if verdict == "rolled_back":
            # Devices hold numbers of events this log no longer has: a new epoch makes each
            # of them a gap wherever it resumes, on any node.
            await self.store.rotate_epoch(feed.user_feed, feed.name, feed.epoch)
            state = await self.store.log_state(feed.user_feed, feed.name)
        if verdict in ("rolled_back", "reset"):
            log.warning(
                "chat log made anew or gone back in time",
                extra={"feed": feed.fid, "known": feed.last, "head": state.head},
            )
            self._reset(feed, state)
            return False
        if verdict == "adopt":
            feed.epoch = state.epoch
        held = [b for b in feed.backlog if b[0] > feed.last]
        if state.head > feed.last:
            held.append((state.head, b""))
        feed.backlog = held
        return bool(held)

    def _reset(self, feed: Feed, state: LogState) -> None:
        """Every reader of ``feed`` gets a gap and goes on from the log's head as it is now."""
        feed.epoch, feed.last, feed.last_blob = state.epoch, state.head, b""
        feed.backlog = [b for b in feed.backlog if b[0] > state.head]
        event = gap_event(feed, state.head, "epoch_changed")
        for reader in list(feed.readers):
            feed.readers[reader] = state.head
            reader.send_event(event)
        if feed.backlog and not feed.filling:
            feed.filling = True
            self.spawn(self._fill(feed))

    def _skip(self, feed: Feed, number: int) -> None:
        """Events up to ``number`` that this node missed are no longer in the log: its readers
        get a ``trimmed`` gap there instead of silently going on past them."""
        log.warning("chat events no longer kept", extra={"feed": feed.fid, "upto": number})
        event = gap_event(feed, number, "trimmed")
        feed.last, feed.last_blob = number, b""
        for reader, sent in list(feed.readers.items()):
            if sent < number:
                reader.send_event(event)
                feed.readers[reader] = number

    def _deliver(self, feed: Feed, number: int, payload: bytes, head: _Head) -> None:
        feed.last, feed.last_blob = number, payload
        if not payload:
            return
        event = EncodedEvent.from_blob(payload)
        readers = feed.readers
        behind = [reader for reader, sent in readers.items() if sent < number]
        for reader in behind:
            reader.send_event(event)
        readers.update(dict.fromkeys(behind, number))
        self._follow_membership(feed, head)

    def _follow_membership(self, feed: Feed, head: _Head) -> None:
        """Join and leave conversations as the events that change membership pass by."""
        if feed.user_feed:
            user = feed.name
            if head.type == "chat.joined" and head.conv and head.ev is not None:
                cursor = Position(max(0, head.ev - 1), head.epoch)
                for reader in feed.readers:
                    self.spawn(self._attach_quietly(reader, head.conv, cursor))
            elif head.type == "chat.left" and head.conv:
                for reader in self.readers_of(user):
                    self.detach(reader, head.conv)
            return
        system = head.message.system if head.message else None
        if system is None:
            return
        gone: list[str] = []
        if system.event == "member_removed":
            gone = system.users or []
        elif system.event == "member_left" and system.by:
            gone = [system.by]
        for user in gone:
            for reader in self.readers_of(user):
                self.detach(reader, feed.fid)

    async def _attach_quietly(self, reader: Reader, fid: str, cursor: Position) -> None:
        try:
            at = await self.attach(reader, fid, cursor)
            if at.gap is not None and not reader.closed:
                reader.send_event(gap_event(self.feeds[fid], at.ev, at.gap))
        except Exception as exc:
            log.warning("could not follow a joined conversation", extra={"error": str(exc)})
