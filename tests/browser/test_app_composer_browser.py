"""The web app's message boxes in real Chromium: the composer and a thread's reply box take
several lines (Shift+Enter; Enter sends, but not while an input method composes), and a text
longer than the node takes (its chat_max_text_chars, which its hello reply tells the app: 4,000
code points by default, 1,000 here; an emoji is one) is said so, in English and Chinese, and
kept rather than cut short. A reload opens the conversation that was open again,
on a phone too.
"""

from __future__ import annotations

from typing import Any, Final

import pytest
from playwright.async_api import Page

from tests.browser.chat_pages import (
    PHONE,
    chromium,
    new_page,
    open_conversation,
    sign_in,
    synced,
    texts,
    until,
)
from tests.conftest import StartNode
from tests.helpers import Node

pytestmark = pytest.mark.browser

# Not the default (4,000): the app follows the node's limit.
MAX: Final = 1000
BOX: Final = "#composer-text"
COUNT: Final = "#composer-text-count"
MESSAGES: Final = "#messages li[data-seq]:not(.system)"

# A keydown as the browser sends it while an input method composes (Chinese, Japanese), or
# as a plain Enter (a synthetic one: Playwright's own would insert nothing either way).
ENTER_JS: Final = """([selector, init]) => document.querySelector(selector).dispatchEvent(
  new KeyboardEvent("keydown", {key: "Enter", bubbles: true, cancelable: true, ...init}))"""


async def enter(page: Page, selector: str, **init: Any) -> None:
    await page.evaluate(ENTER_JS, [selector, init])


async def sent(page: Page) -> int:
    """How many messages the page has sent or is sending in the open conversation."""
    return int(
        await page.evaluate(
            "(sel) => document.querySelectorAll(sel + ', #messages li.pending').length", MESSAGES
        )
    )


async def lines_shown(page: Page, selector: str) -> int:
    """How many lines the text at ``selector`` takes on screen."""
    return int(
        await page.evaluate(
            """(sel) => new Set([...document.querySelector(sel).getClientRects()]
                 .map((r) => Math.round(r.top))).size""",
            selector,
        )
    )


async def test_several_lines_enter_while_composing_and_texts_too_long(
    start_node: StartNode,
) -> None:
    node = await start_node(chat_max_text_chars=MAX)
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        _, bob, bob_log = await new_page(browser, locale="zh-CN")
        await sign_in(ada, node.url, "ada")
        await sign_in(bob, node.url, "bob")
        await ada.click("#new-chat")
        await ada.fill("#chat-peer", "bob")
        await ada.press("#chat-peer", "Enter")
        await ada.wait_for_selector(BOX)
        assert await ada.evaluate(f"() => document.querySelector('{BOX}').tagName") == "TEXTAREA"
        one_line = await ada.evaluate(f"() => document.querySelector('{BOX}').offsetHeight")

        # Shift+Enter starts a new line; Enter sends. Bob reads both lines, shown as two.
        await ada.type(BOX, "first line")
        await ada.press(BOX, "Shift+Enter")
        await ada.type(BOX, "second line")
        assert await ada.input_value(BOX) == "first line\nsecond line"
        assert await sent(ada) == 0
        await ada.press(BOX, "Enter")
        assert await ada.input_value(BOX) == ""
        await until(lambda: bob.locator("button.conv", has_text="ada").count(), "bob's chat")
        await open_conversation(bob, "ada")
        await until(lambda: _equals(texts(bob), ["first line\nsecond line"]), "bob reads", bob_log)
        assert await lines_shown(bob, f"{MESSAGES} .text") == 2
        # Pasted lines stay lines; the box grows with them, up to a few lines, then scrolls.
        await ada.focus(BOX)
        await ada.keyboard.insert_text("\n".join(f"pasted {i}" for i in range(1, 13)))
        assert (await ada.input_value(BOX)).split("\n")[-1] == "pasted 12"
        box = await ada.evaluate(
            f"""() => {{ const b = document.querySelector('{BOX}');
                 return [b.offsetHeight, b.scrollHeight, b.clientHeight]; }}"""
        )
        assert one_line * 3 < box[0] < one_line * 9 and box[1] > box[2], (one_line, box)
        await ada.fill(BOX, "")
        assert await ada.evaluate(f"() => document.querySelector('{BOX}').offsetHeight") == one_line

        # Enter that ends an input method's composition picks its text; it never sends.
        await ada.fill(BOX, "你好")
        await enter(ada, BOX, isComposing=True)
        await enter(ada, BOX, keyCode=229)
        assert await ada.input_value(BOX) == "你好"
        assert await sent(ada) == 1
        await enter(ada, BOX)
        await until(
            lambda: _equals(texts(bob), ["first line\nsecond line", "你好"]), "bob", bob_log
        )

        # 1,001 characters pasted: all kept, said too long, not sent on Enter.
        await ada.focus(BOX)
        await ada.keyboard.insert_text("a" * (MAX + 1))
        assert len(await ada.input_value(BOX)) == MAX + 1
        too_long = "Too long: 1 character over the limit of 1,000. Shorten it to send."
        assert await ada.text_content(COUNT) == too_long
        assert await ada.get_attribute(BOX, "aria-invalid") == "true"
        # One long word neither widens the page nor pushes Send out of it.
        assert await ada.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
        await ada.press(BOX, "Enter")
        await ada.click("#composer button[type=submit]")
        assert len(await ada.input_value(BOX)) == MAX + 1
        assert await ada.is_visible(f"{COUNT}.refused")
        assert await sent(ada) == 2
        # One fewer: it goes, whole; the counter said what was left near the limit.
        await ada.press(BOX, "Backspace")
        assert await ada.text_content(COUNT) == "0 characters left"
        await ada.press(BOX, "Enter")
        await until(lambda: _contains(texts(bob), "a" * MAX), "1,000 characters", bob_log)
        assert not await ada.is_visible(COUNT)
        await ada.type(BOX, "short")
        assert not await ada.is_visible(COUNT)

        # 1,000 emoji are 2,000 UTF-16 units and 1,000 characters for the node: they go.
        await ada.fill(BOX, "")
        await ada.focus(BOX)
        await ada.keyboard.insert_text("😀" * MAX)
        assert await ada.text_content(COUNT) == "0 characters left"
        await ada.press(BOX, "Enter")
        await until(lambda: _contains(texts(bob), "😀" * MAX), "1,000 emoji", bob_log)

        # An edit: Shift+Enter there too; Escape cancels it and the draft is back.
        await ada.fill(BOX, "a draft")
        mine = f"{MESSAGES}:has-text('你好')"
        await ada.click(f"{mine} .msg-more")
        await ada.click(f"{mine} .msg-action.edit")
        assert await ada.input_value(BOX) == "你好"
        await ada.press(BOX, "End")
        await ada.press(BOX, "Shift+Enter")
        assert await ada.input_value(BOX) == "你好\n"
        await ada.press(BOX, "Escape")
        assert await ada.input_value(BOX) == "a draft"
        assert not await ada.is_visible("#compose-bar")

        # The thread's reply box is the same box: lines, and the limit said in Chinese.
        thread = "#thread-text"
        first = f"{MESSAGES}:has-text('first line')"
        await bob.click(f"{first} .msg-more")
        await bob.click(f"{first} .msg-action.thread")
        await bob.wait_for_selector(thread)
        assert await bob.evaluate(f"() => document.querySelector('{thread}').tagName") == "TEXTAREA"
        await bob.type(thread, "回复")
        await bob.press(thread, "Shift+Enter")
        await bob.type(thread, "第二行")
        await enter(bob, thread, isComposing=True)
        assert await bob.input_value(thread) == "回复\n第二行"
        await bob.press(thread, "Enter")
        replies = "#thread-messages li.msg:not(.root) .text"
        await until(
            lambda: _equals(bob.locator(replies).all_text_contents(), ["回复\n第二行"]), "reply"
        )
        await bob.focus(thread)
        await bob.keyboard.insert_text("长" * (MAX + 2))
        await bob.press(thread, "Enter")
        assert len(await bob.input_value(thread)) == MAX + 2
        # The words of i18n.js, in Chinese punctuation.
        too_long_zh = "太长了\uff1a超出上限 1,000 个字符 2 个。删减后才能发送。"
        assert await bob.text_content(f"{thread}-count") == too_long_zh
        assert await bob.locator(replies).count() == 1
        errors = [line for line in ada_log + bob_log if line.startswith("pageerror")]
        assert not errors, errors


