"""How each logged event changes the stored history: the same changes the Redis scripts make
(chat/lua/rewrite.lua, react.lua, read.lua), so that a copy made by applying the log equals
what Redis holds. Pure.
"""

from __future__ import annotations

from typing import Final

import msgspec

from chat import wire as w
from chat.history.store import HistoryError, LogEvent

_DECODER: Final = msgspec.json.Decoder(LogEvent)


def decode_event(blob: bytes) -> LogEvent:
    """One entry of a conversation's log, as chat.store writes it."""
    try:
        return _DECODER.decode(blob)
    except msgspec.DecodeError as exc:
        raise HistoryError(f"not a conversation log event: {exc}") from None


def page_range(
    last: int, *, before: int | None, after: int | None, around: int | None, limit: int
) -> tuple[int, int]:
    """The seqs ``start..end`` (inclusive; empty when end < start) of a ``chat.history``
    page, given the conversation's last seq: ``around`` wins over ``before``, which wins over
    ``after``; none of them: the newest."""
    if around is not None:
        start = max(1, around - limit // 2)
    elif before is not None:
        start = max(1, min(before, last + 1) - limit)
    elif after is not None:
        start = after + 1
    else:
        start = max(1, last - limit + 1)
    end = min(last, start + limit - 1)
    if before is not None and around is None:
        end = min(end, before - 1)
    return start, end


def edited(old: w.ChatMessage, event: w.ChatEdited) -> w.ChatMessage:
    """The message after an edit (chat.service.edit makes the same)."""
    return msgspec.structs.replace(
        old, text=event.text, mentions=event.mentions, edited=True, edited_ts=event.edited_ts
    )


def recalled(old: w.ChatMessage, event: w.ChatRecalled) -> w.ChatMessage:
    """What is left of a recalled message: who sent it when, nothing of what it said."""
    return w.ChatMessage(
        seq=old.seq,
        ts=old.ts,
        sender=old.sender,
        kind=old.kind,
        client_id=old.client_id,
        reply_to=old.reply_to,
        recalled=True,
        recalled_by=event.by,
    )


def reacted(
    reactions: dict[str, list[str]] | None, event: w.ChatReaction
) -> dict[str, list[str]] | None:
    """A message's reactions after one changed: the event carries the emoji's users now."""
    out = dict(reactions or {})
    if event.users:
        out[event.emoji] = list(event.users)
    else:
        out.pop(event.emoji, None)
    return out or None


def reads_moved(msg: w.ChatMessage) -> list[tuple[str, int]]:
    """The read positions storing ``msg`` moved, (user, seq): a send moves its sender's to
    it (chat/lua/send.lua, which also stores call records: system messages with a client
    id); ``member_joined`` starts the added users' just before it, what came before being
    history to them (chat/lua/members.lua); other system messages move none."""
    if msg.kind != "system" or msg.client_id is not None:
        return [(msg.sender, msg.seq)]
    if msg.system is not None and msg.system.event == "member_joined":
        return [(user, msg.seq - 1) for user in msg.system.users or ()]
    return []


def event_number(event: LogEvent) -> int:
    """The event's number in its conversation's log."""
    if event.ev is None:
        # A broadcast channel's receipt: logged in the reader's feed, never in a conversation.
        raise HistoryError("a receipt without a conversation event number is not logged")
    return event.ev
