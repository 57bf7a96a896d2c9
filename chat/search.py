"""Full-text search over the messages of the conversations a user belongs to.

The index lives in Redis beside each conversation: one sorted set per term
(``{conv:ID}:ix:TERM``, member and score the message's seq), written by the same script that
stores, edits or recalls the message. A query intersects its terms' sets per conversation
(newest first), then checks each candidate's text exactly (chat.text.matches), since
bigram intersection alone can match text where the bigrams are apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from chat import wire as w
from chat.store import ChatStore
from chat.text import highlight, matches, query_terms
from signaling.keys import conv_key

# Candidates read per conversation and round; a round reads older ones when filters or the
# exact check dropped too many.
CANDIDATES_PER_ROUND: Final = 200
MAX_ROUNDS: Final = 10


async def search(store: ChatStore, convs: Sequence[str], req: w.ChatSearch) -> list[w.SearchHit]:
    terms = query_terms(req.query)
    if not terms or not convs:
        return []
    hits: list[w.SearchHit] = []
    for conv in convs:
        hits.extend(await _search_conv(store, conv, terms, req))
    hits.sort(key=lambda h: (h.message.ts, h.message.seq), reverse=True)
    return hits[: req.limit]


async def _search_conv(
    store: ChatStore, conv: str, terms: list[str], req: w.ChatSearch
) -> list[w.SearchHit]:
    keys = [conv_key(conv, f"ix:{t}") for t in terms]
    found: list[w.SearchHit] = []
    below = "+inf"
    for _ in range(MAX_ROUNDS):
        seqs = await _candidates(store, keys, below)
        if not seqs:
            break
        for msg in await store.messages(conv, seqs):
            if _wanted(msg, req):
                text = " ".join(t for t in (msg.text, msg.media and msg.media.name) if t)
                if matches(text, req.query):
                    marked = highlight(text, req.query)
                    found.append(
                        w.SearchHit(
                            conv=conv,
                            message=msg,
                            snippet=marked.snippet,
                            ranges=[(a, b) for a, b in marked.ranges],
                        )
                    )
        if len(found) >= req.limit or len(seqs) < CANDIDATES_PER_ROUND:
            break
        below = f"({min(seqs)}"
    return found


async def _candidates(store: ChatStore, keys: list[str], below: str) -> list[int]:
    """Up to a round's worth of seqs present under every term, newest first."""
    client = store.redis
    if len(keys) == 1:
        raw: Any = await client.zrevrangebyscore(
            keys[0], below, "-inf", start=0, num=CANDIDATES_PER_ROUND
        )
        return [int(s) for s in raw]
    # Intersect from the rarest term: walk its set newest first and keep what all others have.
    sizes = [await client.zcard(k) for k in keys]
    order = sorted(range(len(keys)), key=lambda i: sizes[i])
    if sizes[order[0]] == 0:
        return []
    rarest, others = keys[order[0]], [keys[i] for i in order[1:]]
    out: list[int] = []
    cursor = below
    while len(out) < CANDIDATES_PER_ROUND:
        page: Any = await client.zrevrangebyscore(rarest, cursor, "-inf", start=0, num=500)
        if not page:
            break
        async with client.pipeline(transaction=False) as pipe:
            for key in others:
                pipe.zmscore(key, page)
            scores = await pipe.execute()
        for i, member in enumerate(page):
            if all(s[i] is not None for s in scores):
                out.append(int(member))
        cursor = f"({int(page[-1])}"
        if len(page) < 500:
            break
    return out[:CANDIDATES_PER_ROUND]


def _wanted(msg: w.ChatMessage, req: w.ChatSearch) -> bool:
    if msg.recalled or msg.kind == "system":
        return False
    if req.sender is not None and msg.sender != req.sender:
        return False
    if req.after_ts is not None and msg.ts < req.after_ts:
        return False
    return req.before_ts is None or msg.ts < req.before_ts
