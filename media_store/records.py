"""Every Redis write of the media store, each one Lua script (``media_store/lua``) so a
crash leaves no half state.

Keys: the file's ``meta`` hash, the owner's ``media_usage`` counter and ``media`` set, and
the store's ``refs`` hash (blob digest -> references), ``orphans`` sorted set (unreferenced
digests by the time they became so) and ``deleting`` hash (digests being collected).
Resumable uploads: the upload's ``tus`` hash (owner, length, offset, name, expires), the
owner's ``media_uploads`` hash (upload id -> reserved length, one entry per unfinished
upload) and the store's ``uploads`` sorted set (upload ids by expiry), which the periodic
sweep reads. An upload's keys carry no TTL: Redis expiring them on its own would drop a
reservation without releasing it, so the sweep expires them, reservation included.

Note for Redis Cluster: these scripts touch keys of several hash tags (the file, its owner,
the store) and so assume one shard, as the rest of Huddle does today.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

from media_store.errors import MediaError, quota_exceeded
from media_store.meta import MediaMeta, to_hash
from media_store.quota import Usage, reservation_error
from signaling.keys import media_key, media_owner_key, media_store_key
from signaling.lua import lua_script
from signaling.redis_client import RedisClient

# A commit waits for a collection of the same blob to finish, at most this long.
DELETING_WAIT_S: Final = 10.0
DELETING_POLL_S: Final = 0.05


# Prepended to the scripts that check a quota: they call its ``reserved(key)``.
_RESERVED: Final = lua_script("media_store", "reserved")


@dataclass(frozen=True)
class Committed:
    # Per blob of ``meta.blobs()``: whether it had no reference before this commit (so a
    # collection may have removed it between the caller's upload and this commit).
    first_reference: list[bool]


class Records:
    def __init__(self, client: RedisClient) -> None:
        self.client = client
        script = client.register_script
        self._commit = script(_RESERVED + lua_script("media_store", "commit"))
        self._delete = script(lua_script("media_store", "delete"))
        self._claim = script(lua_script("media_store", "claim"))
        self._create_upload = script(_RESERVED + lua_script("media_store", "create_upload"))
        self._upload_progress = script(lua_script("media_store", "upload_progress"))
        self._release_upload = script(lua_script("media_store", "release_upload"))
        self.refs = media_store_key("refs")
        self.orphans = media_store_key("orphans")
        self.deleting = media_store_key("deleting")
        self.uploads = media_store_key("uploads")

    async def usage(self, user: str) -> Usage:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.get(media_owner_key(user, "media_usage"))
            pipe.hvals(media_owner_key(user, "media_uploads"))
            used, held = await pipe.execute()
        return Usage(int(used or 0), sum(int(v) for v in held), len(held))

    async def commit(self, meta: MediaMeta, quota: int) -> Committed:
        """Record a new file, charge its owner and reference its blobs, or raise."""
        fields = to_hash(meta)
        flat = [x for kv in fields.items() for x in kv]
        digests = meta.blobs()
        keys = [
            media_key(meta.id, "meta"),
            media_owner_key(meta.owner, "media_usage"),
            media_owner_key(meta.owner, "media"),
            self.refs,
            self.orphans,
            self.deleting,
            media_owner_key(meta.owner, "media_uploads"),
            media_key(meta.id, "tus"),
            self.uploads,
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
            media_owner_key(meta.owner, "media_usage"),
            media_owner_key(meta.owner, "media"),
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

    # --- resumable uploads --------------------------------------------------------------

    async def create_upload(
        self,
        upload: str,
        *,
        owner: str,
        length: int,
        name: str,
        expires: float,
        quota: int,
        max_open: int,
    ) -> None:
        """Record a new unfinished upload and reserve its length, or raise (quota, cap)."""
        keys = [
            media_key(upload, "tus"),
            media_owner_key(owner, "media_uploads"),
            media_owner_key(owner, "media_usage"),
            self.uploads,
        ]
        args: list[str | int] = [upload, owner, length, name, repr(expires), quota, max_open]
        created, used, held, open_uploads = (
            int(x) for x in await self._create_upload(keys=keys, args=args)
        )
        if not created:
            usage = Usage(used, held, open_uploads)
            error = reservation_error(usage, length, quota=quota, max_open=max_open)
            raise error or quota_exceeded(quota, usage.total)

    async def upload_progress(self, upload: str, offset: int, expires: float) -> bool:
        """Record an upload's offset (progress also postpones its expiry); False if the
        upload is gone (terminated or expired meanwhile)."""
        keys = [media_key(upload, "tus"), self.uploads]
        return bool(await self._upload_progress(keys=keys, args=[upload, offset, repr(expires)]))

    async def release_upload(self, upload: str, owner: str, *, expired_by: float = 0.0) -> bool:
        """Forget an unfinished upload and release its reservation. With ``expired_by``,
        only if it has expired by then and no request holds its lock."""
        keys = [
            media_key(upload, "tus"),
            media_owner_key(owner, "media_uploads"),
            self.uploads,
            media_key(upload, "tus_lock"),
        ]
        return bool(await self._release_upload(keys=keys, args=[upload, repr(expired_by)]))

    async def expire_uploads(self, now: float, limit: int) -> list[str]:
        """Release uploads that expired by ``now`` (at most ``limit``); returns their ids."""
        raw = await self.client.zrangebyscore(self.uploads, "-inf", now, start=0, num=limit)
        released = []
        for item in raw:
            upload = item.decode() if isinstance(item, bytes) else str(item)
            owner = await self.client.hget(media_key(upload, "tus"), "owner")
            if owner is None:
                # No record, so no reservation to release: only the index entry is left.
                await self.client.zrem(self.uploads, upload)
                released.append(upload)
            else:
                owner = owner.decode() if isinstance(owner, bytes) else str(owner)
                if await self.release_upload(upload, owner, expired_by=now):
                    released.append(upload)
        return released
