"""Chromium pages of the web app (``/``) for chat tests: sign in, open, send, read back.

Chat needs no WebRTC, so Chromium runs in the host's network namespace against a node on
127.0.0.1 (loopback only). The app's ``window.huddleApp`` debug hook exposes the SDK objects.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from playwright.async_api import Browser, BrowserContext, Page

from tests.browser.host_chromium import host_chromium

WAIT_S: Final = 15.0
PHONE: Final = {"width": 390, "height": 780}
_consoles: dict[int, list[str]] = {}


# Chat pages run in the same host Chromium as the file and ringing tests.
chromium = host_chromium


async def new_page(
    browser: Browser, *, locale: str = "en-US", viewport: dict[str, int] | None = None
) -> tuple[BrowserContext, Page, list[str]]:
    """A page in a context of its own (its own storage: another device), and its console."""
    context = await browser.new_context(
        locale=locale,
        viewport=viewport or {"width": 1000, "height": 700},  # type: ignore[arg-type]
    )
    page = await context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    console: list[str] = []
    _consoles[id(page)] = console
    page.on("console", lambda m: console.append(f"{m.type}: {m.text} {m.location}"))
    page.on("requestfailed", lambda r: console.append(f"requestfailed: {r.url} {r.failure}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    return context, page, console


async def until(
    check: Callable[[], Awaitable[Any]], what: str, console: list[str] | None = None
) -> Any:
    """Poll ``check`` until it returns something truthy, or fail saying ``what``."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = "\n".join((console or [])[-20:])
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}\n{tail}")
        await asyncio.sleep(0.05)


async def sign_in(page: Page, base_url: str, name: str) -> None:
    console = _consoles.get(id(page), [])
    try:
        await page.goto(base_url + "/")
        await page.fill("#signin-name", name)
        await page.click("#signin-dev button[type=submit]")
        await page.wait_for_selector("#convs")
    except Exception as e:
        raise AssertionError(f"{name} could not sign in: {e}\n" + "\n".join(console)) from e
    await until(lambda: synced(page), f"{name}'s first chat.sync", console)


async def synced(page: Page) -> bool:
    return bool(
        await page.evaluate(
            "() => !!(window.huddleApp.chat && window.huddleApp.chat.syncs.some((s) => s.reply))"
        )
    )


async def open_conversation(page: Page, name: str) -> None:
    button = page.locator("button.conv", has_text=name)
    await button.wait_for(timeout=WAIT_S * 1000)
    await button.click()
    # The history, not the composer: a channel's followers have none.
    await page.wait_for_selector("#messages", timeout=WAIT_S * 1000)


async def send(page: Page, text: str) -> None:
    await page.fill("#composer-text", text)
    await page.press("#composer-text", "Enter")


HISTORY_JS: Final = """
() => [...document.querySelectorAll('#messages li[data-seq]')]
  .filter((li) => !li.classList.contains('system'))
  .map((li) => [Number(li.dataset.seq), li.querySelector('.text').textContent])
"""


async def history(page: Page) -> list[tuple[int, str]]:
    """The conversation on screen: (seq, text) of each message that is not a system one."""
    rows: list[list[Any]] = await page.evaluate(HISTORY_JS)
    return [(int(seq), str(text)) for seq, text in rows]


async def texts(page: Page) -> list[str]:
    return [text for _, text in await history(page)]


UNLABELLED_JS: Final = """
() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !el.textContent.trim())
  .map((el) => el.outerHTML)
"""


async def unlabelled(page: Page) -> list[str]:
    """The page's controls that have no label, no aria-label and no text: none, ideally."""
    return list(await page.evaluate(UNLABELLED_JS))


async def loaded(page: Page) -> list[str]:
    """The URLs the page has loaded so far (the document and every resource)."""
    return list(
        await page.evaluate(
            "() => [...performance.getEntriesByType('navigation'),"
            " ...performance.getEntriesByType('resource')].map((e) => e.name)"
        )
    )
