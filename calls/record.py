"""Calls that started or ended, as chat records them: a one-to-one call in the callers'
conversation, a group's call in the group.

A leaf: it imports nothing of calls, chat or signaling, so chat depends on this alone.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class CallRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A one-to-one call that started or ended, for its two users' conversation."""

    call: str
    event: Literal["started", "ended", "missed"]
    caller: str
    users: tuple[str, str]
    media: str
    reason: str | None
    duration_s: int | None
    by: str


class GroupCallRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A group conversation's call (room ``conv:CONV``) that started or ended, for the
    conversation's history: ``users`` are everyone who joined it (started: the first)."""

    call: str
    event: Literal["started", "ended"]
    conv: str
    by: str
    users: tuple[str, ...]
    duration_s: int | None
