"""The media store's own configuration, built by the node from its settings.

Fields other than ``root`` and ``token_keys`` carry the names of the node's settings they
come from, so the node fills them one for one (``huddle.compose.media_config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class MediaConfig:
    root: Path  # where blobs (disk backend), staging and partial uploads live
    api_key: str  # the key whose secret also signs download URLs
    token_keys: Mapping[str, str]  # API key -> secret, to verify access tokens
    media_max_upload_bytes: int
    media_quota_bytes: int
    media_backend: Literal["disk", "s3"]
    media_s3_endpoint: str | None
    media_s3_bucket: str
    media_s3_access_key: str | None
    media_s3_secret_key: str | None
    media_s3_region: str
    media_deny_types: list[str]
    media_strip_gps: bool
    media_signed_url_ttl_s: int
    media_max_image_pixels: int
    media_workers: int
    media_tus_expiry_s: int
    media_tus_max_open: int
