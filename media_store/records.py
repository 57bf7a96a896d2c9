"""Every Redis write of the media store, each one Lua script so a crash leaves no half state.

Keys: the file's ``meta`` hash, the owner's ``media_usage`` counter and ``media`` set, and
the store's ``refs`` hash (blob digest -> references), ``orphans`` sorted set (unreferenced
digests by the time they became so) and ``deleting`` hash (digests being collected).

Note for Redis Cluster: these scripts touch keys of several hash tags (the file, its owner,
the store) and so assume one shard, as the rest of Huddle does today.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

import redis.asyncio as redis

from media_store.errors import MediaError, quota_exceeded
from media_store.meta import MediaMeta, to_hash
from signaling.keys import media_key, media_store_key, user_key

# A commit waits for a collection of the same blob to finish, at most this long.
DELETING_WAIT_S: Final = 10.0
DELETING_POLL_S: Final = 0.05

_COMMIT: Final = """
-- KEYS: meta, usage, user media set, refs, orphans, deleting
-- ARGV: id, size, quota, n_fields, field, value, ..., digest, ...
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local n = tonumber(ARGV[4])
local first_digest = 5 + 2 * n
for i = first_digest, #ARGV do
  if redis.call('HEXISTS', KEYS[6], ARGV[i]) == 1 then return {-2} end
end
local size = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if quota > 0 and used + size > quota then return {-3, used} end
redis.call('INCRBY', KEYS[2], size)
redis.call('SADD', KEYS[3], ARGV[1])
local fields = {}
for i = 5, first_digest - 1 do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local previous = {0}
for i = first_digest, #ARGV do
  previous[#previous + 1] = redis.call('HINCRBY', KEYS[4], ARGV[i], 1) - 1
  redis.call('ZREM', KEYS[5], ARGV[i])
end
return previous
"""

_DELETE: Final = """
-- KEYS: meta, shared, usage, user media set, refs, orphans; ARGV: id, owner, now
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return 0 end
if owner ~= ARGV[2] then return -1 end
local fields = redis.call('HMGET', KEYS[1], 'size', 'digest', 'thumb_small', 'thumb_large', 'voice')
redis.call('DECRBY', KEYS[3], tonumber(fields[1]))
redis.call('SREM', KEYS[4], ARGV[1])
for i = 2, #fields do
  local digest = fields[i]
  if digest then
    if redis.call('HINCRBY', KEYS[5], digest, -1) <= 0 then
      redis.call('HDEL', KEYS[5], digest)
      redis.call('ZADD', KEYS[6], ARGV[3], digest)
    end
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

_CLAIM: Final = """
-- KEYS: refs, orphans, deleting; ARGV: digest, ...
-- Marks unreferenced digests as being collected; a commit of the same digest waits.
local out = {}
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  local referenced = redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1
  if not referenced and redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0 then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i])
    out[#out + 1] = ARGV[i]
  end
end
return out
"""


@dataclass(frozen=True)
class Committed:
    # Per blob of ``meta.blobs()``: whether it had no reference before this commit (so a
    # collection may have removed it between the caller's upload and this commit).
    first_reference: list[bool]


class Records:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._commit = client.register_script(_COMMIT)
        self._delete = client.register_script(_DELETE)
        self._claim = client.register_script(_CLAIM)
        self.refs = media_store_key("refs")
        self.orphans = media_store_key("orphans")
        self.deleting = media_store_key("deleting")

    async def usage(self, user: str) -> int:
        raw = await self.client.get(user_key(user, "media_usage"))
        return int(raw or 0)

    async def commit(self, meta: MediaMeta, quota: int) -> Committed:
        """Record a new file, charge its owner and reference its blobs, or raise."""
        fields = to_hash(meta)
        flat = [x for kv in fields.items() for x in kv]
        digests = meta.blobs()
        keys = [
            media_key(meta.id, "meta"),
            user_key(meta.owner, "media_usage"),
            user_key(meta.owner, "media"),
            self.refs,
            self.orphans,
            self.deleting,
        ]
        args: list[str | int] = [meta.id, meta.size, quota, len(fields), *flat, *digests]
        deadline = time.monotonic() + DELETING_WAIT_S
        while True:
            result = [int(x) for x in await self._commit(keys=keys, args=args)]
            if result[0] != -2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(DELETING_POLL_S)
        if result[0] == -1:
            raise MediaError(409, "exists", "a file with this id exists")
        if result[0] == -2:
            raise MediaError(503, "busy", "the store is collecting this content; retry")
        if result[0] == -3:
            raise quota_exceeded(quota, result[1])
        return Committed([n == 0 for n in result[1:]])

    async def delete(self, meta: MediaMeta, user: str) -> bool:
        """Forget a file its owner deletes; its blobs become orphans once unreferenced."""
        keys = [
            media_key(meta.id, "meta"),
            media_key(meta.id, "shared"),
            user_key(meta.owner, "media_usage"),
            user_key(meta.owner, "media"),
            self.refs,
            self.orphans,
        ]
        result = int(await self._delete(keys=keys, args=[meta.id, user, time.time()]))
        if result == -1:
            raise MediaError(403, "forbidden", "only the owner may delete a file")
        return result == 1

    async def orphans_before(self, cutoff: float, limit: int) -> list[str]:
        raw = await self.client.zrangebyscore(self.orphans, "-inf", cutoff, start=0, num=limit)
        return [d.decode() if isinstance(d, bytes) else str(d) for d in raw]

    async def referenced(self, digests: list[str]) -> list[bool]:
        if not digests:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for d in digests:
                pipe.hexists(self.refs, d)
                pipe.hexists(self.deleting, d)
            flags = await pipe.execute()
        return [bool(flags[2 * i] or flags[2 * i + 1]) for i in range(len(digests))]

    async def claim(self, digests: list[str]) -> list[str]:
        """Mark unreferenced digests as being collected; returns those marked."""
        if not digests:
            return []
        raw = await self._claim(keys=[self.refs, self.orphans, self.deleting], args=digests)
        return [d.decode() if isinstance(d, bytes) else str(d) for d in raw]

    async def release(self, digests: list[str]) -> None:
        if digests:
            await self.client.hdel(self.deleting, *digests)
