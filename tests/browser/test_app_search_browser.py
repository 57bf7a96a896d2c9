"""Search across conversations in the web app, in real Chromium: a Chinese query finds and
marks Chinese text, hits are grouped by conversation and come by page, message text is
never taken as markup, and choosing a hit opens its conversation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.chat_pages import (
    PHONE,
    chromium,
    new_page,
    send,
    sign_in,
    unlabelled,
    until,
)
from tests.helpers import Node

pytestmark = pytest.mark.browser

RESULTS_JS = """
() => [...document.querySelectorAll('#search-results .search-group')].map((group) => [
  group.querySelector('h3').textContent,
  [...group.querySelectorAll('.hit')].map((hit) => ({
    seq: Number(hit.dataset.seq),
    snippet: hit.querySelector('.hit-snippet').textContent,
    marks: [...hit.querySelectorAll('mark')].map((m) => m.textContent),
  })),
])
"""


async def _results(page: Page) -> list[Any]:
    return list(await page.evaluate(RESULTS_JS))


async def _hits(page: Page) -> int:
    return int(await page.locator("#search-results .hit").count())


async def _search(page: Page, query: str) -> None:
    await page.fill("#search-input", query)
    await page.press("#search-input", "Enter")


async def _status(page: Page) -> str:
    return (await page.text_content("#search-status")) or ""


async def test_search_finds_chinese_with_highlights_pages_and_opens_the_hit(
    node: Node, tmp_path: Path
) -> None:
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        _, bob, bob_log = await new_page(browser, locale="zh-CN")
        await sign_in(ada, node.url, "Ada")
        await sign_in(bob, node.url, "Bob")

        # A group and a direct conversation, with Chinese and English messages, one of which
        # looks like markup.
        await ada.click("#new-group")
        await ada.fill("#group-name", "Kyoto trip")
        await ada.fill("#group-members", "bob")
        await ada.press("#group-members", "Enter")
        await ada.wait_for_selector("#composer-text")
        group = await ada.evaluate("() => huddleApp.current")
        for text in (
            "去京都的火车票买好了",
            "Booked the ryokan near Kiyomizu-dera, a walk from 京都駅",
            '<img src=x onerror="window.injected=1"> 京都 <b>bold</b>',
            "大阪见",
        ):
            await send(ada, text)
        # Twenty-five more with the same word, sent through the SDK: more than one page.
        await ada.evaluate(
            "async (conv) => { for (let i = 1; i <= 25; i++)"
            " await huddleApp.chat.send(conv, `ryokan option ${i}`); }",
            group,
        )
        await until(
            lambda: ada.evaluate("() => huddleApp.chat.outbox.length === 0"), "sent", ada_log
        )
        direct = await bob.evaluate(
            "async () => (await huddleApp.chat.request('chat.send',"
            " {to: 'ada', text: 'Which ryokan did you book?', client_id: 'b-1'})).conv"
        )
        await until(lambda: _equals(bob.locator("button.conv").count(), 2), "bob's list", bob_log)

        # Bob searches 京都: the three messages that hold it, in the group, each marked.
        await _search(bob, "京都")
        await until(lambda: _hits(bob), "hits for 京都", bob_log)
        results = await _results(bob)
        assert [name for name, _ in results] == ["Kyoto trip"]
        hits = results[0][1]
        assert [h["seq"] for h in hits] == [4, 3, 2], hits
        for h in hits:
            assert h["marks"] and all(m == "京都" for m in h["marks"]), h
        assert hits[2]["snippet"] == "去京都的火车票买好了"
        # The message that looks like markup is shown as its text, not run as markup.
        assert hits[0]["snippet"].startswith("<img src=x")
        assert await bob.locator("#search-results img, #search-results b").count() == 0
        assert await bob.evaluate("() => window.injected") is None
        assert await _status(bob) == "3 条消息包含“京都”"
        assert await bob.locator("#convs").is_hidden(), "the results take the list's place"
        assert await unlabelled(bob) == []
        await bob.screenshot(path=str(tmp_path / "bob-search-kyoto-zh.png"))

        # A query with nothing found says so.
        await _search(bob, "札幌")
        await until(lambda: _contains(_status(bob), "没有包含“札幌”的消息"), "none", bob_log)
        assert await _hits(bob) == 0

        # ryokan: 27 messages in two conversations; 20 come first, then the rest on request.
        await _search(bob, "RYOKAN")
        await until(lambda: _equals(_hits(bob), 20), "the first page", bob_log)
        assert await _status(bob) == "至少 20 条消息包含“RYOKAN”"
        await bob.click("#search-more")
        await until(lambda: _equals(_hits(bob), 27), "the second page", bob_log)
        assert await bob.locator("#search-more").count() == 0, "nothing more to ask"
        results = await _results(bob)
        assert [name for name, _ in results] == ["ada", "Kyoto trip"]
        seqs = [h["seq"] for h in results[1][1]]
        assert len(seqs) == len(set(seqs)) == 26, "no hit twice across the pages"
        assert all(h["marks"] == ["ryokan"] for _, group_hits in results for h in group_hits)
        assert await bob.evaluate("() => document.activeElement.classList.contains('hit')")

        # Choosing a hit opens its conversation.
        await bob.click(f"#search-results .hit[data-conv='{direct}']")
        await until(
            lambda: _equals(bob.evaluate("() => huddleApp.current"), direct), "opened", bob_log
        )
        await until(lambda: bob.locator("#messages li[data-seq]").count(), "its messages")
        await bob.click(f"#search-results .hit[data-conv='{group}'][data-seq='3']")
        await until(lambda: _equals(bob.evaluate("() => huddleApp.current"), group), "group")
        await bob.locator("#messages li[data-seq='3']").wait_for()
        # The results stay, the chosen hit marked, while messages come in.
        await send(ada, "one more ryokan")
        await until(lambda: bob.locator("button.conv:has-text('one more ryokan')").count(), "live")
        assert await _hits(bob) == 27
        assert await bob.locator("#search-results .hit.chosen").get_attribute("data-seq") == "3"
        await bob.screenshot(path=str(tmp_path / "bob-search-opened-zh.png"))

        # Clearing brings the list back; Escape does too.
        await bob.click("#search-clear")
        await until(lambda: bob.locator("#convs").is_visible(), "the list back", bob_log)
        await _search(bob, "大阪")
        await until(lambda: _hits(bob), "大阪", bob_log)
        await bob.press("#search-input", "Escape")
        await until(lambda: bob.locator("#convs").is_visible(), "escape", bob_log)

        # On a phone, in English: the same search, and a hit opens the conversation pane.
        _, phone, phone_log = await new_page(browser, viewport=PHONE)
        await sign_in(phone, node.url, "Bob")
        await _search(phone, "京都 ryokan")
        await until(lambda: _hits(phone), "phone hits", phone_log)
        results = await _results(phone)
        assert [h["marks"] for h in results[0][1]] == [["ryokan", "京都"]], results
        assert await _status(phone) == "1 message with “京都 ryokan”"
        await phone.screenshot(path=str(tmp_path / "phone-search.png"))
        await phone.click("#search-results .hit")
        await phone.wait_for_selector("#composer-text")
        assert await phone.locator(".conversation").is_visible()

        errors = [
            line
            for line in ada_log + bob_log + phone_log
            if line.startswith(("pageerror", "error"))
        ]
        assert not errors, errors


async def _equals(value: Any, want: Any) -> bool:
    return bool(await value == want)


async def _contains(value: Any, part: Any) -> bool:
    return part in await value
