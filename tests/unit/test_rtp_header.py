"""The forwarder's RTP header builder writes what aiortc's serializer writes."""

from __future__ import annotations

import itertools
import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfu.rtpwire import TRANSPORT_SEQ_OFFSET, rtp_header
from sfu.twcc import EXTENSION_URI as TRANSPORT_CC

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


@pytest.mark.parametrize(("abs_id", "level_id"), [(None, None), (3, None), (3, 1), (None, 1)])
def test_the_transport_wide_number_written_at_its_offset_parses_back(
    abs_id: int | None, level_id: int | None
) -> None:
    extensions = _map(abs_id, level_id)
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=i, uri=uri)
                for i, uri in [(abs_id, ABS_SEND_TIME), (level_id, AUDIO_LEVEL), (5, TRANSPORT_CC)]
                if i
            ]
        )
    )
    data = bytearray(rtp_header(96, 1, abs_id, 0x123456, level_id, (True, 9), 5) + b"payload")
    struct.pack_into("!H", data, TRANSPORT_SEQ_OFFSET, 0xBEEF)
    parsed = RtpPacket.parse(bytes(data), extensions)
    assert parsed.extensions.transport_sequence_number == 0xBEEF
    assert parsed.extensions.abs_send_time == (0x123456 if abs_id else None)
    assert parsed.extensions.audio_level == ((True, 9) if level_id else None)
    assert parsed.payload == b"payload"
