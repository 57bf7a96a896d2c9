"""Network impairment in user space (netem is not available here): a lossy UDP relay.

The relay sits between a test peer and the SFU: the peer is told (by SDP rewrite) that the
SFU's candidate is the relay's port; the relay forwards everything both ways, like a NAT,
and drops the server-to-peer datagrams a predicate selects.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

Address = tuple[str, int]


def rtp_payload_type(datagram: bytes) -> int | None:
    """Payload type of an (S)RTP packet; None for RTCP, STUN and DTLS (headers are clear)."""
    if len(datagram) < 12 or not 128 <= datagram[0] < 192:
        return None
    pt = datagram[1] & 0x7F
    return None if 72 <= pt <= 76 else pt  # 200-204 with the marker bit: RTCP


def rtp_sequence(datagram: bytes) -> int:
    return int.from_bytes(datagram[2:4], "big")


def vp8_payload_type(sdp: str) -> int:
    match = re.search(r"a=rtpmap:(\d+) VP8/90000", sdp)
    assert match, "no VP8 in SDP"
    return int(match.group(1))


def redirect_candidates(sdp: str, port: int, relay_port: int) -> str:
    """Point the host candidates on ``port`` at ``relay_port``."""
    return re.sub(
        rf"(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 ){port}( )", rf"\g<1>{relay_port}\2", sdp
    )


def candidate_ports(sdp: str, address: str = "127.0.0.1") -> set[int]:
    pattern = rf"a=candidate:\S+ \d+ udp \d+ {re.escape(address)} (\d+) typ host"
    return {int(m) for m in re.findall(pattern, sdp)}


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)


class LossyRelay:
    """``drop`` selects server-to-peer datagrams to lose, ``drop_to_server`` the other way."""

    def __init__(
        self,
        target: Address,
        drop: Callable[[bytes], bool],
        drop_to_server: Callable[[bytes], bool] | None = None,
        listen: Address = ("127.0.0.1", 0),
    ) -> None:
        self.listen = listen
        self.target = target
        self.drop = drop
        self.drop_to_server = drop_to_server
        self.dropped = 0
        self.forwarded = 0
        self._peer: Address | None = None
        self._front: _Side | None = None
        self._back: _Side | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        front, self._front = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_peer), local_addr=self.listen
        )
        back, self._back = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_server), local_addr=("127.0.0.1", 0)
        )
        self._front.transport, self._back.transport = front, back
        return int(front.get_extra_info("sockname")[1])

    def _from_peer(self, data: bytes, addr: Address) -> None:
        self._peer = addr
        assert self._back is not None and self._back.transport is not None
        if self.drop_to_server is not None and self.drop_to_server(data):
            self.dropped += 1
            return
        self._back.transport.sendto(data, self.target)

    def _from_server(self, data: bytes, addr: Address) -> None:
        if self._peer is None or self._front is None or self._front.transport is None:
            return
        if self.drop(data):
            self.dropped += 1
            return
        self.forwarded += 1
        self._front.transport.sendto(data, self._peer)

    def close(self) -> None:
        for side in (self._front, self._back):
            if side is not None and side.transport is not None:
                side.transport.close()
