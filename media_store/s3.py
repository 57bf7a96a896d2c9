"""Blobs as objects in S3-compatible storage, so that several nodes share one store.

An object appears only when its upload completes (S3 has no partial objects), which gives
the same atomicity as the disk store's rename. Large blobs go up as multipart uploads of
``PART_BYTES``, read from the staging file one part at a time, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from media_store.backend import READ_CHUNK, blob_name, valid_digest

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

PART_BYTES: Final = 8 * 1024 * 1024
PREFIX: Final = "blobs/"


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class S3Store:
    def __init__(self, client: S3Client, bucket: str, stack: contextlib.AsyncExitStack) -> None:
        self.client = client
        self.bucket = bucket
        self._stack = stack

    @classmethod
    async def open(
        cls,
        *,
        endpoint: str | None,
        bucket: str,
        region: str,
        access_key: str | None,
        secret_key: str | None,
        create_bucket: bool = True,
    ) -> S3Store:
        stack = contextlib.AsyncExitStack()
        config = AioConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=64,
        )
        kwargs: dict[str, Any] = {"region_name": region, "config": config}
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        if access_key is not None:
            kwargs["aws_access_key_id"] = access_key
            kwargs["aws_secret_access_key"] = secret_key
        client = await stack.enter_async_context(get_session().create_client("s3", **kwargs))
        store = cls(client, bucket, stack)
        if create_bucket:
            try:
                await client.head_bucket(Bucket=bucket)
            except ClientError as exc:
                if not _missing(exc):
                    await stack.aclose()
                    raise
                await client.create_bucket(Bucket=bucket)
        return store

    def key(self, digest: str) -> str:
        return PREFIX + blob_name(digest)

    async def put(self, digest: str, source: Path) -> None:
        key = self.key(digest)
        if await self.size(digest) is not None:
            return
        total = (await asyncio.to_thread(source.stat)).st_size
        if total <= PART_BYTES:
            data = await asyncio.to_thread(source.read_bytes)
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
            return
        upload = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            with source.open("rb") as f:
                number = 1
                while chunk := await asyncio.to_thread(f.read, PART_BYTES):
                    part = await self.client.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
                    number += 1
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
            raise

    async def size(self, digest: str) -> int | None:
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return int(head["ContentLength"])

    async def read(
        self, digest: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        if end is not None and end <= start:
            return
        span = f"bytes={start}-{'' if end is None else end - 1}"
        if start == 0 and end is None:
            resp = await self.client.get_object(Bucket=self.bucket, Key=self.key(digest))
        else:
            resp = await self.client.get_object(
                Bucket=self.bucket, Key=self.key(digest), Range=span
            )
        body = resp["Body"]
        try:
            async for chunk in body.iter_chunks(READ_CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, digest: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    async def list(self) -> AsyncIterator[tuple[str, float]]:
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=PREFIX):
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                if valid_digest(name):
                    yield name, item["LastModified"].timestamp()

    def local_path(self, digest: str) -> Path | None:
        return None

    async def close(self) -> None:
        await self._stack.aclose()
