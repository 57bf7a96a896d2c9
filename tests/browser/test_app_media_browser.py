"""Voice notes, PDF previews, the image viewer, upload retry and captions in the web app, in
real Chromium (its fake microphone for MediaRecorder) against a node on 127.0.0.1: ada records
a voice note with the composer's record button and bob plays it with its waveform and
duration; ada sends a PDF with a caption and bob sees its first page; bob opens, steps through
and closes the image viewer by keyboard; an upload whose connection is cut shows Retry, and
retried it goes on from the node's offset and arrives with the same bytes and its caption.
Uploads outlive the page: one cut by a reload comes back in its conversation with its caption,
goes on from the node's offset and arrives once; a reload after an upload ended (before the
page heard of it, or before the node's answer to its message) still gives exactly one message;
a pending voice note reads "[Voice message]"; a deleted file shows as no longer available.
An upload stopped by signing out, or by a dropped network, goes on by itself afterwards; one
whose file the browser did not keep says so, and Remove releases it on the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Route, ViewportSize, WebSocketRoute

from tests.browser.chat_pages import (
    PHONE,
    chromium,
    new_page,
    open_conversation,
    sign_in,
    synced,
    until,
)
from tests.browser.test_app_files_browser import (
    FETCH_JS,
    GIVE_FILE_JS,
    _b64,
    _loaded,
    open_conversation_when_listed,
    png,
)
from tests.conftest import StartNode
from tests.helpers import Node

pytestmark = pytest.mark.browser

VOICE_JS = """
() => {
  const note = document.querySelector('#messages .voice-note');
  if (!note) return null;
  const wave = note.querySelector('.voice-wave');
  const bars = [...wave.querySelectorAll('.voice-bars:not(.voice-played) .voice-bar')];
  const app = window.huddleApp;
  const m = app.chat.messages(app.current).find((m) => m.kind === 'voice');
  return {
    state: note.dataset.state,
    label: note.querySelector('.voice-play').getAttribute('aria-label'),
    time: note.querySelector('.voice-time').textContent,
    bars: bars.map((b) => b.getBoundingClientRect().height),
    waveHeight: wave.getBoundingClientRect().height,
    played: Number(wave.style.getPropertyValue('--played') || 0),
    media: m ? m.media : null,
  };
}
"""

PIXEL_JS = """
(selector) => {
  const img = document.querySelector(selector);
  if (!img || !img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const [r, gr, b] = g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
  return [img.naturalWidth, img.naturalHeight, r, gr, b, img.currentSrc];
}
"""


def minimal_pdf(width: int = 300, height: int = 200) -> bytes:
    """A one-page PDF filled red, written by hand (catalog, pages, page, content, xref)."""
    content = b"0.85 0.1 0.1 rg 0 0 %d %d re f" % (width, height)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents 4 0 R"
        b" /Resources << >> >>" % (width, height),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


async def _chat(
    browser: Any, node: Node, *, bob_locale: str = "en-US"
) -> tuple[Page, list[str], Page, list[str]]:
    """Ada and Bob, each in a browser context of their own, in their direct conversation."""
    _, ada, ada_log = await new_page(browser)
    _, bob, bob_log = await new_page(browser, locale=bob_locale)
    await sign_in(ada, node.url, "Ada")
    await sign_in(bob, node.url, "Bob")
    await ada.click("#new-chat")
    await ada.fill("#chat-peer", "bob")
    await ada.press("#chat-peer", "Enter")
    await ada.fill("#composer-text", "hello")
    await ada.press("#composer-text", "Enter")
    await open_conversation_when_listed(bob, "ada")
    await until(lambda: ada.locator("#conv-title", has_text="bob").count(), "ada's chat")
    return ada, ada_log, bob, bob_log


def _errors(*logs: list[str]) -> list[str]:
    return [line for log in logs for line in log if line.startswith(("pageerror", "error"))]


async def test_voice_note_recorded_with_the_record_button_plays_with_its_waveform(
    node: Node, tmp_path: Path
) -> None:
    async with chromium() as browser:
        ada, ada_log, bob, bob_log = await _chat(browser, node, bob_locale="zh-CN")
        # The record button is on the first screen, labelled; voice.js is not loaded yet.
        assert await ada.get_attribute("#record-voice", "aria-label") == "Record a voice message"
        assert await bob.get_attribute("#record-voice", "aria-label") == "录制语音消息"
        assert not await _loaded(ada, "/web/app/voice.js")

        # By keyboard: Enter starts a recording (a bar with a timer and Cancel), Escape drops it.
        await ada.focus("#record-voice")
        await ada.keyboard.press("Enter")
        await ada.locator(".recorder").wait_for()
        assert await ada.get_attribute("#record-voice", "aria-pressed") == "true"
        await until(lambda: _timer_past(ada, "0:01"), "the recording timer runs", ada_log)
        await ada.screenshot(path=str(tmp_path / "ada-recording.png"))
        await ada.keyboard.press("Escape")
        await ada.locator(".recorder").wait_for(state="detached")
        assert await ada.get_attribute("#record-voice", "aria-pressed") == "false"

        # Enter again starts one, and Enter on the (still focused) button sends it.
        await ada.keyboard.press("Enter")
        await ada.locator(".recorder").wait_for()
        await until(lambda: _timer_past(ada, "0:02"), "two seconds recorded", ada_log)
        await ada.keyboard.press("Enter")
        await ada.locator(".recorder").wait_for(state="detached")

        # Bob's copy: a player with the node's waveform (one bar per level, drawn with
        # heights that follow the levels) and the duration.
        voice = await until(lambda: _voice(bob), "bob sees the voice note", bob_log + ada_log)
        media = voice["media"]
        assert media["mime"].startswith("audio/") and media["waveform"], media
        assert 1500 < media["duration_ms"] < 30_000, media
        levels = media["waveform"]
        assert len(voice["bars"]) == len(levels) > 1
        assert all(height > 0 for height in voice["bars"])
        assert max(voice["bars"]) > voice["waveHeight"] * 0.9  # the loudest bar fills it
        if max(levels) > 2 * min(levels):
            quiet = levels.index(min(levels))
            loud = levels.index(max(levels))
            assert voice["bars"][quiet] < voice["bars"][loud]
        seconds = media["duration_ms"] // 1000
        assert voice["time"] == f"0:{seconds:02d}"
        assert voice["label"] == "播放语音消息"
        assert voice["state"] == "paused" and voice["played"] == 0
        # Only the conversation list's preview says what it is.
        assert "[语音消息]" in (await bob.locator("button.conv").first.text_content() or "")

        # Played (the button, by keyboard): the played part grows over the waveform, then
        # the note ends and the button plays again.
        await bob.focus("#messages .voice-play")
        await bob.keyboard.press("Enter")
        playing = await until(
            lambda: _voice_where(bob, lambda v: v["state"] == "playing" and v["played"] > 0.1),
            "bob's note plays with its progress drawn",
            bob_log,
        )
        assert playing["label"] == "暂停语音消息"
        await bob.screenshot(path=str(tmp_path / "bob-voice-playing-zh.png"))
        await until(
            lambda: _voice_where(bob, lambda v: v["state"] == "paused"), "the note ends", bob_log
        )
        # Ada's own copy shows too.
        await until(lambda: _voice(ada), "ada sees her voice note", ada_log)

        # With the pointer: held down, the note is sent on release; a short press starts a
        # recording that stays on until the next press sends it.
        notes = bob.locator("#messages .voice-note")
        await ada.hover("#record-voice")
        await ada.mouse.down()
        await until(lambda: _timer_past(ada, "0:01"), "a held recording", ada_log)
        await ada.mouse.up()
        await ada.locator(".recorder").wait_for(state="detached")
        await until(lambda: _count_is(notes, 2), "bob gets the held note", bob_log)
        await ada.click("#record-voice")
        await until(lambda: _timer_past(ada, "0:01"), "a pressed recording goes on", ada_log)
        assert await ada.locator(".recorder").count() == 1
        await ada.click("#record-voice")
        await ada.locator(".recorder").wait_for(state="detached")
        await until(lambda: _count_is(notes, 3), "bob gets the pressed note", bob_log)
        await ada.screenshot(path=str(tmp_path / "ada-voice.png"))
        assert not _errors(ada_log, bob_log), _errors(ada_log, bob_log)


async def _timer_past(page: Page, at: str) -> bool:
    text = await page.locator(".recorder-time").text_content()
    return bool(text and text >= at)


async def _voice(page: Page) -> dict[str, Any] | None:
    voice: dict[str, Any] | None = await page.evaluate(VOICE_JS)
    return voice if voice and voice["media"] else None


async def _voice_where(page: Page, check: Any) -> dict[str, Any] | None:
    voice = await _voice(page)
    return voice if voice and check(voice) else None


async def test_pdf_with_a_caption_shows_its_first_page_to_the_other_user(
    node: Node, tmp_path: Path
) -> None:
    document = minimal_pdf()
    path = tmp_path / "figures.pdf"
    path.write_bytes(document)
    async with chromium() as browser:
        ada, ada_log, bob, bob_log = await _chat(browser, node)
        # What is in the composer when the file is given becomes its caption.
        await ada.fill("#composer-text", "Q3 figures, page one")
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(path))

        card = bob.locator("#messages .pdf-card", has_text="figures.pdf")
        await until(lambda: card.count(), "bob sees the PDF card", bob_log + ada_log)
        preview = await until(
            lambda: bob.evaluate(PIXEL_JS, "#messages .pdf-card img.pdf-preview"),
            "the PDF's first page loads",
            bob_log,
        )
        width, height, red, green, blue, src = preview
        assert "/thumb/small" in src and "sig=" in src, src
        assert width > height  # the page is landscape, 300 x 200 points
        assert red > 180 and green < 80 and blue < 80, preview  # the page is red
        assert await card.locator("img.pdf-preview").get_attribute("alt") == (
            "First page of figures.pdf"
        )
        assert "B" in (await card.locator(".file-size").text_content() or "")
        message = bob.locator("#messages li.msg", has=bob.locator(".pdf-card"))
        assert await message.locator(".text").text_content() == "Q3 figures, page one"
        href = await card.locator("a.download").get_attribute("href")
        assert href and "sig=" in href
        assert await bob.evaluate(FETCH_JS, href) == _b64(document)
        # The caption left the composer with the file.
        assert await ada.input_value("#composer-text") == ""
        await bob.screenshot(path=str(tmp_path / "bob-pdf.png"))
        assert not _errors(ada_log, bob_log), _errors(ada_log, bob_log)


VIEWER_JS = """
() => {
  const d = document.querySelector('dialog.viewer');
  if (!d) return null;
  const img = d.querySelector('.viewer-image');
  return {
    open: d.open,
    width: img.complete ? img.naturalWidth : 0,
    alt: img.alt,
    count: d.querySelector('.viewer-count').textContent,
    caption: d.querySelector('.viewer-caption').textContent,
    focusInside: d.contains(document.activeElement),
    src: img.currentSrc,
  };
}
"""


async def test_image_viewer_opens_steps_and_closes_by_keyboard(node: Node, tmp_path: Path) -> None:
    red = png(640, 400, (220, 30, 30))
    blue = png(200, 300, (30, 60, 220))
    async with chromium() as browser:
        ada, ada_log, bob, bob_log = await _chat(browser, node)
        await ada.fill("#composer-text", "the red one")
        await ada.evaluate(GIVE_FILE_JS, ["drop", "red.png", "image/png", _b64(red)])
        await until(lambda: bob.locator("#messages a.media-image").count(), "first image", bob_log)
        await ada.evaluate(GIVE_FILE_JS, ["drop", "blue.png", "image/png", _b64(blue)])
        links = bob.locator("#messages a.media-image")
        await until(lambda: _count_is(links, 2), "bob sees both images", bob_log)
        await until(lambda: links.first.get_attribute("href"), "signed links", bob_log)
        assert not await _loaded(bob, "/web/app/viewer.js")

        # Enter on the focused thumbnail opens the viewer (not a new tab) with the full image.
        pages_before = len(bob.context.pages)
        await links.first.focus()
        await bob.keyboard.press("Enter")
        shown = await until(lambda: _viewer_where(bob, 640), "the viewer shows red.png", bob_log)
        assert len(bob.context.pages) == pages_before
        assert shown["open"] and shown["focusInside"], shown
        assert shown["alt"] == "red.png" and shown["caption"] == "the red one"
        assert shown["count"] == "1 of 2"
        assert "/thumb/" not in shown["src"] and "sig=" in shown["src"], shown
        await bob.screenshot(path=str(tmp_path / "bob-viewer.png"))

        # Arrows step between the conversation's images (and stop at the ends).
        await bob.keyboard.press("ArrowRight")
        shown = await until(lambda: _viewer_where(bob, 200), "the viewer shows blue.png", bob_log)
        assert shown["count"] == "2 of 2" and shown["caption"] == "blue.png"
        await bob.keyboard.press("ArrowRight")
        await bob.keyboard.press("ArrowLeft")
        await until(lambda: _viewer_where(bob, 640), "back to red.png", bob_log)
        await bob.keyboard.press("ArrowRight")
        await until(lambda: _viewer_where(bob, 200), "blue.png again", bob_log)

        # Escape closes it, and the focus is on the thumbnail of the image last shown.
        await bob.keyboard.press("Escape")
        await until(
            lambda: bob.evaluate("() => !document.querySelector('dialog.viewer')"),
            "the viewer closes",
            bob_log,
        )
        focused = await bob.evaluate(
            "() => document.activeElement.matches('a.media-image') && "
            "document.activeElement.querySelector('img').alt"
        )
        assert focused == "blue.png"

        # On a phone-sized screen the image fits, and a click on the thumbnail opens it too.
        await bob.set_viewport_size(ViewportSize(width=PHONE["width"], height=PHONE["height"]))
        await links.first.click()
        await until(lambda: _viewer_where(bob, 640), "the viewer on a phone", bob_log)
        box = await bob.locator("dialog.viewer .viewer-image").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
        assert await bob.locator("dialog.viewer .viewer-close").is_visible()
        await bob.screenshot(path=str(tmp_path / "bob-viewer-phone.png"))
        await bob.click("dialog.viewer .viewer-close")
        await until(
            lambda: bob.evaluate("() => !document.querySelector('dialog.viewer')"),
            "closed by its button",
            bob_log,
        )
        assert not _errors(ada_log, bob_log), _errors(ada_log, bob_log)


async def _count_is(locator: Any, n: int) -> bool:
    return bool(await locator.count() == n)


async def _viewer_where(page: Page, width: int) -> dict[str, Any] | None:
    shown: dict[str, Any] | None = await page.evaluate(VIEWER_JS)
    return shown if shown and shown["width"] == width else None


# Uploads in parts this small, and fail on the first lost connection instead of retrying for
# seconds (attachments.js UPLOAD_OPTIONS; set before the first upload).
FAST_FAIL_JS = """
async () => {
  const { UPLOAD_OPTIONS } = await import('/web/app/attachments.js');
  UPLOAD_OPTIONS.retryDelays = [0];
  UPLOAD_OPTIONS.chunkSize = 256 * 1024;
}
"""


async def test_upload_cut_off_shows_retry_and_resumes_with_equal_bytes_and_caption(
    node: Node, tmp_path: Path
) -> None:
    original = os.urandom(1024 * 1024 + 123)
    path = tmp_path / "dataset.bin"
    path.write_bytes(original)
    async with chromium() as browser:
        ada, ada_log, bob, bob_log = await _chat(browser, node)
        await ada.evaluate(FAST_FAIL_JS)
        # The connection is cut under every PATCH after the first: the node keeps one part.
        patches: list[tuple[str, str | None]] = []
        cut = asyncio.Event()

        async def cut_after_first_part(route: Route) -> None:
            request = route.request
            if request.method == "PATCH":
                patches.append((request.url, request.headers.get("upload-offset")))
                if len(patches) > 1 and not cut.is_set():
                    await route.abort("connectionreset")
                    return
            await route.continue_()

        await ada.route("**/v1/media/tus/**", cut_after_first_part)
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(path))

        row = ada.locator("#uploads li.upload.failed")
        await until(lambda: row.count(), "the upload shows as failed", ada_log)
        assert await row.locator(".upload-error").text_content() == (
            "Upload failed: the connection was lost"
        )
        assert await row.locator(".upload-retry").text_content() == "Retry"
        assert await row.locator(".upload-remove").get_attribute("aria-label") == (
            "Remove dataset.bin"
        )
        # A caption typed into the failed upload's row goes with the file.
        await row.locator(".upload-caption").fill("the whole set")
        await ada.screenshot(path=str(tmp_path / "ada-upload-failed.png"))
        assert not await bob.locator("#messages .file-card").count()

        # Retry with the connection back: it asks the node how far it got and goes on there.
        cut.set()
        before = len(patches)
        await row.locator(".upload-retry").click()
        card = bob.locator("#messages .file-card", has_text="dataset.bin")
        await until(lambda: card.count(), "bob sees the retried file", bob_log + ada_log)
        resumed = patches[before:]
        assert resumed and int(resumed[0][1] or 0) >= 256 * 1024, patches
        assert len({url for url, _ in patches}) == 1, patches  # one upload, resumed
        message = bob.locator("#messages li.msg", has=bob.locator(".file-card", has_text="dataset"))
        assert await message.locator(".text").text_content() == "the whole set"
        href = await until(lambda: card.locator("a.download").get_attribute("href"), "link")
        assert await bob.evaluate(FETCH_JS, href) == _b64(original)
        await until(lambda: _no_upload_rows(ada), "the upload row gone", ada_log)

        # A failed upload can be removed instead: its row goes, and nothing is sent.
        cut.clear()
        patches.clear()
        small = tmp_path / "notes.bin"
        small.write_bytes(os.urandom(600 * 1024))
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(small))
        await until(lambda: row.count(), "the second upload fails", ada_log)
        await row.locator(".upload-remove").click()
        await until(lambda: _no_upload_rows(ada), "the removed row gone", ada_log)
        await asyncio.sleep(0.5)
        assert not await bob.locator("#messages .file-card", has_text="notes.bin").count()
        await bob.screenshot(path=str(tmp_path / "bob-retried-file.png"))
        unexpected = [
            line
            for line in _errors(ada_log, bob_log)
            if "ERR_CONNECTION_RESET" not in line and "ERR_FAILED" not in line
        ]
        assert not unexpected, unexpected


async def _no_upload_rows(page: Page) -> bool:
    return bool(await page.evaluate("() => !document.querySelector('#uploads li')"))


async def test_upload_refused_by_the_node_shows_why_and_retry_completes_it(
    start_node: StartNode, tmp_path: Path
) -> None:
    node = await start_node(media_quota_bytes=1_000_000)
    first = tmp_path / "first.bin"
    first.write_bytes(os.urandom(600_000))
    second = tmp_path / "second.bin"
    second_bytes = os.urandom(600_000)
    second.write_bytes(second_bytes)
    async with chromium() as browser:
        ada, ada_log, bob, bob_log = await _chat(browser, node, bob_locale="zh-CN")
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(first))
        card = bob.locator("#messages .file-card", has_text="first.bin")
        await until(lambda: card.count(), "bob gets the first file", bob_log)
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(second))
        # The second does not fit in ada's quota beside the first: the node refuses it.
        row = ada.locator("#uploads li.upload.failed")
        await until(lambda: row.count(), "the refusal shows", ada_log)
        assert await row.locator(".upload-error").text_content() == (
            "Upload failed: over your storage quota"
        )
        await ada.screenshot(path=str(tmp_path / "ada-over-quota.png"))
        # Ada makes room (deletes her first file), and Retry sends the second.
        await ada.evaluate(
            """async () => {
              const app = window.huddleApp;
              const m = app.chat.messages(app.current).find((m) => m.media?.name === 'first.bin');
              await (await app.files).files.delete(m.media.id);
            }"""
        )
        await row.locator(".upload-retry").click()
        card = bob.locator("#messages .file-card", has_text="second.bin")
        await until(lambda: card.count(), "bob gets the retried file", bob_log + ada_log)
        href = await until(lambda: card.locator("a.download").get_attribute("href"), "link")
        assert await bob.evaluate(FETCH_JS, href) == _b64(second_bytes)
        await until(lambda: _no_upload_rows(ada), "the upload row gone", ada_log)
        unexpected = [line for line in _errors(ada_log, bob_log) if "413" not in line]
        assert not unexpected, unexpected


# What the page has loaded: the first screen of a user with nothing to resume carries neither
# the files UI nor the SDK's files module nor tus-js-client.
LOADED_JS = """
() => performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname)
"""

SMALL_PARTS_JS = """
async () => {
  const { UPLOAD_OPTIONS } = await import('/web/app/attachments.js');
  UPLOAD_OPTIONS.chunkSize = 256 * 1024;
}
"""

# The messages with a file in the open conversation, as the chat device holds them.
FILE_MESSAGES_JS = """
(name) => {
  const app = window.huddleApp;
  return app.chat.messages(app.current)
    .filter((m) => m.media && m.media.name === name)
    .map((m) => ({ seq: m.seq, kind: m.kind, text: m.text ?? '', client_id: m.client_id,
                   media: m.media.id }));
}
"""

UPLOAD_ROW_JS = """
() => [...document.querySelectorAll('#uploads li.upload')].map((li) => ({
  name: li.querySelector('.upload-name').textContent,
  caption: li.querySelector('.upload-caption')?.value ?? null,
  progress: !!li.querySelector('progress'),
}))
"""


def wav_tone(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A mono 16-bit WAV of a 440 Hz tone: a sound file the node takes as a voice note."""
    import math
    import struct
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = (
            int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate))
        )
        w.writeframes(b"".join(struct.pack("<h", f) for f in frames))
    return out.getvalue()


