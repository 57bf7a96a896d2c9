"""Files in the web app's conversations, in real Chromium: ada attaches a file with the
attach button's file picker, bob sees its card appear live and downloads the same bytes; ada
drops an image and pastes another onto the conversation, and bob sees their thumbnails load.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser.chat_pages import chromium, new_page, open_conversation, sign_in, until
from tests.helpers import Node

pytestmark = pytest.mark.browser

# Makes a File from base64 in the page and hands it to the conversation as a drop or a paste
# would (the events Chromium fires for a real drag or Ctrl+V carry the same DataTransfer).
GIVE_FILE_JS = """
([how, name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const pane = document.getElementById("conversation");
  const init = { dataTransfer: data, bubbles: true, cancelable: true };
  if (how === "drop") {
    pane.dispatchEvent(new DragEvent("dragover", init));
    pane.dispatchEvent(new DragEvent("drop", init));
  } else {
    document.getElementById("composer-text").dispatchEvent(
      new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  }
}
"""

WATCH_PROGRESS_JS = """
() => {
  window.sawProgress = null;
  const list = document.getElementById("uploads");
  new MutationObserver(() => {
    const bar = list.querySelector("progress");
    if (bar && !window.sawProgress) {
      const name = list.querySelector(".upload-name").textContent;
      window.sawProgress = [name, bar.getAttribute("aria-label")];
    }
  }).observe(list, { childList: true, subtree: true });
}
"""

THUMBS_JS = """
() => [...document.querySelectorAll('#messages img.thumb')].map((img) => [
  img.alt, img.complete ? img.naturalWidth : 0, img.currentSrc,
  img.closest('a') ? img.closest('a').href : null])
"""

FETCH_JS = """
async (url) => {
  const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}
"""


def png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


async def test_attach_download_and_image_thumbnails(node: Node, tmp_path: Path) -> None:
    original = os.urandom(300 * 1024)
    path = tmp_path / "report.bin"
    path.write_bytes(original)
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        _, bob, bob_log = await new_page(browser, locale="zh-CN")
        await sign_in(ada, node.url, "Ada")
        await sign_in(bob, node.url, "Bob")
        # The first screen did not load the files module: it comes on first use.
        assert not await _loaded(ada, "/web/sdk/files.js")
        assert not await _loaded(ada, "/web/app/attachments.js")

        await ada.click("#new-chat")
        await ada.fill("#chat-peer", "bob")
        await ada.press("#chat-peer", "Enter")
        await ada.fill("#composer-text", "Here is the report")
        await ada.press("#composer-text", "Enter")
        await open_conversation_when_listed(bob, "ada")
        await until(lambda: ada.locator("#conv-title", has_text="bob").count(), "ada's chat")

        # The attach button is labelled and opens the picker; ada picks the file.
        assert await ada.get_attribute("#attach", "aria-label") == "Attach a file"
        assert await bob.get_attribute("#attach", "aria-label") == "添加文件"
        # The progress bar shows from the upload's start (seen by an observer: a few hundred
        # KB over loopback go by faster than polling).
        await ada.evaluate(WATCH_PROGRESS_JS)
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        chooser = await chooser_info.value
        await chooser.set_files(str(path))
        await until(lambda: _loaded(ada, "/web/sdk/files.js"), "files.js loaded on first use")
        assert await ada.evaluate("() => window.sawProgress") == [
            "report.bin",
            "Uploading report.bin",
        ]

        # Bob's card appears live with the name, the size and a download link.
        card = bob.locator("#messages .file-card", has_text="report.bin")
        await until(lambda: card.count(), "bob sees the file card", bob_log + ada_log)
        assert "300 KB" in (await card.text_content() or "")
        await until(
            lambda: card.locator("a.download[href]").count(), "the signed download link", bob_log
        )
        assert await card.locator("a.download").text_content() == "下载"
        async with bob.expect_download() as download_info:
            await card.locator("a.download").click()
        download = await download_info.value
        saved = tmp_path / "bob-download.bin"
        await download.save_as(saved)
        assert saved.read_bytes() == original
        assert download.suggested_filename == "report.bin"
        await bob.screenshot(path=str(tmp_path / "bob-file-card-zh.png"))
        # Ada's own copy of the message shows the same card; no upload is left on screen.
        await until(lambda: ada.locator("#messages .file-card").count(), "ada's card", ada_log)
        await until(lambda: _no_uploads(ada), "the progress bar gone", ada_log)

        # Ada drops one image and pastes another: bob sees both thumbnails load.
        red = png(640, 400, (220, 30, 30))
        blue = png(200, 300, (30, 60, 220))
        await ada.evaluate(GIVE_FILE_JS, ["drop", "red.png", "image/png", _b64(red)])
        await until(lambda: _loaded_thumbs(bob, 1), "bob sees the dropped image", bob_log)
        await ada.evaluate(GIVE_FILE_JS, ["paste", "blue.png", "image/png", _b64(blue)])
        thumbs = await until(lambda: _loaded_thumbs(bob, 2), "bob sees two thumbnails", bob_log)
        assert [alt for alt, *_ in thumbs] == ["red.png", "blue.png"]
        for _, width, src, link in thumbs:
            assert width > 0
            assert "/thumb/small" in src and "sig=" in src, src
            assert link and "sig=" in link and "/thumb/" not in link, link
        # The link opens the full image.
        full = await bob.evaluate(FETCH_JS, thumbs[0][3])
        assert full == _b64(red)
        await until(lambda: _loaded_thumbs(ada, 2), "ada sees her images", ada_log)

        # Two files picked at once, a big one first, with a caption typed before: their
        # messages come in that order (the small upload ends first), the caption on the first.
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(3_000_000))
        tiny = tmp_path / "tiny.txt"
        tiny.write_bytes(b"tiny")
        await ada.fill("#composer-text", "two files")
        async with ada.expect_file_chooser() as chooser_info:
            await ada.click("#attach")
        await (await chooser_info.value).set_files([str(big), str(tiny)])
        cards = await until(lambda: _file_messages(bob, 3), "bob sees both files", bob_log)
        assert [name for name, _ in cards] == ["report.bin", "big.bin", "tiny.txt"], cards
        assert "two files" in cards[1][1] and "two files" not in cards[2][1], cards

        await ada.screenshot(path=str(tmp_path / "ada-files.png"))
        await bob.screenshot(path=str(tmp_path / "bob-files-zh.png"))
        errors = [line for line in ada_log + bob_log if line.startswith(("pageerror", "error"))]
        assert not errors, errors


async def open_conversation_when_listed(page: Any, name: str) -> None:
    await page.locator("button.conv", has_text=name).wait_for()
    await open_conversation(page, name)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _loaded(page: Any, path: str) -> bool:
    return bool(
        await page.evaluate(
            "(p) => performance.getEntriesByType('resource')"
            ".some((e) => new URL(e.name).pathname === p)",
            path,
        )
    )


FILE_MESSAGES_JS = """
() => [...document.querySelectorAll('#messages li')].filter((li) => li.querySelector('.file-name'))
  .map((li) => [li.querySelector('.file-name').textContent, li.textContent])
"""


async def _file_messages(page: Any, n: int) -> list[list[str]] | None:
    """Each message with a file card: (the file's name, the message's text), once ``n`` are."""
    found: list[list[str]] = await page.evaluate(FILE_MESSAGES_JS)
    return found if len(found) >= n else None


async def _no_uploads(page: Any) -> bool:
    return bool(await page.evaluate("() => !document.querySelector('#uploads li')"))


async def _loaded_thumbs(page: Any, n: int) -> list[list[Any]] | None:
    thumbs: list[list[Any]] = await page.evaluate(THUMBS_JS)
    return thumbs if len(thumbs) == n and all(t[1] > 0 for t in thumbs) else None
