"""Presence in Redis: per device with expiring entries, per user aggregated, changes published.

Every change of a user's devices runs one Lua script that writes, re-aggregates, bumps the
user's presence version and publishes the snapshot on the user's presence channel, so
watchers on any node see changes in order and a crash never leaves half a change.
Devices of a crashed node are no longer refreshed; any node's sweeper expires them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Final, cast

import msgspec
from redis.crc import key_slot

from signaling.keys import user_key
from signaling.lua import lua_script
from signaling.protocol import UserPresence
from signaling.redis_client import RedisClient, execute, is_cluster, queue_script

EXPIRY_INDEX: Final = "huddle:presence:expiry"
SWEEP_BATCH: Final = 500
REFRESH_BATCH: Final = 100

_SCRIPT: Final = lua_script("signaling", "presence")
_REFRESH_SCRIPT: Final = lua_script("signaling", "presence_refresh")

_decoder: Final = msgspec.json.Decoder(UserPresence)


def devices_key(user: str) -> str:
    return user_key(user, "devices")


def meta_key(user: str) -> str:
    return user_key(user, "presence")


def presence_channel(user: str) -> str:
    return user_key(user, "presence-events")


def decode_snapshot(blob: bytes | str) -> UserPresence:
    return _decoder.decode(blob)


def _now_ms() -> int:
    return int(time.time() * 1000)


class DeviceEntry(msgspec.Struct, frozen=True):
    user: str
    device: str
    session: str
    status: str


class PresenceStore:
    """Reads and writes presence; every write that changes something publishes a snapshot."""

    def __init__(self, client: RedisClient, node_id: str, ttl_s: float) -> None:
        self._redis = client
        self._node = node_id
        self._ttl_ms = int(ttl_s * 1000)
        self._script = client.register_script(_SCRIPT)
        self._refresh = client.register_script(_REFRESH_SCRIPT)
        # One Redis takes a batch's devices in one script call; a cluster, those of a slot.
        self._cluster = is_cluster(client)

    async def _run(self, op: str, entry: DeviceEntry, now_ms: int) -> str:
        result = await self._script(
            keys=[devices_key(entry.user), meta_key(entry.user)],
            args=self._args(op, entry, now_ms),
        )
        return result.decode() if isinstance(result, bytes) else str(result)

    def _args(self, op: str, entry: DeviceEntry, now_ms: int) -> list[str | int]:
        return [
            op,
            entry.user,
            entry.device,
            entry.session,
            entry.status,
            self._node,
            now_ms + self._ttl_ms,
            now_ms,
            presence_channel(entry.user),
        ]

    async def set(self, entry: DeviceEntry) -> UserPresence:
        now = _now_ms()
        result = await self._run("set", entry, now)
        await self._redis.zadd(EXPIRY_INDEX, {_member(entry): now + self._ttl_ms})
        if result == "same":
            return await self.get_one(entry.user)
        return decode_snapshot(result)

    async def remove(self, entry: DeviceEntry) -> None:
        await self._run("remove", entry, _now_ms())

    async def refresh(self, entries: Iterable[DeviceEntry]) -> int:
        """Extend the expiry of local devices; re-register any that vanished. Returns count.

        Sent in batches, yielding to the event loop in between: one pipeline of thousands of
        scripts would stall every connection of the node while it is built and parsed. A
        batch is one script call (presence_refresh.lua) on one Redis, one per slot of its
        devices on a cluster."""
        entries = list(entries)
        for start in range(0, len(entries), REFRESH_BATCH):
            batch = entries[start : start + REFRESH_BATCH]
            now = _now_ms()
            groups: dict[int, list[DeviceEntry]] = {}
            for entry in batch:
                slot = key_slot(devices_key(entry.user).encode()) if self._cluster else 0
                groups.setdefault(slot, []).append(entry)
            pipe = self._redis.pipeline(transaction=False)
            for group in groups.values():
                args: list[str | int] = [now + self._ttl_ms]
                for entry in group:
                    args += [entry.device, entry.session]
                queue_script(pipe, self._refresh, [devices_key(e.user) for e in group], args)
            pipe.zadd(EXPIRY_INDEX, {_member(e): now + self._ttl_ms for e in batch})
            results = await execute(pipe)
            for group, replies in zip(groups.values(), results, strict=False):
                for entry, result in zip(group, replies, strict=True):
                    if result in (b"missing", "missing"):
                        # Lost while Redis was down or swept during a long stall: register
                        # again.
                        await self.set(entry)
            await asyncio.sleep(0)
        return len(entries)

    async def get(self, users: Iterable[str]) -> list[UserPresence]:
        users = list(users)
        now = _now_ms()
        pipe = self._redis.pipeline(transaction=False)
        for user in users:
            queue_script(
                pipe,
                self._script,
                [devices_key(user), meta_key(user)],
                ["get", user, "", "", "", "", 0, now, ""],
            )
        return [decode_snapshot(blob) for blob in await execute(pipe)]

    async def get_one(self, user: str) -> UserPresence:
        return (await self.get([user]))[0]

    async def sweep(self) -> int:
        """Expire devices whose node stopped refreshing them. Returns how many went offline."""
        now = _now_ms()
        members = cast(
            list[bytes], await self._redis.zrangebyscore(EXPIRY_INDEX, "-inf", now, 0, SWEEP_BATCH)
        )
        expired = 0
        for member in members:
            try:
                user, device = msgspec.json.decode(member, type=tuple[str, str])
            except msgspec.DecodeError:
                await self._redis.zrem(EXPIRY_INDEX, member)
                continue
            entry = DeviceEntry(user=user, device=device, session="", status="")
            result = await self._run("expire", entry, now)
            if result == "alive":
                continue
            await self._redis.zrem(EXPIRY_INDEX, member)
            if result != "gone":
                expired += 1
        return expired


def _member(entry: DeviceEntry) -> bytes:
    return msgspec.json.encode((entry.user, entry.device))
