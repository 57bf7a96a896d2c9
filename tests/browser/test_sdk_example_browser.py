"""docs/sdk.md's example page (huddle/web/sdk/example.html) works in Chromium: it signs in,
sends to a Python device and shows that device's answer and presence."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page

from chat import wire as w
from huddle.chat import ChatClient
from tests.browser.chat_pages import chromium, new_page, until
from tests.helpers import Node

pytestmark = pytest.mark.browser


async def test_sdk_example_page_chats_with_a_python_device(node: Node, tmp_path: Path) -> None:
    dee = ChatClient(await node.client("dee", device="bot"))
    await dee.sync()
    async with chromium() as browser:
        _, page, console = await new_page(browser)
        await page.goto(node.url + "/web/sdk/example.html")
        await page.fill("#name", "Cy")
        await page.click("#login button")
        await until(lambda: _text(page, "#state", "open"), "the example connected", console)

        await page.fill("#to", "dee")
        await page.fill("#text", "hello from the example")
        await page.click("#compose button")
        event = await dee.client.next_event("chat.message")
        assert (event.message.sender, event.message.text) == ("cy", "hello from the example")

        await dee.send(event.conv, "hello, example")
        await until(
            lambda: _text(page, "#messages", "dee: hello, example"), "dee's answer", console
        )
        await until(lambda: _text(page, "#conversations", "dee (online)"), "presence", console)
        assert isinstance(event, w.ChatMessageEvent)
        await page.screenshot(path=str(tmp_path / "example.png"))
        assert not [line for line in console if line.startswith(("pageerror", "error"))]


async def _text(page: Page, selector: str, part: str) -> bool:
    return part in (await page.text_content(selector) or "")