async def _continue(route: Route) -> None:
    # A request the reload cancelled cannot be continued any more: nothing to do then.
    with contextlib.suppress(PlaywrightError):
        await route.continue_()


async def test_uploads_cut_by_a_reload_resume_and_send_their_message_once(
    node: Node, tmp_path: Path
) -> None:
    original = os.urandom(4 * 1024 * 1024 + 77)
    path = tmp_path / "dataset.bin"
    path.write_bytes(original)
    async with chromium() as browser:
        ada, ada_log, bob, bob_log = await _chat(browser, node)
        for page in (ada, bob):
            loaded = await page.evaluate(LOADED_JS)
            assert not [
                p for p in loaded if p.endswith(("attachments.js", "files.js", "tus.min.js"))
            ]
        me = await ada.evaluate("() => window.huddleApp.session.identity")

        # The socket goes through the test from the next load on: it can hold back the
        # node's answers to ada's sends (the acknowledgement a reload may cut).
        hold_acks = False
        held: list[str] = []

        async def relay(ws: WebSocketRoute) -> None:
            server = ws.connect_to_server()
            sends: set[str] = set()

            def from_page(message: str | bytes) -> None:
                frame = json.loads(message)
                if hold_acks and frame.get("type") == "chat.send" and frame.get("media"):
                    sends.add(frame["id"])
                server.send(message)

            def from_server(message: str | bytes) -> None:
                frame = json.loads(message)
                ours = frame.get("re") in sends or (
                    frame.get("type") == "chat.message"
                    and frame["message"].get("sender") == me
                    and str(frame["message"].get("client_id", "")).startswith("f-")
                )
                if hold_acks and ours:
                    held.append(frame.get("type", ""))
                    return
                ws.send(message)

            ws.on_message(from_page)
            server.on_message(from_server)

        await ada.route_web_socket("**/v1/ws", relay)

        # Parts of 256 KiB: two go through, the third is held until the reload cuts it, so
        # the node has 512 KiB. After the reload the parts wait until the row has been checked.
        await ada.evaluate(SMALL_PARTS_JS)
        patches: list[tuple[str, int]] = []
        go = asyncio.Event()

        async def throttle(route: Route) -> None:
            request = route.request
            if request.method == "PATCH":
                patches.append((request.url, int(request.headers.get("upload-offset") or 0)))
                if len(patches) > 2:
                    await go.wait()
            await _continue(route)

        await ada.route("**/v1/media/tus/**", throttle)
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(path))
        row = ada.locator("#uploads li.upload", has_text="dataset.bin")
        await row.locator(".upload-caption").fill("the whole set")
        # The third part under way: the node has the first two.
        await until(lambda: asyncio.sleep(0, len(patches) >= 3), "two parts sent", ada_log)
        url_before = patches[0][0]
        await ada.reload()
        await until(lambda: synced(ada), "ada signed in again", ada_log)
        await open_conversation(ada, "bob")
        # The row is back in its conversation, with its name and caption.
        rows = await until(lambda: ada.evaluate(UPLOAD_ROW_JS), "the upload row back", ada_log)
        assert rows == [{"name": "dataset.bin", "caption": "the whole set", "progress": True}]
        await until(lambda: asyncio.sleep(0, len(patches) > 3), "the upload going on", ada_log)
        await ada.screenshot(path=str(tmp_path / "ada-upload-back-after-reload.png"))
        go.set()

        # It went on from the node's offset, in the same upload.
        assert patches[3] == (url_before, 512 * 1024), patches
        card = bob.locator("#messages .file-card", has_text="dataset.bin")
        await until(lambda: card.count(), "bob gets the resumed file", bob_log + ada_log)
        href = await until(lambda: card.locator("a.download").get_attribute("href"), "link")
        assert await bob.evaluate(FETCH_JS, href) == _b64(original)
        await until(lambda: _no_upload_rows(ada), "ada's row gone", ada_log)
        await asyncio.sleep(1.0)
        sent = await bob.evaluate(FILE_MESSAGES_JS, "dataset.bin")
        assert len(sent) == 1, sent
        assert sent[0]["text"] == "the whole set"
        assert sent[0]["client_id"] == "f-" + sent[0]["media"]
        assert await ada.evaluate(f"() => localStorage.getItem('huddle.uploads.{me}')") is None
        await bob.screenshot(path=str(tmp_path / "bob-resumed-file.png"))

        # A voice note whose message reached the node, but whose acknowledgement the reload
        # cut: it reads "[Voice message]" while unsent, and arrives once.
        hold_acks = True
        await ada.evaluate(
            """async (b64) => {
              const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
              const { sendFile } = await import('/web/app/attachments.js');
              sendFile(new File([bytes], 'note.wav', { type: 'audio/wav' }), { kind: 'voice' });
            }""",
            _b64(wav_tone()),
        )
        voice = bob.locator("#messages .voice-note")
        await until(lambda: voice.count(), "bob gets the voice note", bob_log + ada_log)
        pending = ada.locator("#messages li.msg.pending")
        await until(lambda: pending.count(), "ada's note waits for its answer", ada_log)
        assert await pending.locator(".text").text_content() == "[Voice message]"
        await ada.screenshot(path=str(tmp_path / "ada-voice-pending.png"))
        await until(lambda: asyncio.sleep(0, held), "the node's answer held back", ada_log)
        hold_acks = False
        await ada.reload()
        await until(lambda: synced(ada), "ada signed in again", ada_log)
        await open_conversation(ada, "bob")
        await until(lambda: _no_pending(ada), "ada's note answered", ada_log)
        await asyncio.sleep(1.0)
        notes = await bob.evaluate(FILE_MESSAGES_JS, "note.wav")
        assert len(notes) == 1 and notes[0]["kind"] == "voice", notes
        notes_voice = notes[0]["media"]
        assert len(await ada.evaluate(FILE_MESSAGES_JS, "note.wav")) == 1
        assert await voice.count() == 1

        # An upload that ended on the node just as the page reloaded (before the page heard
        # of it): after the reload its message is sent, once, with its caption.
        stop_meta = True
        meta_asked = asyncio.Event()

        async def hold_meta(route: Route) -> None:
            if stop_meta:
                meta_asked.set()  # the upload is done: the page asks for its file object
            else:
                await _continue(route)

        await ada.route("**/v1/media/*/meta", hold_meta)
        small = tmp_path / "notes.bin"
        small_bytes = os.urandom(300 * 1024)
        small.write_bytes(small_bytes)
        await ada.fill("#composer-text", "my notes")
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(small))
        await until(
            lambda: ada.evaluate(
                f"() => (JSON.parse(localStorage.getItem('huddle.uploads.{me}')) || [])"
                ".some((r) => r.name === 'notes.bin' && r.uploadUrl)"
            ),
            "the upload noted",
            ada_log,
        )
        await asyncio.wait_for(meta_asked.wait(), 15)
        assert not await bob.locator("#messages .file-card", has_text="notes.bin").count()
        stop_meta = False
        await ada.reload()
        card = bob.locator("#messages .file-card", has_text="notes.bin")
        await until(lambda: card.count(), "bob gets the notes", bob_log + ada_log)
        await asyncio.sleep(1.0)
        notes = await bob.evaluate(FILE_MESSAGES_JS, "notes.bin")
        assert len(notes) == 1 and notes[0]["text"] == "my notes", notes

        # Ada deletes the first file: bob's card says it is gone when he tries to download
        # it, and so does the conversation opened again.
        await ada.evaluate(
            "async (id) => (await window.huddleApp.files).files.delete(id)", sent[0]["media"]
        )
        first = bob.locator("#messages .file-card", has_text="dataset.bin")
        await first.locator("a.download").click()
        gone = bob.locator("#messages .file-card.file-gone", has_text="dataset.bin")
        await until(lambda: gone.count(), "the card says the file is gone", bob_log)
        assert "File no longer available" in (await gone.text_content() or "")
        assert not await gone.locator("a").count()
        # The voice note too: after a reload both show as gone, the notes file still there.
        await ada.evaluate(
            "async (id) => (await window.huddleApp.files).files.delete(id)", notes_voice
        )
        await bob.reload()
        await until(lambda: synced(bob), "bob signed in again", bob_log)
        await open_conversation(bob, "ada")
        await until(lambda: gone.count(), "still gone after a reload", bob_log)
        gone_voice = bob.locator("#messages .file-card.file-gone", has_text="[Voice message]")
        await until(lambda: gone_voice.count(), "the voice note gone", bob_log)
        assert not await bob.locator("#messages .voice-note").count()
        await until(lambda: card.locator("a.download[href]").count(), "the notes still there")
        await bob.screenshot(path=str(tmp_path / "bob-file-gone.png"))
        unexpected = [
            line
            for line in _errors(ada_log, bob_log)
            if "ERR_ABORTED" not in line and "404" not in line and "ERR_FAILED" not in line
        ]
        assert not unexpected, unexpected


