"""A one-to-one call that started or ended, as chat records it in the callers' conversation.

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
