"""The SDK's files module in real Chromium (no WebRTC, so the browser runs in the host's
network namespace against a node on 127.0.0.1): a resumable upload cut by a page reload goes
on from where the node got to, the bytes downloaded afterwards are the original ones, and a
second user downloads them through a signed URL (and not without one). A voice note recorded
with MediaRecorder gets its normalized Ogg/Opus version. An image gets thumbnails, fetched
with the token and shown through a signed URL, and counts in the usage."""

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

SIZE: Final = 8 * 1024 * 1024
CHUNK: Final = 256 * 1024
# The page reloads itself once this much has been sent: far from the end, so the upload
# cannot finish while the page unloads.
CUT_AT: Final = 1024 * 1024
TIMEOUT_MS: Final = 20_000

# Deterministic contents (xorshift32), so the page after the reload can give the same file
# again, as a person would pick it again; and the SHA-256 of what it gave.
MAKE_FILE_JS: Final = """
(size) => {
  const bytes = new Uint8Array(size);
  let x = 2463534242;
  for (let i = 0; i < size; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    bytes[i] = x & 255;
  }
  window.testFile = new File([bytes], "resume-test.bin",
    {type: "application/octet-stream", lastModified: 1700000000000});
  window.sha256 = async (blob) => [...new Uint8Array(
    await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with host_chromium() as b:
        yield b


async def _open(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await (await browser.new_context()).new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    await _ready(page)
    return page


async def _ready(page: Page) -> None:
    await page.wait_for_function(
        "() => window.example && (window.example.ready || window.example.error)",
        timeout=TIMEOUT_MS,
    )
    assert await page.evaluate("window.example.error") is None


async def test_upload_cut_by_reload_resumes_and_signed_url_serves_the_same_bytes(
    start_node: StartNode, browser: Browser, tmp_path: Path
) -> None:
    node = await start_node()
    errors: list[str] = []
    page_url = f"{node.url}/web/sdk/example-files.html?chunk={CHUNK}&token="
    alice = await _open(browser, page_url + make_token("alice"), errors)

    # First session: the page reloads itself in the middle of the upload.
    await alice.evaluate(MAKE_FILE_JS, SIZE)
    async with alice.expect_navigation(timeout=TIMEOUT_MS):
        await alice.evaluate(
            """(cut) => { let reloading = false;
                 window.example.upload(window.testFile, {onProgress: (p) => {
                   if (p.bytesSent >= cut && !reloading) { reloading = true; location.reload(); }
                 }}); }""",
            CUT_AT,
        )
    await _ready(alice)
    pending: list[dict[str, Any]] = await alice.evaluate("window.example.listPending()")
    assert [(p["name"], p["size"], p["kept"], p["keptSize"]) for p in pending] == [
        ("resume-test.bin", SIZE, True, SIZE)
    ], pending

    # Second session: the file the browser kept goes on from what the node has (HEAD), not 0.
    [done] = await alice.evaluate("window.example.resumePending()")
    resumed_from = done["resumedFrom"]
    assert resumed_from is not None and CHUNK <= resumed_from < SIZE, done
    first_progress = await alice.evaluate("window.example.progress[0]")
    assert first_progress >= resumed_from, (first_progress, resumed_from)
    meta = done["meta"]
    assert (meta["name"], meta["size"], meta["owner"]) == ("resume-test.bin", SIZE, "alice")
    assert await alice.evaluate("window.example.listPending()") == []

    # What comes back is what was given.
    await alice.evaluate(MAKE_FILE_JS, SIZE)
    original = await alice.evaluate("window.sha256(window.testFile)")
    downloaded = await alice.evaluate(
        "async (id) => window.sha256(await window.example.files.download(id))", meta["id"]
    )
    assert downloaded == original == meta["digest"]
    # Given again once finished, the same file is a new upload (from 0), no longer kept.
    again: dict[str, Any] = await alice.evaluate("window.example.upload(window.testFile)")
    assert again["resumedFrom"] is None and again["meta"]["digest"] == meta["digest"], again
    assert await alice.evaluate("window.example.listPending()") == []
    signed: dict[str, Any] = await alice.evaluate(
        "(id) => window.example.files.sign(id)", meta["id"]
    )
    await alice.screenshot(path=tmp_path / "files.png")

    # Another user: not without the signed URL, the same bytes with it (no token sent).
    bob = await _open(browser, page_url + make_token("bob"), errors)
    refused = await bob.evaluate(
        """async (id) => { try { await window.example.files.download(id); return null; }
                         catch (e) { return [e.status, e.code]; } }""",
        meta["id"],
    )
    assert refused == [404, "not_found"]
    await bob.evaluate(MAKE_FILE_JS, 1)  # for window.sha256
    via_signed = await bob.evaluate(
        "async (url) => window.sha256(await (await fetch(url)).blob())", signed["url"]
    )
    assert via_signed == original
    assert not errors, errors


async def test_voice_note_recorded_by_chromium_gets_a_normalized_version(
    start_node: StartNode, browser: Browser, tmp_path: Path
) -> None:
    node = await start_node()
    errors: list[str] = []
    page = await _open(
        browser, f"{node.url}/web/sdk/example-files.html?token={make_token('alice')}", errors
    )
    got: dict[str, Any] = await page.evaluate(
        """async () => {
          const { recordVoiceNote } = await import("./files.js");
          const blob = await recordVoiceNote({ maxMs: 1500 });
          const meta = await window.example.files.uploadVoiceNote(blob);
          const voice = await window.example.files.voice(meta.id);
          const head = new TextDecoder().decode(await voice.slice(0, 4).arrayBuffer());
          return { recorded: blob.type, size: blob.size, meta, voiceType: voice.type, head };
        }"""
    )
    meta = got["meta"]
    assert got["size"] > 0 and got["recorded"].startswith(("audio/ogg", "audio/webm")), got
    assert meta["voice"], meta  # the node made the normalized version
    assert 0.5 < meta["duration"] < 5, meta
    assert meta["waveform"] and max(meta["waveform"]) > 0, meta  # the fake microphone beeps
    assert (got["voiceType"], got["head"]) == ("audio/ogg", "OggS"), got
    await page.screenshot(path=tmp_path / "voice.png")
    assert not errors, errors


async def test_image_upload_has_thumbnails_by_token_and_signed_url_and_counts_in_usage(
    start_node: StartNode, browser: Browser, tmp_path: Path
) -> None:
    node = await start_node()
    errors: list[str] = []
    page = await _open(
        browser, f"{node.url}/web/sdk/example-files.html?token={make_token('alice')}", errors
    )
    got: dict[str, Any] = await page.evaluate(
        """async () => {
          const canvas = Object.assign(document.createElement("canvas"), {width: 800, height: 600});
          const g = canvas.getContext("2d");
          g.fillStyle = "#2a6"; g.fillRect(0, 0, 800, 600);
          g.fillStyle = "#fff"; g.fillRect(100, 100, 300, 200);
          const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
          const file = new File([png], "drawing.png", {type: "image/png"});
          const { meta } = await window.example.upload(file);
          const files = window.example.files;
          const thumb = await files.thumbnail(meta.id, "small");
          const { url } = await files.sign(meta.id);
          const { signedVariantUrl } = await import("./files.js");
          const img = new Image();
          img.src = signedVariantUrl(url, "thumb/small");  // no token: the signature
          await img.decode();
          return { meta, thumbType: thumb.type, thumbSize: thumb.size,
                   signed: [img.naturalWidth, img.naturalHeight], usage: await files.usage() };
        }"""
    )
    meta = got["meta"]
    assert (meta["kind"], meta["width"], meta["height"]) == ("image", 800, 600), meta
    assert set(meta["thumbnails"]) >= {"small", "large"}, meta
    assert got["thumbType"] == "image/webp" and got["thumbSize"] > 0, got
    assert got["signed"] == [320, 240], got  # longest edge 320, never enlarged
    assert got["usage"]["used"] >= meta["size"] and got["usage"]["open_uploads"] == 0, got
    await page.screenshot(path=tmp_path / "image.png")
    assert not errors, errors
