"""What a message is found by and how a found message is shown: the rules every search
backend shares (the history stores of chat.history, which chat.search asks).
Pure.

A message is indexed under the terms of its text and of the name of a file it carries; a
recalled message under none. Candidates a backend finds by their terms are then checked
exactly (chat.text.matches) and against the request's filters, so every backend answers the
same query with the same hits.
"""

from __future__ import annotations

from chat import wire as w
from chat.text import highlight, index_terms, matches


def message_terms(msg: w.ChatMessage) -> list[str]:
    """Search terms of a message: its text, and the name of a file it carries."""
    parts = [msg.text or ""]
    if msg.media is not None:
        parts.append(msg.media.name)
    return index_terms(" ".join(parts)) if not msg.recalled else []


def wanted(msg: w.ChatMessage, req: w.ChatSearch) -> bool:
    """Whether the request's filters keep ``msg`` (recalled and system messages never)."""
    if msg.recalled or msg.kind == "system":
        return False
    if req.sender is not None and msg.sender != req.sender:
        return False
    if req.after_ts is not None and msg.ts < req.after_ts:
        return False
    return req.before_ts is None or msg.ts < req.before_ts


def hits(conv: str, messages: list[w.ChatMessage], req: w.ChatSearch) -> list[w.SearchHit]:
    """The candidates that really match ``req``, each with its highlighted snippet."""
    out = []
    for msg in messages:
        if not wanted(msg, req):
            continue
        text = " ".join(t for t in (msg.text, msg.media and msg.media.name) if t)
        if not matches(text, req.query):
            continue
        marked = highlight(text, req.query)
        out.append(
            w.SearchHit(
                conv=conv,
                message=msg,
                snippet=marked.snippet,
                ranges=[(a, b) for a, b in marked.ranges],
            )
        )
    return out
