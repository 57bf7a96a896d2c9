"""What one user's files and unfinished uploads count against the storage quota.

Pure module: no I/O. Stored files count by their size (``used``); an unfinished resumable
upload counts by the length it declared at creation (``reserved``), from creation until it
completes (its reservation then becomes the stored file's size), is terminated or expires.
So bytes held in partial files never escape the quota, and a completion never finds the
quota taken by others. The Lua scripts of ``media_store.records`` apply the same rules in
Redis; these functions turn what a script saw into the answer and are the rules' spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from media_store.errors import MediaError, quota_exceeded, too_large


@dataclass(frozen=True)
class Usage:
    used: int
    reserved: int
    open_uploads: int

    @property
    def total(self) -> int:
        """What the quota is checked against."""
        return self.used + self.reserved


def too_many_uploads(max_open: int) -> MediaError:
    return MediaError(
        429,
        "too_many_uploads",
        f"you have {max_open} unfinished uploads: finish or cancel one first",
    )


def reservation_error(usage: Usage, length: int, *, quota: int, max_open: int) -> MediaError | None:
    """Why a new resumable upload of ``length`` bytes is refused, or None. The number of
    unfinished uploads is capped whatever their size (each holds a partial file and a
    record); ``quota`` 0 means no quota."""
    if usage.open_uploads >= max_open:
        return too_many_uploads(max_open)
    if quota and usage.total + length > quota:
        return quota_exceeded(quota, usage.total)
    return None


def room(usage: Usage, *, quota: int, max_upload: int) -> tuple[int, MediaError]:
    """Bytes one more file may have, and the error for going past them: the upload limit,
    or what the quota leaves after stored files and reservations, whichever is smaller."""
    if quota:
        left = max(0, quota - usage.total)
        if left < max_upload:
            return left, quota_exceeded(quota, usage.total)
    return max_upload, too_large(max_upload)
