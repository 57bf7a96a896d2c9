"""Server text frames made as they are queued and written several at a time
(signaling.ws_frames), read back as RFC 6455 says a client reads them."""

from __future__ import annotations

import struct

import pytest

from signaling.ws_frames import text_frame, text_frame_header, text_payload


def read_frames(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    at = 0
    while at < len(data):
        first, second = data[at], data[at + 1]
        assert first == 0x81  # FIN, text, no extension bits
        assert not second & 0x80  # a server never masks
        size, at = second & 0x7F, at + 2
        if size == 126:
            (size,), at = struct.unpack_from("!H", data, at), at + 2
        elif size == 127:
            (size,), at = struct.unpack_from("!Q", data, at), at + 8
        out.append(data[at : at + size])
        at += size
    assert at == len(data)
    return out


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_each_size_class_reads_back(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    assert read_frames(text_frame(payload)) == [payload]
    assert read_frames(text_frame_header(size) + payload) == [payload]
    # What aiohttp's writer is given when the socket does not keep up: the message alone.
    assert text_payload(text_frame(payload)) == payload


def test_the_shortest_header_that_holds_the_length() -> None:
    assert len(text_frame_header(125)) == 2
    assert len(text_frame_header(126)) == 4
    assert len(text_frame_header(65535)) == 4
    assert len(text_frame_header(65536)) == 10


def test_frames_together_keep_their_order_and_bounds() -> None:
    payloads = [b"a", b"b" * 126, b"", "é".encode() * 40000, b"z" * 125]
    assert read_frames(b"".join(text_frame(p) for p in payloads)) == payloads
