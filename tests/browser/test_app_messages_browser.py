"""The web app's messages in real Chromium, with three users in a group: a reply with its
quote (which jumps to the root), @mentions picked from the offered members by keyboard,
reactions, an edit and its earlier version, a recall, a thread, and who has read a message;
each done in one browser and seen in another. Then jumping into a long history and scrolling
back to the live end, and edits, reactions and recalls made while a device was offline or
reloading, which it shows once it is back.
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
    open_conversation,
    send,
    sign_in,
    texts,
    until,
)
from tests.conftest import StartNode
from tests.helpers import Node

pytestmark = pytest.mark.browser

UNLABELLED_JS = """
() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !el.textContent.trim())
  .map((el) => el.outerHTML)
"""


def li(seq: int) -> str:
    return f'#messages li[data-seq="{seq}"]'


async def seq_of(page: Page, text: str) -> int:
    """The seq of the message on screen whose text is ``text``."""
    rows: list[list[Any]] = await page.evaluate(
        """(want) => [...document.querySelectorAll('#messages li[data-seq]')]
             .filter((li) => li.querySelector('.text')?.textContent === want)
             .map((li) => [Number(li.dataset.seq)])""",
        text,
    )
    assert rows, f"no message {text!r} on screen"
    return int(rows[0][0])


async def act(page: Page, seq: int, action: str) -> None:
    """Open a message's actions and pick one (a class: reply, thread, edit, recall, read-by)."""
    await page.click(f"{li(seq)} .msg-more")
    await page.click(f"{li(seq)} .msg-action.{action}")


async def text_of(page: Page, selector: str) -> str:
    if not await page.locator(selector).count():
        return ""
    return str(await page.locator(selector).first.text_content() or "")


async def has(page: Page, selector: str, part: str = "") -> bool:
    return part in await text_of(page, selector) if await page.locator(selector).count() else False