async def _no_pending(page: Page) -> bool:
    return bool(await page.evaluate("() => !document.querySelector('#messages li.pending')"))


async def test_an_upload_stopped_by_signing_out_goes_on_at_the_next_sign_in(
    node: Node, tmp_path: Path
) -> None:
    original = os.urandom(1024 * 1024 + 5)
    path = tmp_path / "report.bin"
    path.write_bytes(original)
    async with chromium() as browser:
        ada, ada_log, bob, bob_log = await _chat(browser, node)
        await ada.evaluate(SMALL_PARTS_JS)
        patches: list[tuple[str, int]] = []
        go = asyncio.Event()
        seen = asyncio.Event()

        async def hold_third_part(route: Route) -> None:
            request = route.request
            if request.method == "PATCH":
                patches.append((request.url, int(request.headers.get("upload-offset") or 0)))
                if len(patches) == 3:
                    await go.wait()
                elif len(patches) == 4:
                    # The first part after the sign-in waits for its row to be seen: the
                    # rest of the file could otherwise finish before the test looks.
                    await seen.wait()
            await _continue(route)

        await ada.route("**/v1/media/tus/**", hold_third_part)
        await ada.fill("#composer-text", "the report")
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(path))
        await until(lambda: asyncio.sleep(0, len(patches) >= 3), "two parts sent", ada_log)
        await ada.click("#signout")
        go.set()  # the held part goes out after the sign-out stopped the upload
        await sign_in(ada, node.url, "Ada")
        await open_conversation(ada, "bob")
        rows = await until(lambda: ada.evaluate(UPLOAD_ROW_JS), "the upload row back", ada_log)
        seen.set()
        assert rows[0]["name"] == "report.bin" and rows[0]["caption"] == "the report", rows
        card = bob.locator("#messages .file-card", has_text="report.bin")
        await until(lambda: card.count(), "bob gets the report", bob_log + ada_log)
        later = [p for p in patches[3:] if p[1] > 0]
        assert later and later[0][0] == patches[0][0] and later[0][1] >= 512 * 1024, patches
        href = await until(lambda: card.locator("a.download").get_attribute("href"), "link")
        assert await bob.evaluate(FETCH_JS, href) == _b64(original)
        await asyncio.sleep(1.0)
        reports = await bob.evaluate(FILE_MESSAGES_JS, "report.bin")
        assert len(reports) == 1 and reports[0]["text"] == "the report", reports


