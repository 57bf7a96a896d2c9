"""HTTP API of the media store under ``/v1/media`` (docs/media.md), and its lifecycle.

POST   /v1/media?name=NAME          upload, body streamed to disk
GET    /v1/media/usage              bytes used and reserved, quota, open uploads
GET    /v1/media/{id}               download (owner, conversation members, or ?exp=&sig=)
GET    /v1/media/{id}/meta          metadata
GET    /v1/media/{id}/thumb/{size}  thumbnail (small, large)
GET    /v1/media/{id}/voice         voice note as Ogg/Opus
POST   /v1/media/{id}/sign          a signed, expiring download URL
DELETE /v1/media/{id}               delete (owner)
/v1/media/tus/...                   resumable uploads (media_store.tus_routes)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from media_store import gc, http_rules, layout, staging, tus_routes
from media_store.backend import BlobStore
from media_store.config import MediaConfig
from media_store.disk import DiskStore
from media_store.errors import MediaError, not_found
from media_store.http import MEDIA, identity, media_errors, send_blob
from media_store.meta import MediaMeta, find_visible
from media_store.s3 import S3Store
from media_store.service import MediaService
from signaling.http_common import REDIS_CLIENT

log = logging.getLogger("huddle.media")

RECEIVE_CHUNK = 256 * 1024

MEDIA_CONFIG = web.AppKey("media_config", MediaConfig)


async def open_store(config: MediaConfig) -> BlobStore:
    if config.media_backend == "s3":
        return await S3Store.open(
            endpoint=config.media_s3_endpoint,
            bucket=config.media_s3_bucket,
            region=config.media_s3_region,
            access_key=config.media_s3_access_key,
            secret_key=config.media_s3_secret_key,
        )
    return DiskStore(config.root)


async def media_ctx(app: web.Application) -> AsyncIterator[None]:
    """The media service of a node: blob store, worker pool, periodic collection."""
    config = app[MEDIA_CONFIG]
    await layout.upgrade(app[REDIS_CLIENT])
    store = await open_store(config)
    service = MediaService(config, app[REDIS_CLIENT], store, config.root, dict(config.token_keys))
    app[MEDIA] = service
    tasks = [
        asyncio.create_task(_collect_forever(service)),
        asyncio.create_task(_expire_forever(service)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await service.close()
        await store.close()


async def _expire_forever(service: MediaService) -> None:
    """Expired resumable uploads: reservations released, partial files removed, here and
    (their record gone) those another node wrote to this one's folder."""
    while True:
        await asyncio.sleep(gc.EXPIRY_INTERVAL_S)
        try:
            await gc.expire_uploads(service.records, service.tus_dir)
            await gc.sweep_uploads(
                service.redis, service.tus_dir, [], max_age_s=service.settings.media_tus_expiry_s
            )
        except Exception:
            log.exception("media upload expiry failed")


async def _collect_forever(service: MediaService) -> None:
    """Unreferenced blobs, and staging or work files a node that died left behind."""
    while True:
        await asyncio.sleep(gc.INTERVAL_S)
        try:
            await gc.collect(service.records, service.store)
            await gc.sweep_uploads(
                service.redis,
                service.tus_dir,
                [service.staging, service.work],
                max_age_s=service.settings.media_tus_expiry_s,
            )
        except Exception:
            log.exception("media garbage collection failed")


# --- handlers ---------------------------------------------------------------------------


@media_errors
async def upload(request: web.Request) -> web.Response:
    service = request.app[MEDIA]
    owner = identity(request)
    limit, limit_error = await service.room_for(owner, request.content_length)
    path = staging.staging_path(service.staging)
    try:
        with path.open("wb") as f:
            try:
                received = await staging.receive(
                    request.content.iter_chunked(RECEIVE_CHUNK),
                    f,
                    limit=limit,
                    limit_error=limit_error,
                )
            except MediaError:
                raise
            except web.HTTPRequestTimeout as exc:
                raise MediaError(408, "request_timeout", exc.text or "body stalled") from None
            except Exception:
                raise MediaError(400, "truncated", "the upload ended before its body") from None
        if request.content_length is not None and received.size != request.content_length:
            raise MediaError(400, "truncated", "the body is shorter than its Content-Length")
        assert received.digest is not None
        meta = await service.ingest(
            path,
            owner=owner,
            name=request.query.get("name"),
            digest=received.digest,
            size=received.size,
            head=received.head,
        )
    finally:
        staging.remove(path)
    return web.json_response(describe(meta), status=201)


