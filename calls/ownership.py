"""Which node and SFU worker holds a room: ``huddle:{room:NAME}:node`` in Redis.

A room lives on exactly one node. The node that opens it claims the key with
``NODE#WORKER``, refreshes it while the room lives (``refresh``, from the node's periodic
duties) and releases it when the room closes; a node that dies leaves a claim that expires
by itself after ``ttl_s`` (the node's ``presence_ttl_s``, as its devices' presence does).
Another node finding the key taken relays to the owner (``calls.relay``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from signaling.keys import room_key
from signaling.lua import lua_script
from signaling.redis_client import RedisClient

log = logging.getLogger("huddle.calls")


def room_node_key(room: str) -> str:
    return room_key(room, "node")


class Elsewhere(Exception):
    """The room is held by another node: ``owner`` is its id."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


class RoomOwnership:
    """This node's claims on the rooms it holds."""

    def __init__(self, client: RedisClient, node_id: str, ttl_s: float) -> None:
        self._redis = client
        self._node_id = node_id
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._release = client.register_script(lua_script("calls", "release_room"))

    async def claim(self, room_name: str, claim: str) -> None:
        """Claim ``room_name`` as ``claim`` (``NODE#WORKER``); raises ``Elsewhere`` if
        another node holds it. A claim of this node's own (left by a closed room or an
        earlier worker) is taken over."""
        key = room_node_key(room_name)
        if await self._redis.set(key, claim, nx=True, px=self.ttl_ms):
            return
        owner = await self._redis.get(key)
        if isinstance(owner, bytes):
            owner = owner.decode()
        if owner is not None and owner.split("#", 1)[0] != self._node_id:
            raise Elsewhere(owner.split("#", 1)[0])
        await self._redis.set(key, claim, px=self.ttl_ms)

    async def refresh(self, claims: Iterable[tuple[str, str]]) -> None:
        """Extend the claims ``(room, claim)`` of the rooms that live here."""
        held = list(claims)
        if not held:
            return
        pipe = self._redis.pipeline(transaction=False)
        for room_name, claim in held:
            pipe.set(room_node_key(room_name), claim, px=self.ttl_ms)
        await pipe.execute()

    async def release(self, room_name: str, claim: str) -> None:
        try:
            await self._release(keys=[room_node_key(room_name)], args=[claim])
        except Exception as exc:  # the claim expires by itself
            log.warning("room claim not released", extra={"room": room_name, "error": str(exc)})
