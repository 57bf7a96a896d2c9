"""Resumable uploads (tus 1.0) with tuspy, an independent client, and with Huddle's own."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from tusclient import client as tus_client

from huddle.media_client import MediaClient, MediaRequestError, file_chunks
from tests import media_files
from tests.conftest import StartNode
from tests.helpers import Node, make_token

KIB = 1024


def tus_headers(user: str = "alice", **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user)}", "Tus-Resumable": "1.0.0", **extra}


def leftovers(node: Node) -> list[Path]:
    root = node.settings.data_dir / "media"
    return [p for d in ("tmp", "work", "tus") for p in (root / d).iterdir()]


async def test_tuspy_uploads_and_resumes(node: Node) -> None:
    data = secrets.token_bytes(700 * KIB)
    token = make_token("alice")

    def first_part() -> str:
        tus = tus_client.TusClient(
            f"{node.url}/v1/media/tus/", headers={"Authorization": f"Bearer {token}"}
        )
        uploader = tus.uploader(
            file_stream=io.BytesIO(data), chunk_size=256 * KIB, metadata={"filename": "a.bin"}
        )
        uploader.upload_chunk()  # type: ignore[no-untyped-call]
        uploader.upload_chunk()  # type: ignore[no-untyped-call]
        assert uploader.offset == 512 * KIB
        return str(uploader.url)

    url = await asyncio.to_thread(first_part)

    def resume() -> int:
        # A new client, knowing only the upload's URL, as after a restart.
        tus = tus_client.TusClient(
            f"{node.url}/v1/media/tus/", headers={"Authorization": f"Bearer {token}"}
        )
        uploader = tus.uploader(file_stream=io.BytesIO(data), chunk_size=256 * KIB, url=url)
        start = int(uploader.offset)
        uploader.upload()
        return start

    assert await asyncio.to_thread(resume) == 512 * KIB
    media_id = url.rsplit("/", 1)[-1]
    async with MediaClient(node.url, token) as alice:
        meta = await alice.meta(media_id)
        assert meta["name"] == "a.bin"
        assert meta["size"] == len(data)
        assert meta["digest"] == hashlib.sha256(data).hexdigest()
        assert await alice.download(media_id) == data
    assert leftovers(node) == []


async def test_tuspy_whole_image(node: Node) -> None:
    data = media_files.jpeg((1024, 768))

    def upload() -> str:
        tus = tus_client.TusClient(
            f"{node.url}/v1/media/tus/",
            headers={"Authorization": f"Bearer {make_token('alice')}"},
        )
        uploader = tus.uploader(
            file_stream=io.BytesIO(data), chunk_size=10 * KIB, metadata={"filename": "p.jpg"}
        )
        uploader.upload()
        return str(uploader.url)

    url = await asyncio.to_thread(upload)
    async with MediaClient(node.url, make_token("alice")) as alice:
        meta = await alice.meta(url.rsplit("/", 1)[-1])
    assert (meta["mime"], meta["width"], meta["thumbnails"]) == (
        "image/jpeg",
        1024,
        ["small", "large"],
    )


@pytest.mark.redis_cluster
async def test_own_client_resumes_after_lost_connection(node: Node, tmp_path: Path) -> None:
    data = secrets.token_bytes(3 * 1024 * KIB + 17)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    cuts = 0

    async def flaky(p: Path, start: int, count: int) -> AsyncIterator[bytes]:
        nonlocal cuts
        sent = 0
        async for chunk in file_chunks(p, start, count, chunk=64 * KIB):
            if cuts < 2 and sent >= count // 2:
                cuts += 1
                raise ConnectionResetError("cable pulled")
            sent += len(chunk)
            yield chunk

    urls: list[str] = []
    async with MediaClient(node.url, make_token("alice")) as alice:
        meta = await alice.upload_resumable(
            path, chunk_size=1024 * KIB, chunks=flaky, on_url=urls.append
        )
        assert cuts == 2
        assert meta["size"] == len(data)
        assert meta["digest"] == hashlib.sha256(data).hexdigest()
        assert await alice.download(meta["id"]) == data
        assert meta["id"] == urls[0].rsplit("/", 1)[-1]
    assert leftovers(node) == []


async def test_protocol_errors(node: Node) -> None:
    base = f"{node.url}/v1/media/tus/"
    async with aiohttp.ClientSession() as http:
        async with http.options(base) as resp:
            assert resp.status == 204
            assert resp.headers["Tus-Version"] == "1.0.0"
            assert "creation" in resp.headers["Tus-Extension"].split(",")
            assert int(resp.headers["Tus-Max-Size"]) == node.settings.media_max_upload_bytes
        async with http.post(base, headers={"Upload-Length": "10"}) as resp:
            assert resp.status == 412  # no Tus-Resumable
            assert resp.headers["Tus-Version"] == "1.0.0"
        async with http.post(
            base, headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10"}
        ) as resp:
            assert resp.status == 401
        too_big = str(node.settings.media_max_upload_bytes + 1)
        async with http.post(base, headers=tus_headers(**{"Upload-Length": too_big})) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "too_large"
        async with http.post(
            base, headers=tus_headers(**{"Upload-Length": "10", "Upload-Metadata": "filename !!"})
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "bad_metadata"
        name = base64.b64encode(b"../../x.txt").decode()
        async with http.post(
            base,
            headers=tus_headers(**{"Upload-Length": "10", "Upload-Metadata": f"filename {name}"}),
        ) as resp:
            assert resp.status == 201
            assert resp.headers["Tus-Resumable"] == "1.0.0"
            url = f"{node.url}{resp.headers['Location']}"

        patch = tus_headers(**{"Content-Type": "application/offset+octet-stream"})
        async with http.patch(url, data=b"12345", headers={**patch, "Upload-Offset": "3"}) as resp:
            assert resp.status == 409
            assert (await resp.json())["error"]["code"] == "bad_offset"
        async with http.patch(
            url, data=b"12345", headers={**tus_headers(), "Upload-Offset": "0"}
        ) as resp:
            assert resp.status == 415
        async with http.patch(
            url, data=b"12345678901", headers={**patch, "Upload-Offset": "0"}
        ) as resp:
            assert resp.status == 413  # past Upload-Length
        async with http.head(url, headers=tus_headers("bob")) as resp:
            assert resp.status == 404  # not bob's upload
        async with http.patch(url, data=b"12345", headers={**patch, "Upload-Offset": "0"}) as resp:
            assert resp.status == 204
            assert resp.headers["Upload-Offset"] == "5"
        async with http.head(url, headers=tus_headers()) as resp:
            assert resp.status == 200
            assert resp.headers["Upload-Offset"] == "5"
            assert resp.headers["Upload-Length"] == "10"
            assert resp.headers["Cache-Control"] == "no-store"
        async with http.patch(url, data=b"67890", headers={**patch, "Upload-Offset": "5"}) as resp:
            assert resp.status == 204
            media_id = resp.headers["Huddle-Media-Id"]
        async with http.head(url, headers=tus_headers()) as resp:
            assert resp.status == 404  # complete: the upload is now a file
        async with http.get(f"{node.url}/v1/media/{media_id}/meta", headers=tus_headers()) as resp:
            assert (await resp.json())["name"] == "x.txt"

        # Termination.
        async with http.post(base, headers=tus_headers(**{"Upload-Length": "100"})) as resp:
            url = f"{node.url}{resp.headers['Location']}"
        async with http.delete(url, headers=tus_headers()) as resp:
            assert resp.status == 204
        async with http.head(url, headers=tus_headers()) as resp:
            assert resp.status == 404
    assert leftovers(node) == []


async def test_creation_with_upload_and_denied_content(node: Node) -> None:
    base = f"{node.url}/v1/media/tus/"
    exe = media_files.exe()
    async with aiohttp.ClientSession() as http:
        headers = tus_headers(
            **{"Upload-Length": str(len(exe)), "Content-Type": "application/offset+octet-stream"}
        )
        async with http.post(base, data=exe[:10], headers=headers) as resp:
            assert resp.status == 201
            assert resp.headers["Upload-Offset"] == "10"
            url = f"{node.url}{resp.headers['Location']}"
        patch = tus_headers(
            **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "10"}
        )
        async with http.patch(url, data=exe[10:], headers=patch) as resp:
            assert resp.status == 415
            assert (await resp.json())["error"]["code"] == "type_denied"
        async with http.head(url, headers=tus_headers()) as resp:
            assert resp.status == 404
    assert leftovers(node) == []


async def test_quota_checked_at_creation(start_node: StartNode) -> None:
    node = await start_node(media_quota_bytes=1000)
    async with MediaClient(node.url, make_token("alice")) as alice:
        await alice.upload(b"a" * 600)
        with pytest.raises(MediaRequestError) as refused:
            await alice.create_upload(500)
        assert (refused.value.status, refused.value.code) == (413, "quota_exceeded")
        assert await alice.create_upload(400)


async def test_format_characters_are_dropped_from_names(node: Node, tmp_path: Path) -> None:
    # U+202E flips what follows: "report<RLO>txt.exe" is shown as "reportexe.txt".
    spoofed = "report\u202etxt.exe"
    path = tmp_path / "notes.bin"
    path.write_bytes(b"just some notes\n")
    async with MediaClient(node.url, make_token("alice")) as alice:
        resumable = await alice.upload_resumable(path, name=spoofed)
        simple = await alice.upload(b"more notes\n", name="\u2066a\u200db\u200f.txt\u2069")
        assert (resumable["name"], simple["name"]) == ("reporttxt.exe", "ab.txt")
        assert (await alice.meta(resumable["id"]))["name"] == "reporttxt.exe"
        async with alice.http.get(
            alice.url(f"/v1/media/{resumable['id']}"), headers=tus_headers()
        ) as resp:
            assert resp.status == 200
            assert "reporttxt.exe" in resp.headers["Content-Disposition"]
            assert "%E2%80%AE" not in resp.headers["Content-Disposition"]


async def test_an_empty_file_is_stored_at_creation(node: Node) -> None:
    """``Upload-Length: 0``: complete once made (tus-js-client sends no PATCH for it and
    reports success; the file was then never stored, its link a 404). A creation-with-upload
    that completes the file names it too."""
    base = f"{node.url}/v1/media/tus/"
    name = base64.b64encode(b"empty.txt").decode()
    async with aiohttp.ClientSession() as http:
        headers = tus_headers(**{"Upload-Length": "0", "Upload-Metadata": f"filename {name}"})
        async with http.post(base, headers=headers) as resp:
            assert resp.status == 201, await resp.text()
            assert resp.headers["Upload-Offset"] == "0"
            media_id = resp.headers["Huddle-Media-Id"]
        auth = {"Authorization": tus_headers()["Authorization"]}
        async with http.get(f"{node.url}/v1/media/{media_id}", headers=auth) as resp:
            assert resp.status == 200
            assert await resp.read() == b""
        async with http.get(f"{node.url}/v1/media/{media_id}/meta", headers=auth) as resp:
            meta = await resp.json()
            assert (meta["name"], meta["size"]) == ("empty.txt", 0), meta
        whole = tus_headers(
            **{"Upload-Length": "5", "Content-Type": "application/offset+octet-stream"}
        )
        async with http.post(base, data=b"hello", headers=whole) as resp:
            assert resp.status == 201
            assert resp.headers["Upload-Offset"] == "5"
            media_id = resp.headers["Huddle-Media-Id"]
        async with http.get(f"{node.url}/v1/media/{media_id}", headers=auth) as resp:
            assert await resp.read() == b"hello"
    assert leftovers(node) == []


async def test_an_upload_made_on_another_node_starts_again_here(start_node: StartNode) -> None:
    """Nodes that do not share their media folder keep an upload's bytes where it was made.
    Resuming it on another node (behind a load balancer) is a 404, as tus clients expect of
    an upload that cannot go on, and its reservation goes with it: the new upload the client
    starts fits in the quota."""
    first = await start_node(media_quota_bytes=15 * KIB)
    second = await start_node(media_quota_bytes=15 * KIB)  # its own data folder
    body = secrets.token_bytes(10 * KIB)
    async with (
        MediaClient(first.url, make_token("alice")) as on_first,
        MediaClient(second.url, make_token("alice")) as on_second,
    ):
        url = await on_first.create_upload(len(body), name="a.bin")
        assert await on_first.send_chunk(url, 0, body[: 4 * KIB], 4 * KIB) == (4 * KIB, None)
        elsewhere = url.replace(first.url, second.url)
        with pytest.raises(MediaRequestError) as head:
            await on_second.upload_offset(elsewhere)
        assert head.value.status == 404
        assert (await on_second.usage())["reserved"] == 0
        with pytest.raises(MediaRequestError):
            await on_first.upload_offset(url)  # over on its own node too
        # The client starts again, on the node it reaches now.
        again = await on_second.create_upload(len(body), name="a.bin")
        offset, media_id = await on_second.send_chunk(again, 0, body, len(body))
        assert (offset, media_id is not None) == (len(body), True)
        assert await on_second.download(str(media_id)) == body
        # A PATCH that lands on another node says why, in a JSON body.
        third = await on_first.create_upload(KIB)
        with pytest.raises(MediaRequestError) as patched:
            await on_second.send_chunk(third.replace(first.url, second.url), 0, b"x" * KIB, KIB)
        assert (patched.value.status, patched.value.code) == (404, "not_found")
        assert "another node" in str(patched.value)
