"""The forwarder's RTP header builder writes what aiortc's serializer writes."""

from __future__ import annotations

import itertools

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfu.forwarder import rtp_header

ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def _map(abs_id: int | None, level_id: int | None) -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    wanted = [(abs_id, ABS_SEND_TIME), (level_id, AUDIO_LEVEL)]
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=i, uri=uri) for i, uri in wanted if i
            ]
        )
    )
    return extensions


@pytest.mark.parametrize(
    ("abs_id", "level_id", "level", "marker", "payload_type"),
    list(
        itertools.product(
            [None, 3, 14], [None, 1, 5], [None, (True, 30), (False, 127)], [0, 1], [96, 111]
        )
    ),
)
def test_same_bytes_as_aiortc(
    abs_id: int | None,
    level_id: int | None,
    level: tuple[bool, int] | None,
    marker: int,
    payload_type: int,
) -> None:
    payload = bytes(range(50))
    packet = RtpPacket(payload_type=payload_type, marker=marker, payload=payload)
    packet.extensions.abs_send_time = 0xABCDEF
    packet.extensions.audio_level = level
    extensions = _map(abs_id, level_id)
    expected = packet.serialize(extensions)
    ours = rtp_header(payload_type, marker, abs_id, 0xABCDEF, level_id, level) + payload
    assert ours == expected
    parsed = RtpPacket.parse(ours, extensions)
    assert (parsed.payload_type, parsed.marker, parsed.payload) == (payload_type, marker, payload)
    assert parsed.extensions.abs_send_time == (0xABCDEF if abs_id else None)
    assert parsed.extensions.audio_level == (level if level_id else None)