async def test_three_users_reply_mention_react_edit_recall_thread_and_read_by(
    node: Node, tmp_path: Path
) -> None:
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        _, bob, bob_log = await new_page(browser)
        _, carol, carol_log = await new_page(browser, locale="zh-CN", viewport=PHONE)
        for page, name in ((ada, "Ada"), (bob, "Bob"), (carol, "Carol")):
            await sign_in(page, node.url, name)
        await ada.click("#new-group")
        await ada.fill("#group-name", "Plans")
        await ada.fill("#group-members", "bob, carol")
        await ada.press("#group-members", "Enter")
        await ada.wait_for_selector("#composer-text")
        await send(ada, "hello all")
        await until(lambda: _equals(texts(ada), ["hello all"]), "ada's message", ada_log)
        root = await seq_of(ada, "hello all")
        await open_conversation(bob, "Plans")
        await open_conversation(carol, "Plans")
        await until(lambda: _equals(texts(bob), ["hello all"]), "bob sees it", bob_log)
        await until(lambda: _equals(texts(carol), ["hello all"]), "carol sees it", carol_log)

        # Replies: bob picks "reply"; the composer says to what, and the reply can be
        # cancelled; the sent reply quotes its root, for everyone.
        await act(bob, root, "reply")
        assert await bob.is_visible("#compose-bar")
        assert "hello all" in await text_of(bob, "#compose-bar")
        await bob.click("#cancel-reply")
        assert not await bob.is_visible("#compose-bar")
        await act(bob, root, "reply")
        await send(bob, "sounds good")
        assert not await bob.is_visible("#compose-bar")
        await until(lambda: _equals(texts(ada), ["hello all", "sounds good"]), "reply", ada_log)
        reply = await seq_of(ada, "sounds good")
        await until(lambda: has(ada, f"{li(reply)} .quote", "hello all"), "the quote at ada")
        await until(lambda: has(carol, f"{li(reply)} .quote", "hello all"), "the quote at carol")
        # The root counts its reply.
        await until(lambda: has(ada, f"{li(root)} .thread-count", "1 reply"), "1 reply", ada_log)
        # The quote jumps to the root and highlights it.
        await ada.click(f"{li(reply)} .quote")
        await until(lambda: ada.locator(f"{li(root)}.highlight").count(), "root highlighted")

        # Mentions: carol types "@" and picks ada from the offered members by keyboard.
        await carol.click("#composer-text")
        await carol.type("#composer-text", "@a")
        await until(lambda: carol.is_visible("#mention-list"), "offers", carol_log)
        assert await carol.locator("#mention-list [role=option]").all_text_contents() == ["@ada"]
        assert await carol.get_attribute("#composer-text", "aria-expanded") == "true"
        await carol.press("#composer-text", "Enter")
        assert await carol.input_value("#composer-text") == "@ada "
        assert not await carol.is_visible("#mention-list")
        await carol.type("#composer-text", "明天见")
        await carol.press("#composer-text", "Enter")
        await until(lambda: _contains(texts(ada), "@ada 明天见"), "the mention at ada", ada_log)
        mention = await seq_of(ada, "@ada 明天见")
        assert await ada.locator(f"{li(mention)}.mentions-me .mention.me").text_content() == "@ada"
        await until(lambda: has(bob, f"{li(mention)} .mention", "@ada"), "marked at bob")
        assert await bob.locator(f"{li(mention)}.mentions-me").count() == 0

        # Reactions: bob reacts by keyboard; ada sees the count and who; carol adds hers and
        # takes it back.
        await bob.focus(f"{li(root)} .msg-more")
        await bob.keyboard.press("Enter")
        await bob.wait_for_selector(f"{li(root)} .msg-menu")
        await bob.keyboard.press("Tab")
        focused = await bob.evaluate("() => document.activeElement.getAttribute('aria-label')")
        assert focused == "React with ❤️"
        await bob.keyboard.press("Enter")
        chip = f'{li(root)} .reaction[data-emoji="❤️"]'
        await until(lambda: has(ada, f"{chip} .count", "1"), "bob's reaction at ada", ada_log)
        assert "bob" in (await ada.get_attribute(chip, "title") or "")
        await until(lambda: carol.locator(chip).count(), "the reaction at carol", carol_log)
        await carol.click(chip)
        await until(lambda: has(ada, f"{chip} .count", "2"), "two reactions", ada_log)
        assert "bob, carol" in (await ada.get_attribute(chip, "title") or "")
        assert await carol.get_attribute(chip, "aria-pressed") == "true"
        await ada.screenshot(path=str(tmp_path / "ada-reply-mention-reactions.png"))
        await carol.click(chip)
        await until(lambda: has(ada, f"{chip} .count", "1"), "carol's reaction gone", ada_log)

        # Edit: ada edits her message; bob sees the new text, the mark, and the earlier one.
        await act(ada, root, "edit")
        assert await ada.input_value("#composer-text") == "hello all"
        assert await ada.is_visible("#compose-bar.editing")
        await ada.fill("#composer-text", "hello everyone")
        await ada.press("#composer-text", "Enter")
        await until(lambda: has(bob, f"{li(root)} .text", "hello everyone"), "edit at bob")
        await until(lambda: has(bob, f"{li(reply)} .quote", "hello everyone"), "quote follows")
        await bob.click(f"{li(root)} .edited-mark")
        await bob.wait_for_selector("#edit-versions")
        versions = await bob.locator("#edit-versions .version-text").all_text_contents()
        assert versions == ["hello everyone", "hello all"]
        await bob.screenshot(path=str(tmp_path / "bob-edit-history.png"))
        await bob.click(".msg-dialog .dialog-close")
        await until(lambda: _equals(bob.locator(".msg-dialog").count(), 0), "the dialog closed")

        # Recall: carol takes hers back; the others see "message recalled".
        await send(carol, "oops wrong chat")
        await until(lambda: _contains(texts(bob), "oops wrong chat"), "carol's slip", bob_log)
        oops = await seq_of(carol, "oops wrong chat")
        await act(carol, oops, "recall")
        await until(lambda: has(bob, f"{li(oops)} .text", "Message recalled"), "recalled", bob_log)
        await until(lambda: has(ada, f"{li(oops)} .text", "Message recalled"), "at ada", ada_log)
        assert await ada.locator(f"{li(oops)} .msg-more").count() == 0

        # Threads: bob opens the thread from the root's count, replies in it; ada's root
        # counts it live, and her thread panel shows root and replies.
        await bob.click(f"{li(root)} .thread-count")
        await bob.wait_for_selector("#thread-panel")
        await until(
            lambda: _equals(thread_texts(bob), ["hello everyone", "sounds good"]), "thread", bob_log
        )
        # Mentions are offered in the thread too; Tab picks.
        await bob.type("#thread-text", "@ca")
        await until(lambda: bob.is_visible("#thread-mention-list"), "thread offers", bob_log)
        await bob.press("#thread-text", "Tab")
        await bob.type("#thread-text", "in the thread")
        await bob.press("#thread-text", "Enter")
        want = ["hello everyone", "sounds good", "@carol in the thread"]
        await until(lambda: _equals(thread_texts(bob), want), "bob's thread reply", bob_log)
        await until(lambda: has(ada, f"{li(root)} .thread-count", "2 replies"), "2 at ada", ada_log)
        await ada.click(f"{li(root)} .thread-count")
        await until(lambda: _equals(thread_texts(ada), want), "ada's thread panel", ada_log)
        await until(lambda: carol.locator(".mentions-me .mention.me").count(), "carol mentioned")
        # A reply in ada's thread panel shows in bob's, live.
        await ada.fill("#thread-text", "great")
        await ada.press("#thread-text", "Enter")
        await until(lambda: _equals(thread_texts(bob), [*want, "great"]), "live", bob_log)
        await ada.screenshot(path=str(tmp_path / "ada-thread.png"))
        await ada.click("#close-thread")
        assert await ada.locator("#thread-panel").count() == 0
        assert await ada.evaluate("() => document.activeElement.classList.contains('thread-count')")

        # Read by: both others opened the group, so ada's message lists them; her last
        # message's "Read by 2" opens the same list.
        await until(lambda: _read_by(ada, root, ["bob", "carol"]), "read by bob and carol")
        await ada.screenshot(path=str(tmp_path / "ada-read-by.png"))
        await ada.click(".msg-dialog .dialog-close")
        await until(lambda: _equals(ada.locator(".msg-dialog").count(), 0), "the dialog closed")
        await until(lambda: has(ada, ".msg.mine .read-state", "Read by 2"), "read by 2", ada_log)
        await ada.click(".msg.mine .read-state")
        assert await ada.locator("#readers li").all_text_contents() == ["bob", "carol"]
        await ada.click(".msg-dialog .dialog-close")
        await until(lambda: _equals(ada.locator(".msg-dialog").count(), 0), "closed again")

        # The Chinese UI on a phone: the actions and the marks speak Chinese.
        await carol.click(f"{li(root)} .msg-more")
        assert await carol.locator(f"{li(root)} .msg-action.reply").text_content() == "回复"
        await until(lambda: has(carol, f"{li(root)} .thread-count", "条回复"), "zh count")
        await carol.screenshot(path=str(tmp_path / "carol-zh-phone.png"))
        for page in (ada, bob, carol):
            assert await page.evaluate(UNLABELLED_JS) == []
        errors = [
            line
            for line in ada_log + bob_log + carol_log
            if line.startswith(("pageerror", "error"))
        ]
        assert not errors, errors


