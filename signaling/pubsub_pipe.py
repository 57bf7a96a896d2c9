"""Sharded pub/sub and the hot path's script calls on one Redis, through one connection.

redis-py reads a pub/sub message through ``PubSub.get_message``: a task waiting on the socket
with a timeout context, a retry wrapper and its reply handling around each read, the largest
piece of Python left per chat message once the scripts went to ``signaling.script_pipe``.
Here a protocol parses what arrives with hiredis and hands each message to the broker from
``data_received``: no task, timeout or wrapper per message.

The connection speaks RESP3 (``HELLO 3``), where a subscribed connection still runs any
command: messages and subscription confirmations come as pushes (hiredis's
``PushNotification``), told apart from ordinary replies. Once the broker started, the
client's script calls (``signaling.redis_client.run_script``) go through ``call`` on this
connection instead of a ``signaling.script_pipe`` of their own: a chat send's script reply
and the message its ``SPUBLISH`` sends to this node then come in one read (the message
first), where two connections took two reads of the node and two writes of Redis. A
confirmation of ``SSUBSCRIBE`` or ``SUNSUBSCRIBE`` is, in RESP3, that command's only reply
(a push, in the order of the replies): it answers the command as a reply would. A script's
reply is the same as on RESP2 (Lua values are converted as the script's own
``redis.setresp`` says, 2 unless it asks: ``true`` is 1, ``false`` nil).

The pipe keeps the set of channels wanted. A lost connection (Redis gone, restarted, or a
reply that is not understood) is made anew with backoff, every wanted channel is subscribed
again, and only once Redis confirmed them all does the pipe say it is back: messages
published meanwhile were lost, and the broker's callers read back what they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

import hiredis
from hiredis import PushNotification, pack_command
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from signaling.redis_client import PlainRedis

log = logging.getLogger("huddle.broker")

CONNECT_TIMEOUT_S: Final = 2.0
# How long a subscription (or the connection's first replies) may wait for Redis.
REPLY_TIMEOUT_S: Final = 5.0
RETRY_DELAY_S: Final = 0.1
RETRY_DELAY_MAX_S: Final = 2.0
# Connections lost one after the other sooner than this after they were made are retried
# after the current delay (which then grows): a Redis that drops every one is not hammered.
STABLE_S: Final = 1.0

_SMESSAGE: Final = b"smessage"
_SSUBSCRIBE: Final = b"ssubscribe"
_SUNSUBSCRIBE: Final = b"sunsubscribe"


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: PubSubPipe) -> None:
        self.pipe = pipe
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self.pipe.received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.lost(self, exc)


class _NotUnderstood(Exception):
    """A reply the pipe did not ask for or cannot read: the stream is no longer trusted."""


# A reply the pipe waits for: its kind (None: an ordinary reply, as to HELLO or a script
# call), its channel, who waits for it (None: nobody), and when it was asked for.
_Expected = tuple[bytes | None, bytes | None, "asyncio.Future[Any] | None", float]


class PubSubPipe:
    """Subscriptions of one node to one Redis; ``on_message(channel, payload)`` for each
    message, ``on_lost(reason)`` when the connection went, ``on_restored()`` when it is back
    with every channel subscribed again."""

    def __init__(
        self,
        where: PlainRedis,
        on_message: Callable[[bytes, bytes], None],
        on_lost: Callable[[str], None],
        on_restored: Callable[[], None],
    ) -> None:
        self._where = where
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_restored = on_restored
        self._auth: tuple[str, ...] = ()
        if where.password is not None:
            self._auth = (where.username, where.password) if where.username else (where.password,)
        self.wanted: set[bytes] = set()
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._expected: deque[_Expected] = deque()
        # Resolved when the current connection is gone, with why.
        self._gone: asyncio.Future[str] | None = None
        self._keeper: asyncio.Task[None] | None = None
        # One timer for all the replies waited for (not one per script call): it looks at
        # the oldest.
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    # --- what the broker calls ------------------------------------------------------------

    async def start(self, channels: Iterable[bytes]) -> None:
        """Connect and subscribe ``channels``; raise what Redis or the socket said if that
        fails (the node does not start without its Redis)."""
        self.wanted.update(channels)
        await self._open()
        self._keeper = asyncio.create_task(self._keep(), name="broker-pubsub")

    async def subscribe(self, channel: bytes) -> None:
        """Subscribe and wait for Redis to confirm. Without a connection (or if it goes
        meanwhile) the channel stays wanted, for the next connection to subscribe, and the
        error is raised."""
        self.wanted.add(channel)
        if self._transport is None:
            raise RedisConnectionError("pub/sub connection down")
        future = self._send(_SSUBSCRIBE, channel, wait=True)
        assert future is not None
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            await future

    async def call(self, command: bytes) -> Any:
        """Send ``command`` (packed) and reply its answer; an error reply is raised as
        redis-py raises it. Without a connection, or if it goes (or Redis gives no reply
        within ``REPLY_TIMEOUT_S``), redis-py's ``ConnectionError`` (``TimeoutError``) is
        raised, as ``signaling.script_pipe`` does: ``run_script`` then makes the call the
        usual way."""
        transport = self._transport
        if transport is None:
            raise RedisConnectionError("pub/sub connection down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._expected.append((None, None, future, loop.time()))
        transport.write(command)
        if self._watchdog is None:
            self._watchdog = loop.call_later(REPLY_TIMEOUT_S, self._watch)
        return await future

    def _watch(self) -> None:
        self._watchdog = None
        if not self._expected:
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._expected[0][3]
        if waited >= REPLY_TIMEOUT_S:
            # Redis does not answer: every reply behind the oldest waits on it too.
            self._drop("pub/sub connection: no reply from Redis", timeout=True)
            return
        self._watchdog = loop.call_later(REPLY_TIMEOUT_S - waited, self._watch)

    async def unsubscribe(self, channel: bytes) -> None:
        self.wanted.discard(channel)
        if self._transport is not None:
            self._send(_SUNSUBSCRIBE, channel, wait=False)

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        transport = self._transport
        self._drop("pub/sub connection closed")
        if transport is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)  # the transport closes its socket in the next round

    # --- the connection -------------------------------------------------------------------

    def _send(self, kind: bytes, channel: bytes, *, wait: bool) -> asyncio.Future[Any] | None:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        future = loop.create_future() if wait else None
        self._expected.append((kind, channel, future, loop.time()))
        command = b"SSUBSCRIBE" if kind == _SSUBSCRIBE else b"SUNSUBSCRIBE"
        self._transport.write(pack_command((command, channel)))  # type: ignore[arg-type]
        return future

    async def _open(self) -> None:
        """Connect, switch to RESP3 (authenticating), select the database and subscribe every
        wanted channel, in one write; return once Redis confirmed each."""
        if self._closed:
            raise RedisConnectionError("pub/sub connection closed")
        loop = asyncio.get_running_loop()
        where = self._where
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if where.path is not None:
                    transport, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self), where.path
                    )
                else:
                    transport, protocol = await loop.create_connection(
                        lambda: _Protocol(self), where.host, where.port
                    )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"pub/sub connection failed: {exc!r}") from exc
        self._transport, self._protocol = transport, protocol
        self._gone = loop.create_future()
        self._expected.clear()
        commands: list[bytes] = []
        waiting: list[asyncio.Future[Any]] = []

        def expect(kind: bytes | None, channel: bytes | None) -> None:
            future = loop.create_future()
            self._expected.append((kind, channel, future, loop.time()))
            waiting.append(future)

        hello: tuple[str, ...] = ("HELLO", "3")
        if self._auth:
            user, password = self._auth if len(self._auth) == 2 else ("default", *self._auth)
            hello = (*hello, "AUTH", user, password)
        commands.append(pack_command(hello))  # type: ignore[arg-type]
        expect(None, None)
        if where.db:
            commands.append(pack_command(("SELECT", where.db)))  # type: ignore[arg-type]
            expect(None, None)
        for channel in self.wanted:
            commands.append(pack_command((b"SSUBSCRIBE", channel)))  # type: ignore[arg-type]
            expect(_SSUBSCRIBE, channel)
        transport.write(b"".join(commands))
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                for future in waiting:
                    await future
        except BaseException as exc:
            for future in waiting:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved: the first failure is raised
            self._drop(f"pub/sub connection failed: {exc!r}")
            if isinstance(exc, TimeoutError):
                raise RedisConnectionError("pub/sub connection: no reply from Redis") from exc
            raise

    async def _keep(self) -> None:
        """Wait for the connection to go, then make it anew (with backoff) until it is back."""
        delay = RETRY_DELAY_S
        # Whether the connection now lost was made right after another that did not last.
        hasty = False
        loop = asyncio.get_running_loop()
        while True:
            gone = self._gone
            made = loop.time()
            reason = await gone if gone is not None else "pub/sub connection down"
            self._on_lost(reason)
            # The first try is at once (a Redis restarted is back the soonest); a Redis that
            # drops every connection at once is tried again later and later.
            quick = loop.time() - made < STABLE_S
            if not quick:
                delay = RETRY_DELAY_S
            elif hasty:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX_S)
            hasty = quick
            while True:
                try:
                    await self._open()
                    break
                except Exception as exc:
                    # Redis down, refusing (a wrong password) or not answering: retried.
                    log.debug("pub/sub reconnect failed", extra={"error": repr(exc)})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_DELAY_MAX_S)
            self._on_restored()

    def _drop(self, reason: str, *, timeout: bool = False) -> None:
        """Forget the connection (closing it), fail whoever waits on it (with redis-py's
        ``TimeoutError`` if Redis did not answer, else its ``ConnectionError``), tell the
        keeper."""
        transport = self._transport
        self._transport = self._protocol = None
        expected, self._expected = self._expected, deque()
        error = RedisTimeoutError(reason) if timeout else RedisConnectionError(reason)
        for _, _, future, _ in expected:
            if future is not None and not future.done():
                future.set_exception(error)
        gone = self._gone
        if gone is not None and not gone.done():
            gone.set_result(reason)
        if transport is not None:
            transport.close()

    def received(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        reader = protocol.reader
        # The messages of this read are handed over after its replies. A reply wakes its
        # caller in the loop's next round, and the frames a message queues are written in
        # one flush scheduled for that round (signaling.flush_round): woken first, a chat
        # send's caller queues its reply before that flush, which then writes the reply and
        # the sender's echo together (handed over first, the flush ran before the reply).
        messages: list[tuple[bytes, bytes]] = []
        error: Exception | None = None
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if type(reply) is PushNotification:
                    if len(reply) == 3 and reply[0] == _SMESSAGE:
                        messages.append((reply[1], reply[2]))
                    else:
                        self._confirm(reply)
                else:
                    self._answer(reply)
        except Exception as exc:
            error = exc
        try:
            for channel, message in messages:
                self._on_message(channel, message)
        except Exception as exc:
            error = error or exc
        if error is not None:
            # Garbage, a reply nobody asked for, or one that broke the broker: start over.
            log.warning("pub/sub reply not understood", extra={"error": repr(error)})
            self._drop(f"pub/sub reply not understood: {error!r}")

    def _confirm(self, push: PushNotification) -> None:
        """A push other than a message: a subscription's confirmation (the reply to its
        command); any other push is not understood."""
        expected = self._expected
        if len(push) == 3 and push[0] in (_SSUBSCRIBE, _SUNSUBSCRIBE):
            kind, channel = push[0], push[1]
            if expected and expected[0][0] == kind and expected[0][1] == channel:
                future = expected.popleft()[2]
                if future is not None and not future.done():
                    future.set_result(None)
                return
            if kind == _SUNSUBSCRIBE and channel not in self.wanted:
                return  # of no interest
            # Redis dropped a channel still wanted (which one Redis does not do), or confirmed
            # one never asked for.
            raise _NotUnderstood(f"unasked {kind!r} of {channel!r}")
        raise _NotUnderstood(f"unasked push {list(push)!r:.80}")

    def _answer(self, reply: Any) -> None:
        expected = self._expected
        if not expected:
            raise _NotUnderstood(f"unasked reply {reply!r:.80}")
        kind, channel, future, _ = expected.popleft()
        if isinstance(reply, hiredis.ReplyError):
            error = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
            if future is None:
                raise _NotUnderstood(f"refused: {reply}")
            if not future.done():
                future.set_exception(error)
            return
        if kind is not None:
            raise _NotUnderstood(f"expected {kind!r} of {channel!r}, got {reply!r:.80}")
        if future is not None and not future.done():
            future.set_result(reply)

    def lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._drop(f"pub/sub connection lost: {exc!r}")
