"""The SFU answers a publisher's offer of transport-wide congestion control (as Chromium
offers it) with the same header extension and feedback, which aiortc alone leaves out."""

from __future__ import annotations

import re

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as sdp_parser

from sfu import twcc
from sfu.aiortc_glue import accept_transport_cc, server_rtc_configuration

EXTENSION_ID = 7


def _with_transport_cc(sdp: str) -> str:
    """What Chromium adds to such an offer: the extension, and transport-cc feedback on
    its codecs (not on RTX)."""
    out = []
    for line in sdp.splitlines():
        out.append(line)
        if line.startswith("a=mid:"):
            out.append(f"a=extmap:{EXTENSION_ID} {twcc.EXTENSION_URI}")
        match = re.match(r"a=rtpmap:(\d+) (VP8|opus)/", line)
        if match:
            out.append(f"a=rtcp-fb:{match.group(1)} transport-cc")
    return "\r\n".join(out) + "\r\n"


async def _answer(munge: bool) -> str:
    # No ICE servers: aiortc would otherwise ask a public STUN server.
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sfu = RTCPeerConnection(server_rtc_configuration())
    try:
        client.addTransceiver("audio", direction="sendonly")
        client.addTransceiver("video", direction="sendonly")
        offer = await client.createOffer()
        sdp = _with_transport_cc(offer.sdp) if munge else offer.sdp
        await sfu.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        accept_transport_cc(sfu, sdp_parser.SessionDescription.parse(sdp))
        answer = await sfu.createAnswer()
        return str(answer.sdp)
    finally:
        await client.close()
        await sfu.close()


def _feedback(sdp: str) -> dict[str, set[str]]:
    """Codec name -> the rtcp-fb values the SDP gives it."""
    names = dict(re.findall(r"a=rtpmap:(\d+) ([\w-]+)/", sdp))
    found: dict[str, set[str]] = {}
    for pt, value in re.findall(r"a=rtcp-fb:(\d+) (.+?)\r?$", sdp, re.M):
        found.setdefault(names[pt], set()).add(value)
    return found


async def test_an_offer_with_transport_cc_gets_it_answered() -> None:
    answer = await _answer(munge=True)
    assert answer.count(f"a=extmap:{EXTENSION_ID} {twcc.EXTENSION_URI}") == 2  # audio, video
    feedback = _feedback(answer)
    assert "transport-cc" in feedback["opus"]
    assert "transport-cc" in feedback["VP8"]
    assert "transport-cc" not in feedback.get("rtx", set())
    assert {"nack", "nack pli", "goog-remb"} <= feedback["VP8"]  # what aiortc answers itself


async def test_an_offer_without_it_gets_none() -> None:
    answer = await _answer(munge=False)
    assert twcc.EXTENSION_URI not in answer
    assert "transport-cc" not in answer