async def test_a_reload_opens_the_conversation_that_was_open(node: Node) -> None:
    async with chromium() as browser:
        _, ada, log = await new_page(browser, viewport=PHONE)
        await sign_in(ada, node.url, "ada")
        await new_group(ada, "Plans", log)
        await ada.click(".back")
        await new_group(ada, "Later", log)
        await ada.fill(BOX, "half written")

        # On a phone the conversation, not the list, is the screen after a reload.
        await ada.reload()
        await until(lambda: synced(ada), "ada back", log)
        await until(lambda: _title(ada, "Later"), "Later open again", log)
        assert await ada.is_visible("#conv-title")
        assert not await ada.is_visible("#convs")
        assert await ada.input_value(BOX) == "half written"

        # Back to the list: a reload stays there.
        await ada.click(".back")
        await ada.reload()
        await until(lambda: synced(ada), "ada back again", log)
        await ada.wait_for_timeout(300)
        assert await ada.is_visible("#convs")
        assert not await ada.is_visible("#conv-title")

        # A conversation the user is no longer in is not opened.
        await ada.click("button.conv:has-text('Plans')")
        await until(lambda: _title(ada, "Plans"), "Plans open", log)
        conv = await ada.evaluate("() => huddleApp.current")
        await ada.evaluate("(conv) => huddleApp.chat.leave(conv)", conv)
        await until(lambda: _gone(ada, conv), "Plans left", log)
        await ada.reload()
        await until(lambda: synced(ada), "ada back once more", log)
        await ada.wait_for_timeout(300)
        assert await ada.evaluate("() => huddleApp.current") is None
        assert await ada.is_visible("#convs")
        errors = [line for line in log if line.startswith("pageerror")]
        assert not errors, errors


async def new_group(page: Page, name: str, log: list[str]) -> None:
    await page.click("#new-group")
    await page.fill("#group-name", name)
    await page.press("#group-name", "Enter")
    await until(lambda: _title(page, name), f"{name} open", log)


async def _title(page: Page, name: str) -> bool:
    title = page.locator("#conv-title")
    return bool(
        await title.count() and await title.is_visible() and await title.text_content() == name
    )


async def _gone(page: Page, conv: str) -> bool:
    return not await page.evaluate("(conv) => !!huddleApp.chat.conversation(conv)", conv)


async def _equals(value: Any, want: Any) -> bool:
    return bool(await value == want)


async def _contains(value: Any, want: Any) -> bool:
    return want in await value
