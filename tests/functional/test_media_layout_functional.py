"""A Redis that holds the media store's keys under their earlier names (before they shared
one hash tag) is upgraded when a node starts: files, sharing, usage and uploads carry on."""

from __future__ import annotations

import pytest
import redis.asyncio as redis

from huddle.media_client import MediaClient
from media_store import layout
from signaling.keys import conv_key, media_store_key
from tests.conftest import StartNode
from tests.helpers import make_token


async def _to_earlier_names(client: redis.Redis) -> list[str]:
    """Rename the current keys back to the earlier layout, as an older node left them."""
    earlier = []
    async for raw in client.scan_iter(match="huddle:{media-store}:*"):
        key = raw.decode()
        rest = key[len("huddle:{media-store}:") :]
        kind, _, tail = rest.partition(":")
        ident, _, name = tail.rpartition(":")
        if kind == "file":
            old = f"huddle:{{media:{ident}}}:{name}"
        elif kind == "owner":
            old = f"huddle:{{user:{ident}}}:{name}"
        else:
            continue
        await client.rename(key, old)
        earlier.append(old)
    await client.delete(layout.LAYOUT_KEY)
    return sorted(earlier)


@pytest.mark.single_redis(
    "the earlier layout's keys cannot be renamed across a cluster's shards: a cluster starts "
    "with the current layout (media_store.layout)"
)
async def test_keys_of_the_earlier_layout_are_renamed_at_start(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    first = await start_node(media_quota_bytes=100_000)
    async with MediaClient(first.url, make_token("alice")) as alice:
        meta = await alice.upload(b"kept across the upgrade", name="notes.txt")
    await redis_client.hset(conv_key("c1", "members"), "bob", "member")
    await redis_client.sadd(f"huddle:{{media-store}}:file:{meta['id']}:shared", "c1")
    await first.stop()
    earlier = await _to_earlier_names(redis_client)
    assert f"huddle:{{media:{meta['id']}}}:meta" in earlier
    assert "huddle:{user:alice}:media_usage" in earlier

    second = await start_node(media_quota_bytes=100_000, data_dir=first.settings.data_dir)
    assert int(await redis_client.get(layout.LAYOUT_KEY) or 0) == layout.LAYOUT
    assert not [k async for k in redis_client.scan_iter(match="huddle:{media:*")]
    async with MediaClient(second.url, make_token("bob")) as bob:
        assert await bob.download(meta["id"]) == b"kept across the upgrade"
    async with MediaClient(second.url, make_token("alice")) as alice:
        assert (await alice.usage())["used"] == len(b"kept across the upgrade")
    # Once upgraded, a start renames nothing.
    assert await layout.upgrade(redis_client) == 0
    assert await redis_client.exists(media_store_key("refs"))


def test_earlier_names_map_to_current_ones() -> None:
    assert (
        layout.new_name("huddle:{media:abc}:tus_lock") == "huddle:{media-store}:file:abc:tus_lock"
    )
    assert (
        layout.new_name("huddle:{user:a:b}:media_uploads")
        == "huddle:{media-store}:owner:a:b:media_uploads"
    )
    assert layout.new_name("huddle:{user:ann}:mediaeval") is None
    assert layout.new_name("huddle:{user:ann}:convs") is None
    assert layout.new_name("huddle:{media:}:meta") is None