async def test_jump_into_history_then_scroll_to_the_end_and_changes_made_while_away(
    start_node: StartNode, tmp_path: Path
) -> None:
    node = await start_node(chat_send_per_s=1000)
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        bob_ctx, bob, bob_log = await new_page(browser)
        await sign_in(ada, node.url, "Ada")
        await sign_in(bob, node.url, "Bob")
        await ada.click("#new-group")
        await ada.fill("#group-name", "Archive")
        await ada.fill("#group-members", "bob")
        await ada.press("#group-members", "Enter")
        await ada.wait_for_selector("#composer-text")
        conv = await ada.evaluate("() => huddleApp.current")
        # 60 messages, then a reply to the third one.
        await ada.evaluate(
            """async (conv) => {
                 for (let i = 1; i <= 60; i++)
                   await huddleApp.chat.request(
                     "chat.send", {conv, client_id: "seed" + i, text: "msg " + i});
               }""",
            conv,
        )
        await ada.evaluate(
            "(conv) => huddleApp.chat.send(conv, 'about msg 3', {reply_to: 4})", conv
        )
        # Bob reads in pages of 8.
        await bob.evaluate("() => { huddleApp.chat.pageSize = 8; }")
        await open_conversation(bob, "Archive")
        await until(lambda: _contains(texts(bob), "about msg 3"), "the reply at bob", bob_log)
        assert "msg 3" not in await texts(bob)
        last = await seq_of(bob, "about msg 3")
        # The quote jumps back to message 4 ("msg 3"), with the page around it only.
        await until(lambda: has(bob, f"{li(last)} .quote", "msg 3"), "quote fetched", bob_log)
        await bob.click(f"{li(last)} .quote")
        await until(lambda: bob.locator(f"{li(4)}.highlight").count(), "jumped", bob_log)
        assert await bob.evaluate("(c) => huddleApp.chat.hasNewer(c)", conv)
        assert await bob.is_visible("#to-latest")
        assert await bob.locator(li(last)).count() == 0
        await bob.screenshot(path=str(tmp_path / "bob-jumped.png"))

        # Scrolling down walks back to the live end, with every message once.
        async def scrolled_to_end() -> bool:
            await bob.evaluate(
                "() => { const l = document.getElementById('messages');"
                " l.scrollTop = l.scrollHeight; }"
            )
            return bool(await bob.locator(li(last)).count())

        await until(scrolled_to_end, "the live end again", bob_log)
        seqs = await bob.evaluate(
            "() => [...document.querySelectorAll('#messages li[data-seq]')]"
            ".map((li) => Number(li.dataset.seq))"
        )
        assert seqs == list(range(seqs[0], last + 1)), seqs
        assert not await bob.is_visible("#to-latest")
        # A new message joins the window live again.
        await send(ada, "live again")
        await until(lambda: _contains(texts(bob), "live again"), "live message", bob_log)

        # Bob goes offline; ada edits, reacts and recalls. Back online, bob's replay shows it.
        await bob_ctx.set_offline(True)
        await until(lambda: _conn_state(bob, "reconnecting"), "bob offline", bob_log)
        await ada.evaluate(
            """async (conv) => {
                 await huddleApp.chat.edit(conv, 11, "msg 10 (fixed)");
                 await huddleApp.chat.react(conv, 12, "❤️");
               }""",
            conv,
        )
        live = await seq_of(ada, "live again")
        await act(ada, live, "recall")
        await until(lambda: has(ada, f"{li(live)} .text", "Message recalled"), "recalled at ada")
        await bob_ctx.set_offline(False)
        await bob.evaluate("() => window.dispatchEvent(new Event('online'))")
        await until(lambda: has(bob, f"{li(11)} .text", "msg 10 (fixed)"), "edit replayed", bob_log)
        await until(lambda: has(bob, f"{li(live)} .text", "Message recalled"), "recall replayed")
        await until(lambda: bob.locator(f'{li(12)} .reaction[data-emoji="❤️"]').count(), "react")

        # Again while bob's page reloads: his device keeps read positions and shows the changes.
        await bob_ctx.set_offline(True)
        await until(lambda: _conn_state(bob, "reconnecting"), "bob offline again", bob_log)
        await ada.evaluate(
            """async (conv) => {
                 await huddleApp.chat.edit(conv, 13, "msg 12 (fixed)");
                 await huddleApp.chat.react(conv, 12, "❤️", true);
                 await huddleApp.chat.react(conv, 13, "😂");
               }""",
            conv,
        )
        await bob_ctx.set_offline(False)
        await bob.reload()
        await bob.wait_for_selector("#convs")
        await until(lambda: _synced(bob), "bob's sync after the reload", bob_log)
        await open_conversation(bob, "Archive")
        await until(lambda: has(bob, f"{li(last)} .quote", "msg 3"), "the quote again", bob_log)
        await bob.click(f"{li(last)} .quote")
        await until(lambda: has(bob, f"{li(13)} .text", "msg 12 (fixed)"), "the edit", bob_log)
        assert await has(bob, f"{li(11)} .text", "msg 10 (fixed)")
        assert await bob.locator(f"{li(12)} .reaction").count() == 0
        assert await bob.get_attribute(f'{li(13)} .reaction[data-emoji="😂"]', "title") == (
            "😂 1: ada"
        )
        await bob.screenshot(path=str(tmp_path / "bob-after-reload.png"))
        # Sending from back there goes to the end, where the new message shows.
        assert await bob.evaluate("(c) => huddleApp.chat.hasNewer(c)", conv)
        await send(bob, "back to now")
        await until(lambda: _contains(texts(bob), "back to now"), "bob's message shown", bob_log)
        assert "about msg 3" in await texts(bob)
        assert not await bob.evaluate("(c) => huddleApp.chat.hasNewer(c)", conv)
        # Ada's device, reloaded too, still knows bob read her messages.
        await ada.reload()
        await ada.wait_for_selector("#convs")
        await until(lambda: _synced(ada), "ada's sync after the reload", ada_log)
        await open_conversation(ada, "Archive")
        # Opening shows the list at once and its page when it is read (from the device's
        # store or the node): wait for it before reading a seq off the screen.
        await until(lambda: _contains(texts(ada), "about msg 3"), "ada's page shown", ada_log)
        newest = await seq_of(ada, "about msg 3")
        await until(lambda: _read_by(ada, newest, ["bob"]), "read by bob after a reload")
        await ada.screenshot(path=str(tmp_path / "ada-read-by-after-reload.png"))
        errors = [line for line in ada_log + bob_log if line.startswith(("pageerror", "error"))]
        assert not errors, errors


