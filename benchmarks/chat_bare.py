"""The chat benchmark's baseline: a bare aiohttp WebSocket relay over Redis pub/sub.

    python -m benchmarks.chat_bare --port 8090 --redis-url unix:///tmp/redis.sock

What a chat server costs with nothing but the transport: a client joins one group when it
connects (``/v1/ws?group=G``); every text frame it sends is published as is on the group's
Redis channel, and every frame on a channel this process follows is written to each of its
members' sockets, the sender included (as Huddle echoes a message to its sender's devices).
No authentication, no storage, no sequence numbers, no protocol. ``benchmarks.chat_load``
starts it and drives it beside Huddle; :class:`BareFrame` is the only frame there is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

import aiohttp
import msgspec
import redis.asyncio as redis
from aiohttp import WSMsgType, web

from benchmarks.procs import serve_until_signal

CHANNEL_PREFIX: Final = "bare:"
# Subscribed from the start: redis-py reads a pub/sub connection only once it has a channel.
_IDLE_CHANNEL: Final = CHANNEL_PREFIX + "_"
log = logging.getLogger("benchmarks.chat_bare")


class BareFrame(msgspec.Struct, kw_only=True):
    """One message of the baseline, sent, published and delivered as the same text.

    About the size of Huddle's ``chat.message`` event for the same message, so that both
    servers move frames of the same size."""

    type: str = "chat.message"
    conv: str
    sender: str
    client_id: str
    n: int  # the sender's own counter: loss, repeats and order are checked from it
    text: str


class Relay:
    """Members per group, one pub/sub connection, one channel per group with members here."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._groups: dict[str, set[web.WebSocketResponse]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        await self._pubsub.subscribe(_IDLE_CHANNEL)
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        self._stopped = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()
        await self.redis.aclose()

    async def join(self, group: str, ws: web.WebSocketResponse) -> None:
        members = self._groups.setdefault(group, set())
        members.add(ws)
        if len(members) == 1:
            await self._pubsub.subscribe(CHANNEL_PREFIX + group)

    async def leave(self, group: str, ws: web.WebSocketResponse) -> None:
        members = self._groups.get(group)
        if members is None:
            return
        members.discard(ws)
        if not members:
            del self._groups[group]
            if not self._stopped:  # sockets closing at shutdown, after the pub/sub connection
                await self._pubsub.unsubscribe(CHANNEL_PREFIX + group)

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            group = message["channel"].decode()[len(CHANNEL_PREFIX) :]
            text = message["data"].decode()
            for ws in list(self._groups.get(group, ())):
                # Written in turn, awaiting each socket: the simplest relay there is.
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(text)


RELAY = web.AppKey("relay", Relay)
_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(BareFrame)


class BareClient:
    """The baseline's client: joins a group at connect, sends frames, hands received ones on."""

    def __init__(
        self,
        base_url: str,
        group: str,
        http: aiohttp.ClientSession,
        on_frame: Callable[[BareFrame], None],
    ) -> None:
        self._url = f"{base_url.replace('http', 'ws', 1)}/v1/ws?group={group}"
        self._http = http
        self._on_frame = on_frame
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._ws is None or self._ws.closed

    @property
    def close_code(self) -> int | None:
        return None if self._ws is None else self._ws.close_code

    async def connect(self) -> None:
        self._ws = await self._http.ws_connect(self._url)
        self._reader = asyncio.create_task(self._read(self._ws))

    async def send(self, frame: BareFrame) -> None:
        if self._ws is None or self._ws.closed:
            raise ConnectionError("not connected")
        await self._ws.send_str(_encoder.encode(frame).decode())

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                try:
                    frame = _decoder.decode(msg.data)
                except msgspec.DecodeError:
                    log.warning("malformed frame from the bare relay")
                    continue
                self._on_frame(frame)


async def _ws(request: web.Request) -> web.WebSocketResponse:
    relay = request.app[RELAY]
    group = request.query.get("group", "")
    if not group:
        raise web.HTTPBadRequest(text="give ?group=")
    # Same socket options as the node's endpoint.
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
    # Subscribed before the handshake ends: a client that is connected receives.
    await relay.join(group, ws)
    try:
        await ws.prepare(request)
        channel = CHANNEL_PREFIX + group
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await relay.redis.publish(channel, msg.data)
    finally:
        await relay.leave(group, ws)
    return ws


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve(port: int, redis_url: str) -> None:
    relay = Relay(redis.Redis.from_url(redis_url))
    await relay.start()
    app = web.Application()
    app[RELAY] = relay
    app.router.add_get("/v1/ws", _ws)
    app.router.add_get("/healthz", _health)
    await serve_until_signal(app, port, relay.stop)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.chat_bare",
        description="Bare aiohttp WebSocket relay through Redis pub/sub (chat_load's baseline).",
    )
    ap.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    ap.add_argument("--redis-url", required=True, help="the Redis to relay through")
    args = ap.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port, args.redis_url))
    else:  # the loop `huddle serve` runs on
        uvloop.run(serve(args.port, args.redis_url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
