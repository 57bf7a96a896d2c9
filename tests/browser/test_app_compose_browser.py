"""The web app's composer and New chat in real Chromium: identities typed as signing in makes
them ("Bob" is bob), what cannot be one refused up front, a message the node refuses kept with
its text in its own conversation (across a reload) until it is sent again, taken back or
deleted, and a half-written draft that survives an edit of another message and a reload
mid-edit.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Page

from tests.browser.chat_pages import chromium, new_page, send, sign_in, synced, texts, until
from tests.conftest import StartNode
from tests.helpers import Node

pytestmark = pytest.mark.browser

FAILED = "#messages li.failed"


async def open_named(page: Page, name: str) -> None:
    """Open the conversation whose name is exactly ``name`` (a preview may hold it too)."""
    exact = page.locator(".conv-name", has_text=re.compile(f"^{re.escape(name)}$"))
    await page.locator("button.conv", has=exact).click()
    await page.wait_for_selector("#composer-text")


async def start_chat(page: Page, typed: str) -> str:
    """Type ``typed`` in New chat; the form's error, "" when the chat opened."""
    if not await page.locator("#chat-form").count():
        await page.click("#new-chat")
    await page.fill("#chat-peer", typed)
    await page.press("#chat-peer", "Enter")
    if not await page.locator("#chat-form").count():
        return ""
    return str(await page.text_content("#chat-form-error"))


async def stored(page: Page, kind: str) -> Any:
    """What the app keeps for the user: refused messages (``failed``), the open ``draft``."""
    return await page.evaluate(
        """(kind) => localStorage.getItem(["huddle", kind, huddleApp.session.identity]
             .concat(kind === "draft" ? [huddleApp.current] : []).join("."))""",
        kind,
    )


async def test_identities_as_sign_in_makes_them_and_a_refused_message_keeps_its_text(
    start_node: StartNode,
) -> None:
    node = await start_node(chat_word_filter=["forbidden"])
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        _, bob, bob_log = await new_page(browser)
        await sign_in(ada, node.url, "Ada")
        await sign_in(bob, node.url, "Bob")

        # New chat refuses what the node would refuse the first message for.
        assert "That is you" in await start_chat(ada, "ADA")
        assert "“!?” cannot be an identity" in await start_chat(ada, "!?")
        # "Bob" signed in as bob: typed here it is bob too, and he gets the message.
        assert await start_chat(ada, "Bob") == ""
        assert await ada.text_content("#conv-title") == "bob"
        await send(ada, "hello Bob")
        await until(lambda: bob.locator("button.conv", has_text="ada").count(), "bob's chat")
        await open_named(bob, "ada")
        await until(lambda: _equals(texts(bob), ["hello Bob"]), "bob reads it", bob_log)
        # A name in any script signs in (it was refused: no letter of a-z), and typed in New
        # chat it reaches the one who signed in with it.
        _, zhang, zhang_log = await new_page(browser)
        await sign_in(zhang, node.url, "张三")
        assert await start_chat(ada, "张三") == ""
        await send(ada, "你好")
        await until(lambda: zhang.locator("button.conv", has_text="ada").count(), "张三's chat")
        await open_named(zhang, "ada")
        await until(lambda: _equals(texts(zhang), ["你好"]), "张三 reads it", zhang_log)

        # A group's members the same way.
        await ada.click("#new-group")
        await ada.fill("#group-name", "Case")
        await ada.fill("#group-members", "Bob, !?")
        await ada.press("#group-members", "Enter")
        assert "“!?” cannot be an identity" in str(await ada.text_content("#group-form-error"))
        await ada.fill("#group-members", "Bob, nosuchuser")
        await ada.press("#group-members", "Enter")
        await until(lambda: bob.locator(".conv-name", has_text="Case").count(), "bob's group")
        # The group opens on ada's side once the node has answered her (bob may hear first).
        await until(lambda: _equals(ada.text_content("#conv-title"), "Case"), "ada's group")

        # A message the node refuses keeps its text and says why, in its conversation only.
        await send(ada, "the forbidden plan")
        await until(lambda: ada.locator(FAILED).count(), "the refusal", ada_log)
        assert await ada.text_content(f"{FAILED} .text") == "the forbidden plan"
        assert await ada.text_content(f"{FAILED} .send-error") == (
            "Not sent: it contains words this server does not allow."
        )
        await open_named(ada, "bob")
        assert await ada.locator(FAILED).count() == 0
        # A reload keeps it.
        await ada.reload()
        await until(lambda: synced(ada), "ada back", ada_log)
        await open_named(ada, "Case")
        assert await ada.text_content(f"{FAILED} .text") == "the forbidden plan"

        # Retry sends it as it was (refused again here); Edit puts it after the draft.
        await ada.evaluate("() => huddleApp.chat.on('send_failed', () => (window.refused = 1))")
        await ada.click(f"{FAILED} .retry")
        await until(lambda: ada.evaluate("() => window.refused"), "refused again", ada_log)
        assert await ada.locator(f"{FAILED} .text").all_text_contents() == ["the forbidden plan"]
        await ada.fill("#composer-text", "So:")
        await ada.click(f"{FAILED} .edit")
        assert await ada.input_value("#composer-text") == "So: the forbidden plan"
        assert await ada.locator(FAILED).count() == 0
        # Delete: gone, for a reload too.
        await send(ada, "forbidden again")
        await until(lambda: ada.locator(FAILED).count(), "the second refusal", ada_log)
        await ada.click(f"{FAILED} .delete")
        assert await ada.locator(FAILED).count() == 0
        assert await stored(ada, "failed") is None
        errors = [line for line in ada_log + bob_log if line.startswith("pageerror")]
        assert not errors, errors


async def test_a_draft_comes_back_after_an_edit_and_after_a_reload_mid_edit(node: Node) -> None:
    async with chromium() as browser:
        _, ada, log = await new_page(browser)
        await sign_in(ada, node.url, "Ada")
        await ada.click("#new-group")
        await ada.fill("#group-name", "Notes")
        await ada.press("#group-name", "Enter")
        await ada.wait_for_selector("#composer-text")
        await send(ada, "a typo teh")
        await until(lambda: _equals(texts(ada), ["a typo teh"]), "the message", log)
        edit = "#messages li[data-seq]:not(.system) .msg-action.edit"

        # Half a reply typed; an earlier message edited and saved: the half reply is back.
        await ada.fill("#composer-text", "half a reply")
        await ada.click("#messages li[data-seq]:not(.system) .msg-more")
        await ada.click(edit)
        assert await ada.input_value("#composer-text") == "a typo teh"
        await ada.fill("#composer-text", "a typo the")
        await ada.press("#composer-text", "Enter")
        assert await ada.input_value("#composer-text") == "half a reply"
        await until(lambda: _equals(texts(ada), ["a typo the"]), "the edit", log)
        assert await stored(ada, "draft") == "half a reply"

        # Edited text is never the draft: a reload mid-edit brings back the half reply.
        await ada.click("#messages li[data-seq]:not(.system) .msg-more")
        await ada.click(edit)
        await ada.type("#composer-text", "!")
        # A composer drawn anew (another language) goes on with the edit.
        await ada.select_option("#lang", "zh")
        assert await ada.input_value("#composer-text") == "a typo the!"
        assert await ada.is_visible("#compose-bar.editing")
        await ada.reload()
        await until(lambda: synced(ada), "ada back", log)
        await open_named(ada, "Notes")
        assert await ada.input_value("#composer-text") == "half a reply"
        assert not await ada.is_visible("#compose-bar")


async def _equals(value: Any, want: Any) -> bool:
    return bool(await value == want)