THREAD_JS = """
() => [...document.querySelectorAll('#thread-messages li[data-seq] .text')]
  .map((t) => t.textContent)
"""


async def thread_texts(page: Page) -> list[str]:
    return list(await page.evaluate(THREAD_JS))


async def _read_by(page: Page, seq: int, want: list[str]) -> bool:
    """Open a message's "read by" list and compare; close it when it does not match yet."""
    if await page.locator(".msg-dialog").count():
        await page.click(".msg-dialog .dialog-close")
        await until(lambda: _equals(page.locator(".msg-dialog").count(), 0), "the dialog closed")
    await act(page, seq, "read-by")
    await page.wait_for_selector("#readers")
    got = await page.locator("#readers li").all_text_contents()
    if got == want:
        return True
    await page.click(".msg-dialog .dialog-close")
    await until(lambda: _equals(page.locator(".msg-dialog").count(), 0), "the dialog closed")
    return False


async def _equals(value: Any, want: Any) -> bool:
    return bool(await value == want)


async def _contains(value: Any, item: Any) -> bool:
    return item in await value


async def _conn_state(page: Page, state: str) -> bool:
    return bool(await page.evaluate("(s) => huddleApp.conn && huddleApp.conn.state === s", state))


async def _synced(page: Page) -> bool:
    return bool(
        await page.evaluate(
            "() => { window.dispatchEvent(new Event('online'));"
            " return !!(huddleApp.chat && huddleApp.chat.syncs.some((s) => s.reply)); }"
        )
    )


