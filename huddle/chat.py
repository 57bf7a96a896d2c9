"""Chat for Python devices and bots: requests, plus the cursors that make a resume lossless.

A device keeps, per conversation, the last event number (``ev``) it has seen, and the last
number of its user's feed (``fev``). ``sync`` hands them to the server, which replays what
was missed and then sends new events live. Keep ``cursors`` and ``feed`` across connections
(pass them to the next ``ChatClient``) to resume without loss or repeats.
"""

from __future__ import annotations

import secrets
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
    ) -> None:
        self.client = client
        self.cursors: dict[str, int] = dict(cursors or {})
        self.feed = feed
        # Every stored chat event received, in arrival order (ephemeral ones are not kept).
        self.log: list[Event] = []
        self.gaps: list[str] = []
        # Set when the feed could not be replayed: reload the conversation list.
        self.feed_gap = False
        for kind in _EVENTS:
            client.on(kind, self._track)

    def _track(self, event: Event) -> None:
        ev = getattr(event, "ev", None)
        fev = getattr(event, "fev", None)
        if isinstance(fev, int):
            self.feed = max(self.feed or 0, fev)
            self.log.append(event)
        elif isinstance(ev, int):
            conv: str = event.conv  # type: ignore[attr-defined]
            self.cursors[conv] = max(self.cursors.get(conv, 0), ev)
            self.log.append(event)

    async def request(self, message: Any) -> Any:
        return await self.client.request(message)

    async def sync(self) -> w.ChatSyncOk:
        """Catch up from the cursors, then stay live."""
        reply: w.ChatSyncOk = await self.client.request(
            w.ChatSync(id="", cursors=self.cursors, feed=self.feed)
        )
        for conv, head in reply.heads.items():
            self.cursors[conv] = max(self.cursors.get(conv, 0), head)
        for conv in reply.removed:
            self.cursors.pop(conv, None)
        self.feed = max(self.feed or 0, reply.feed)
        self.gaps.extend(reply.gaps)
        self.feed_gap = self.feed_gap or reply.feed_gap
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
