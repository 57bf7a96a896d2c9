"""Quota of resumable uploads: an unfinished upload reserves its declared length against the
owner's quota, an owner has a bounded number of them open, and an expired one leaves
nothing behind, neither on disk nor in the quota."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from huddle.media_client import MediaClient, MediaRequestError
from media_store import gc
from tests import media_files
from tests.conftest import StartNode
from tests.helpers import Node, make_token

CHUNK_HEADERS = {"Content-Type": "application/offset+octet-stream"}


def parts(node: Node) -> list[Path]:
    return sorted((node.settings.data_dir / "media" / "tus").iterdir())


async def fill(client: MediaClient, url: str, data: bytes) -> None:
    """Send ``data`` from offset 0 in one PATCH, which leaves the upload unfinished."""
    offset, media_id = await client.send_chunk(url, 0, data, len(data))
    assert (offset, media_id) == (len(data), None)


@pytest.mark.redis_cluster
async def test_partial_uploads_are_held_against_the_quota(start_node: StartNode) -> None:
    node = await start_node(media_quota_bytes=1000)
    async with (
        MediaClient(node.url, make_token("alice")) as alice,
        MediaClient(node.url, make_token("bob")) as bob,
    ):
        # Each upload filled to one byte short of its length: none of them is a file yet.
        first = await alice.create_upload(400)
        await fill(alice, first, b"x" * 399)
        second = await alice.create_upload(400)
        await fill(alice, second, b"y" * 399)
        with pytest.raises(MediaRequestError) as refused:
            await alice.create_upload(400)
        assert (refused.value.status, refused.value.code) == (413, "quota_exceeded")
        usage = await alice.usage()
        assert (usage["used"], usage["reserved"], usage["total"]) == (0, 800, 800)
        assert usage["open_uploads"] == 2
        # A simple upload is checked against the same total.
        with pytest.raises(MediaRequestError) as simple:
            await alice.upload(b"z" * 300)
        assert (simple.value.status, simple.value.code) == (413, "quota_exceeded")
        await alice.upload(b"z" * 200)
        assert (await alice.usage())["total"] == 1000

        # Another user's quota is their own.
        assert (await bob.usage())["reserved"] == 0
        await fill(bob, await bob.create_upload(900), b"b" * 10)
        assert (await bob.usage())["reserved"] == 900

        # Termination gives the reservation back.
        await alice.cancel_upload(first)
        usage = await alice.usage()
        assert (usage["used"], usage["reserved"], usage["open_uploads"]) == (200, 400, 1)
        assert await alice.create_upload(400)


async def test_open_uploads_are_capped(start_node: StartNode) -> None:
    node = await start_node(media_tus_max_open=3)
    async with MediaClient(node.url, make_token("alice")) as alice:
        urls = [await alice.create_upload(10) for _ in range(3)]
        with pytest.raises(MediaRequestError) as refused:
            await alice.create_upload(10)
        assert (refused.value.status, refused.value.code) == (429, "too_many_uploads")
        assert (await alice.usage())["open_uploads"] == 3
        # Finishing one frees its place.
        _, media_id = await alice.send_chunk(urls[0], 0, b"0123456789", 10)
        assert media_id is not None
        usage = await alice.usage()
        assert (usage["used"], usage["reserved"], usage["open_uploads"]) == (10, 20, 2)
        await alice.create_upload(10)
    async with MediaClient(node.url, make_token("bob")) as bob:
        assert await bob.create_upload(10)


@pytest.mark.redis_cluster
async def test_expired_partial_uploads_leave_nothing(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Expiry has its own, shorter interval than blob collection (left at its default here).
    monkeypatch.setattr(gc, "EXPIRY_INTERVAL_S", 0.2)
    node = await start_node(media_tus_expiry_s=1, media_quota_bytes=10_000)
    async with MediaClient(node.url, make_token("alice")) as alice:
        urls = [await alice.create_upload(5000) for _ in range(2)]
        for url in urls:
            await fill(alice, url, b"p" * 4999)
        assert len(parts(node)) == 2
        assert (await alice.usage())["reserved"] == 10_000

        async def swept() -> bool:
            usage = await alice.usage()
            return usage["reserved"] == 0 and usage["open_uploads"] == 0 and not parts(node)

        # Expiry 1 s, sweeps every 0.2 s: a generous bound. Server state seen over HTTP,
        # no event to wait on: poll it.
        async with asyncio.timeout(10.0):
            while not await swept():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert (await alice.usage())["total"] == 0
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {alice.token}", "Tus-Resumable": "1.0.0"}
            async with http.head(urls[0], headers=headers) as resp:
                assert resp.status == 404
            patch = {**headers, **CHUNK_HEADERS, "Upload-Offset": "4999"}
            async with http.patch(urls[1], data=b"p", headers=patch) as resp:
                assert resp.status == 404
        assert not parts(node)
        # The quota is whole again.
        assert await alice.create_upload(10_000)


async def test_completion_turns_the_reservation_into_use(node: Node, tmp_path: Path) -> None:
    data = b"the same content, twice\n"
    path = tmp_path / "notes.txt"
    path.write_bytes(data)
    async with MediaClient(node.url, make_token("alice")) as alice:
        url = await alice.create_upload(len(data))
        await fill(alice, url, data[:-1])
        assert (await alice.usage())["reserved"] == len(data)
        _, media_id = await alice.send_chunk(url, len(data) - 1, data[-1:], 1)
        assert media_id is not None
        usage = await alice.usage()
        assert (usage["used"], usage["reserved"]) == (len(data), 0)
        # Known content (deduplicated in the store) is still charged once per file.
        again = await alice.upload_resumable(path)
        usage = await alice.usage()
        assert (usage["used"], usage["reserved"]) == (2 * len(data), 0)
        await alice.delete(media_id)
        await alice.delete(again["id"])
        usage = await alice.usage()
        assert (usage["used"], usage["reserved"], usage["open_uploads"]) == (0, 0, 0)

        # A completed upload the store refuses gives its reservation back.
        exe = media_files.exe()
        url = await alice.create_upload(len(exe))
        with pytest.raises(MediaRequestError) as denied:
            await alice.send_chunk(url, 0, exe, len(exe))
        assert denied.value.code == "type_denied"
        usage = await alice.usage()
        assert (usage["used"], usage["reserved"], usage["open_uploads"]) == (0, 0, 0)
    assert not parts(node)
