"""A group conversation's call: the room ``conv:CONV``.

Only the group's members may join it (the node asks chat, through ``may_call``), and the
group's history records it: ``call_started`` when its first participant joins, ``call_ended``
with who joined and how long it lasted when the room closes (through ``on_record``). The room's
owner node sees every join (joins from other nodes are relayed to it), so it alone records.
Records are written in the background, in order per call: a join never waits for chat.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Final

from calls.members import CallError, CallRoom
from calls.record import GroupCallRecord
from signaling import protocol as p
from signaling.redis_client import UNREACHABLE_ERRORS

log = logging.getLogger(__name__)

CONV_ROOM_PREFIX: Final = "conv:"


def conversation_of(room: str) -> str | None:
    """The conversation whose call ``room`` is, or None for a room of its own."""
    return room[len(CONV_ROOM_PREFIX) :] if room.startswith(CONV_ROOM_PREFIX) else None


class ConversationCalls:
    def __init__(self, spawn: Callable[[Coroutine[object, object, None]], None]) -> None:
        self._spawn = spawn
        # Set by the node: whether a user may join a conversation's call, and where records go.
        self.may_call: Callable[[str, str], Awaitable[bool]] | None = None
        self.on_record: Callable[[GroupCallRecord], Awaitable[None]] | None = None
        self._last: dict[str, asyncio.Future[None]] = {}  # per call: its latest record

    async def check(self, identity: str, room: str) -> None:
        """Refuse a conversation's call to anyone but its members (the same answer whether
        the conversation exists or not)."""
        conv = conversation_of(room)
        if conv is None:
            return
        if self.may_call is None or not await self.may_call(conv, identity):
            raise CallError(
                p.ErrorCode.FORBIDDEN,
                f"{room!r} is a group's call: only the group's members may join it",
            )

    def joined(self, room: CallRoom, identity: str) -> None:
        conv = conversation_of(room.name)
        if conv is None:
            return
        if room.call is None:
            room.call = secrets.token_hex(8)
            room.started = time.time()
            self._record(
                GroupCallRecord(
                    call=room.call,
                    event="started",
                    conv=conv,
                    by=identity,
                    users=(identity,),
                    duration_s=None,
                )
            )
        if identity not in room.joined:
            room.joined.append(identity)

    def closed(self, room: CallRoom) -> None:
        conv = conversation_of(room.name)
        if conv is None or room.call is None or not room.joined:
            return
        self._record(
            GroupCallRecord(
                call=room.call,
                event="ended",
                conv=conv,
                by=room.joined[0],
                users=tuple(room.joined),
                duration_s=max(0, round(time.time() - room.started)),
            )
        )

    def _record(self, record: GroupCallRecord) -> None:
        before = self._last.get(record.call)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[record.call] = done

        async def write() -> None:
            try:
                if before is not None:
                    await asyncio.shield(before)
                if self.on_record is not None:
                    await self.on_record(record)
            except UNREACHABLE_ERRORS as exc:
                log.warning(
                    "group call not recorded",
                    extra={"conv": record.conv, "event": record.event, "error": str(exc)},
                )
            finally:
                done.set_result(None)
                if self._last.get(record.call) is done:
                    del self._last[record.call]

        self._spawn(write())
