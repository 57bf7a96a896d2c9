"""Headless Chromium in the host's network namespace, for browser tests without WebRTC (files,
ringing): the page talks to an in-process node on 127.0.0.1 and nothing else."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import AsyncIterator
from typing import Final

import pytest
from playwright.async_api import Browser, async_playwright

from benchmarks.common import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_FAKE_MEDIA_ARGS

HOST_CHROMIUM_ARGS: Final = (*CHROMIUM_ARGS, *CHROMIUM_FAKE_MEDIA_ARGS)


def chromium_missing() -> list[str]:
    """What a browser test lacks to start Chromium through Playwright."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("Python Playwright (pip install -e '.[dev]')")
    return missing


def fail_if_missing(missing: list[str]) -> None:
    """Browser tests never skip: they fail saying what to add."""
    if missing:
        pytest.fail(
            "browser test cannot run without: " + "; ".join(missing) + ". "
            "scripts/setup.sh --dev installs them.",
            pytrace=False,
        )


def require_chromium() -> None:
    fail_if_missing(chromium_missing())


@contextlib.asynccontextmanager
async def host_chromium() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(HOST_CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()
