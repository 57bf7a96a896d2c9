"""Full-text search over the messages of the conversations a user belongs to.

The index lives in Redis beside each conversation: one sorted set per term
(``{conv:ID}:ix:TERM``, member and score the message's seq), written behind the log by
chat.indexer (and kept right by the scripts that edit or recall a message); a query first
brings each conversation's index up to its last message. A query intersects its terms' sets in each
conversation, newest first, inside one script per conversation (rarest term first), all
conversations in one pipeline; then each candidate's text is checked exactly
(chat.text.matches), since bigram intersection alone can match text where the bigrams are
apart.
"""

from __future__ import annotations

from typing import Any, Final

from chat import hits as found
from chat import window
from chat import wire as w
from chat.history.store import HistoryStore
from chat.indexer import catch_up
from chat.store import ChatStore
from chat.text import query_terms
from signaling.keys import conv_key

# Candidates asked of each conversation per round, and rounds at most: a round reads older
# candidates when filters or the exact check dropped too many.
CANDIDATES_PER_ROUND: Final = 100
MAX_ROUNDS: Final = 10
# Index entries one script call may look at (it says where to go on when it stops early).
SCAN_BUDGET: Final = 20_000


class _Cursor:
    __slots__ = ("below", "conv", "hits")

    def __init__(self, conv: str) -> None:
        self.conv = conv
        self.below = "+inf"
        self.hits: list[w.SearchHit] = []


async def search(
    store: ChatStore, convs: list[str], req: w.ChatSearch, history: HistoryStore | None = None
) -> list[w.SearchHit]:
    terms = query_terms(req.query)
    if not terms or not convs:
        return []
    await catch_up(store, convs)
    active = [_Cursor(c) for c in convs]
    done: list[_Cursor] = []
    for _ in range(MAX_ROUNDS):
        if not active:
            break
        async with store.redis.pipeline(transaction=False) as pipe:
            for cur in active:
                await store.intersect(
                    keys=[conv_key(cur.conv, f"ix:{t}") for t in terms],
                    args=[cur.below, CANDIDATES_PER_ROUND, SCAN_BUDGET],
                    client=pipe,
                )
            replies: list[Any] = await pipe.execute()
        still: list[_Cursor] = []
        for cur, reply in zip(active, replies, strict=True):
            below = _text(reply[0])
            seqs = [int(s) for s in reply[1:]]
            if seqs:
                # Messages that left the hot window are read from the history store.
                msgs = await window.messages(store, history, cur.conv, 0, seqs)
                cur.hits.extend(found.hits(cur.conv, msgs, req))
            cur.below = below
            if below and len(cur.hits) < req.limit:
                still.append(cur)
            else:
                done.append(cur)
        active = still
    hits = [h for cur in done + active for h in cur.hits]
    hits.sort(key=lambda h: (h.message.ts, h.message.seq), reverse=True)
    return hits[: req.limit]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