async def test_an_upload_whose_file_was_not_kept_says_so_and_remove_releases_it(
    node: Node, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(1024 * 1024))
    async with chromium() as browser:
        ada, ada_log, _, bob_log = await _chat(browser, node, bob_locale="zh-CN")
        await ada.evaluate(SMALL_PARTS_JS)
        patches: list[str] = []

        async def hold_second_part(route: Route) -> None:
            if route.request.method == "PATCH":
                patches.append(route.request.url)
                if len(patches) > 1:
                    return  # held until the reload cancels it
            await _continue(route)

        await ada.route("**/v1/media/tus/**", hold_second_part)
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(path))
        await until(lambda: asyncio.sleep(0, len(patches) > 1), "one part sent", ada_log)
        # The browser lost the kept file (storage cleared): nothing to go on with.
        await ada.evaluate(
            """async () => {
              const { KeptFiles } = await import('/web/sdk/files.js');
              const kept = new KeptFiles();
              for (const entry of await kept.all()) await kept.delete(entry.fingerprint);
            }"""
        )
        await ada.reload()
        await until(lambda: synced(ada), "ada signed in again", ada_log)
        await open_conversation(ada, "bob")
        row = ada.locator("#uploads li.upload.failed", has_text="big.bin")
        await until(lambda: row.count(), "the row says the file is gone", ada_log)
        assert await row.locator(".upload-error").text_content() == (
            "Upload failed: the file was not kept on this device; attach it again"
        )
        assert not await row.locator(".upload-retry").count()
        usage = "async () => (await (await window.huddleApp.files).files.usage()).reserved"
        assert await ada.evaluate(usage) == 1024 * 1024
        await ada.screenshot(path=str(tmp_path / "ada-file-not-kept.png"))
        # Remove drops the unfinished upload on the node: its reservation goes with it.
        await row.locator(".upload-remove").click()
        await until(lambda: _no_upload_rows(ada), "the row gone", ada_log)
        released = f"async () => (await ({usage})()) === 0"
        await until(lambda: ada.evaluate(released), "the reservation released", ada_log)
        assert not _errors(bob_log)


