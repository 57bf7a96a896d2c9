"""Redis pub/sub for one node: reference-counted channel subscriptions and reconnection.

A node subscribes only to the channels its connected devices need. When Redis goes away the
reader keeps retrying; redis-py re-subscribes every channel on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from redis.exceptions import RedisError

from signaling.keys import node_channel
from signaling.redis_client import RedisClient

log = logging.getLogger("huddle.broker")

Handler = Callable[[bytes], None]
RETRY_DELAY_S: Final = 0.1
RETRY_DELAY_MAX_S: Final = 2.0


class Broker:
    def __init__(self, client: RedisClient, node_id: str) -> None:
        self._redis = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._handlers: dict[str, list[Handler]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.node_channel = node_channel(node_id)
        self.connected = False
        self.reconnects = 0
        # Called after the connection came back (subscriptions restored): messages published
        # while it was down are gone, so their owners re-read what they need.
        self.on_reconnect: list[Callable[[], None]] = []

    async def start(self) -> None:
        # The node's own channel keeps the pub/sub connection subscribed to at least one
        # channel, which redis-py needs before it will read.
        await self._pubsub.subscribe(self.node_channel)
        self.connected = True
        # redis-py also reconnects (and subscribes again) inside a read, without raising:
        # after Redis restarted quickly, this callback is the only sign of it.
        connection = self._pubsub.connection
        if connection is not None:
            connection.register_connect_callback(self._on_connect)
        self._reader = asyncio.create_task(self._read(), name="broker-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()

    async def subscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.setdefault(channel, [])
        handlers.append(handler)
        if len(handlers) == 1:
            try:
                await self._pubsub.subscribe(channel)
            except (RedisError, OSError):
                # Recorded in redis-py's channel set: it subscribes again on reconnect.
                log.warning("subscribe deferred until Redis is back", extra={"channel": channel})

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.get(channel)
        if not handlers or handler not in handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del self._handlers[channel]
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(channel)

    @property
    def channel_count(self) -> int:
        return len(self._handlers)

    async def publish(self, channel: str, payload: bytes) -> None:
        await self._redis.publish(channel, payload)

    async def _on_connect(self, connection: object) -> None:
        # Registered after redis-py's own callback, so the channels are subscribed again.
        self._restored()

    def _restored(self) -> None:
        self.connected = True
        self.reconnects += 1
        log.info("pub/sub connection restored")
        for callback in self.on_reconnect:
            try:
                callback()
            except Exception:
                log.exception("reconnect callback failed")

    async def _read(self) -> None:
        delay = RETRY_DELAY_S
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("pub/sub connection lost", extra={"error": str(exc)})
                self.connected = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX_S)
                continue
            if not self.connected:
                self._restored()
            delay = RETRY_DELAY_S
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else channel
            for handler in list(self._handlers.get(name, ())):
                try:
                    handler(message["data"])
                except Exception:
                    log.exception("pub/sub handler failed", extra={"channel": name})