def describe(meta: MediaMeta) -> dict[str, object]:
    body = meta.public()
    body["url"] = f"/v1/media/{meta.id}"
    return body


async def _visible(request: web.Request) -> MediaMeta:
    """The requested file if the requester may see it: a token, or a valid signed URL."""
    service = request.app[MEDIA]
    media_id = request.match_info["id"]
    sig = request.query.get("sig")
    if sig is None:
        user: str | None = identity(request)
    elif http_rules.signature_valid(
        service.url_key, media_id, request.query.get("exp", ""), sig, time.time()
    ):
        user = None
    else:
        raise MediaError(403, "forbidden", "the signed URL is invalid or has expired")
    _, meta = await find_visible(service.redis, media_id, user, service.metas)
    if meta is None:
        # A file one may not see answers as one that does not exist: ids are not to be probed.
        raise not_found()
    return meta


@media_errors
async def download(request: web.Request) -> web.StreamResponse:
    meta = await _visible(request)
    return await send_blob(
        request, digest=meta.digest, size=meta.size, mime=meta.mime, name=meta.name
    )


@media_errors
async def thumbnail(request: web.Request) -> web.StreamResponse:
    meta = await _visible(request)
    size = request.match_info["size"]
    digest = {"small": meta.thumb_small, "large": meta.thumb_large}.get(size)
    if digest is None:
        raise MediaError(404, "not_found", f"no {size!r} thumbnail for this file")
    # Derived blobs have no recorded size: the stored blob's own is used.
    return await send_blob(
        request, digest=digest, size=None, mime="image/webp", name=f"thumb-{size}.webp"
    )


@media_errors
async def voice(request: web.Request) -> web.StreamResponse:
    meta = await _visible(request)
    if meta.voice is None:
        raise MediaError(404, "not_found", "this file has no voice-note version")
    stem = meta.name.rsplit(".", 1)[0] or "voice"
    return await send_blob(
        request, digest=meta.voice, size=None, mime="audio/ogg", name=f"{stem}.ogg"
    )


@media_errors
async def metadata(request: web.Request) -> web.Response:
    return web.json_response(describe(await _visible(request)))


@media_errors
async def sign(request: web.Request) -> web.Response:
    service = request.app[MEDIA]
    if "sig" in request.query:
        raise MediaError(403, "forbidden", "a signed URL cannot mint another")
    meta = await _visible(request)
    expires = int(time.time()) + service.settings.media_signed_url_ttl_s
    sig = http_rules.sign(service.url_key, meta.id, expires)
    return web.json_response(
        {"url": f"/v1/media/{meta.id}?exp={expires}&sig={sig}", "expires_at": expires}
    )


@media_errors
async def delete(request: web.Request) -> web.Response:
    service = request.app[MEDIA]
    user = identity(request)
    # Only those who may see the file learn that it exists, and that it is not theirs.
    _, meta = await find_visible(service.redis, request.match_info["id"], user, service.metas)
    if meta is None:
        raise not_found()
    if not await service.records.delete(meta, user):
        raise not_found()
    return web.Response(status=204)


@media_errors
async def usage(request: web.Request) -> web.Response:
    service = request.app[MEDIA]
    user = identity(request)
    counted = await service.records.usage(user)
    return web.json_response(
        {
            "used": counted.used,
            "reserved": counted.reserved,
            "total": counted.total,
            "quota": service.settings.media_quota_bytes,
            "max_upload": service.settings.media_max_upload_bytes,
            "open_uploads": counted.open_uploads,
            "max_open_uploads": service.settings.media_tus_max_open,
        }
    )


def add_routes(app: web.Application, config: MediaConfig) -> None:
    """Every media route, and the service they need (after Redis in ``cleanup_ctx``, whose
    client is ``app[REDIS_CLIENT]``)."""
    app[MEDIA_CONFIG] = config
    app.cleanup_ctx.append(media_ctx)
    router = app.router
    router.add_post("/v1/media", upload)
    router.add_get("/v1/media/usage", usage)
    tus_routes.add_routes(app)
    router.add_get("/v1/media/{id}", download)
    router.add_delete("/v1/media/{id}", delete)
    router.add_get("/v1/media/{id}/meta", metadata)
    router.add_get("/v1/media/{id}/thumb/{size}", thumbnail)
    router.add_get("/v1/media/{id}/voice", voice)
    router.add_post("/v1/media/{id}/sign", sign)
