"""Garbage collection: blobs that no file references any more, and leftovers of uploads
that never finished (staging files, expired or abandoned resumable uploads).

A blob becomes a candidate when its last reference goes (``orphans``), or when it sits in
the store unknown to Redis (a node died between storing it and recording the file). Either
way it is collected only after ``grace_s``, and only once marked ``deleting`` in Redis so
that an upload of the same contents waits instead of losing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Final

from media_store.backend import BlobStore
from media_store.records import Records
from signaling.keys import media_key
from signaling.redis_client import RedisClient

log = logging.getLogger("huddle.media.gc")

GRACE_S: Final = 3600.0
INTERVAL_S: Final = 600.0
# Expired resumable uploads are looked for more often than blobs are collected: their
# reservations count against a quota and their partial files take disk until then.
EXPIRY_INTERVAL_S: Final = 30.0
BATCH: Final = 500
# A partial file with no record is removed only once it has not been written for this long
# (its record may be written just after the file is created).
PART_MIN_AGE_S: Final = 60.0


async def collect(
    records: Records, store: BlobStore, *, grace_s: float = GRACE_S, now: float | None = None
) -> list[str]:
    """Delete unreferenced blobs older than ``grace_s``; returns their digests."""
    cutoff = (time.time() if now is None else now) - grace_s
    candidates = set(await records.orphans_before(cutoff, BATCH))
    unknown: list[str] = []
    async for digest, mtime in store.list():
        if mtime < cutoff and digest not in candidates:
            unknown.append(digest)
    for i in range(0, len(unknown), BATCH):
        batch = unknown[i : i + BATCH]
        for digest, referenced in zip(batch, await records.referenced(batch), strict=True):
            if not referenced:
                candidates.add(digest)
    claimed = await records.claim(sorted(candidates))
    try:
        for digest in claimed:
            await store.delete(digest)
    finally:
        await records.release(claimed)
    if claimed:
        log.info("collected blobs", extra={"count": len(claimed)})
    return claimed


async def expire_uploads(records: Records, tus_dir: Path, *, now: float | None = None) -> list[str]:
    """Release the quota reservations of resumable uploads that expired, and remove their
    partial files held here; returns their ids. Files held on other nodes go in those
    nodes' ``sweep_uploads``, their record being gone."""
    released = await records.expire_uploads(time.time() if now is None else now, BATCH)
    await asyncio.to_thread(_remove_all, [tus_dir / f"{upload}.part" for upload in released])
    if released:
        log.info("expired resumable uploads", extra={"count": len(released)})
    return released


async def sweep_uploads(
    client: RedisClient, tus_dir: Path, other_dirs: list[Path], *, max_age_s: float
) -> list[str]:
    """Remove partial files of resumable uploads whose record expired, and staging or work
    files older than ``max_age_s`` (left by a node that died mid-upload)."""
    parts = await asyncio.to_thread(_aged, [tus_dir], PART_MIN_AGE_S)
    expired = []
    for path in parts:
        if path.name.endswith(".part"):
            upload = path.name.removesuffix(".part")
            if not await client.exists(media_key(upload, "tus")):
                expired.append(path)
    stale = await asyncio.to_thread(_aged, other_dirs, max_age_s)
    await asyncio.to_thread(_remove_all, expired + stale)
    return [str(p) for p in expired + stale]


def _aged(folders: list[Path], age_s: float) -> list[Path]:
    now = time.time()
    out = []
    for folder in folders:
        for path in folder.iterdir():
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > age_s:
                    out.append(path)
    return out


def _remove_all(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