async def test_an_upload_cut_by_a_dropped_network_goes_on_when_it_is_back(
    node: Node, tmp_path: Path
) -> None:
    original = os.urandom(1024 * 1024 + 9)
    path = tmp_path / "photos.zip"
    path.write_bytes(original)
    async with chromium() as browser:
        context, ada, ada_log = await new_page(browser)
        _, bob, bob_log = await new_page(browser)
        await sign_in(ada, node.url, "Ada")
        await sign_in(bob, node.url, "Bob")
        await ada.click("#new-chat")
        await ada.fill("#chat-peer", "bob")
        await ada.press("#chat-peer", "Enter")
        await ada.fill("#composer-text", "hello")
        await ada.press("#composer-text", "Enter")
        await open_conversation_when_listed(bob, "ada")
        await ada.evaluate(FAST_FAIL_JS)
        patches: list[tuple[str, int]] = []
        offline = asyncio.Event()

        async def cut_at_third_part(route: Route) -> None:
            request = route.request
            if request.method == "PATCH":
                patches.append((request.url, int(request.headers.get("upload-offset") or 0)))
                if len(patches) == 3:
                    await offline.wait()
            await _continue(route)

        await ada.route("**/v1/media/tus/**", cut_at_third_part)
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files(str(path))
        await until(lambda: asyncio.sleep(0, len(patches) >= 3), "two parts sent", ada_log)
        await context.set_offline(True)
        offline.set()
        row = ada.locator("#uploads li.upload.failed", has_text="photos.zip")
        await until(lambda: row.count(), "the upload fails offline", ada_log)
        await ada.screenshot(path=str(tmp_path / "ada-upload-offline.png"))
        await context.set_offline(False)
        # Nobody presses Retry: the upload goes on once the node is reachable again.
        card = bob.locator("#messages .file-card", has_text="photos.zip")
        await until(lambda: card.count(), "bob gets the file", bob_log + ada_log)
        later = [p for p in patches[3:] if p[1] > 0]
        assert later and later[0] == (patches[0][0], 512 * 1024), patches
        href = await until(lambda: card.locator("a.download").get_attribute("href"), "link")
        assert await bob.evaluate(FETCH_JS, href) == _b64(original)
        await asyncio.sleep(1.0)
        assert len(await bob.evaluate(FILE_MESSAGES_JS, "photos.zip")) == 1
