"""Downloads through the kernel's sendfile: on asyncio's loop (in-process nodes) and on
uvloop (a ``huddle serve`` process), with slow readers, clients that leave, keep-alive
connections, and access decided live even when the file's record is cached."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import redis.asyncio as redis
import yarl

from huddle.media_client import MediaClient, MediaRequestError
from media_store import sendfile
from signaling.keys import conv_key, media_key
from tests import media_files
from tests.helpers import Node, NodeProcess, make_token

MIB = 1024 * 1024


def client(url: str, user: str) -> MediaClient:
    return MediaClient(url, make_token(user))


def pattern(size: int) -> bytes:
    """Bytes whose every 4 KiB block differs, so a misplaced slice shows."""
    return b"".join(i.to_bytes(4, "little") * 1024 for i in range(size // 4096 + 1))[:size]


async def fetch(http: aiohttp.ClientSession, url: str, token: str) -> bytes:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def slow_fetch(url: str, token: str) -> bytes:
    """A download by a reader with a small receive buffer that reads slowly, so that the
    node's socket fills and sendfile has to wait for it."""
    parsed = yarl.URL(url)
    assert parsed.host is not None and parsed.port is not None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parsed.host, parsed.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(
            f"GET {parsed.raw_path} HTTP/1.1\r\nHost: {parsed.host}\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = bytearray()
        while len(body) < length:
            body += await reader.read(64 * 1024)
            await asyncio.sleep(0.002)
        return bytes(body)
    finally:
        writer.close()


async def check_downloads(url: str, settle: NodeProcess | None = None) -> None:
    data = pattern(10 * MIB + 123)
    digest = hashlib.sha256(data).hexdigest()
    token = make_token("alice")
    async with client(url, "alice") as alice:
        meta = await alice.upload(data, name="big.bin")
        target = f"{url}/v1/media/{meta['id']}"
        async with aiohttp.ClientSession() as http:
            fast = [fetch(http, target, token) for _ in range(12)]
            slow = [slow_fetch(target, token) for _ in range(4)]
            for body in await asyncio.gather(*fast, *slow):
                assert hashlib.sha256(body).hexdigest() == digest
            assert (
                await alice.download(meta["id"], byte_range=(MIB - 5, 2 * MIB + 6))
                == (data[MIB - 5 : 2 * MIB + 7])
            )
        # One connection, one response after another: each ends where it should.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:
            for _ in range(5):
                assert await fetch(http, target, token) == data
        # Clients that leave halfway: the node carries on and leaks no descriptor.
        fds = psutil.Process(settle.proc.pid).num_fds() if settle else 0
        for _ in range(8):
            async with (
                aiohttp.ClientSession() as http,
                http.get(target, headers={"Authorization": f"Bearer {token}"}) as resp,
            ):
                await resp.content.readexactly(100 * 1024)
        async with aiohttp.ClientSession() as http:
            assert await fetch(http, target, token) == data
        if settle is not None:
            for _ in range(50):
                if psutil.Process(settle.proc.pid).num_fds() <= fds:
                    break
                await asyncio.sleep(0.1)
            assert psutil.Process(settle.proc.pid).num_fds() <= fds


async def test_downloads_on_asyncio_loop(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"send": 0, "wait": 0}
    send, writable = sendfile.send, sendfile._writable

    async def counted_send(*args: Any) -> None:
        calls["send"] += 1
        await send(*args)

    async def counted_writable(*args: Any) -> None:
        calls["wait"] += 1
        await writable(*args)

    monkeypatch.setattr(sendfile, "send", counted_send)
    monkeypatch.setattr(sendfile, "_writable", counted_writable)
    await check_downloads(node.url)
    assert calls["send"] >= 30
    assert calls["wait"] > 0  # slow readers made it wait for the socket


async def test_downloads_without_sendfile(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel cannot send the file (TLS, another OS): read in chunks."""
    monkeypatch.setattr(sendfile, "AVAILABLE", False)
    await check_downloads(node.url)


@pytest.mark.slow
async def test_downloads_on_uvloop(tmp_path: Path, redis_url: str) -> None:
    proc = NodeProcess(
        tmp_path / "node",
        redis_url=redis_url,
        env={"HUDDLE_SFU_WORKERS": "0"},
        args=["--log-level", "warning"],
    )
    try:
        await proc.wait_healthy()
        await check_downloads(proc.url, settle=proc)
    finally:
        assert proc.terminate() == 0
    assert "Traceback" not in proc.log_path.read_text()


def blob_path(node: Node, digest: str) -> Path:
    return node.settings.data_dir / "media" / "blobs" / digest[:2] / digest[2:4] / digest


async def test_damaged_store_cuts_the_response_and_the_node_carries_on(node: Node) -> None:
    data = pattern(2 * MIB)
    async with client(node.url, "alice") as alice:
        short = await alice.upload(data, name="short.bin")
        gone = await alice.upload(pattern(5000)[::-1], name="gone.bin")
        os.truncate(blob_path(node, short["digest"]), MIB)
        blob_path(node, gone["digest"]).unlink()
        with pytest.raises(aiohttp.ClientPayloadError):
            await alice.download(short["id"])
        with pytest.raises(MediaRequestError) as missing:
            await alice.download(gone["id"])
        assert missing.value.status == 404
        kept = await alice.upload(b"still here", name="kept.txt")
        assert await alice.download(kept["id"]) == b"still here"


async def test_access_is_decided_live_with_the_record_cached(
    node: Node, redis_client: redis.Redis
) -> None:
    async with client(node.url, "alice") as alice, client(node.url, "bob") as bob:
        meta = await alice.upload(b"plans", name="plans.txt")
        media_id = meta["id"]
        await redis_client.hset(conv_key("c1", "members"), "bob", "member")
        await redis_client.sadd(media_key(media_id, "shared"), "c1")
        for _ in range(3):
            assert await bob.download(media_id) == b"plans"
        await redis_client.hdel(conv_key("c1", "members"), "bob")
        with pytest.raises(MediaRequestError) as left:
            await bob.download(media_id)
        assert left.value.status == 404
        url = await alice.sign(media_id)
        assert await bob.download(url) == b"plans"
        await alice.delete(media_id)
        for who, target in ((alice, media_id), (bob, url)):
            with pytest.raises(MediaRequestError) as deleted:
                await who.download(target)
            assert deleted.value.status == 404


async def test_head_and_thumbnails_take_the_stored_size(node: Node) -> None:
    async with client(node.url, "alice") as alice:
        meta = await alice.upload(media_files.png((600, 400)), name="p.png")
        auth = {"Authorization": f"Bearer {alice.token}"}
        async with aiohttp.ClientSession() as http:
            url = f"{node.url}/v1/media/{meta['id']}"
            async with http.head(url, headers=auth) as resp:
                assert resp.status == 200
                assert resp.content_length == meta["size"]
                assert await resp.read() == b""
            thumb = await alice.download(f"/v1/media/{meta['id']}/thumb/small")
            async with http.get(
                f"{url}/thumb/small", headers={**auth, "Range": "bytes=4-"}
            ) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Range"] == f"bytes 4-{len(thumb) - 1}/{len(thumb)}"
                assert await resp.read() == thumb[4:]
            assert thumb[8:12] == b"WEBP"
        blob_path(node, meta["thumb_small"]).unlink()
        with pytest.raises(MediaRequestError) as missing:
            await alice.download(f"/v1/media/{meta['id']}/thumb/small")
        assert missing.value.status == 404
