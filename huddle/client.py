"""The Python client of the Huddle protocol, for integrators' bots, tests and benchmarks.

    async with HuddleClient("http://127.0.0.1:8080", token) as client:
        hello = await client.hello()
        await client.request(PresenceSubscribe(id="", users=["bob"]))
        event = await client.next_event("presence.update")

Requests are the typed structures of ``signaling.protocol``; ``id`` is filled in when empty.
Replies come back decoded into the reply type of the request; error replies raise
``RequestError``. Events are queued in arrival order and decoded into their event types.
See docs/client.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import aiohttp
import msgspec

from signaling import protocol as p

R = TypeVar("R", bound=p.Reply)
log = logging.getLogger("huddle.client")
DEFAULT_TIMEOUT_S: Final = 10.0

_decoder: Final = msgspec.json.Decoder()


class RequestError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, error: p.Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = error.code
        self.message = error.message


class ConnectionClosed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"connection closed (code {code})")
        self.code = code


async def dev_login(base_url: str, name: str, session: aiohttp.ClientSession | None = None) -> str:
    """A token from the node's development login (only where it is enabled)."""
    own = session is None
    http = session or aiohttp.ClientSession()
    try:
        async with http.post(f"{base_url}/v1/dev/login", json={"name": name}) as resp:
            body = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"dev login refused: {resp.status} {body}")
            return str(body["token"])
    finally:
        if own:
            await http.close()


class HuddleClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        device: str | None = None,
        session: aiohttp.ClientSession | None = None,
        autoping: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.device = device
        self._http = session
        self._own_http = session is None
        self._autoping = autoping
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, tuple[type[p.Reply], asyncio.Future[Any]]] = {}
        self._ids = itertools.count(1)
        self.events: asyncio.Queue[p.Event] = asyncio.Queue()
        self.unmatched_errors: list[p.Error] = []
        self.last_seq = 0
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.hello_reply: p.HelloOk | None = None
        self._listeners: dict[str, list[Callable[[p.Event], None]]] = {}

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/v1/ws"

    async def connect(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(self.ws_url, autoping=self._autoping)
        self._reader = asyncio.create_task(self._read())

    async def hello(self, **fields: Any) -> p.HelloOk:
        """Authenticate; ``fields`` may set ``device``, ``status``, ``protocol``."""
        fields.setdefault("device", self.device)
        reply: p.HelloOk = await self.request(p.Hello(id="", token=self.token, **fields))
        self.hello_reply = reply
        self.device = reply.device
        return reply

    async def request(self, message: p.Request, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """Send one request and wait for its reply (typed by the request's type)."""
        if not message.id:
            message = msgspec.structs.replace(message, id=f"r{next(self._ids)}")
        kind: str = message.__struct_config__.tag  # type: ignore[assignment]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message.id] = (p.REPLIES[kind], future)
        try:
            await self.send_raw(p.encode(message).decode())
            # Not wait_for: on Python 3.11 it swallows a cancellation that comes as the reply
            # does, and a cancelled task (a closing call's answerer) would carry on.
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(message.id, None)

    async def send_raw(self, frame: str | bytes) -> None:
        """Send a frame as is (tests of bad input use this)."""
        if self._ws is None or self._ws.closed:
            raise ConnectionClosed(self.close_code)
        if isinstance(frame, bytes):
            await self._ws.send_bytes(frame)
        else:
            await self._ws.send_str(frame)

    def on(self, kind: str, listener: Callable[[p.Event], None]) -> None:
        """Call ``listener`` for each event of ``kind`` as it arrives (it is queued too)."""
        self._listeners.setdefault(kind, []).append(listener)

    async def next_event(self, kind: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """The next event (of ``kind``, skipping others) or TimeoutError."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if kind is None or event.__struct_config__.tag == kind:
                    return event

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT_S) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    async def _read(self) -> None:
        assert self._ws is not None
        ws = self._ws
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        self._dispatch(msg.data)
                    except Exception:
                        # A malformed frame or a failing listener must not end the reader.
                        log.exception("could not handle a server frame")
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    break
        finally:
            self.close_code = ws.close_code
            self.closed.set()
            for _, future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionClosed(ws.close_code))

    def _dispatch(self, frame: str) -> None:
        raw = _decoder.decode(frame)
        kind = raw.get("type")
        if kind == "ok" or kind == "error":
            pending = self._pending.get(raw.get("re") or "")
            if kind == "error":
                error = msgspec.convert(raw, p.Error)
                if pending is None:
                    self.unmatched_errors.append(error)
                elif not pending[1].done():
                    pending[1].set_exception(RequestError(error))
                return
            if pending is not None and not pending[1].done():
                pending[1].set_result(msgspec.convert(raw, pending[0]))
            return
        cls = p.SERVER_EVENTS.get(kind)
        if cls is None:
            return  # an event type newer than this client: ignored, as the protocol allows
        event = msgspec.convert(raw, cls)
        self.last_seq = event.seq
        self.events.put_nowait(event)
        for listener in self._listeners.get(kind, ()):
            listener(event)
