"""sfu.aiortc_glue's receive-path shortcuts do what aiortc's and aioice's originals do."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from typing import Any

import aioice.ice
import aiortc.clock
import pylibsrtp
import pytest
from aioice import Candidate, stun
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfu import aiortc_glue, twcc


def test_arrival_clock_matches_aiortc() -> None:
    original = aiortc.clock.current_ms
    before = original()
    fast = aiortc_glue._current_ms()
    after = original()
    assert before - 1 <= fast <= after + 1


class _Receiver:
    """Stands in for aioice's Connection: no SFU tap behind it (see the functional tests for
    RTP handed straight to a publisher's tap)."""

    _huddle_dtls = None

    def __init__(self) -> None:
        self.data: list[tuple[bytes, int]] = []
        self.requests: list[Any] = []

    def data_received(self, data: bytes, component: int) -> None:
        self.data.append((data, component))

    def request_received(self, message: Any, addr: Any, protocol: Any) -> None:
        self.requests.append(message)

    def protocol_lost(self, protocol: Any) -> None:
        pass


def _protocol(receiver: _Receiver) -> aioice.ice.StunProtocol:
    # (made inside a running event loop: the protocol creates a future)
    protocol = aioice.ice.StunProtocol(receiver)  # type: ignore[arg-type]
    protocol.local_candidate = Candidate(
        foundation="1",
        component=1,
        transport="udp",
        priority=1,
        host="127.0.0.1",
        port=9,
        type="host",
    )
    return protocol


@pytest.mark.parametrize("first_byte", [0x80, 0x90, 0xBF])
async def test_rtp_and_rtcp_go_straight_to_the_connection(first_byte: int) -> None:
    receiver = _Receiver()
    datagram = bytes([first_byte]) + bytes(range(1, 40))
    aiortc_glue._datagram_received(_protocol(receiver), datagram, ("127.0.0.1", 5000))
    assert receiver.data == [(datagram, 1)]
    assert receiver.requests == []


async def test_stun_and_dtls_still_take_aioices_path() -> None:
    receiver = _Receiver()
    protocol = _protocol(receiver)
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    aiortc_glue._datagram_received(protocol, bytes(request), ("127.0.0.1", 5000))
    assert [m.transaction_id for m in receiver.requests] == [request.transaction_id]
    dtls = bytes([22, 0xFE, 0xFD]) + bytes(30)  # a DTLS record is not STUN: handed on as data
    aiortc_glue._datagram_received(protocol, dtls, ("127.0.0.1", 5000))
    assert receiver.data == [(dtls, 1)]


class _Router:
    def __init__(self) -> None:
        self.receivers: list[Any] = []
        self.ssrc_table: dict[int, Any] = {}

    def route_rtp(self, packet: Any) -> None:
        return None


class _Dtls:
    """What ``_receive_rtp_now`` reads of a publisher's DTLS transport: real libsrtp keys,
    the header extension map with transport-wide numbers, the arrival log."""

    def __init__(self, key: bytes) -> None:
        self._rx_srtp = pylibsrtp.Session(
            pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
        )
        self._huddle_rx = None
        self._huddle_twcc = twcc.ArrivalLog(sender_ssrc=1)
        self._RTCDtlsTransport__rx_bytes = 0
        self._RTCDtlsTransport__rx_packets = 0
        self._rtp_router = _Router()
        self._rtp_header_extensions_map = HeaderExtensionsMap()
        self._rtp_header_extensions_map.configure(
            RTCRtpParameters(
                headerExtensions=[RTCRtpHeaderExtensionParameters(id=5, uri=twcc.EXTENSION_URI)]
            )
        )


async def test_transport_feedback_gives_when_packets_reached_the_host_not_when_read() -> None:
    """Packets sent 3 ms apart while the event loop was busy are read back to back; their
    feedback must still show them 3 ms apart, or the publisher's estimator sees a queue."""
    key = bytes(range(30))
    dtls = _Dtls(key)
    tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    connection = _Receiver()
    connection._huddle_dtls = dtls  # type: ignore[assignment]
    connection._queue = asyncio.Queue()  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()

    class Protocol(aioice.ice.StunProtocol):
        def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
            assert isinstance(data, bytes)
            aiortc_glue._datagram_received(self, data, addr)

    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Protocol(connection),  # type: ignore[arg-type]
        local_addr=("127.0.0.1", 0),
    )
    try:
        protocol.local_candidate = _protocol(connection).local_candidate
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        extensions = dtls._rtp_header_extensions_map
        # ICE's checks come first, as in a call (the kernel stamps from then on).
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        sender.sendto(bytes(request), transport.get_extra_info("sockname"))
        await asyncio.sleep(0.05)
        assert len(connection.requests) == 1
        count, gap_s = 6, 0.003
        for seq in range(count):  # the loop cannot read while this runs
            packet = RtpPacket(payload_type=96, sequence_number=seq, ssrc=1234, payload=b"x" * 50)
            packet.extensions.transport_sequence_number = 100 + seq
            sender.sendto(
                tx.protect(packet.serialize(extensions)), transport.get_extra_info("sockname")
            )
            time.sleep(gap_s)  # noqa: ASYNC251 (the busy loop is the point)
        sender.close()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if dtls._RTCDtlsTransport__rx_packets == count:
                break
        assert dtls._RTCDtlsTransport__rx_packets == count
        (feedback,) = dtls._huddle_twcc.feedback()
        arrivals = twcc.decode_feedback(feedback).arrivals
        assert all(a is not None for a in arrivals) and len(arrivals) == count
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]  # type: ignore[operator]
        # Read back to back, they would be microseconds apart.
        assert min(gaps) >= 0.6 * gap_s * 1e6, gaps
    finally:
        transport.close()
