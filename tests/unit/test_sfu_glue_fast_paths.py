"""sfu.aiortc_glue's receive-path shortcuts do what aiortc's and aioice's originals do."""

from __future__ import annotations

from typing import Any

import aioice.ice
import aiortc.clock
import pytest
from aioice import Candidate, stun

from sfu import aiortc_glue


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
