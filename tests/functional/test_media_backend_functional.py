"""One contract for both blob stores: local disk and S3 (a real moto server process)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from huddle.media_client import MediaClient
from media_store import s3
from media_store.backend import BlobStore
from media_store.disk import DiskStore
from media_store.s3 import S3Store
from tests import media_files
from tests.conftest import StartNode
from tests.helpers import make_token
from tests.s3_server import S3Server, s3_server

__all__ = ["s3_server"]


def blob(tmp_path: Path, data: bytes) -> tuple[str, Path]:
    path = tmp_path / f"staged-{secrets.token_hex(4)}"
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), path


@pytest.fixture(params=["disk", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server
) -> AsyncIterator[BlobStore]:
    if request.param == "disk":
        disk = DiskStore(tmp_path / "media")
        yield disk
        await disk.close()
        return
    remote = await S3Store.open(
        endpoint=s3_server.endpoint,
        bucket=f"contract-{secrets.token_hex(4)}",
        region=s3_server.region,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    try:
        yield remote
    finally:
        await remote.close()


async def read_all(store: BlobStore, digest: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(digest, start, end)])


async def test_put_read_size_delete(store: BlobStore, tmp_path: Path) -> None:
    data = secrets.token_bytes(300_000)
    digest, path = blob(tmp_path, data)
    assert await store.size(digest) is None
    await store.put(digest, path)
    assert await store.size(digest) == len(data)
    assert await read_all(store, digest) == data
    assert await read_all(store, digest, 1000, 2000) == data[1000:2000]
    assert await read_all(store, digest, len(data) - 5) == data[-5:]
    assert await read_all(store, digest, 10, 10) == b""
    listed = [d async for d, _ in store.list()]
    assert listed == [digest]
    await store.delete(digest)
    assert await store.size(digest) is None
    await store.delete(digest)  # deleting what is gone is no error
    assert [d async for d, _ in store.list()] == []


async def test_put_is_idempotent_and_deduplicates(store: BlobStore, tmp_path: Path) -> None:
    data = b"same bytes" * 1000
    digest, first = blob(tmp_path, data)
    _, second = blob(tmp_path, data)
    await store.put(digest, first)
    await store.put(digest, second)
    assert [d async for d, _ in store.list()] == [digest]
    assert await read_all(store, digest) == data


async def test_empty_blob(store: BlobStore, tmp_path: Path) -> None:
    digest, path = blob(tmp_path, b"")
    await store.put(digest, path)
    assert await store.size(digest) == 0
    assert await read_all(store, digest) == b""


async def test_large_blob_goes_in_parts(
    store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 needs parts of at least 5 MiB (all but the last): 2.5 parts of that size.
    monkeypatch.setattr(s3, "PART_BYTES", 5 * 1024 * 1024)
    data = secrets.token_bytes(12 * 1024 * 1024 + 123)
    digest, path = blob(tmp_path, data)
    await store.put(digest, path)
    assert await store.size(digest) == len(data)
    got = await read_all(store, digest, 5 * 1024 * 1024 - 10, 5 * 1024 * 1024 + 10)
    assert got == data[5 * 1024 * 1024 - 10 : 5 * 1024 * 1024 + 10]
    assert hashlib.sha256(await read_all(store, digest)).hexdigest() == digest


async def test_bad_digest_is_refused(store: BlobStore, tmp_path: Path) -> None:
    _, path = blob(tmp_path, b"x")
    with pytest.raises(ValueError):
        await store.put("../../etc/passwd", path)


async def test_node_on_s3_serves_uploads(start_node: StartNode, s3_server: S3Server) -> None:
    """A node whose files live in S3: upload, ranged download, thumbnails, no local blobs."""
    node = await start_node(**s3_server.settings(f"node-{secrets.token_hex(4)}"))
    other = await start_node(**s3_server.settings(node.settings.media_s3_bucket))
    data = secrets.token_bytes(200_000)
    async with MediaClient(node.url, make_token("alice")) as alice:
        meta = await alice.upload(data, name="blob.bin")
        image = await alice.upload(media_files.png((400, 300)), name="p.png")
        assert await alice.download(meta["id"], byte_range=(5, 99)) == data[5:100]
        assert not (node.settings.data_dir / "media" / "blobs").exists()
    # Another node sharing the bucket (and Redis) serves the same files.
    async with MediaClient(other.url, make_token("alice")) as again:
        assert await again.download(meta["id"]) == data
        assert len(await again.download(f"/v1/media/{image['id']}/thumb/small")) > 0
