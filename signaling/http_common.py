"""What every HTTP part of a node shares: the app keys of shared resources and the JSON
error shape. It imports nothing of the project but the Redis client's type, so features
(``media_store``) may use it without reaching for the node's composition root."""

from __future__ import annotations

from aiohttp import web

from signaling.redis_client import RedisClient

# The node's Redis client, set by the composition root before features start.
REDIS_CLIENT: web.AppKey[RedisClient] = web.AppKey("redis_client")


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
