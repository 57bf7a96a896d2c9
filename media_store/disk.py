"""Blobs as files under ``data_dir/media/blobs``, written by rename from a staging folder."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Final

from media_store.backend import READ_CHUNK, blob_name, valid_digest

# Make a blob durable before it becomes visible: a crash must not leave a named blob whose
# contents are still only in the page cache.
FSYNC: Final = True


class DiskStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blobs / blob_name(digest)

    async def put(self, digest: str, source: Path) -> None:
        await asyncio.to_thread(self._put, digest, source)

    def _put(self, digest: str, source: Path) -> None:
        final = self.path(digest)
        if final.exists():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        if FSYNC:
            fd = os.open(source, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            # Same file system (staging lives under the same root): an atomic rename.
            os.replace(source, final)
        except OSError:
            tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            with source.open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, final)
        if FSYNC:
            fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    async def size(self, digest: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path(digest).stat)).st_size
        except FileNotFoundError:
            return None

    async def read(
        self, digest: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        f, chunk = await asyncio.to_thread(self._open_at, digest, start, end)
        try:
            left = None if end is None else end - start
            while chunk:
                if left is not None:
                    left -= len(chunk)
                yield chunk
                if left is not None and left <= 0:
                    break
                want = READ_CHUNK if left is None else min(READ_CHUNK, left)
                chunk = await asyncio.to_thread(f.read, want)
        finally:
            f.close()

    def _open_at(self, digest: str, start: int, end: int | None) -> tuple[BinaryIO, bytes]:
        """Open, seek and read the first chunk in one trip to the thread pool."""
        f = self.path(digest).open("rb")
        f.seek(start)
        want = READ_CHUNK if end is None else min(READ_CHUNK, end - start)
        return f, f.read(want) if want > 0 else b""

    async def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path(digest).unlink)

    async def list(self) -> AsyncIterator[tuple[str, float]]:
        entries = await asyncio.to_thread(self._scan)
        for item in entries:
            yield item

    def _scan(self) -> builtins.list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for path in self.blobs.glob("*/*/*"):
            if valid_digest(path.name):
                with contextlib.suppress(FileNotFoundError):
                    out.append((path.name, path.stat().st_mtime))
        return out

    def local_path(self, digest: str) -> Path | None:
        return self.path(digest)

    async def close(self) -> None:
        return None
