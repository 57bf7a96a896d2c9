"""This node's devices in rooms held by other nodes: their call requests go to the room's
node through the relay (``calls.relay``), and the room's events come back to them."""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec

from calls.members import CallError, Session
from calls.relay import RELAY_TIMEOUT_S, Kind, Relay, RelayError
from signaling import protocol as p

log = logging.getLogger("huddle.calls")
RESUME_TIMEOUT_S: Final = 3.0


class RemoteRooms:
    def __init__(self, relay: Relay | None) -> None:
        self.relay = relay
        # Local sessions in rooms owned by other nodes: session -> (room, owner node).
        self._rooms: dict[Session, tuple[str, str]] = {}
        self._by_id: dict[str, Session] = {}

    def __contains__(self, session: Session) -> bool:
        return session in self._rooms

    def room_of(self, session: Session) -> str | None:
        found = self._rooms.get(session)
        return found[0] if found is not None else None

    def holds(self, session: Session, room_name: str) -> bool:
        """True if ``session`` takes part in ``room_name`` held by another node."""
        return self.room_of(session) == room_name

    def _add(self, session: Session, room_name: str, owner: str) -> None:
        self._rooms[session] = (room_name, owner)
        self._by_id[getattr(session, "id", "")] = session

    def rooms(self) -> list[tuple[Session, tuple[str, str]]]:
        """Each local session in a room elsewhere: (session, (room, owner node))."""
        return list(self._rooms.items())

    def lost(self, session: Session, room_name: str, reason: str) -> None:
        """The room ``session`` was in elsewhere is gone with its node: it joins again."""
        if self.room_of(session) != room_name:
            return
        self.drop(session)
        session.send_event(p.EncodedEvent(p.CallReconnect(seq=0, room=room_name, reason=reason)))

    def drop(self, session: Session) -> None:
        self._rooms.pop(session, None)
        self._by_id.pop(getattr(session, "id", ""), None)

    async def call(
        self,
        session: Session,
        kind: Kind,
        *,
        args: dict[str, Any] | None = None,
        timeout: float = RELAY_TIMEOUT_S,
    ) -> Any:
        """Relay a request of ``session`` to its room's node; its refusal is a ``CallError``."""
        assert self.relay is not None and session.claims is not None
        room_name, owner = self._rooms[session]
        try:
            return await self.relay.request(
                owner,
                kind,
                session_id=getattr(session, "id", ""),
                room=room_name,
                claims=session.claims,
                device=session.device,
                args=args,
                timeout=timeout,
            )
        except RelayError as exc:
            raise CallError(exc.code, exc.message) from None

    async def forward(self, session: Session, kind: Kind, req: p.Request) -> Any:
        return await self.call(session, kind, args=msgspec.to_builtins(req))

    async def join(self, session: Session, room_name: str, owner: str) -> p.CallJoinOk:
        self._add(session, room_name, owner)
        try:
            value = await self.call(session, "join")
        except CallError:
            self.drop(session)
            raise
        return msgspec.convert(value, p.CallJoinOk)

    async def leave(self, session: Session) -> None:
        try:
            await self.call(session, "leave")
        finally:
            self.drop(session)

    async def gone(self, session: Session) -> None:
        try:
            await self.call(session, "gone")
        except CallError as exc:
            log.warning("relayed departure not delivered", extra={"error": exc.message})
        finally:
            self.drop(session)

    async def resume(self, session: Session, room_name: str, owner: str) -> None:
        self._add(session, room_name, owner)
        try:
            # Not the usual wait: the hello's other work waits for this, and a node that died
            # leaves markers naming it for a minute.
            resumed = await self.call(session, "resume", timeout=RESUME_TIMEOUT_S)
        except CallError as exc:
            resumed = False
            log.warning("resume through the relay failed", extra={"error": exc.message})
        if not resumed:
            self.drop(session)

    def deliver(self, session_id: str, event: p.Event) -> None:
        """An event of a room elsewhere, for one of this node's sessions."""
        session = self._by_id.get(session_id)
        if session is None:
            return
        if isinstance(event, p.CallReconnect) and self.room_of(session) == event.room:
            self.drop(session)  # the room is gone from its node: a join opens it anew
        session.send_event(p.EncodedEvent(event))
