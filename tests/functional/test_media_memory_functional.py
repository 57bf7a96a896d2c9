"""A large upload and download through a real node process: its memory stays flat."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from huddle.media_client import MediaClient
from tests.helpers import NodeProcess, make_token

MIB = 1024 * 1024
UPLOAD_MIB = 256
RSS_GROWTH_LIMIT_MIB = 50


async def generated(size: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    block = bytearray(range(256)) * (MIB // 256)
    for i in range(size // MIB):
        block[:4] = i.to_bytes(4, "little")
        chunk = bytes(block)
        digest.update(chunk)
        yield chunk


async def peak_rss(pid: int, stop: asyncio.Event) -> int:
    proc = psutil.Process(pid)
    peak = 0
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            peak = max(peak, proc.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)
    return peak


@pytest.mark.slow
async def test_large_upload_and_download_keep_memory_flat(tmp_path: Path, redis_url: str) -> None:
    node = NodeProcess(
        tmp_path / "node",
        redis_url=redis_url,
        env={"HUDDLE_MEDIA_MAX_UPLOAD_BYTES": str(512 * MIB), "HUDDLE_SFU_WORKERS": "0"},
        args=["--log-level", "warning"],
    )
    try:
        await node.wait_healthy()
        async with MediaClient(node.url, make_token("alice")) as alice:
            await alice.upload(b"warm-up", name="w.txt")  # first-use allocations
            base = psutil.Process(node.proc.pid).memory_info().rss
            stop = asyncio.Event()
            sampler = asyncio.create_task(peak_rss(node.proc.pid, stop))
            sent = hashlib.sha256()
            meta = await alice.upload(generated(UPLOAD_MIB * MIB, sent), name="big.bin")
            received = hashlib.sha256()
            async for chunk in alice.stream(meta["id"]):
                received.update(chunk)
            stop.set()
            peak = await sampler
        assert meta["size"] == UPLOAD_MIB * MIB
        assert meta["digest"] == sent.hexdigest() == received.hexdigest()
        assert (peak - base) / MIB < RSS_GROWTH_LIMIT_MIB, (base / MIB, peak / MIB)
    finally:
        assert node.terminate() == 0
