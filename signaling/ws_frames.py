"""WebSocket text frames as a server sends them (RFC 6455 section 5.2: one unfragmented
frame per message, FIN set, no mask, no extension bits), made when the message is queued so
that several can go to a socket in one write. Pure."""

from __future__ import annotations

import struct
from typing import Final

_TEXT: Final = 0x81  # FIN + opcode 1 (text)
_LEN16: Final = struct.Struct("!BBH").pack
_LEN64: Final = struct.Struct("!BBQ").pack


def text_frame_header(size: int) -> bytes:
    """The header of a text frame carrying ``size`` bytes of UTF-8."""
    if size < 126:
        return bytes((_TEXT, size))
    if size < 65536:
        return _LEN16(_TEXT, 126, size)
    return _LEN64(_TEXT, 127, size)


def text_frame(payload: bytes) -> bytes:
    """``payload`` (one message's UTF-8) as a text frame."""
    return text_frame_header(len(payload)) + payload


def text_payload(frame: bytes) -> bytes:
    """The message of a frame made here (``text_frame``, ``text_frame_header``)."""
    size = frame[1]
    return frame[2 if size < 126 else 4 if size == 126 else 10 :]
