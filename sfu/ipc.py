"""Messages between a node and its SFU worker processes, over a stream socket.

Frames are a 4-byte big-endian length and a msgpack body. Requests carry an ``id`` and get
exactly one ``Result`` or ``Failure``; events flow from the worker without an id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import typing
from collections.abc import Callable
from typing import Any, Final

import msgspec

log = logging.getLogger("huddle.sfu.ipc")
_LENGTH: Final = struct.Struct("!I")
MAX_FRAME: Final = 16 * 1024 * 1024


class Msg(msgspec.Struct, tag_field="op", kw_only=True):
    pass


# --- node -> worker ---------------------------------------------------------------------


class Join(Msg, tag="join", kw_only=True):
    id: int
    room: str
    identity: str
    name: str
    can_publish: bool
    can_subscribe: bool


class Publish(Msg, tag="publish", kw_only=True):
    id: int
    participant: str
    sdp: str
    sources: dict[str, str]
    layers: dict[str, tuple[str, int, int]] = msgspec.field(default_factory=dict)


class SetMaxHeight(Msg, tag="set_max_height", kw_only=True):
    id: int
    participant: str
    track: str
    height: int | None


class Answer(Msg, tag="answer", kw_only=True):
    id: int
    participant: str
    sdp: str


class Leave(Msg, tag="leave", kw_only=True):
    id: int
    participant: str


class Stats(Msg, tag="stats", kw_only=True):
    id: int
    participant: str


class SetPaused(Msg, tag="set_paused", kw_only=True):
    id: int
    participant: str
    kind: str
    paused: bool


class AddCandidate(Msg, tag="add_candidate", kw_only=True):
    id: int
    participant: str
    pc: str
    candidate: str | None
    sdp_mid: str | None
    sdp_mline_index: int | None


class SetPinned(Msg, tag="set_pinned", kw_only=True):
    id: int
    participant: str
    pinned: list[str]


class RestartMedia(Msg, tag="restart_media", kw_only=True):
    id: int
    participant: str


class CloseRoom(Msg, tag="close_room", kw_only=True):
    id: int
    room: str


# --- worker -> node ---------------------------------------------------------------------


class Result(Msg, tag="result", kw_only=True):
    id: int
    value: Any = None


class Failure(Msg, tag="failure", kw_only=True):
    id: int
    code: str
    message: str


class Offer(Msg, tag="offer", kw_only=True):
    participant: str
    sdp: str
    tracks: list[dict[str, str]]


class Layers(Msg, tag="layers", kw_only=True):
    participant: str
    paused: list[str]


class Paused(Msg, tag="paused", kw_only=True):
    """The tracks a subscriber's downlink has no room for now (sfu.downlink), and the video
    stream selection leaves out (sfu.paused ``unselected``)."""

    participant: str
    tracks: list[str]
    unselected: list[str] = []


class Speakers(Msg, tag="speakers", kw_only=True):
    room: str
    speakers: list[tuple[str, int]]


class Metrics(Msg, tag="metrics", kw_only=True):
    """A periodic snapshot for /metrics: per room totals and per track counters."""

    rooms: dict[str, dict[str, int]]
    tracks: list[tuple[str, str, str, str, str, int, int]]
    decoders_created: int
    pid: int


Request = (
    Join
    | Publish
    | Answer
    | Leave
    | Stats
    | CloseRoom
    | SetPaused
    | AddCandidate
    | SetPinned
    | RestartMedia
    | SetMaxHeight
)
Reply = Result | Failure | Offer | Speakers | Metrics | Layers | Paused

# The worker RPC, one table: each request's tag names the room-host method it calls
# (``sfu.host.LocalHost`` does the work; ``sfu.pool.WorkerHost`` has its methods generated
# from this table, the worker dispatches by it), and its fields after ``id`` are that
# method's parameters, in order. Adding an RPC: its request struct in ``Request`` above and
# the method in ``LocalHost`` (its signature in ``sfu.host.RoomHost``).
RPCS: Final[dict[str, type[Request]]] = {
    str(cls.__struct_config__.tag): cls for cls in typing.get_args(Request)
}


def rpc_method(request: Request) -> str:
    return str(request.__struct_config__.tag)


def rpc_params(request: type[Request]) -> tuple[str, ...]:
    return tuple(name for name in request.__struct_fields__ if name != "id")


def make_request(method: str, id: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request:
    """The request calling ``method`` with these arguments, as a caller of the host passes
    them (positional in the method's order, or by name)."""
    request = RPCS[method]
    names = rpc_params(request)
    if len(args) > len(names):
        raise TypeError(f"{method} takes {len(names)} arguments, got {len(args)}")
    return request(id=id, **dict(zip(names, args, strict=False)), **kwargs)


def request_args(request: Request) -> dict[str, Any]:
    """The arguments of the host method ``request`` calls, by name."""
    return {name: getattr(request, name) for name in rpc_params(type(request))}


_encoder: Final = msgspec.msgpack.Encoder()


class RemoteError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ChannelClosed(ConnectionError):
    pass


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(_LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    return await reader.readexactly(length)


def write_frame(writer: asyncio.StreamWriter, message: Msg) -> None:
    body = _encoder.encode(message)
    writer.write(_LENGTH.pack(len(body)) + body)


class NodeChannel:
    """The node's end: requests with replies, and events handed to ``on_event``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_event: Callable[[Offer | Speakers | Metrics | Layers | Paused], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._decoder = msgspec.msgpack.Decoder(Reply)
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    def next_id(self) -> int:
        return next(self._ids)

    async def call(self, message: Request, timeout: float = 20.0) -> Any:
        if self.closed.is_set():
            raise ChannelClosed("worker is gone")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message.id] = future
        try:
            write_frame(self._writer, message)
            await self._writer.drain()
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(message.id, None)

    async def _read(self) -> None:
        try:
            while True:
                message = self._decoder.decode(await read_frame(self._reader))
                if isinstance(message, Result):
                    future = self._pending.get(message.id)
                    if future is not None and not future.done():
                        future.set_result(message.value)
                elif isinstance(message, Failure):
                    future = self._pending.get(message.id)
                    if future is not None and not future.done():
                        future.set_exception(RemoteError(message.code, message.message))
                else:
                    try:
                        self._on_event(message)
                    except Exception:
                        log.exception("worker event handler failed")
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, msgspec.DecodeError):
            pass
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelClosed("worker is gone"))

    async def close(self) -> None:
        self._writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
