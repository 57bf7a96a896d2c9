"""Uploads and downloads through a live node: types, limits, access, ranges, derived media."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis
from PIL import Image

from huddle.media_client import MediaClient, MediaRequestError
from media_store import gc
from media_store.http import MEDIA
from signaling.keys import conv_key, media_key, media_owner_key, media_store_key
from tests import media_files
from tests.conftest import StartNode
from tests.helpers import Node, make_token


def client(node: Node, user: str) -> MediaClient:
    return MediaClient(node.url, make_token(user))


def blobs_on_disk(node: Node) -> list[Path]:
    return [p for p in (node.settings.data_dir / "media" / "blobs").glob("*/*/*") if p.is_file()]


def leftovers(node: Node) -> list[Path]:
    root = node.settings.data_dir / "media"
    return [p for d in ("tmp", "work", "tus") for p in (root / d).iterdir()]


async def test_image_upload_meta_thumbnails_and_download(node: Node) -> None:
    data = media_files.png((600, 400))
    async with client(node, "alice") as alice:
        meta = await alice.upload(data, name="chart.png")
        assert meta["mime"] == "image/png"
        assert meta["kind"] == "image"
        assert (meta["width"], meta["height"]) == (600, 400)
        assert meta["size"] == len(data)
        assert meta["name"] == "chart.png"
        assert meta["thumbnails"] == ["small", "large"]
        assert await alice.download(meta["id"]) == data
        small = await alice.download(f"/v1/media/{meta['id']}/thumb/small")
        with Image.open(io.BytesIO(small)) as im:
            assert im.format == "WEBP"
            assert max(im.size) == 320
        assert (await alice.meta(meta["id"]))["digest"] == meta["digest"]
    assert leftovers(node) == []


async def test_type_comes_from_content_and_deny_list(node: Node) -> None:
    async with client(node, "alice") as alice:
        with pytest.raises(MediaRequestError) as denied:
            await alice.upload(media_files.exe(), name="holiday.jpg")
        assert (denied.value.status, denied.value.code) == (415, "type_denied")
        text = await alice.upload(b"just some notes\n", name="photo.jpg")
        assert text["mime"] == "text/plain"
        script = b"#!/bin/sh\nrm -rf /\n"
        with pytest.raises(MediaRequestError) as shell:
            await alice.upload(script, name="notes.txt")
        assert shell.value.code == "type_denied"
    assert len(blobs_on_disk(node)) == 1  # the text file only
    assert leftovers(node) == []


async def test_video_denied_still_takes_webm_voice_notes(
    start_node: StartNode, tmp_path: Path
) -> None:
    node = await start_node(media_deny_types=["video/*"])
    note = media_files.webm(tmp_path / "note.webm", seconds=1.0)
    clip = media_files.webm(tmp_path / "clip.webm", seconds=1.0, video=True)
    async with client(node, "alice") as alice:
        stored = await alice.upload(note, name="note.webm")
        assert (stored["mime"], stored["kind"]) == ("audio/webm", "audio") and stored["voice"]
        with pytest.raises(MediaRequestError) as denied:
            await alice.upload(clip, name="clip.webm")
        assert (denied.value.status, denied.value.code) == (415, "type_denied")
    assert leftovers(node) == []


async def test_gps_location_is_stripped_without_reencoding(start_node: StartNode) -> None:
    node = await start_node()
    original = media_files.jpeg(gps=True)
    assert media_files.has_gps(original)
    async with client(node, "alice") as alice:
        meta = await alice.upload(original, name="beach.jpg")
        stored = await alice.download(meta["id"])
    assert not media_files.has_gps(stored)
    assert meta["size"] == len(stored) < len(original)
    with Image.open(io.BytesIO(stored)) as a, Image.open(io.BytesIO(original)) as b:
        assert a.tobytes() == b.tobytes()  # same pixels: the picture was not re-encoded
        assert a.getexif()[0x010F] == "HuddleCam"  # other EXIF kept

    keeping = await start_node(media_strip_gps=False)
    async with client(keeping, "alice") as alice:
        meta = await alice.upload(original, name="beach.jpg")
        assert media_files.has_gps(await alice.download(meta["id"]))


async def test_size_limit_enforced_while_receiving(start_node: StartNode) -> None:
    node = await start_node(media_max_upload_bytes=1024 * 1024)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b"\0" * 65536
        for _ in range(1024):  # 64 MiB if nobody stopped us
            sent += len(chunk)
            yield chunk

    async with client(node, "alice") as alice:
        with pytest.raises((MediaRequestError, aiohttp.ClientError)) as refused:
            await alice.upload(endless(), name="big.bin")
        if isinstance(refused.value, MediaRequestError):
            assert refused.value.code == "too_large"
        assert sent < 32 * 1024 * 1024  # refused early, not after the whole body
        # A declared length over the limit is refused before any byte is read.
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{node.url}/v1/media",
                data=io.BytesIO(b"\0" * (1024 * 1024 + 1)),
                headers={"Authorization": f"Bearer {alice.token}"},
            ) as resp,
        ):
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "too_large"
        exactly = await alice.upload(b"\1" * (1024 * 1024), name="fits.bin")
        assert exactly["size"] == 1024 * 1024
    assert leftovers(node) == []


async def test_authentication_is_required(node: Node) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{node.url}/v1/media", data=b"hello") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"
        async with http.post(
            f"{node.url}/v1/media", data=b"x", headers={"Authorization": "Bearer nope"}
        ) as resp:
            assert resp.status == 401
    forged = MediaClient(
        node.url, make_token("alice", secret="another-secret-0123456789-0123456789")
    )
    async with forged:
        with pytest.raises(MediaRequestError) as refused:
            await forged.upload(b"x")
        assert refused.value.status == 401


@pytest.mark.redis_cluster
async def test_access_owner_conversation_members_and_signed_urls(
    node: Node, redis_client: redis.Redis
) -> None:
    async with client(node, "alice") as alice, client(node, "bob") as bob:
        meta = await alice.upload(b"secret plans", name="plans.txt")
        media_id = meta["id"]
        with pytest.raises(MediaRequestError) as refused:
            await bob.download(media_id)
        # To whoever may not see it, the file does not exist.
        assert (refused.value.status, refused.value.code) == (404, "not_found")
        # Shared in a conversation bob is a member of: now he may.
        await redis_client.hset(conv_key("c1", "members"), "bob", "member")
        await redis_client.sadd(media_key(media_id, "shared"), "c1")
        assert await bob.download(media_id) == b"secret plans"
        assert (await bob.meta(media_id))["name"] == "plans.txt"
        await redis_client.hdel(conv_key("c1", "members"), "bob")
        with pytest.raises(MediaRequestError):
            await bob.meta(media_id)

        url = await alice.sign(media_id)
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as resp:  # no token
                assert resp.status == 200
                assert await resp.read() == b"secret plans"
            for bad in (url[:-2] + "xx", url.replace("exp=", "exp=1")):
                async with http.get(bad) as resp:
                    assert resp.status == 403
            expired = url.split("?")[0] + f"?exp={int(time.time()) - 5}&sig=abc"
            async with http.get(expired) as resp:
                assert resp.status == 403
        with pytest.raises(MediaRequestError) as missing:
            await alice.download("A" * 22)
        assert missing.value.status == 404


async def test_range_etag_and_headers(node: Node) -> None:
    data = bytes(range(256)) * 40
    async with client(node, "alice") as alice:
        meta = await alice.upload(data, name="../../etc/pass\x00wd")
        assert meta["name"] == "pass_wd"
        url = f"{node.url}/v1/media/{meta['id']}"
        auth = {"Authorization": f"Bearer {alice.token}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers=auth) as resp:
                assert resp.status == 200
                etag = resp.headers["ETag"]
                assert etag == f'"{meta["digest"]}"'
                assert resp.headers["Content-Type"] == "application/octet-stream"
                assert resp.headers["Content-Disposition"].startswith("attachment;")
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert resp.headers["Accept-Ranges"] == "bytes"
            async with http.get(url, headers={**auth, "Range": "bytes=10-19"}) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
                assert await resp.read() == data[10:20]
            async with http.get(url, headers={**auth, "Range": "bytes=-7"}) as resp:
                assert resp.status == 206
                assert await resp.read() == data[-7:]
            async with http.get(url, headers={**auth, "Range": f"bytes={len(data)}-"}) as resp:
                assert resp.status == 416
                assert resp.headers["Content-Range"] == f"bytes */{len(data)}"
            async with http.get(url, headers={**auth, "If-None-Match": etag}) as resp:
                assert resp.status == 304
                assert await resp.read() == b""
            async with http.get(
                url, headers={**auth, "Range": "bytes=0-0", "If-Range": '"stale"'}
            ) as resp:
                assert resp.status == 200  # If-Range mismatch: whole body
            async with http.head(url, headers=auth) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Length"] == str(len(data))
        assert await alice.download(meta["id"], byte_range=(100, None)) == data[100:]

        unicode = await alice.upload(b"hello", name="résumé ünïcode.txt")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{node.url}/v1/media/{unicode['id']}", headers=auth) as resp,
        ):
            disposition = resp.headers["Content-Disposition"]
            assert disposition.startswith("inline;")
            assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%C3%BCn%C3%AFcode.txt" in disposition
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"


@pytest.mark.redis_cluster
async def test_dedup_delete_and_garbage_collection(node: Node, redis_client: redis.Redis) -> None:
    data = media_files.png((50, 50), mode="RGB")
    async with client(node, "alice") as alice, client(node, "bob") as bob:
        first = await alice.upload(data, name="a.png")
        second = await bob.upload(data, name="b.png")
        assert first["id"] != second["id"]
        assert first["digest"] == second["digest"]
        # Content + one thumbnail (both sizes are the same picture): two blobs, each stored once.
        assert len(blobs_on_disk(node)) == 2
        with pytest.raises(MediaRequestError) as not_owner:
            await bob.delete(first["id"])
        assert not_owner.value.code == "not_found"  # bob may not even see it
        await alice.delete(first["id"])
        assert await bob.download(second["id"]) == data
        with pytest.raises(MediaRequestError):
            await alice.meta(first["id"])
        await bob.delete(second["id"])
        assert await redis_client.zcard(media_store_key("orphans")) == 2
        service = node.app[MEDIA]
        assert await gc.collect(service.records, service.store) == []  # within the grace
        collected = await gc.collect(service.records, service.store, grace_s=0, now=time.time() + 1)
        assert len(collected) == 2
        assert blobs_on_disk(node) == []
        assert (await alice.usage())["used"] == 0
        assert await redis_client.hlen(media_store_key("deleting")) == 0


async def test_blob_unknown_to_redis_is_collected(node: Node) -> None:
    service = node.app[MEDIA]
    stray = node.settings.data_dir / "media" / "tmp" / "stray"
    stray.write_bytes(b"left by a crash")
    import hashlib

    digest = hashlib.sha256(b"left by a crash").hexdigest()
    await service.store.put(digest, stray)
    async with client(node, "alice") as alice:
        kept = await alice.upload(b"kept", name="kept.txt")
    collected = await gc.collect(service.records, service.store, grace_s=0, now=time.time() + 1)
    assert collected == [digest]
    async with client(node, "alice") as alice:
        assert await alice.download(kept["id"]) == b"kept"


@pytest.mark.redis_cluster
async def test_quota(start_node: StartNode, redis_client: redis.Redis) -> None:
    node = await start_node(media_quota_bytes=10_000)
    async with client(node, "alice") as alice:
        await alice.upload(b"a" * 6000)
        with pytest.raises(MediaRequestError) as over:
            await alice.upload(b"b" * 6000)
        assert (over.value.status, over.value.code) == (413, "quota_exceeded")
        usage = await alice.usage()
        assert usage["used"] == 6000
        assert usage["quota"] == 10_000
        await alice.upload(b"c" * 4000)
        assert await redis_client.get(media_owner_key("alice", "media_usage")) == b"10000"
    assert leftovers(node) == []


async def test_corrupt_and_bomb_images_are_refused(node: Node) -> None:
    good = media_files.jpeg((800, 600))
    async with client(node, "alice") as alice:
        with pytest.raises(MediaRequestError) as corrupt:
            await alice.upload(good[: len(good) // 2], name="half.jpg")
        assert (corrupt.value.status, corrupt.value.code) == (422, "corrupt_media")
        with pytest.raises(MediaRequestError) as bomb:
            await alice.upload(media_files.png_bomb(), name="bomb.png")
        assert (bomb.value.status, bomb.value.code) == (422, "image_too_large")
        # The node carries on.
        assert (await alice.upload(good, name="ok.jpg"))["width"] == 800
    assert leftovers(node) == []


async def test_voice_note_video_and_pdf(node: Node, tmp_path: Path) -> None:
    async with client(node, "alice") as alice:
        voice = await alice.upload(media_files.wav(seconds=2.0), name="note.wav")
        assert voice["kind"] == "audio"
        assert voice["duration"] == pytest.approx(2.0, abs=0.05)
        assert len(voice["waveform"]) == 20
        assert all(0 <= v <= 255 for v in voice["waveform"])
        ogg = await alice.download(f"/v1/media/{voice['id']}/voice")
        assert ogg[:4] == b"OggS"
        assert media_files.audio_duration(ogg) == pytest.approx(2.0, abs=0.1)

        video = await alice.upload(media_files.mp4(tmp_path / "clip.mp4"), name="clip.mp4")
        assert video["kind"] == "video"
        assert (video["width"], video["height"]) == (160, 120)
        assert video["duration"] == pytest.approx(1.0, abs=0.1)
        poster = await alice.download(f"/v1/media/{video['id']}/thumb/large")
        with Image.open(io.BytesIO(poster)) as im:
            assert im.size == (160, 120)

        doc = await alice.upload(media_files.pdf(), name="report.pdf")
        assert doc["mime"] == "application/pdf"
        assert doc["thumbnails"] == ["small", "large"]
        preview = await alice.download(f"/v1/media/{doc['id']}/thumb/small")
        with Image.open(io.BytesIO(preview)) as im:
            assert max(im.size) == 320


async def test_truncated_upload_leaves_nothing(node: Node) -> None:
    token = make_token("alice")
    _, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(
        b"POST /v1/media?name=cut.bin HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n".encode()
        + b"\1" * 30000
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    async with client(node, "alice") as alice:
        for _ in range(100):
            if not leftovers(node):
                break
            await asyncio.sleep(0.05)
        assert leftovers(node) == []
        assert (await alice.usage())["used"] == 0
        assert blobs_on_disk(node) == []
        assert (await alice.upload(b"fine"))["size"] == 4
