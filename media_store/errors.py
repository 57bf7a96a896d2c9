"""Why an upload or a download is refused: one exception with an HTTP status and a code.

Pure module: the worker processes raise it too (it pickles), and the routes turn it into
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations


class MediaError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def too_large(limit: int) -> MediaError:
    return MediaError(413, "too_large", f"the upload exceeds the limit of {limit} bytes")


def quota_exceeded(quota: int, used: int) -> MediaError:
    """``used`` counts stored files and the reservations of unfinished uploads."""
    return MediaError(
        413,
        "quota_exceeded",
        f"the upload exceeds your storage quota ({used} of {quota} bytes used or reserved)",
    )


def not_found() -> MediaError:
    # The same answer for "does not exist" and "not yours": ids are not to be probed.
    return MediaError(404, "not_found", "no such file")
