"""Script calls to one Redis on a connection of their own, pipelined.

A chat send is one script call (``signaling.redis_client.run_script``). Through redis-py's
pool each call would take a connection and give it back, checking its health on the way;
here the calls share one connection, written as they come and answered in turn
(``signaling.reply_pipe``). Once the node's broker started, the calls go through its pub/sub
connection instead (``signaling.pubsub_pipe``, RESP3), and this one is not made.

The connection is made at the first call (authenticating and selecting the database, RESP2).
Anything that goes wrong (no connection, a lost one, no reply within ``REPLY_TIMEOUT_S``)
fails the calls waiting on it with redis-py's ``ConnectionError`` or ``TimeoutError``, and
the connection is made anew for the next call; ``run_script`` then makes the call again the
usual way, as it does when a pooled connection fails.
"""

from __future__ import annotations

import asyncio
from typing import Final

from redis.exceptions import ConnectionError as RedisConnectionError

from signaling.reply_pipe import PlainRedis, ReplyPipe

REPLY_TIMEOUT_S: Final = 5.0


class ScriptPipe(ReplyPipe):
    """One Redis (a Unix socket ``path``, or ``host`` and ``port``, without TLS)."""

    name = "script connection"

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
        super().__init__(PlainRedis(path, host, port, username, password, db), REPLY_TIMEOUT_S)
        self._connecting: asyncio.Future[None] | None = None

    async def _reconnect(self) -> asyncio.Transport:
        await self._connect()
        if self._transport is None:
            raise RedisConnectionError(f"{self.name} lost")
        return self._transport

    async def _connect(self) -> None:
        if self._closed:
            raise RedisConnectionError(f"{self.name} closed")
        if self._connecting is not None:
            await asyncio.shield(self._connecting)
            return
        self._connecting = asyncio.get_running_loop().create_future()
        try:
            await self._open_socket()
            for command in self._greeting(resp3=False):
                await self.call(command)
            self._connecting.set_result(None)
        except BaseException as exc:
            error = exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(str(exc))
            # Calls made meanwhile were written behind the greeting: they fail with it.
            self._drop(error)
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: the waiters re-raise it
            raise
        finally:
            self._connecting = None
