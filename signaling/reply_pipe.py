"""Commands to one Redis pipelined on one connection, each caller answered in its turn.

The core of ``signaling.script_pipe`` (script calls on a connection of their own) and
``signaling.pubsub_pipe`` (sharded pub/sub with the script calls beside it). Through
redis-py's pool each command takes a connection and gives it back, and the taking checks the
connection's health with a read of its socket: together more client CPU than a script call
itself. Here the commands share one connection: each is written as it comes (``call``), and
the replies, which Redis gives in the same order, are handed to the callers by the protocol
as they arrive (parsed by hiredis), with no task or pool in between. An error reply is
raised as redis-py raises it.

The calls waiting for their replies are kept in the order sent, each with when it was sent.
One timer watches them all (not one per call): it looks at the oldest, and if Redis gave it
no reply within the pipe's reply timeout, every call behind it waits on it too: all fail
with redis-py's ``TimeoutError`` and the connection is dropped. A lost connection fails them
with its ``ConnectionError``. An entry may carry a kind and a channel as well (the pub/sub
pipe's subscriptions, confirmed in the order of the replies); a call's entry is a pair, and
pays nothing for them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import hiredis
from hiredis import pack_command
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECT_TIMEOUT_S: Final = 2.0

# A reply waited for: who waits for it (None: nobody) and when it was asked for; a
# subscription's adds its kind and channel (``signaling.pubsub_pipe``).
Expected = (
    tuple["asyncio.Future[Any] | None", float]
    | tuple["asyncio.Future[Any] | None", float, bytes, bytes]
)


@dataclass(frozen=True)
class PlainRedis:
    """Where one Redis is, for the node's own connections beside redis-py's pool (the script
    pipe, the pub/sub reader): a Unix socket ``path``, or ``host`` and ``port``; no TLS."""

    path: str | None = None
    host: str = "localhost"
    port: int = 6379
    username: str | None = None
    password: str | None = None
    db: int = 0


class NotUnderstood(Exception):
    """A reply the pipe did not ask for or cannot read: the stream is no longer trusted."""


class PipeProtocol(asyncio.Protocol):
    def __init__(self, pipe: ReplyPipe) -> None:
        self.pipe = pipe
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self.pipe.received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.lost(self, exc)


class ReplyPipe:
    """A connection to ``where``; replies waited for at most ``reply_timeout`` seconds."""

    # What the connection is, in its errors ("script connection lost: ...").
    name: ClassVar[str] = "connection"

    def __init__(self, where: PlainRedis, reply_timeout: float) -> None:
        self._where = where
        self._auth: tuple[str, ...] = ()
        if where.password is not None:
            self._auth = (where.username, where.password) if where.username else (where.password,)
        self._reply_timeout = reply_timeout
        self._transport: asyncio.Transport | None = None
        self._protocol: PipeProtocol | None = None
        self._waiting: deque[Expected] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    async def call(self, command: bytes) -> Any:
        """Send ``command`` (packed) and reply its answer; an error reply is raised as
        redis-py raises it."""
        transport = self._transport
        if transport is None:
            transport = await self._reconnect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, loop.time()))
        transport.write(command)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._reply_timeout, self._watch)
        return await future

    async def _reconnect(self) -> asyncio.Transport:
        """The connection for a call made while there is none; else raise why."""
        raise RedisConnectionError(f"{self.name} down")

    def _watch(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._waiting[0][1]
        if waited >= self._reply_timeout:
            # Redis does not answer: every reply behind the oldest waits on it too.
            self._drop(RedisTimeoutError(f"{self.name}: no reply from Redis"))
            return
        self._watchdog = loop.call_later(self._reply_timeout - waited, self._watch)

    def _drop(self, error: Exception) -> None:
        """Forget the connection (closing it) and fail whoever waits on it with ``error``."""
        transport = self._transport
        self._transport = self._protocol = None
        waiting, self._waiting = self._waiting, deque()
        for expected in waiting:
            future = expected[0]
            if future is not None and not future.done():
                future.set_exception(error)
        if transport is not None:
            transport.close()

    async def _open_socket(self) -> asyncio.Transport:
        """Connect (no command sent yet); the socket's failure, or no connection within
        ``CONNECT_TIMEOUT_S``, is raised as redis-py's ``ConnectionError``."""
        if self._closed:
            raise RedisConnectionError(f"{self.name} closed")
        loop = asyncio.get_running_loop()
        where = self._where
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if where.path is not None:
                    transport, protocol = await loop.create_unix_connection(
                        lambda: PipeProtocol(self), where.path
                    )
                else:
                    transport, protocol = await loop.create_connection(
                        lambda: PipeProtocol(self), where.host, where.port
                    )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"{self.name} failed: {exc!r}") from exc
        self._transport, self._protocol = transport, protocol
        return transport

    def _greeting(self, *, resp3: bool) -> list[bytes]:
        """The commands a new connection starts with, packed: authenticate (with ``HELLO 3``
        for RESP3) and select the database."""
        commands: list[bytes] = []
        if resp3:
            hello: tuple[str, ...] = ("HELLO", "3")
            if self._auth:
                user, password = self._auth if len(self._auth) == 2 else ("default", *self._auth)
                hello = (*hello, "AUTH", user, password)
            commands.append(pack_command(hello))  # type: ignore[arg-type]
        elif self._auth:
            commands.append(pack_command(("AUTH", *self._auth)))  # type: ignore[arg-type]
        if self._where.db:
            commands.append(pack_command(("SELECT", self._where.db)))  # type: ignore[arg-type]
        return commands

    def received(self, protocol: PipeProtocol, data: bytes) -> None:
        """What a connection of replies alone reads (RESP2)."""
        if protocol is not self._protocol:
            return
        reader = protocol.reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                self._answer(reply)
        except NotUnderstood:
            if self._transport is not None:
                self._transport.close()

    def _answer(self, reply: Any) -> None:
        """Hand ``reply`` to whoever waits for the oldest one."""
        waiting = self._waiting
        if not waiting:
            raise NotUnderstood(f"unasked reply {reply!r:.80}")
        expected = waiting.popleft()
        future = expected[0]
        if isinstance(reply, hiredis.ReplyError):
            if future is None:
                raise NotUnderstood(f"refused: {reply}")
            if not future.done():
                future.set_exception(BaseParser.parse_error(str(reply)))  # type: ignore[no-untyped-call]
            return
        if len(expected) == 4:
            raise NotUnderstood(f"expected {expected[2]!r} of {expected[3]!r}, got {reply!r:.80}")
        if future is not None and not future.done():
            future.set_result(reply)  # a caller that gave up (cancelled) is done

    def lost(self, protocol: PipeProtocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._drop(RedisConnectionError(f"{self.name} lost: {exc!r}"))

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport = self._transport
        self._drop(RedisConnectionError(f"{self.name} closed"))
        if transport is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)  # the transport closes its socket in the next round
