"""Search over the history store of real nodes: members only, CJK and mixed text, filters,
edits and recalls."""

from __future__ import annotations

import asyncio
import time

import pytest

from chat import wire as w
from chat.history import sql as history_sql
from huddle.chat import ChatClient
from huddle.client import RequestError
from tests.conftest import StartNode
from tests.helpers import Node


async def chat(node: Node, identity: str) -> ChatClient:
    client = ChatClient(await node.client(identity))
    await client.sync()
    return client


async def search(c: ChatClient, query: str, **fields: object) -> list[w.SearchHit]:
    reply = await c.request(w.ChatSearch(id="", query=query, **fields))  # type: ignore[arg-type]
    return reply.hits  # type: ignore[no-any-return]


def texts(hits: list[w.SearchHit]) -> list[str | None]:
    return [h.message.text for h in hits]


@pytest.mark.redis_cluster
async def test_cjk_mixed_and_latin_text_is_found_newest_first(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = (await alice.create("group", "g", ["bob"])).conv
    for text in (
        "明天下午三点开会",
        "東京都に行きます",
        "회의는 내일입니다",
        "明天meeting改到3点",
        "The Café opens at nine",
        "东京 和 京都",
    ):
        await alice.send(conv, text)
    assert texts(await search(bob, "开会")) == ["明天下午三点开会"]
    assert texts(await search(bob, "明天")) == ["明天meeting改到3点", "明天下午三点开会"]
    assert texts(await search(bob, "东京都")) == []  # bigrams 东京 + 京都 apart: no match
    assert texts(await search(bob, "東京")) == ["東京都に行きます"]
    assert texts(await search(bob, "회의")) == ["회의는 내일입니다"]
    assert texts(await search(bob, "meeting 改到")) == ["明天meeting改到3点"]
    hits = await search(bob, "cafe")
    assert texts(hits) == ["The Café opens at nine"]
    [(start, end)] = hits[0].ranges
    assert hits[0].snippet[start:end] == "Café"


async def test_only_conversations_of_the_user(node: Node) -> None:
    alice, bob, eve = await chat(node, "alice"), await chat(node, "bob"), await chat(node, "eve")
    conv = (await alice.create("group", "g", ["bob"])).conv
    await alice.send(conv, "secret launch code")
    other = (await eve.create("group", "eve's", [])).conv
    await eve.send(other, "public launch party")
    assert texts(await search(bob, "launch")) == ["secret launch code"]
    assert texts(await search(eve, "launch")) == ["public launch party"]
    with pytest.raises(RequestError) as info:
        await eve.request(w.ChatSearch(id="", query="launch", conv=conv))
    assert info.value.code == "not_member"


async def test_filters_by_conversation_sender_and_date(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    one = (await alice.create("group", "one", ["bob"])).conv
    two = (await alice.create("group", "two", ["bob"])).conv
    first = await alice.send(one, "report draft")
    await asyncio.sleep(0.01)
    middle = int(time.time() * 1000)
    await asyncio.sleep(0.01)
    await bob.send(one, "report final")
    await alice.send(two, "report numbers")
    assert texts(await search(bob, "report", conv=two)) == ["report numbers"]
    assert texts(await search(bob, "report", sender="bob")) == ["report final"]
    assert texts(await search(bob, "report", before_ts=middle)) == ["report draft"]
    assert set(texts(await search(bob, "report", after_ts=middle))) == {
        "report final",
        "report numbers",
    }
    assert first.seq == 2


async def test_edits_and_recalls_are_reflected(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = (await alice.create("group", "g", ["bob"])).conv
    sent = await alice.send(conv, "lunch at noon")
    await alice.request(w.ChatEdit(id="", conv=conv, seq=sent.seq, text="dinner at seven"))
    assert texts(await search(bob, "lunch")) == []
    assert texts(await search(bob, "dinner")) == ["dinner at seven"]
    await alice.request(w.ChatRecall(id="", conv=conv, seq=sent.seq))
    assert texts(await search(bob, "dinner")) == []


@pytest.mark.redis_cluster
async def test_search_works_across_nodes(start_node: StartNode) -> None:
    one, two = await start_node(), await start_node()
    alice, bob = await chat(one, "alice"), await chat(two, "bob")
    conv = (await alice.create("group", "g", ["bob"])).conv
    await alice.send(conv, "多节点搜索 works")
    assert texts(await search(bob, "节点")) == ["多节点搜索 works"]


async def test_filtered_matches_are_found_past_the_first_rounds(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_sql, "CANDIDATES_PER_ROUND", 4)
    node = await start_node(chat_send_per_s=1000)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = (await alice.create("group", "g", ["bob"])).conv
    other = (await alice.create("group", "other", ["bob"])).conv
    await bob.send(conv, "weekly report draft one")
    await bob.send(conv, "weekly report draft two")
    for i in range(20):  # newer matches by someone else, and words apart
        await alice.send(conv, f"weekly report {i}")
        await alice.send(other, f"draft of the weekly report {i}")
    found = await search(bob, "report draft", sender="bob")
    assert texts(found) == ["weekly report draft two", "weekly report draft one"]
    assert len(await search(bob, "weekly report", limit=50)) == 42