async def test_a_channel_follower_reacts_but_is_offered_no_reply(node: Node) -> None:
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        _, bob, bob_log = await new_page(browser)
        await sign_in(ada, node.url, "Ada")
        await sign_in(bob, node.url, "Bob")
        conv = await ada.evaluate(
            """async () => {
                 const r = await huddleApp.chat.request(
                   "chat.create", {kind: "channel", name: "News", members: []});
                 await huddleApp.chat.request(
                   "chat.send", {conv: r.conv.conv, client_id: "n1", text: "news"});
                 return r.conv.conv;
               }"""
        )
        await bob.evaluate(
            "(conv) => huddleApp.chat.request('chat.follow', {conv}).then(() => true)", conv
        )
        await open_conversation(bob, "News")
        await until(lambda: _equals(texts(bob), ["news"]), "bob reads the channel", bob_log)
        seq = await seq_of(bob, "news")
        await bob.click(f"{li(seq)} .msg-more")
        assert await bob.locator(f"{li(seq)} .msg-action.reply").count() == 0
        assert await bob.locator(f"{li(seq)} .msg-action.edit").count() == 0
        await bob.click(f'{li(seq)} .msg-action[aria-label="React with 😮"]')
        await open_conversation(ada, "News")
        chip = f'{li(seq)} .reaction[data-emoji="😮"]'
        await until(lambda: has(ada, chip, "1"), "the follower's reaction at ada", ada_log)
        assert await ada.get_attribute(chip, "title") == "😮 1: bob"
