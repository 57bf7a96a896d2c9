"""What every HTTP part of a node shares: the app keys of shared resources and the JSON
error shape. It imports nothing of the project, so features (``media_store``) may use it
without reaching for the node's composition root."""

from __future__ import annotations

import redis.asyncio as redis
from aiohttp import web

# The node's Redis client, set by the composition root before features start.
REDIS_CLIENT = web.AppKey("redis_client", redis.Redis)


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
