"""The web app's chat in real Chromium: two users, live messages, typing, read state,
presence, the Chinese UI on a phone-sized screen, and a device that goes offline (and
reloads) while the other writes: both end with the same history, nothing lost or repeated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import WebSocketRoute

from signaling.auth import mint_token
from tests.browser.chat_pages import (
    PHONE,
    chromium,
    history,
    new_page,
    open_conversation,
    send,
    sign_in,
    texts,
    until,
)
from tests.conftest import StartNode
from tests.helpers import TEST_KEY, TEST_SECRET, Node

pytestmark = pytest.mark.browser


async def test_two_users_chat_live_with_typing_read_state_and_chinese_ui(
    node: Node, tmp_path: Path
) -> None:
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        bob_ctx, bob, bob_log = await new_page(browser, locale="zh-CN", viewport=PHONE)
        await sign_in(ada, node.url, "Ada")
        await sign_in(bob, node.url, "Bob")

        # The Chinese UI follows the browser's language.
        assert await bob.text_content("#convs-title") == "会话"
        assert await bob.get_attribute("html", "lang") == "zh-CN"
        assert await ada.text_content("#convs-title") == "Conversations"

        # Ada starts a direct chat with bob.
        await ada.click("#new-chat")
        await ada.fill("#chat-peer", "bob")
        await ada.press("#chat-peer", "Enter")
        await send(ada, "Hi Bob, lunch at noon?")
        await until(lambda: texts(ada), "ada's message in her conversation", ada_log)

        # Bob (on a phone) sees the conversation appear with an unread badge, opens it.
        await bob.locator("button.conv .badge").wait_for()
        await open_conversation(bob, "ada")
        await until(lambda: _equals(texts(bob), ["Hi Bob, lunch at noon?"]), "bob sees it", bob_log)
        assert await bob.text_content("#composer button[type=submit]") == "发送"

        # Bob types: ada sees it; bob's answer appears live; ada sees bob read hers.
        await bob.type("#composer-text", "好的")
        await until(lambda: _contains(ada.text_content("#typing"), "bob is typing"), "typing")
        await bob.fill("#composer-text", "好的 中午见 👋")
        await bob.press("#composer-text", "Enter")
        want = ["Hi Bob, lunch at noon?", "好的 中午见 👋"]
        await until(lambda: _equals(texts(ada), want), "bob's answer at ada", ada_log)
        await until(lambda: _equals(texts(bob), want), "bob's answer at bob", bob_log)
        assert await history(ada) == await history(bob)
        await until(lambda: _contains(ada.text_content("#typing"), "", exact=True), "no typing")
        # Bob's device read ada's message: her last own message says so.
        await until(
            lambda: ada.locator(".msg.mine .read-state", has_text="Read").count(), "read state"
        )
        # Presence: bob is online, shown as a dot on ada's list and in the header.
        await until(lambda: ada.locator("button.conv .dot.online").count(), "bob's presence dot")
        assert await ada.text_content("#conv-status") == "online"

        await ada.screenshot(path=str(tmp_path / "ada.png"))
        await bob.screenshot(path=str(tmp_path / "bob-zh-phone.png"))

        # Every control can be reached by keyboard and has a label.
        assert await ada.evaluate(UNLABELLED_JS) == []
        assert await bob.evaluate(UNLABELLED_JS) == []
        # Ada steps away: bob's header says so, in Chinese. Then she switches to Chinese.
        await ada.select_option("#my-status", "away")
        await until(lambda: _contains(bob.text_content("#conv-status"), "离开"), "ada away")
        await ada.select_option("#lang", "zh")
        assert await ada.text_content("#convs-title") == "会话"
        assert await ada.text_content("#composer button[type=submit]") == "发送"
        # Bob leaves: ada sees when he was last seen.
        await bob_ctx.close()
        await until(lambda: _contains(ada.text_content("#conv-status"), "最后在线"), "last seen")
        errors = [line for line in ada_log + bob_log if line.startswith(("pageerror", "error"))]
        assert not errors, errors


async def test_sign_in_with_a_pasted_token(node: Node) -> None:
    async with chromium() as browser:
        _, page, console = await new_page(browser)
        await page.goto(node.url + "/")
        token = mint_token(api_key=TEST_KEY, api_secret=TEST_SECRET, identity="erin", name="Erin")
        await page.fill("#signin-token", token)
        await page.click("#signin-token-form button[type=submit]")
        await until(lambda: _contains(page.text_content("#me"), "Erin"), "signed in", console)
        assert await page.evaluate("() => huddleApp.conn.identity") == "erin"
        # Everything the first screen loaded came from the node, and it is small.
        loaded = await page.evaluate(LOADED_JS)
        assert loaded and all(url.startswith(node.url + "/") for url, _ in loaded), loaded
        assert sum(size for _, size in loaded) <= 300_000, loaded
        # A second tab is the same device: it takes over, and the first can take it back.
        second = await page.context.new_page()
        await second.goto(node.url + "/")
        await until(lambda: _contains(page.text_content("#banner"), "another tab"), "replaced")
        await page.click("#use-here")
        await until(lambda: _state(page, "open"), "the first tab back", console)
        await until(lambda: _contains(second.text_content("#banner"), "another tab"), "swap")
        await second.close()
        # A token that is not one is refused with a message, on the sign-in form.
        await page.click("#signout")
        await page.fill("#signin-token", "not-a-token")
        await page.click("#signin-token-form button[type=submit]")
        await until(lambda: _contains(page.text_content("#signin-status"), "Could not"), "error")


async def test_offline_device_and_reload_resync_without_loss_or_repeats(
    node: Node, tmp_path: Path
) -> None:
    async with chromium() as browser:
        ada_ctx, ada, ada_log = await new_page(browser)
        _, bob, bob_log = await new_page(browser)
        await sign_in(ada, node.url, "Ada")
        await sign_in(bob, node.url, "Bob")
        await ada.click("#new-group")
        await ada.fill("#group-name", "Kyoto trip")
        await ada.fill("#group-members", "bob")
        await ada.press("#group-members", "Enter")
        await ada.wait_for_selector("#composer-text")
        await send(ada, "one")
        await open_conversation(bob, "Kyoto trip")
        await until(lambda: _equals(texts(bob), ["one"]), "bob has the first message", bob_log)

        # Ada's network goes away; bob writes, and ada writes too (into her outbox).
        await ada_ctx.set_offline(True)
        await until(lambda: _state(ada, "reconnecting"), "ada noticed she is offline", ada_log)
        assert await ada.is_visible("#banner")
        await send(bob, "two")
        await send(ada, "ada offline")
        await until(lambda: ada.locator(".msg.pending").count(), "ada's pending message")
        await ada_ctx.set_offline(False)
        want = ["one", "two", "ada offline"]
        await until(lambda: _equals(texts(ada), want), "ada resynced", ada_log)
        await until(lambda: _equals(texts(bob), want), "bob got ada's message", bob_log)
        await until(lambda: _hidden(ada, "#banner"), "the banner gone")

        # Again, and this time ada's page reloads while it cannot reach the node: what she
        # typed and her cursors come back from IndexedDB.
        blocked = True

        def gate(ws: WebSocketRoute) -> Any:
            if blocked:
                return ws.close(code=1013, reason="blocked by the test")
            ws.connect_to_server()
            return None

        await ada.route_web_socket("**/v1/ws", gate)
        await ada_ctx.set_offline(True)
        await until(lambda: _state(ada, "reconnecting"), "ada offline again", ada_log)
        await until(
            lambda: ada.evaluate("() => huddleApp.chat.flushed().then(() => true)"), "saved"
        )
        kept_cursors = await ada.evaluate("() => structuredClone(huddleApp.chat.cursors)")
        await send(bob, "three")
        await send(ada, "ada before reload")
        await until(lambda: ada.locator(".msg.pending").count(), "ada's second pending message")
        await ada.type("#composer-text", "half typed")
        await ada_ctx.set_offline(False)
        await ada.reload()
        await ada.wait_for_selector("#convs")
        outbox = await until(
            lambda: ada.evaluate(
                "() => huddleApp.chat && huddleApp.chat.outbox.map((i) => i.text)"
            ),
            "the outbox loaded after the reload",
            ada_log,
        )
        assert outbox == ["ada before reload"]
        assert await ada.evaluate("() => huddleApp.chat.syncs.length") == 0
        await ada.screenshot(path=str(tmp_path / "ada-reloaded-offline.png"))

        blocked = False
        await until(lambda: _synced_once(ada), "ada's sync after the reload", ada_log)
        first = await ada.evaluate("() => huddleApp.chat.syncs.find((s) => s.reply)")
        # The sync asked from the cursors kept before the reload, and only what was missed
        # came back: bob's message (and its receipts), not the conversation's whole log.
        assert first["request"]["cursors"] == kept_cursors["cursors"]
        assert first["request"]["feed"] == kept_cursors["feed"]
        conv = next(iter(kept_cursors["cursors"]))
        missed = first["reply"]["heads"][conv] - kept_cursors["cursors"][conv]
        assert first["replayed"] == missed >= 1
        assert first["reply"]["gaps"] == []

        await open_conversation(ada, "Kyoto trip")
        assert await ada.input_value("#composer-text") == "half typed"
        want += ["three", "ada before reload"]
        await until(lambda: _equals(texts(ada), want), "ada's history after all", ada_log)
        await until(lambda: _equals(texts(bob), want), "bob's history after all", bob_log)
        assert await history(ada) == await history(bob)
        seqs = [seq for seq, _ in await history(ada)]
        assert seqs == sorted(set(seqs))
        assert await ada.evaluate("() => huddleApp.chat.outbox.length") == 0
        await ada.screenshot(path=str(tmp_path / "ada-after-resync.png"))

        # History comes back by page: bob reopens it with pages of two, which do not fill
        # the screen, so the app loads older pages until they do or the start is reached.
        await bob.evaluate(COUNT_HISTORY_JS)
        await open_conversation(bob, "Kyoto trip")
        await until(lambda: _equals(texts(bob), want), "bob's pages", bob_log)
        seqs = [seq for seq, _ in await history(bob)]
        # The newest page, then each page before the oldest message held.
        assert await bob.evaluate("() => window.historyPages") == [None, 5, 3]
        assert seqs == [2, 3, 4, 5, 6]
        await until(lambda: _hidden(bob, "#load-older"), "no more pages")
        # Muting on one device shows in the list (a feed event).
        await bob.evaluate("() => huddleApp.chat.request('chat.mute', {conv: huddleApp.current})")
        await until(lambda: bob.locator("button.conv .muted").count(), "the muted mark")


async def test_short_lived_tokens_are_refreshed_on_the_same_connection(
    start_node: StartNode,
) -> None:
    node = await start_node(token_ttl_s=2)
    async with chromium() as browser:
        _, page, console = await new_page(browser)
        await sign_in(page, node.url, "Fay")
        session = await page.evaluate(
            "() => { window.refreshes = 0;"
            " huddleApp.conn.on('auth.refreshed', () => window.refreshes++);"
            " return huddleApp.conn.hello.session; }"
        )
        # Three refreshes take the connection past its first token's expiry, at which the
        # node would have closed it: it is still the same connection.
        await until(lambda: page.evaluate("() => window.refreshes >= 3"), "refreshes", console)
        assert await page.evaluate("() => huddleApp.conn.hello.session") == session
        assert await page.evaluate("() => huddleApp.conn.state") == "open"


LOADED_JS = """
() => [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
  .map((e) => [e.name, e.decodedBodySize])
"""

UNLABELLED_JS = """
() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !el.textContent.trim())
  .map((el) => el.outerHTML)
"""

COUNT_HISTORY_JS = """
() => {
  const connection = huddleApp.conn;
  const request = connection.request.bind(connection);
  window.historyPages = [];
  connection.request = (type, fields, options) => {
    if (type === "chat.history") window.historyPages.push(fields.before ?? null);
    return request(type, fields, options);
  };
  huddleApp.chat.pageSize = 2;
}
"""


async def _equals(value: Any, want: Any) -> bool:
    return bool(await value == want)


async def _contains(value: Any, part: str, exact: bool = False) -> bool:
    got = await value or ""
    return bool(got == part if exact else part in got)


async def _state(page: Any, state: str) -> bool:
    return bool(await page.evaluate("(s) => huddleApp.conn && huddleApp.conn.state === s", state))


async def _hidden(page: Any, selector: str) -> bool:
    return not await page.is_visible(selector)


async def _synced_once(page: Any) -> bool:
    # The browser's `online` event makes the connection try at once rather than after its
    # backoff, which grew while the node was out of reach.
    return bool(
        await page.evaluate(
            "() => { window.dispatchEvent(new Event('online'));"
            " return huddleApp.chat.syncs.some((s) => s.reply); }"
        )
    )
