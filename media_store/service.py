"""The media store of one node: takes received files in, stores them, serves their bytes.

Glue between the pure rules (sniffing, tus, ranges), the worker pool that derives media,
the blob store and the Redis records.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Final, TypeVar

from media_store import http_rules, staging
from media_store.backend import BlobStore
from media_store.config import MediaConfig
from media_store.derive import DeriveJob, DeriveResult, derive
from media_store.errors import MediaError, too_large
from media_store.meta import MediaMeta, MetaCache
from media_store.quota import room
from media_store.records import Records
from media_store.sniff import denied, needs_tracks, safe_name, sniff, without_video
from media_store.tokens import TokenCache
from signaling.redis_client import RedisClient

log = logging.getLogger("huddle.media")

T = TypeVar("T")
# A derivation still running after this long is abandoned (the upload fails with 422).
DERIVE_TIMEOUT_S: Final = 120.0


def new_id() -> str:
    return secrets.token_urlsafe(16)


class MediaService:
    def __init__(
        self,
        settings: MediaConfig,
        client: RedisClient,
        store: BlobStore,
        root: Path,
        token_keys: dict[str, str],
    ) -> None:
        self.settings = settings
        self.redis = client
        self.records = Records(client)
        self.store = store
        self.root = root
        self.token_keys = token_keys
        self.tokens = TokenCache(token_keys)
        self.metas = MetaCache()
        # The key of signed download URLs, derived once rather than per request.
        self.url_key = http_rules.url_key(token_keys[settings.api_key])
        self.staging = root / "tmp"
        self.tus_dir = root / "tus"
        self.work = root / "work"
        for folder in (self.staging, self.tus_dir, self.work):
            folder.mkdir(parents=True, exist_ok=True)
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    # --- worker pool ------------------------------------------------------------------

    def pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the node has threads (executor, Redis) that fork would copy
            # in whatever state they were.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.settings.media_workers,
                mp_context=multiprocessing.get_context("spawn"),
            )
        return self._pool

    async def in_pool(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self.pool(), fn, *args), DERIVE_TIMEOUT_S
            )
        except BrokenProcessPool:
            # A worker died (a decoder crashed on hostile input): the node carries on with
            # a fresh pool and the upload is refused.
            log.warning("media worker died; pool restarted")
            self._drop_pool()
            raise MediaError(422, "corrupt_media", "the file could not be processed") from None
        except TimeoutError:
            raise MediaError(422, "too_complex", "the file took too long to process") from None

    def _drop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)

    # --- limits -----------------------------------------------------------------------

    async def room_for(self, owner: str, declared: int | None = None) -> tuple[int, MediaError]:
        """Bytes ``owner`` may still upload in one file, and the error for going past it."""
        quota = self.settings.media_quota_bytes
        max_upload = self.settings.media_max_upload_bytes
        if quota:
            usage = await self.records.usage(owner)
            limit, error = room(usage, quota=quota, max_upload=max_upload)
        else:
            limit, error = max_upload, too_large(max_upload)
        if declared is not None and declared > limit:
            raise error
        return limit, error

    # --- ingest -----------------------------------------------------------------------

    async def ingest(
        self,
        path: Path,
        *,
        owner: str,
        name: str | None,
        digest: str,
        size: int,
        head: bytes,
        media_id: str | None = None,
    ) -> MediaMeta:
        """Turn a fully received staging file into a stored file. The staging file is
        consumed (moved into the store or removed) whatever happens."""
        work = self.work / secrets.token_hex(8)
        work.mkdir(parents=True)
        try:
            return await self._ingest(path, work, owner, name, digest, size, head, media_id)
        finally:
            staging.remove(path)
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _ingest(
        self,
        path: Path,
        work: Path,
        owner: str,
        name: str | None,
        digest: str,
        size: int,
        head: bytes,
        media_id: str | None,
    ) -> MediaMeta:
        sniffed = sniff(head)
        deny = self.settings.media_deny_types
        # A WebM may turn out to be sound: refused as video only once its tracks say so.
        maybe = without_video(sniffed) if needs_tracks(sniffed.mime) else sniffed
        if denied(sniffed.mime, deny) and denied(maybe.mime, deny):
            raise MediaError(415, "type_denied", f"files of type {sniffed.mime} are not accepted")
        job = DeriveJob(
            path=str(path),
            mime=sniffed.mime,
            kind=sniffed.kind,
            out_dir=str(work),
            strip_gps=self.settings.media_strip_gps,
            max_pixels=self.settings.media_max_image_pixels,
        )
        derived: DeriveResult = DeriveResult()
        if sniffed.kind in ("image", "audio", "video") or sniffed.mime == "application/pdf":
            derived = await self.in_pool(derive, job)
        if derived.retyped is not None:
            # The container's tracks, read by the worker, say what the magic bytes could not.
            sniffed = derived.retyped
        if denied(sniffed.mime, deny):
            raise MediaError(415, "type_denied", f"files of type {sniffed.mime} are not accepted")
        content = path
        if derived.replaced_path is not None:
            assert derived.replaced_digest is not None and derived.replaced_size is not None
            content, digest, size = (
                Path(derived.replaced_path),
                derived.replaced_digest,
                derived.replaced_size,
            )
        roles = {f.role: f for f in derived.files}
        meta = MediaMeta(
            id=media_id or new_id(),
            owner=owner,
            name=safe_name(name),
            size=size,
            mime=sniffed.mime,
            kind=sniffed.kind,
            digest=digest,
            created=time.time(),
            width=derived.width,
            height=derived.height,
            duration=round(derived.duration, 3) if derived.duration is not None else None,
            thumb_small=roles["thumb_small"].digest if "thumb_small" in roles else None,
            thumb_large=roles["thumb_large"].digest if "thumb_large" in roles else None,
            voice=roles["voice"].digest if "voice" in roles else None,
            waveform=derived.waveform or None,
            gps_stripped=derived.gps_stripped,
        )
        sources = {digest: content} | {f.digest: Path(f.path) for f in derived.files}
        # Contents first, then the record: a crash in between leaves an unreferenced blob
        # (collected later), never a record without its contents.
        for blob, source in sources.items():
            await self.store.put(blob, source)
        committed = await self.records.commit(meta, self.settings.media_quota_bytes)
        # A blob unreferenced before this commit may have been collected after our put:
        # the commit now protects it, so put it again if it is gone.
        for blob, first in zip(meta.blobs(), committed.first_reference, strict=True):
            if first and await self.store.size(blob) is None:
                source = sources[blob]
                if source.exists():
                    await self.store.put(blob, source)
                else:
                    log.error("blob vanished during upload", extra={"digest": blob})
        log.info(
            "stored file",
            extra={"media": meta.id, "owner": owner, "size": size, "mime": meta.mime},
        )
        return meta
