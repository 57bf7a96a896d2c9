"""Script calls to one Redis on a connection of their own, pipelined.

A chat send is one script call (``signaling.redis_client.run_script``). Through redis-py's
pool each call takes a connection and gives it back, and the taking checks the connection's
health with a read of its socket: together more client CPU than the call itself. Here the
calls share one connection: each is written as it comes, and the replies, which Redis gives
in the same order, are handed to the callers by the protocol as they arrive (parsed by
hiredis), with no task or pool in between. Once the node's broker started, the calls go
through its pub/sub connection instead (``signaling.pubsub_pipe``, RESP3), and this one is
not made.

Anything that goes wrong (no connection, a lost one, no reply within ``REPLY_TIMEOUT_S``,
watched by one timer for all the calls waiting)
fails the calls waiting on it with redis-py's ``ConnectionError`` or ``TimeoutError``, and
the connection is made anew for the next call; ``run_script`` then makes the call again the
usual way, as it does when a pooled connection fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Final

import hiredis
from hiredis import pack_command
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REPLY_TIMEOUT_S: Final = 5.0
CONNECT_TIMEOUT_S: Final = 2.0


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: ScriptPipe) -> None:
        self.pipe = pipe
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self.pipe.received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.lost(self, exc)


class ScriptPipe:
    """One Redis (a Unix socket ``path``, or ``host`` and ``port``, without TLS)."""

    def __init__(
        self,
        *,
        path: str | None = None,
        host: str = "localhost",
        port: int = 6379,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
    ) -> None:
        self._path, self._host, self._port = path, host, port
        self._auth: tuple[str, ...] = ()
        if password is not None:
            self._auth = (username, password) if username else (password,)
        self._db = db
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        # The calls waiting for their replies, in the order sent, with when each was sent.
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        # One timer for all of them (not one per call): it looks at the oldest.
        self._watchdog: asyncio.TimerHandle | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._closed = False

    async def call(self, command: bytes) -> Any:
        """Send ``command`` (packed) and reply its answer; an error reply is raised as
        redis-py raises it."""
        transport = self._transport
        if transport is None:
            await self._connect()
            transport = self._transport
            if transport is None:
                raise RedisConnectionError("script connection lost")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, loop.time()))
        transport.write(command)
        if self._watchdog is None:
            self._watchdog = loop.call_later(REPLY_TIMEOUT_S, self._watch)
        return await future

    def _watch(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._waiting[0][1]
        if waited >= REPLY_TIMEOUT_S:
            # Redis does not answer: every call behind the oldest waits on it too.
            self._drop(RedisTimeoutError("no reply from Redis to a script call"))
            return
        self._watchdog = loop.call_later(REPLY_TIMEOUT_S - waited, self._watch)

    def _drop(self, error: Exception) -> None:
        """Fail the calls waiting with ``error`` and close the connection."""
        transport = self._transport
        self._transport = self._protocol = None
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if transport is not None:
            transport.close()

    async def _connect(self) -> None:
        if self._closed:
            raise RedisConnectionError("script connection closed")
        if self._connecting is not None:
            await asyncio.shield(self._connecting)
            return
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if self._path is not None:
                    transport, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self), self._path
                    )
                else:
                    transport, protocol = await loop.create_connection(
                        lambda: _Protocol(self), self._host, self._port
                    )
            self._transport, self._protocol = transport, protocol
            hello = []
            if self._auth:
                hello.append(pack_command(("AUTH", *self._auth)))  # type: ignore[arg-type]
            if self._db:
                hello.append(pack_command(("SELECT", self._db)))  # type: ignore[arg-type]
            for command in hello:
                await self.call(command)
            self._connecting.set_result(None)
        except BaseException as exc:
            if self._transport is not None:
                self._transport.close()
            self._transport = self._protocol = None
            error = exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(str(exc))
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: the waiters re-raise it
            if isinstance(exc, (OSError, TimeoutError)):
                raise error from exc
            raise
        finally:
            self._connecting = None

    def received(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        reader = protocol.reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not self._waiting:
                # A reply nobody asked for: the stream is no longer understood.
                if self._transport is not None:
                    self._transport.close()
                return
            future, _ = self._waiting.popleft()
            if future.done():
                continue  # its caller gave up (cancelled)
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(BaseParser.parse_error(str(reply)))  # type: ignore[no-untyped-call]
            else:
                future.set_result(reply)

    def lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._drop(RedisConnectionError(f"script connection lost: {exc}"))

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport = self._transport
        if transport is not None:
            transport.close()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)  # the transport closes its socket in the next round
