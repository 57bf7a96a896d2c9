"""Calls across nodes: a device on one node takes part in a room that lives on another.

The node a device is connected to (its *origin*) relays the device's call requests to the
node that owns the room, over the owner's node channel in Redis, and gets the reply on its
own. The owner treats the device as a ``RemoteEndpoint``: events for it go back to the
origin's node channel, which hands them to the device's session. Media never takes this
path: the device's peer connections go straight to the owner's SFU.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, Union

import msgspec

from signaling import protocol as p
from signaling.auth import Claims, Grants
from signaling.keys import node_channel

log = logging.getLogger("huddle.call_relay")
RELAY_TIMEOUT_S: Final = 20.0

Kind = Literal[
    "join",
    "publish",
    "answer",
    "candidate",
    "leave",
    "stats",
    "gone",
    "state",
    "mute",
    "remove",
    "pin",
    "restart",
    "resume",
    "track_settings",
]


class RelayRequest(msgspec.Struct, tag="request", tag_field="relay", kw_only=True):
    rid: int
    origin: str
    session: str
    kind: Kind
    room: str
    identity: str
    name: str
    device: str
    grants: Grants
    args: dict[str, Any] = msgspec.field(default_factory=dict)  # the request's own fields


class RelayReply(msgspec.Struct, tag="reply", tag_field="relay", kw_only=True):
    rid: int
    value: Any = None
    code: str = ""
    message: str = ""


class RelayEvent(msgspec.Struct, tag="event", tag_field="relay", kw_only=True):
    session: str
    event: msgspec.Raw


RelayMessage = RelayRequest | RelayReply | RelayEvent
_decoder: Final = msgspec.json.Decoder(RelayMessage)
_event_decoder: Final = msgspec.json.Decoder(Union[tuple(p.SERVER_EVENTS.values())])  # noqa: UP007


Publish = Callable[[str, bytes], Awaitable[None]]


class RemoteEndpoint:
    """A device of another node, as a room member here: what a ``Session`` offers calls."""

    def __init__(self, request: RelayRequest, publish: Callable[[str, bytes], None]) -> None:
        self.origin = request.origin
        self.session_id = request.session
        self.device = request.device
        self.identity = request.identity
        self.claims: Claims | None = Claims(
            identity=request.identity,
            name=request.name,
            api_key="",
            issued_at=0,
            expires_at=0,
            grants=request.grants,
        )
        self._publish = publish

    def send_event(self, event: p.EncodedEvent) -> None:
        frame = RelayEvent(session=self.session_id, event=msgspec.Raw(event.with_seq(0).encode()))
        self._publish(node_channel(self.origin), msgspec.json.encode(frame))


class RelayError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Relay:
    """Both ends of the relay for one node."""

    def __init__(self, node: str, publish: Publish) -> None:
        self.node = node
        self._publish = publish
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._background: set[asyncio.Future[None]] = set()
        # Everything this node sends on the relay leaves in order, through one writer.
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self.endpoints: dict[tuple[str, str], RemoteEndpoint] = {}
        # Set by the call manager: serves a request from another node; returns a value or
        # raises an exception with ``code`` and ``message``.
        self.serve: Callable[[RelayRequest, RemoteEndpoint], Awaitable[Any]] | None = None
        # Delivers an event to a local session by id.
        self.deliver: Callable[[str, p.Event], None] | None = None

    async def request(
        self,
        owner: str,
        kind: Kind,
        *,
        session_id: str,
        room: str,
        claims: Claims,
        device: str,
        args: dict[str, Any] | None = None,
        timeout: float = RELAY_TIMEOUT_S,
    ) -> Any:
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        request = RelayRequest(
            rid=rid,
            origin=self.node,
            session=session_id,
            kind=kind,
            room=room,
            identity=claims.identity,
            name=claims.name,
            device=device,
            grants=claims.grants,
            args=args or {},
        )
        try:
            await self._publish(node_channel(owner), msgspec.json.encode(request))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RelayError(
                p.ErrorCode.UNAVAILABLE, "the node holding the room does not answer"
            ) from None
        finally:
            self._pending.pop(rid, None)

    def on_message(self, payload: bytes) -> None:
        """Handler of this node's channel."""
        try:
            message = _decoder.decode(payload)
        except msgspec.DecodeError:
            return  # not a relay message
        if isinstance(message, RelayReply):
            future = self._pending.get(message.rid)
            if future is None or future.done():
                return
            if message.code:
                future.set_exception(RelayError(message.code, message.message))
            else:
                future.set_result(message.value)
        elif isinstance(message, RelayEvent):
            try:
                event = _event_decoder.decode(message.event)
            except msgspec.DecodeError:
                log.warning("malformed relayed event")
                return
            if self.deliver is not None and isinstance(event, p.Event):
                self.deliver(message.session, event)
        else:
            self._spawn(self._serve(message))

    def endpoint(self, request: RelayRequest) -> RemoteEndpoint:
        key = (request.origin, request.session)
        found = self.endpoints.get(key)
        if found is None:
            found = self.endpoints[key] = RemoteEndpoint(request, self._publish_soon)
        return found

    async def _serve(self, request: RelayRequest) -> None:
        reply = RelayReply(rid=request.rid)
        try:
            assert self.serve is not None
            reply.value = await self.serve(request, self.endpoint(request))
        except Exception as exc:
            code = getattr(exc, "code", None)
            if not isinstance(code, str):
                log.exception("relayed call request failed")
                code, message = p.ErrorCode.INTERNAL, "internal error"
            else:
                message = str(getattr(exc, "message", exc))
            reply.code, reply.message = code, message
        if request.kind in ("leave", "gone") or (request.kind == "resume" and not reply.value):
            self.endpoints.pop((request.origin, request.session), None)
        self._publish_soon(node_channel(request.origin), msgspec.json.encode(reply))

    async def flush(self) -> None:
        """Until everything this node has to send on the relay is sent (its shutdown)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    def _publish_soon(self, channel: str, payload: bytes) -> None:
        self._outbox.append((channel, payload))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._outbox:
                channel, payload = self._outbox.popleft()
                try:
                    await self._publish(channel, payload)
                except Exception as exc:  # Redis away: the requester times out
                    log.warning("relay message not sent", extra={"error": str(exc)})
        finally:
            self._writer = None

    def _spawn(self, job: Awaitable[None]) -> None:
        future = asyncio.ensure_future(job)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
