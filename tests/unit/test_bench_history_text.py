"""benchmarks.history_load's message texts: the search terms spread evenly over the
conversations, whatever order the messages are sent in."""

from __future__ import annotations

import random
from collections import Counter

from benchmarks.history_load import COMMON, RARE, RARE_EVERY, rare_offsets, text_of


def test_each_conversation_gets_its_share_of_every_term() -> None:
    rng = random.Random(1)
    convs = [f"c{i}" for i in range(100)]
    offsets = rare_offsets(convs)
    counts: dict[str, Counter[str]] = {conv: Counter() for conv in convs}
    # Round-robin, as the benchmark seeds them: the k-th turn sends each conversation its
    # k-th message.
    for n in range(1, RARE_EVERY + 1):
        for conv in convs:
            text = text_of(rng, n, offsets[conv])
            for term in (*RARE.values(), *COMMON.values()):
                if term in text:
                    counts[conv][term] += 1
    for conv, found in counts.items():
        assert found[RARE["latin rare"]] == found[RARE["cjk rare"]] == 1, conv
        assert found[COMMON["latin common"]] == found[COMMON["cjk common"]] == RARE_EVERY // 5


def test_the_same_texts_every_run() -> None:
    first = [text_of(random.Random(7), n, 3) for n in range(50)]
    assert first == [text_of(random.Random(7), n, 3) for n in range(50)]
