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
connection (pipelined and watched as ``signaling.reply_pipe`` does, the core of both pipes)
instead of a ``signaling.script_pipe`` of their own: a chat send's script reply
and the message its ``SPUBLISH`` sends to this node then come in one read (the message
first), where two connections took two reads of the node and two writes of Redis. A
confirmation of ``SSUBSCRIBE`` or ``SUNSUBSCRIBE`` is, in RESP3, that command's only reply
(a push, in the order of the replies): it answers the command as a reply would (the
command's entry among the replies waited for carries its kind and channel). A script's
reply is the same as on RESP2 (Lua values are converted as the script's own
``redis.setresp`` says, 2 unless it asks: ``true`` is 1, ``false`` nil).

A connection heard nothing from for ``IDLE_PING_S`` is asked a ``PING``: a Redis cut off
without a word (its host gone, a network cut: no FIN, no RST) leaves a subscribed connection
silent for ever, where a node would wait for messages that no longer come. The ``PING`` is
watched as a script call is: no reply within ``REPLY_TIMEOUT_S`` and the connection is
dropped.

The pipe keeps the set of channels wanted. A lost connection (Redis gone, restarted, silent,
or a reply that is not understood) is made anew with backoff, every wanted channel is subscribed
again, and only once Redis confirmed them all does the pipe say it is back: messages
published meanwhile were lost, and the broker's callers read back what they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from hiredis import PushNotification, pack_command
from redis.exceptions import ConnectionError as RedisConnectionError

from signaling.reply_pipe import NotUnderstood, PipeProtocol, PlainRedis, ReplyPipe

log = logging.getLogger("huddle.broker")

# How long a subscription (or the connection's first replies, or a script call) may wait for
# Redis.
REPLY_TIMEOUT_S: Final = 5.0
RETRY_DELAY_S: Final = 0.1
RETRY_DELAY_MAX_S: Final = 2.0
# Connections lost one after the other sooner than this after they were made are retried
# after the current delay (which then grows): a Redis that drops every one is not hammered.
STABLE_S: Final = 1.0
# A connection nothing came from for this long is asked a PING (see the module's note).
IDLE_PING_S: Final = 5.0
_PING: Final = pack_command(("PING",))

_SMESSAGE: Final = b"smessage"
_SSUBSCRIBE: Final = b"ssubscribe"
_SUNSUBSCRIBE: Final = b"sunsubscribe"


class PubSubPipe(ReplyPipe):
    """Subscriptions of one node to one Redis; ``on_message(channel, payload)`` for each
    message, ``on_lost(reason)`` when the connection went, ``on_restored()`` when it is back
    with every channel subscribed again. Script calls (``call``) go on the same connection:
    without it, or if it goes (or Redis gives no reply within ``REPLY_TIMEOUT_S``), they
    raise redis-py's ``ConnectionError`` (``TimeoutError``), as ``signaling.script_pipe``
    does, and ``run_script`` makes the call the usual way."""

    name = "pub/sub connection"

    def __init__(
        self,
        where: PlainRedis,
        on_message: Callable[[bytes, bytes], None],
        on_lost: Callable[[str], None],
        on_restored: Callable[[], None],
    ) -> None:
        super().__init__(where, REPLY_TIMEOUT_S)
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_restored = on_restored
        self.wanted: set[bytes] = set()
        # Resolved when the current connection is gone, with why.
        self._gone: asyncio.Future[str] | None = None
        self._keeper: asyncio.Task[None] | None = None
        # The reads of the connection so far, and how many there were at the last look of
        # the idle timer: equal, the connection was silent since.
        self._reads = 0
        self._reads_seen = 0
        self._idle_timer: asyncio.TimerHandle | None = None

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
            raise RedisConnectionError(f"{self.name} down")
        future = self._send(_SSUBSCRIBE, channel, wait=True)
        assert future is not None
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            await future

    async def unsubscribe(self, channel: bytes) -> None:
        self.wanted.discard(channel)
        if self._transport is not None:
            self._send(_SUNSUBSCRIBE, channel, wait=False)

    async def aclose(self) -> None:
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await super().aclose()

    # --- the connection -------------------------------------------------------------------

    def _send(self, kind: bytes, channel: bytes, *, wait: bool) -> asyncio.Future[Any] | None:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        future = loop.create_future() if wait else None
        self._waiting.append((future, loop.time(), kind, channel))
        command = b"SSUBSCRIBE" if kind == _SSUBSCRIBE else b"SUNSUBSCRIBE"
        self._transport.write(pack_command((command, channel)))  # type: ignore[arg-type]
        return future

    async def _open(self) -> None:
        """Connect, switch to RESP3 (authenticating), select the database and subscribe every
        wanted channel, in one write; return once Redis confirmed each."""
        transport = await self._open_socket()
        loop = asyncio.get_running_loop()
        self._gone = loop.create_future()
        self._waiting.clear()
        commands = self._greeting(resp3=True)
        waiting: list[asyncio.Future[Any]] = []
        for _ in commands:
            waiting.append(loop.create_future())
            self._waiting.append((waiting[-1], loop.time()))
        for channel in self.wanted:
            commands.append(pack_command((b"SSUBSCRIBE", channel)))  # type: ignore[arg-type]
            waiting.append(loop.create_future())
            self._waiting.append((waiting[-1], loop.time(), _SSUBSCRIBE, channel))
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
            self._drop(RedisConnectionError(f"{self.name} failed: {exc!r}"))
            if isinstance(exc, TimeoutError):
                raise RedisConnectionError(f"{self.name}: no reply from Redis") from exc
            raise
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._reads_seen = self._reads
        self._idle_timer = loop.call_later(IDLE_PING_S, self._watch_idle, self._protocol)

    def _watch_idle(self, protocol: PipeProtocol | None) -> None:
        """Look at ``protocol``'s connection again in ``IDLE_PING_S``: if nothing came from
        it since the last look and nothing is waited for (the watchdog watches those), ask
        a PING."""
        if protocol is None or protocol is not self._protocol or self._transport is None:
            return  # that connection is gone: the next one is watched from its start
        loop = asyncio.get_running_loop()
        if self._reads == self._reads_seen and not self._waiting:
            self._waiting.append((None, loop.time()))
            self._transport.write(_PING)
            if self._watchdog is None:
                self._watchdog = loop.call_later(self._reply_timeout, self._watch)
        self._reads_seen = self._reads
        self._idle_timer = loop.call_later(IDLE_PING_S, self._watch_idle, protocol)

    async def _keep(self) -> None:
        """Wait for the connection to go, then make it anew (with backoff) until it is back."""
        delay = RETRY_DELAY_S
        # Whether the connection now lost was made right after another that did not last.
        hasty = False
        loop = asyncio.get_running_loop()
        while True:
            gone = self._gone
            made = loop.time()
            reason = await gone if gone is not None else f"{self.name} down"
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

    def _drop(self, error: Exception) -> None:
        """Forget the connection (closing it), fail whoever waits on it, tell the keeper."""
        super()._drop(error)
        gone = self._gone
        if gone is not None and not gone.done():
            gone.set_result(str(error))

    def received(self, protocol: PipeProtocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        self._reads += 1
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
            self._drop(RedisConnectionError(f"pub/sub reply not understood: {error!r}"))

    def _confirm(self, push: PushNotification) -> None:
        """A push other than a message: a subscription's confirmation (the reply to its
        command); any other push is not understood."""
        waiting = self._waiting
        if len(push) == 3 and push[0] in (_SSUBSCRIBE, _SUNSUBSCRIBE):
            kind, channel = push[0], push[1]
            if waiting and waiting[0][2:] == (kind, channel):
                future = waiting.popleft()[0]
                if future is not None and not future.done():
                    future.set_result(None)
                return
            if kind == _SUNSUBSCRIBE and channel not in self.wanted:
                return  # of no interest
            # Redis dropped a channel still wanted (which one Redis does not do), or confirmed
            # one never asked for.
            raise NotUnderstood(f"unasked {kind!r} of {channel!r}")
        raise NotUnderstood(f"unasked push {list(push)!r:.80}")
