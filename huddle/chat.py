"""Chat for Python devices and bots: requests, plus the cursors that make a resume lossless.

A device keeps, per conversation, the last event number (``ev``) it has seen, and the last
number of its user's feed (``fev``). ``sync`` hands them to the server, which replays what
was missed and then sends new events live. Keep ``cursors`` and ``feed`` across connections
(pass them to the next ``ChatClient``) to resume without loss or repeats.

Each cursor has its log's epoch beside it (``epochs``, ``feed_epoch``): when Redis lost a log
or came back from an older snapshot, numbers are handed out again, and the epoch is what
tells the server that the device's numbers are of another life of the log. The server then
answers with a gap (in the ``sync`` reply, or as a ``chat.gap`` event): the conversation is
listed in ``gaps`` and ``on_gap`` is called, so that the device reloads it by page.

Beside each cursor the stamp of the event at it is kept too (``stamps``, ``feed_stamp``):
when Redis went back in time and was written past the cursor again while no node followed
the log, the epoch is the same, and the stamp is what tells that the number now holds
another event (a gap again). A cursor given without its event (a sync's head) has none.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from chat import wire as w
from huddle.client import HuddleClient
from signaling.wire import Event

_EVENTS: tuple[str, ...] = tuple(str(c.__struct_config__.tag) for c in w.CHAT_EVENTS)


class ChatClient:
    def __init__(
        self,
        client: HuddleClient,
        cursors: dict[str, int] | None = None,
        feed: int | None = None,
        epochs: dict[str, str] | None = None,
        feed_epoch: str | None = None,
        stamps: dict[str, str] | None = None,
        feed_stamp: str | None = None,
    ) -> None:
        self.client = client
        self.cursors: dict[str, int] = dict(cursors or {})
        self.feed = feed
        self.epochs: dict[str, str] = dict(epochs or {})
        self.feed_epoch = feed_epoch
        self.stamps: dict[str, str] = dict(stamps or {})
        self.feed_stamp = feed_stamp
        # Every stored chat event received, in arrival order (ephemeral ones are not kept).
        self.log: list[Event] = []
        self.gaps: list[str] = []
        # Set when the feed could not be replayed: reload the conversation list.
        self.feed_gap = False
        # Called with a conversation id (None: the feed) whenever the server says the device's
        # copy of it cannot be brought up to date by events: reload it by page.
        self.on_gap: Callable[[str | None], None] | None = None
        for kind in _EVENTS:
            client.on(kind, self._track)

    def _track(self, event: Event) -> None:
        if isinstance(event, w.ChatGap):
            self._gap(event)
            return
        ev = getattr(event, "ev", None)
        fev = getattr(event, "fev", None)
        stamp = getattr(event, "stamp", None)
        if isinstance(fev, int):
            self._move_feed(fev, getattr(event, "feed_epoch", None), stamp)
            self.log.append(event)
        elif isinstance(ev, int):
            conv: str = event.conv  # type: ignore[attr-defined]
            self._move(conv, ev, getattr(event, "epoch", None), stamp)
            self.log.append(event)

    def _move(self, conv: str, ev: int, epoch: str | None, stamp: str | None) -> None:
        # A number of another epoch is not comparable with the one kept: it replaces it.
        if epoch and epoch != self.epochs.get(conv):
            self.cursors[conv], self.epochs[conv] = ev, epoch
        elif ev >= self.cursors.get(conv, 0):
            self.cursors[conv] = ev
        else:
            return
        _keep(self.stamps, conv, stamp)

    def _move_feed(self, fev: int, epoch: str | None, stamp: str | None) -> None:
        if epoch and epoch != self.feed_epoch:
            self.feed, self.feed_epoch = fev, epoch
        elif fev >= (self.feed or 0):
            self.feed = fev
        else:
            return
        self.feed_stamp = stamp

    def _gap(self, event: w.ChatGap) -> None:
        if event.conv is None:
            self.feed, self.feed_epoch = event.fev or 0, event.feed_epoch
            self.feed_stamp = None
            self.feed_gap = True
        else:
            self.cursors[event.conv] = event.ev or 0
            self.epochs.pop(event.conv, None)
            self.stamps.pop(event.conv, None)
            if event.epoch:
                self.epochs[event.conv] = event.epoch
            self.gaps.append(event.conv)
        if self.on_gap is not None:
            self.on_gap(event.conv)

    async def request(self, message: Any) -> Any:
        return await self.client.request(message)

    async def sync(self) -> w.ChatSyncOk:
        """Catch up from the cursors, then stay live."""
        reply: w.ChatSyncOk = await self.client.request(
            w.ChatSync(
                id="",
                cursors=self.cursors,
                feed=self.feed,
                epochs={c: e for c, e in self.epochs.items() if c in self.cursors},
                feed_epoch=self.feed_epoch,
                stamps={c: s for c, s in self.stamps.items() if c in self.cursors},
                feed_stamp=self.feed_stamp,
            )
        )
        gaps = set(reply.gaps)
        for conv, head in reply.heads.items():
            epoch = reply.epochs.get(conv)
            if conv in gaps or (epoch and epoch != self.epochs.get(conv)):
                self.cursors[conv] = head
                self.epochs.pop(conv, None)  # a log with no epoch yet has none
                self.stamps.pop(conv, None)
            elif head != self.cursors.get(conv):
                # A position given without its event: nothing to tell the event at it by.
                self.cursors[conv] = max(self.cursors.get(conv, 0), head)
                self.stamps.pop(conv, None)
            if epoch:
                self.epochs[conv] = epoch
        for conv in reply.removed:
            self.cursors.pop(conv, None)
            self.epochs.pop(conv, None)
            self.stamps.pop(conv, None)
        if reply.feed_gap:
            self.feed, self.feed_epoch = reply.feed, reply.feed_epoch
            self.feed_stamp = None
        else:
            if reply.feed != self.feed:
                self.feed_stamp = None
            self.feed = max(self.feed or 0, reply.feed)
            self.feed_epoch = reply.feed_epoch or self.feed_epoch
        self.gaps.extend(reply.gaps)
        self.feed_gap = self.feed_gap or reply.feed_gap
        if self.on_gap is not None:
            for conv in reply.gaps:
                self.on_gap(conv)
            if reply.feed_gap:
                self.on_gap(None)
        return reply

    async def create(self, kind: str, name: str, members: list[str]) -> w.ConvSummary:
        reply = await self.client.request(
            w.ChatCreate(id="", kind=kind, name=name, members=members)  # type: ignore[arg-type]
        )
        return reply.conv  # type: ignore[no-any-return]

    async def send(
        self,
        conv: str | None = None,
        text: str | None = None,
        *,
        to: str | None = None,
        client_id: str | None = None,
        **fields: Any,
    ) -> w.ChatSendOk:
        """Send a message. Reusing ``client_id`` on a retry stores it once."""
        return await self.client.request(  # type: ignore[no-any-return]
            w.ChatSend(
                id="",
                conv=conv,
                to=to,
                text=text,
                client_id=client_id or secrets.token_hex(8),
                **fields,
            )
        )

    async def history(self, conv: str, **fields: Any) -> list[w.ChatMessage]:
        reply = await self.client.request(w.ChatHistory(id="", conv=conv, **fields))
        return reply.messages  # type: ignore[no-any-return]

    async def read(self, conv: str, seq: int) -> None:
        await self.client.request(w.ChatRead(id="", conv=conv, seq=seq))

    async def conversations(self) -> list[w.ConvSummary]:
        reply = await self.client.request(w.ChatList(id=""))
        return reply.conversations  # type: ignore[no-any-return]

    def messages(self, conv: str) -> list[w.ChatMessage]:
        """The messages received as events for ``conv``, in arrival order."""
        return [e.message for e in self.log if isinstance(e, w.ChatMessageEvent) and e.conv == conv]


def _keep(stamps: dict[str, str], conv: str, stamp: str | None) -> None:
    if stamp:
        stamps[conv] = stamp
    else:
        stamps.pop(conv, None)
