"""The media store's keys moved under one hash tag (``signaling.keys.media_key``,
``media_owner_key``) so that its scripts run on one shard of a Redis Cluster. A node
started on a Redis that still holds the earlier names renames them once, before it serves.

Earlier names: ``huddle:{media:ID}:NAME`` for a file or upload, and
``huddle:{user:U}:media``, ``:media_usage``, ``:media_uploads`` for an owner.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Final

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from signaling.keys import media_key, media_owner_key, media_store_key
from signaling.redis_client import RedisClient

log = logging.getLogger("huddle.media")

LAYOUT: Final = 2
LAYOUT_KEY: Final = media_store_key("layout")
_OWNER_NAMES: Final = ("media", "media_usage", "media_uploads")


def new_name(old: str) -> str | None:
    """The current name of a key named the earlier way, or None if it is not one."""
    if old.startswith("huddle:{media:"):
        ident, sep, name = old[len("huddle:{media:") :].partition("}:")
        return media_key(ident, name) if sep and ident and name else None
    if old.startswith("huddle:{user:"):
        user, sep, name = old[len("huddle:{user:") :].rpartition("}:")
        return media_owner_key(user, name) if sep and user and name in _OWNER_NAMES else None
    return None


async def upgrade(client: RedisClient) -> int:
    """Rename the keys of the earlier layout, once per Redis; returns how many were renamed.

    On a cluster keys cannot be renamed across shards: a cluster starts with this layout
    (data brought from one Redis is brought after a node ran on it once)."""
    if isinstance(client, RedisCluster):
        return 0
    if int(await client.get(LAYOUT_KEY) or 0) >= LAYOUT:
        return 0
    renamed = 0
    for pattern in ("huddle:{media:*", "huddle:{user:*}:media*"):
        async for raw in client.scan_iter(match=pattern, count=1000):
            old = raw.decode() if isinstance(raw, bytes) else str(raw)
            new = new_name(old)
            if new is None:
                continue
            # Gone meanwhile: renamed by another node starting at the same time.
            with contextlib.suppress(ResponseError):
                renamed += int(await client.renamenx(old, new))
    await client.set(LAYOUT_KEY, LAYOUT)
    if renamed:
        log.info("media store keys renamed to the current layout", extra={"keys": renamed})
    return renamed
