"""1:1 ringing through the SDK's Ringing in real Chromium (signaling only, so the browsers run
in the host's network namespace against a node on 127.0.0.1): alice calls bob, who has two
devices; both ring, one answers and the other stops ringing (answered elsewhere); a call
nobody answers stops ringing everywhere as missed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.async_api import Browser, Page

from tests.browser.host_chromium import host_chromium
from tests.conftest import StartNode
from tests.helpers import make_token

pytestmark = pytest.mark.browser

TIMEOUT_MS: Final = 15_000
RING_TIMEOUT_S: Final = 2.0

# A device: a connection and its Ringing, every event it sees recorded in window.seen.
DEVICE_JS: Final = """
async ([token, device]) => {
  const sdk = await import("/web/sdk/huddle.js");
  const connection = new sdk.HuddleConnection({ token, device });
  await connection.connect();
  const ringing = new sdk.Ringing(connection);
  window.seen = [];
  for (const name of ["incoming", "accepted", "stopped", "ended", "missed"]) {
    ringing.on(name, (e) => window.seen.push([name, e.call, e.reason || e.room || null]));
  }
  window.device = { connection, ringing };
}
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with host_chromium() as b:
        yield b


async def _device(browser: Browser, url: str, identity: str, device: str) -> Page:
    page = await (await browser.new_context()).new_page()
    await page.goto(url)
    await page.evaluate(DEVICE_JS, [make_token(identity), device])
    return page


async def _wait_seen(page: Page, entry: list[Any]) -> None:
    await page.wait_for_function(
        "(entry) => window.seen.some((e) => JSON.stringify(e) === JSON.stringify(entry))",
        arg=entry,
        timeout=TIMEOUT_MS,
    )


async def test_answered_on_one_device_stops_ringing_on_the_other_and_missed_calls_stop(
    start_node: StartNode, browser: Browser, tmp_path: Path
) -> None:
    node = await start_node(ring_timeout_s=RING_TIMEOUT_S, ring_sweep_s=0.2)
    url = f"{node.url}/web/sdk/example.html"
    alice = await _device(browser, url, "alice", "alice-laptop")
    phone = await _device(browser, url, "bob", "bob-phone")
    laptop = await _device(browser, url, "bob", "bob-laptop")

    placed = await alice.evaluate("() => window.device.ringing.invite('bob', 'video')")
    call = placed["call"]
    for page in (phone, laptop):
        await _wait_seen(page, ["incoming", call, None])
        assert await page.evaluate("(c) => window.device.ringing.ringing.has(c)", call)

    answered = await phone.evaluate("(c) => window.device.ringing.accept(c)", call)
    assert answered["room"] == placed["room"]
    await _wait_seen(laptop, ["stopped", call, "answered_elsewhere"])
    await _wait_seen(alice, ["accepted", call, placed["room"]])
    for page in (phone, laptop):
        assert await page.evaluate("(c) => window.device.ringing.ringing.size") == 0
    assert ["stopped", call, "accepted"] in await phone.evaluate("window.seen")

    # Hung up; then a call nobody answers ends as missed on both of bob's devices.
    await phone.evaluate("(c) => window.device.ringing.hangup(c)", call)
    await _wait_seen(alice, ["ended", call, "hangup"])
    second = (await alice.evaluate("() => window.device.ringing.invite('bob', 'audio')"))["call"]
    for page in (phone, laptop):
        await _wait_seen(page, ["incoming", second, None])
    for page in (phone, laptop):
        await _wait_seen(page, ["stopped", second, "missed"])
        assert await page.evaluate("(c) => window.device.ringing.ringing.has(c)", second) is False
    await _wait_seen(alice, ["ended", second, "no_answer"])
    await laptop.screenshot(path=tmp_path / "ringing.png")
