"""Every touch of aiortc/aioice/pylibsrtp internals, in one place. Written for aiortc 1.16.0
and pylibsrtp 1.0.0.

aiortc has no public API for forwarding: its receivers always decode and its senders always
packetize. The SFU therefore
- takes each RTP packet where a publisher's receiver gets it, before the jitter buffer
  (``InboundTap``), keeping the receiver's statistics and NACK generation alive so that its
  RTCP receiver reports and NACKs to the publisher stay true. With ``install_fast_paths``
  the packet comes to the tap straight from the socket callback (``_receive_rtp_now``);
- sends ready RTP on a subscriber's sender (``OutboundPort``): SRTP-protect (libsrtp called
  directly) and ``sendto`` on the nominated ICE pair's datagram transport. The sender's
  track never yields a frame, so aiortc's own send loop stays idle; the port counts what it
  sent, and ``send_reports`` sends the senders' RTCP sender reports, true packet/octet counts
  and timestamps, one compound packet per connection (aiortc's per-sender RTCP loop only
  says BYE for them);
- receives the subscriber's RTCP for that sender (NACK, PLI/FIR, receiver reports with the
  round-trip time, REMB).

A process takes all of it with one ``install()``. pyproject.toml pins aiortc and pylibsrtp to
the versions below; ``check_version`` checks it, and ``AIORTC_PRIVATE`` lists every private
name of theirs used here (a unit test checks each exists, so a version bump fails there).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import random
import struct
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Final

import aioice
import aioice.ice
import aiortc
import aiortc.clock
import aiortc.rtcrtpreceiver
import pylibsrtp
from aioice.candidate import candidate_foundation, candidate_priority
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs import is_rtx
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters, RTCRtpParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
    unpack_remb_fci,
    unwrap_rtx,
)
from aiortc.sdp import SessionDescription
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

from sfu import twcc
from sfu.bwe import SendSideEstimator
from sfu.retransmit import RepairBudget
from sfu.rtpwire import NTP_EPOCH_OFFSET_S, TRANSPORT_SEQ_OFFSET, ntp_now, rtp_header

AIORTC_VERSION: Final = "1.16.0"
PYLIBSRTP_VERSION: Final = "1.0.0"
_DTLS_CONNECTED: Final = DtlsState.CONNECTED
SEQ_TS_SSRC: Final = struct.Struct("!HII")  # an RTP header's bytes 2-11
# Probes (sfu.bwe): padding-only packets of this many padding bytes (RFC 3550 allows 255).
PADDING_BYTES: Final = 255
_PADDING: Final = bytes(PADDING_BYTES - 1) + bytes((PADDING_BYTES,))
_TRANSPORT_SEQ: Final = struct.Struct("!H")
# Sender reports: a sender that sent nothing for this long is no longer reported, and one
# datagram carries at most this many (an SR is 28 bytes, its SDES chunk about 30).
REPORT_IDLE_S: Final = 5.0
REPORTS_PER_PACKET: Final = 16
RTT_SMOOTHING: Final = 0.85  # weight of the previous round-trip time estimate
# Header layouts seen, numbered.
_LAYOUT_KEYS: Final[dict[tuple[Any, ...], int]] = {}
# SRTP protection called on libsrtp directly (pylibsrtp's Session.protect checks its input
# and allocates a length cell on every call). One length cell: the event loop is one thread.
_LENGTH: Final = _srtp_ffi.new("int *")
_SRTP_BUFFER_BYTES: Final = 1500  # the size of a pylibsrtp session's buffer
_PROTECT_MAX: Final = _SRTP_BUFFER_BYTES - pylibsrtp.SRTP_MAX_TRAILER_LEN
_srtp_protect: Final = _srtp_lib.srtp_protect
_srtp_unprotect: Final = _srtp_lib.srtp_unprotect
log = logging.getLogger("huddle.sfu.glue")

__all__ = [
    "AIORTC_VERSION",
    "NTP_EPOCH_OFFSET_S",
    "SEQ_TS_SSRC",
    "HeaderExtensionsMap",
    "IdleTrack",
    "InboundTap",
    "OutboundPort",
    "RtpPacket",
    "accept_transport_cc",
    "install",
    "install_fast_paths",
    "negotiated_codec",
    "send_reports",
    "server_rtc_configuration",
    "use_host_addresses",
    "use_port_range",
]


# Every private name of aiortc, aioice and pylibsrtp this module relies on, as
# (owner, name, kind); ``tests/unit/test_sfu_glue_private.py`` checks each against the
# installed packages. Kinds: "function" (a module's), "attribute" (any other of a module's),
# "method" and "coroutine" (a class's), "instance" (an attribute each instance has).
_DTLS: Final = "aiortc.rtcdtlstransport.RTCDtlsTransport"
_SENDER: Final = "aiortc.rtcrtpsender.RTCRtpSender"
_RECEIVER: Final = "aiortc.rtcrtpreceiver.RTCRtpReceiver"
_CONNECTION: Final = "aioice.ice.Connection"
AIORTC_PRIVATE: Final[tuple[tuple[str, str, str], ...]] = (
    ("aiortc.clock", "current_ms", "function"),
    ("aiortc.rtcrtpreceiver", "get_decoder", "function"),
    ("aioice.ice", "get_host_addresses", "function"),
    ("aioice.ice.StunProtocol", "datagram_received", "method"),
    ("aioice.ice.StunProtocol", "receiver", "instance"),
    (_CONNECTION, "get_component_candidates", "coroutine"),
    (_CONNECTION, "data_received", "method"),
    (_CONNECTION, "_queue", "instance"),
    (_CONNECTION, "_nominated", "instance"),
    (_CONNECTION, "_protocols", "instance"),
    ("aiortc.rtcicetransport.RTCIceTransport", "_connection", "instance"),
    (_DTLS, "_handle_rtcp_data", "coroutine"),
    (_DTLS, "_rx_srtp", "instance"),
    (_DTLS, "_tx_srtp", "instance"),
    (_DTLS, "_state", "instance"),
    (_DTLS, "_rtp_router", "instance"),
    (_DTLS, "_rtp_header_extensions_map", "instance"),
    (_DTLS, "_transport", "instance"),
    (_DTLS, "_RTCDtlsTransport__rx_bytes", "instance"),
    (_DTLS, "_RTCDtlsTransport__rx_packets", "instance"),
    (_SENDER, "_run_rtcp", "coroutine"),
    (_SENDER, "_handle_rtcp_packet", "coroutine"),
    (_SENDER, "_send_rtcp", "coroutine"),
    (_SENDER, "_ssrc", "instance"),
    (_SENDER, "_rtx_ssrc", "instance"),
    (_SENDER, "_RTCRtpSender__transport", "instance"),
    (_SENDER, "_RTCRtpSender__cname", "instance"),
    (_SENDER, "_RTCRtpSender__rtcp_started", "instance"),
    (_SENDER, "_RTCRtpSender__rtcp_exited", "instance"),
    (_RECEIVER, "_handle_rtp_packet", "coroutine"),
    (_RECEIVER, "_send_rtcp_pli", "coroutine"),
    (_RECEIVER, "_send_rtcp_nack", "coroutine"),
    (_RECEIVER, "_RTCRtpReceiver__codecs", "instance"),
    (_RECEIVER, "_RTCRtpReceiver__remote_streams", "instance"),
    (_RECEIVER, "_RTCRtpReceiver__nack_generator", "instance"),
    (_RECEIVER, "_RTCRtpReceiver__rtx_ssrc", "instance"),
    ("aiortc.rtcdtlstransport.RtpRouter", "receivers", "instance"),
    ("aiortc.rtcdtlstransport.RtpRouter", "ssrc_table", "instance"),
    ("aiortc.rtcrtptransceiver.RTCRtpTransceiver", "_codecs", "instance"),
    ("aiortc.rtcrtptransceiver.RTCRtpTransceiver", "_headerExtensions", "instance"),
    ("aiortc.rtp.HeaderExtensionsMap", "_HeaderExtensionsMap__ids", "instance"),
    ("pylibsrtp.Session", "_srtp", "instance"),
    ("pylibsrtp.Session", "_cdata", "instance"),
    ("pylibsrtp.Session", "_buffer", "instance"),
    ("pylibsrtp._binding", "ffi", "attribute"),
    ("pylibsrtp._binding.lib", "srtp_protect", "function"),
    ("pylibsrtp._binding.lib", "srtp_unprotect", "function"),
)


# What ``install`` replaces, as the packages hold it: read at import, before any patch.
REPLACED: Final[dict[str, Any]] = {
    "aiortc.clock.current_ms": aiortc.clock.current_ms,
    "aiortc.rtcrtpreceiver.get_decoder": aiortc.rtcrtpreceiver.get_decoder,  # type: ignore[attr-defined]
    "aioice.ice.get_host_addresses": aioice.ice.get_host_addresses,
    "aioice.ice.StunProtocol.datagram_received": aioice.ice.StunProtocol.datagram_received,
    "aioice.ice.Connection.get_component_candidates": (
        aioice.ice.Connection.get_component_candidates
    ),
    f"{_SENDER}._run_rtcp": RTCRtpSender._run_rtcp,
}


def check_version() -> None:
    found = {"aiortc": aiortc.__version__, "pylibsrtp": pylibsrtp.__version__}
    wanted = {"aiortc": AIORTC_VERSION, "pylibsrtp": PYLIBSRTP_VERSION}
    for name, version in wanted.items():
        if found[name] != version:
            raise RuntimeError(
                f"sfu.aiortc_glue was written for {name} {version}, "
                f"found {found[name]}: review it before moving the pin"
            )


_original_datagram_received: Final = REPLACED["aioice.ice.StunProtocol.datagram_received"]


def _current_ms() -> int:
    """aiortc's ``clock.current_ms`` (milliseconds since the NTP epoch) without building two
    datetimes: it is read for every SRTP packet received."""
    return int((time.time() + NTP_EPOCH_OFFSET_S) * 1000)


def _datagram_received(self: aioice.ice.StunProtocol, data: bytes, addr: tuple[Any, ...]) -> None:
    # RTP and RTCP (first byte 128-191, RFC 7983) are never STUN: aioice would try to parse
    # each as STUN first and hand it on from the ValueError.
    if data and data[0] > 127:
        connection = self.receiver
        dtls = connection._huddle_dtls  # type: ignore[attr-defined]
        # Nothing queued before it (only before the keys are there): handled now, it cannot
        # overtake an earlier datagram.
        if dtls is None or connection._queue.qsize() or not _receive_rtp_now(dtls, data, self):
            connection.data_received(data, self.local_candidate.component)
    else:
        if getattr(self, "_huddle_stamp_fd", None) is None:  # on before the first RTP
            self._huddle_stamp_fd = _stamp_fd(self)  # type: ignore[attr-defined]
        _original_datagram_received(self, data, addr)


# When each publisher packet reached this host, for its transport-wide feedback: the
# kernel's receive timestamp of the datagram being handled (SIOCGSTAMPNS; the event loop
# hands datagrams to Python one read at a time, so it names this one). The time Python
# reads it at would do on an idle machine only: on a busy one the loop reads a stall's
# worth of datagrams at once, packets sent 2 ms apart got stamps 5 µs apart and then a
# jump, and the publisher's estimator read that as a growing queue (Chromium's uplink
# estimate stayed at 130-320 kbit/s on a free link, where Janus let it reach 1.7-3.9 Mbit/s).
_SIOCGSTAMPNS: Final = 0x8907  # asm-generic/sockios.h: struct timespec, 64-bit time here
_TIMESPEC: Final = struct.Struct("@qq")
_NO_TIMESPEC: Final = bytes(_TIMESPEC.size)


def arrival_us(protocol: Any) -> int:
    """When the datagram ``protocol`` is handling now arrived, in microseconds of the wall
    clock: the kernel's stamp where the socket has one, else now."""
    fd: int | None = getattr(protocol, "_huddle_stamp_fd", None)
    if fd is None:
        fd = protocol._huddle_stamp_fd = _stamp_fd(protocol)
    if fd >= 0:
        try:
            seconds, nanoseconds = _TIMESPEC.unpack(fcntl.ioctl(fd, _SIOCGSTAMPNS, _NO_TIMESPEC))
        except OSError:
            pass  # no stamp for this one (the first read after enabling them)
        else:
            return int(seconds) * 1_000_000 + int(nanoseconds) // 1000
    return time.time_ns() // 1000


def _stamp_fd(protocol: Any) -> int:
    """The socket's descriptor with kernel receive stamps turned on (the first query turns
    them on and has none yet), or -1 where the socket or the query is not there."""
    transport = getattr(protocol, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return -1
    fd: int = sock.fileno()
    try:
        fcntl.ioctl(fd, _SIOCGSTAMPNS, _NO_TIMESPEC)
    except OSError as error:
        if error.errno != errno.ENOENT:  # ENOENT: on now, nothing stamped yet
            log.info("no kernel receive stamps (%s): feedback uses the time read", error)
            return -1
    return fd


def _receive_rtp_now(dtls: Any, data: bytes, protocol: Any) -> bool:
    """A publisher's SRTP packet, taken to its receiver's tap right away: what
    ``RTCDtlsTransport._recv_next`` and ``_handle_rtp_data`` do, without the queue, the task
    switch and four coroutines per packet (its RTCP goes to aiortc's handler in a task of
    its own, so that it never holds RTP up behind it in the queue). False: not for this
    path (no SRTP keys yet), to go through aiortc's own."""
    srtp = dtls._rx_srtp
    if srtp is None:
        return False
    dtls._RTCDtlsTransport__rx_bytes += len(data)  # the transport's statistics
    dtls._RTCDtlsTransport__rx_packets += 1
    if is_rtcp(data):
        try:
            plain = srtp.unprotect_rtcp(data)
        except pylibsrtp.Error:
            return True  # aiortc drops it too
        _spawn(dtls._handle_rtcp_data(plain))
        return True
    rx = dtls._huddle_rx
    if rx is None or rx[0] is not srtp:  # libsrtp's context and buffer, read once per session
        rx = dtls._huddle_rx = (srtp, srtp._srtp[0], srtp._cdata, srtp._buffer)
    size = len(data)
    if size > _SRTP_BUFFER_BYTES:
        return True
    buffer = rx[3]
    buffer[0:size] = data
    _LENGTH[0] = size
    if _srtp_unprotect(rx[1], rx[2], _LENGTH):
        return True  # failed authentication or a replay: aiortc drops it too
    try:
        packet = RtpPacket.parse(buffer[0 : _LENGTH[0]], dtls._rtp_header_extensions_map)
    except ValueError:
        return True
    arrivals = dtls._huddle_twcc
    if arrivals is not None and (number := packet.extensions.transport_sequence_number) is not None:
        arrivals.record(number, arrival_us(protocol))
    router = dtls._rtp_router
    receiver = router.route_rtp(packet) or _route_repair(router, packet.ssrc)
    tap = getattr(receiver, "_huddle_tap", None)
    if tap is None:
        if receiver is not None:
            _spawn(receiver._handle_rtp_packet(packet, arrival_time_ms=_current_ms()))
        return True
    tap.handle(packet)
    return True


def _route_repair(router: Any, ssrc: int) -> Any:
    """The receiver whose RTX stream ``ssrc`` is, remembered in the router's SSRC table from
    then on; None for a stranger. aiortc's router knows each receiver's media SSRCs only and
    routes the rest by payload type when one receiver alone has it: a publisher with several
    video sections (a simulcast camera is three) shares one RTX payload type among them,
    and every retransmission it sent was dropped (measured: at 5 % loss each way, 3,437 of
    3,638 packets NACKed by subscribers were ones the SFU never had)."""
    for receiver in router.receivers:
        tap = getattr(receiver, "_huddle_tap", None)
        if tap is not None and ssrc in tap.rtx_ssrcs:
            router.ssrc_table[ssrc] = receiver
            return receiver
    return None


_tasks: set[asyncio.Task[Any]] = set()


def _spawn(coroutine: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.ensure_future(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_original_run_rtcp: Final = REPLACED[f"{_SENDER}._run_rtcp"]


async def _run_rtcp(self: RTCRtpSender) -> None:
    """aiortc's per-sender RTCP loop, for the SFU's senders: their reports go out from
    ``send_reports``, compounded per transport; only the BYE at the end is sent here."""
    if not getattr(self, "_huddle_reported", False):
        await _original_run_rtcp(self)
        return
    self._RTCRtpSender__rtcp_started.set()  # type: ignore[attr-defined]
    # Stopping the sender cancels this; as aiortc's loop does, it then says goodbye.
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    with contextlib.suppress(ConnectionError):
        await self._send_rtcp([RtcpByePacket(sources=[self._ssrc])])
    self._RTCRtpSender__rtcp_exited.set()  # type: ignore[attr-defined]


def send_reports(ports: Iterable[OutboundPort], now: float) -> int:
    """Send the sender reports (SR + SDES) of ``ports`` that are sending, one compound RTCP
    packet per transport (up to REPORTS_PER_PACKET senders each), as browsers do; aiortc's
    own loop sends one datagram per sender. Returns how many datagrams went out."""
    by_transport: dict[int, list[OutboundPort]] = {}
    for port in ports:
        if port.packet_count and now - port.last_time < REPORT_IDLE_S:
            dtls = port.sender._RTCRtpSender__transport  # type: ignore[attr-defined]
            by_transport.setdefault(id(dtls), []).append(port)
    sent = 0
    for group in by_transport.values():
        for i in range(0, len(group), REPORTS_PER_PACKET):
            some = group[i : i + REPORTS_PER_PACKET]
            first = some[0]
            transport = first._transport()
            if transport is None:
                break
            packets = [sr for port in some for sr in port.report()]
            chunks = [
                RtcpSourceInfo(ssrc=port.ssrc, items=[(1, cname.encode())])
                for port in some
                if (cname := port.sender._RTCRtpSender__cname)  # type: ignore[attr-defined]
            ]
            if chunks:
                packets.append(RtcpSdesPacket(chunks=chunks))
            payload = b"".join(bytes(packet) for packet in packets)
            transport.sendto(first._srtp.protect_rtcp(payload), first._addr)
            sent += 1
    return sent


def install_fast_paths() -> None:
    """Process-wide shortcuts on the receive path of every packet, each doing what the
    original does: aiortc's arrival clock, aioice's STUN demultiplexing, and publishers' RTP
    handed to the SFU's taps as it arrives (for transports with an ``InboundTap``); and the
    SFU's senders leave their reports to ``send_reports``."""
    aiortc.clock.current_ms = _current_ms
    aioice.ice.Connection._huddle_dtls = None  # type: ignore[attr-defined]
    aioice.ice.StunProtocol.datagram_received = _datagram_received  # type: ignore[method-assign,assignment]
    RTCRtpSender._run_rtcp = _run_rtcp  # type: ignore[method-assign]


_original_get_decoder: Final = REPLACED["aiortc.rtcrtpreceiver.get_decoder"]
_decoder_listeners: list[Callable[[], None]] = []


def _counting_get_decoder(codec: Any) -> Any:
    for listener in _decoder_listeners:
        listener()
    return _original_get_decoder(codec)


def install(
    *,
    host_addresses: Sequence[str] = (),
    port_range: tuple[int, int] | None = None,
    on_decoder: Callable[[], None] | None = None,
) -> None:
    """Everything this module changes in aiortc and aioice for a process (node, SFU worker
    or benchmark bot), in one call: the version check, the fast paths
    (``install_fast_paths``), the ICE host addresses and UDP port range when given, and
    ``on_decoder`` called for every decoder aiortc creates (the forwarding path never
    decodes: the SFU counts them to prove it). Idempotent: the patches replace aiortc's
    originals, never an earlier patch, so calling it again with the same arguments changes
    nothing."""
    check_version()
    install_fast_paths()
    if host_addresses:
        use_host_addresses(list(host_addresses))
    if port_range is not None:
        use_port_range(*port_range)
    if on_decoder is not None:
        if on_decoder not in _decoder_listeners:
            _decoder_listeners.append(on_decoder)
        aiortc.rtcrtpreceiver.get_decoder = _counting_get_decoder  # type: ignore[attr-defined]


def use_host_addresses(addresses: list[str]) -> None:
    """Gather ICE host candidates on exactly these addresses (loopback included).

    aioice skips 127.0.0.1 and otherwise offers every interface address of the machine; an
    SFU must offer only the addresses it is configured with. Process-wide, as in aioice.
    """
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def use_port_range(low: int, high: int) -> None:
    """Bind ICE host candidates to UDP ports in [low, high] (firewalls open a known range).

    Replaces aioice's candidate gathering with host candidates only: an SFU has fixed,
    configured addresses and announces its public one itself, so it needs no STUN or TURN
    gathering of its own. Process-wide, as in aioice.
    """
    if not 0 < low <= high <= 65535:
        raise ValueError(f"bad ICE port range {low}-{high}")

    async def gather(
        self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
    ) -> list[aioice.Candidate]:
        loop = asyncio.get_running_loop()
        candidates = []
        for address in addresses:
            ports = list(range(low, high + 1))
            random.shuffle(ports)
            for port in ports:
                try:
                    _, protocol = await loop.create_datagram_endpoint(
                        lambda: aioice.ice.StunProtocol(self), local_addr=(address, port)
                    )
                except OSError:
                    continue
                break
            else:
                log.error("no free UDP port in the ICE range", extra={"address": address})
                continue
            candidate = aioice.Candidate(
                foundation=candidate_foundation("host", "udp", address),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=address,
                port=port,
                type="host",
            )
            protocol.local_candidate = candidate
            self._protocols.append(protocol)
            candidates.append(candidate)
        return candidates

    aioice.ice.Connection.get_component_candidates = gather  # type: ignore[method-assign]


def negotiated_codec(receiver: RTCRtpReceiver, pc: Any) -> str | None:
    """The mime type a receiver's transceiver settled on (its first codec), if any."""
    for transceiver in pc.getTransceivers():
        if transceiver.receiver is receiver:
            codecs = transceiver._codecs
            return str(codecs[0].mimeType) if codecs else None
    return None


def server_rtc_configuration() -> RTCConfiguration:
    """The SFU's peer connections: every track on one bundled transport (with aiortc's
    default policy, extra tracks of a kind may land on a transport that never connects)."""
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class IdleTrack(MediaStreamTrack):
    """A track that never yields a frame: it keeps aiortc's own send loop of a sender idle."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Any:
        await self._never
        raise aiortc.mediastreams.MediaStreamError

    def stop(self) -> None:
        if not self._never.done():
            self._never.cancel()
        super().stop()


PacketHandler = Callable[[RtpPacket, RTCRtpCodecParameters], None]


class InboundTap:
    """Takes a publisher receiver's RTP packets before its jitter buffer; nothing is decoded."""

    def __init__(self, receiver: RTCRtpReceiver, on_packet: PacketHandler) -> None:
        self.receiver = receiver
        self.on_packet = on_packet
        self.packets = 0
        # The receiver's own tables, shared by reference (filled in by receive()).
        self._codecs: dict[int, RTCRtpCodecParameters] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        self._rtx_ssrc: dict[int, int] = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
        self.rtx_ssrcs = self._rtx_ssrc.keys()  # a view: what later negotiations add shows
        self._streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        self._nack = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
        receiver._handle_rtp_packet = self._handle  # type: ignore[method-assign]
        receiver._huddle_tap = self  # type: ignore[attr-defined]
        # This publisher's RTP comes straight here from its socket (install_fast_paths).
        dtls = receiver.transport
        dtls._transport._connection._huddle_dtls = dtls  # type: ignore[attr-defined]
        if not hasattr(dtls, "_huddle_rx"):
            dtls._huddle_rx = None  # type: ignore[attr-defined]
        _feedback_for(dtls, self)

    async def _handle(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        # aiortc's own path (packets queued before the fast path took over): recorded too.
        number = packet.extensions.transport_sequence_number
        arrivals = getattr(self.receiver.transport, "_huddle_twcc", None)
        if arrivals is not None and number is not None:
            arrivals.record(number, time.time_ns() // 1000)  # the clock of arrival_us
        self.handle(packet)

    def handle(self, packet: RtpPacket) -> None:
        codec = self._codecs.get(packet.payload_type)
        if codec is None:
            return
        stream = self._streams.get(packet.ssrc)
        if stream is None:
            stream = self._streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if is_rtx(codec):
            original = self._rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original is None or len(packet.payload) < 2 or apt not in self._codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original)
            codec = self._codecs[apt]
        if self._nack is not None and self._nack.add(packet):
            _spawn(self.receiver._send_rtcp_nack(packet.ssrc, sorted(self._nack.missing)))
        self.packets += 1
        self.on_packet(packet, codec)

    @property
    def packets_lost(self) -> int:
        """Packets the publisher sent that never reached the SFU (RTCP receiver statistics)."""
        return sum(max(0, stream.packets_lost) for stream in self._streams.values())

    async def request_keyframe(self, media_ssrc: int) -> None:
        await self.receiver._send_rtcp_pli(media_ssrc)


NackHandler = Callable[[list[int]], None]
KeyframeHandler = Callable[[], None]
RembHandler = Callable[[int], None]
ReportHandler = Callable[[int, int], None]  # fraction_lost (0-255), jitter


class OutboundPort:
    """Sends ready RTP packets on a subscriber's sender, and hears that sender's RTCP."""

    def __init__(self, transceiver: RTCRtpTransceiver) -> None:
        self.transceiver = transceiver
        self.sender: RTCRtpSender = transceiver.sender
        self.ssrc: int = self.sender._ssrc
        self.rtx_ssrc: int = self.sender._rtx_ssrc
        self.payload_type = -1
        self.rtx_payload_type: int | None = None
        # The retransmission stream's numbering belongs to the sender, not to one feed: SRTP
        # receivers drop packets whose numbers jump (a new feed after a simulcast switch
        # starting elsewhere would have all its retransmissions dropped).
        self.rtx_seq = random.getrandbits(15)
        self.extensions = HeaderExtensionsMap()
        self.layout: tuple[Any, ...] = ()
        self.layout_key = -1  # the same small int for every sender of the same layout
        # Transport-wide congestion control toward the subscriber (sfu.bwe): the extension's
        # id as its answer accepted it, and the estimator that numbers every packet of the
        # transport (shared by the subscriber's senders). None: it estimates for itself.
        self.transport_seq_id: int | None = None
        self.bwe: SendSideEstimator | None = None
        self.ready = False
        # What this sender sent last, whichever forwarder fed it: a new feed (another
        # simulcast layer, or the same track after a pause) continues these numbers.
        self.last_seq: int | None = None
        self.last_ts: int | None = None
        self.last_time = 0.0
        self.remb_bps: int | None = None
        # The subscriber's receiver reports on this sender: how many, and the latest
        # fraction lost (of 256), for its downlink estimate (sfu.downlink).
        self.reports = 0
        self.fraction_lost = 0
        self.feeds: list[tuple[Any, Any]] = []  # (forwarder, output) feeding this sender
        self._pair: Any = None  # the nominated ICE pair last sent on, and its address
        self._addr: tuple[str, int] = ("", 0)
        self._srtp: Any = None  # the SRTP session last sent with, and its libsrtp parts
        self._srtp_ctx: Any = None
        self._srtp_cdata: Any = None
        self._srtp_buffer: Any = None
        # What the sender reports (SR) carry: counts and the last packet's two clocks.
        self.packet_count = 0
        self.octet_count = 0
        # Whole RTP packets forwarded (retransmissions aside), whichever layer fed them: the
        # subscriber's bitrate, which per-layer counters would break at every switch.
        self.bytes_sent = 0
        # Answers to NACKs, whichever layer fed them: re-sent (packets and bytes, RTX header
        # included), and refused by the subscriber's ``repair`` budget (sfu.retransmit).
        self.retransmitted = 0
        self.retransmitted_bytes = 0
        self.retransmit_suppressed = 0
        self.retransmit_too_old = 0
        self.retransmit_over_budget = 0
        self.repair: RepairBudget | None = None  # shared by the subscriber's senders
        self.rtp_timestamp = 0
        self.ntp_timestamp = 0
        self.cname: str | None = None
        self._lsr: int | None = None  # the middle 32 bits of the last report's NTP time
        self._lsr_time = 0.0
        self._rtt: float | None = None
        self.sender._huddle_reported = True  # type: ignore[attr-defined]
        self.on_nack: NackHandler = _ignore
        self.on_keyframe_request: KeyframeHandler = _ignore0
        self.on_remb: RembHandler = _ignore
        self.on_report: ReportHandler = _ignore2
        self._original_rtcp: Callable[[AnyRtcpPacket], Awaitable[None]] = (
            self.sender._handle_rtcp_packet
        )
        self.sender._handle_rtcp_packet = self._handle_rtcp  # type: ignore[method-assign]

    def negotiated(self) -> bool:
        """Read the negotiated codec and header extensions; False until there are some."""
        codecs = self.transceiver._codecs
        if not codecs or self.transceiver.currentDirection is None:
            return False
        if codecs[0].payloadType is None:
            return False
        self.payload_type = codecs[0].payloadType
        self.rtx_payload_type = None
        for codec in codecs:
            if is_rtx(codec) and codec.parameters.get("apt") == self.payload_type:
                self.rtx_payload_type = codec.payloadType
        self.extensions = HeaderExtensionsMap()
        self.extensions.configure(
            RTCRtpParameters(headerExtensions=self.transceiver._headerExtensions)
        )
        ids = self.extensions._HeaderExtensionsMap__ids  # type: ignore[attr-defined]
        self.layout = (
            self.payload_type,
            ids.abs_send_time,
            ids.audio_level,
            self.transport_seq_id if self.bwe is not None else None,
        )
        self.layout_key = _LAYOUT_KEYS.setdefault(self.layout, len(_LAYOUT_KEYS))
        self.ready = True
        return True

    def _transport(self) -> Any:
        """The datagram transport to send on, with this sender's SRTP session ready in
        ``_srtp_*``; None while the connection is not up."""
        dtls = self.sender._RTCRtpSender__transport  # type: ignore[attr-defined]
        srtp = dtls._tx_srtp
        if srtp is None or dtls._state is not _DTLS_CONNECTED:
            return None
        pair = dtls._transport._connection._nominated.get(1)
        if pair is not self._pair:  # the pair's address, read once per nominated pair
            if pair is None:
                return None
            self._pair, self._addr = pair, pair.remote_addr
        if srtp is not self._srtp:  # libsrtp's context and buffer, read once per session
            self._srtp = srtp
            self._srtp_ctx, self._srtp_cdata, self._srtp_buffer = (
                srtp._srtp[0],
                srtp._cdata,
                srtp._buffer,
            )
        return pair.protocol.transport

    def _protect_and_send(self, transport: Any, size: int) -> None:
        """SRTP-protect the ``size`` bytes in the session's buffer and send them."""
        _LENGTH[0] = size
        status = _srtp_protect(self._srtp_ctx, self._srtp_cdata, _LENGTH)
        if status:
            raise pylibsrtp.Error(f"srtp_protect failed with status {status}")
        transport.sendto(self._srtp_buffer[0 : _LENGTH[0]], self._addr)

    def forward(
        self, base: bytes, seq: int, ts: int, payload_bytes: int, ntp: int, now: float
    ) -> bool:
        """Send ``base`` (an RTP packet serialized for this sender's header layout) with this
        sender's sequence number, timestamp and SSRC written in. False when the transport is
        not up."""
        transport = self._transport()
        if transport is None:
            return False
        size = len(base)
        if size > _PROTECT_MAX:
            raise ValueError("RTP packet too long to protect")
        buffer = self._srtp_buffer
        buffer[0:size] = base
        SEQ_TS_SSRC.pack_into(buffer, 2, seq, ts, self.ssrc)
        if self.layout[3] is not None:
            _TRANSPORT_SEQ.pack_into(buffer, TRANSPORT_SEQ_OFFSET, self.bwe.sent(size, now))  # type: ignore[union-attr]
        self._protect_and_send(transport, size)
        self.last_seq, self.last_ts, self.last_time = seq, ts, now
        self.packet_count += 1
        self.octet_count += payload_bytes
        self.bytes_sent += size
        self.rtp_timestamp, self.ntp_timestamp = ts, ntp
        return True

    def send(self, data: bytes | bytearray) -> bool:
        """SRTP-protect and send one ready RTP packet (a retransmission: not counted in the
        sender reports). False when the transport is not up."""
        transport = self._transport()
        if transport is None:
            return False
        size = len(data)
        if size > _PROTECT_MAX:
            raise ValueError("RTP packet too long to protect")
        self._srtp_buffer[0:size] = data
        if self.layout[3] is not None:
            seq = self.bwe.sent(size, time.monotonic())  # type: ignore[union-attr]
            _TRANSPORT_SEQ.pack_into(self._srtp_buffer, TRANSPORT_SEQ_OFFSET, seq)
        self._protect_and_send(transport, size)
        self.retransmitted += 1
        self.retransmitted_bytes += size
        return True

    def send_padding(self, now: float) -> bool:
        """One padding-only packet on the RTX stream (a probe, ``sfu.bwe``): numbered on the
        transport for the subscriber's feedback, dropped by its receiver. False when there
        is no RTX stream, no transport-wide numbering, or no transport up."""
        bwe = self.bwe
        if bwe is None or self.rtx_payload_type is None or self.transport_seq_id is None:
            return False
        transport = self._transport()
        if transport is None:
            return False
        _, abs_send_time_id, _, _ = self.layout
        abs_send_time = (ntp_now() >> 14) & 0xFFFFFF
        header = bytearray(
            rtp_header(
                self.rtx_payload_type, 0, abs_send_time_id, abs_send_time, None, None,
                self.transport_seq_id,
            )
        )  # fmt: skip
        header[0] |= 0x20  # padding: the payload is padding alone, its length in the last byte
        SEQ_TS_SSRC.pack_into(header, 2, self.rtx_seq, self.last_ts or 0, self.rtx_ssrc)
        size = len(header) + PADDING_BYTES
        _TRANSPORT_SEQ.pack_into(header, TRANSPORT_SEQ_OFFSET, bwe.sent(size, now))
        buffer = self._srtp_buffer
        buffer[0 : len(header)] = header
        buffer[len(header) : size] = _PADDING
        self._protect_and_send(transport, size)
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        return True

    def report(self) -> list[AnyRtcpPacket]:
        """This sender's report (SR) as it stands, remembered for round-trip times."""
        self._lsr = (self.ntp_timestamp >> 16) & 0xFFFFFFFF
        self._lsr_time = time.time()
        return [
            RtcpSrPacket(
                ssrc=self.ssrc,
                sender_info=RtcpSenderInfo(
                    ntp_timestamp=self.ntp_timestamp,
                    rtp_timestamp=self.rtp_timestamp,
                    packet_count=self.packet_count & 0xFFFFFFFF,
                    octet_count=self.octet_count & 0xFFFFFFFF,
                ),
            )
        ]

    def _receiver_report(self, report: Any) -> None:
        self.reports += 1
        self.fraction_lost = report.fraction_lost
        self.on_report(report.fraction_lost, report.jitter)
        if report.lsr and report.lsr == self._lsr and report.dlsr:
            rtt = time.time() - self._lsr_time - report.dlsr / 65536
            self._rtt = (
                rtt if self._rtt is None else RTT_SMOOTHING * self._rtt + (1 - RTT_SMOOTHING) * rtt
            )

    @property
    def rtt_s(self) -> float | None:
        """Round-trip time from the subscriber's receiver reports (LSR/DLSR, RFC 3550)."""
        return self._rtt

    @property
    def packets_sent(self) -> int:
        return self.packet_count

    async def _handle_rtcp(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.on_nack(list(packet.lost))
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.on_keyframe_request()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self.ssrc in ssrcs:
                self.remb_bps = bitrate
                self.on_remb(bitrate)
        elif isinstance(packet, RtcpRrPacket):
            for report in packet.reports:
                if report.ssrc == self.ssrc:
                    self._receiver_report(report)
        else:
            await self._original_rtcp(packet)


def _ignore(_: Any) -> None:
    return None


def _ignore0() -> None:
    return None


def _ignore2(_: Any, __: Any) -> None:
    return None


# --- transport-wide congestion control feedback to publishers (sfu.twcc) ------------------

FEEDBACK_INTERVAL_S = 0.1  # how often each publisher's transport gets its feedback
_FEEDBACK_DATAGRAM_BYTES: Final = 1200
# Publisher transports with an arrival log, and the feedback timer (with its event loop).
_feedback_transports: weakref.WeakSet[Any] = weakref.WeakSet()
_feedback_timer: list[tuple[asyncio.AbstractEventLoop, asyncio.TimerHandle]] = []


def accept_transport_cc(pc: Any, offer: SessionDescription) -> None:
    """Answer transport-wide congestion control where the publisher's offer has it (the
    header extension, and ``transport-cc`` feedback on its codecs): aiortc keeps neither.
    Call after every ``setRemoteDescription`` of an offer, before ``createAnswer``."""
    by_mid = {m.rtp.muxId: m for m in offer.media}
    for transceiver in pc.getTransceivers():
        media = by_mid.get(transceiver.mid)
        if media is None:
            continue
        offered = [x for x in media.rtp.headerExtensions if x.uri == twcc.EXTENSION_URI]
        if not offered:
            continue
        if all(x.uri != twcc.EXTENSION_URI for x in transceiver._headerExtensions):
            transceiver._headerExtensions.append(offered[0])
        wanted = RTCRtcpFeedback(type=twcc.FEEDBACK_TYPE)
        with_feedback = {c.payloadType for c in media.rtp.codecs if wanted in c.rtcpFeedback}
        for codec in transceiver._codecs:
            if codec.payloadType in with_feedback and wanted not in codec.rtcpFeedback:
                codec.rtcpFeedback.append(wanted)


def _feedback_for(dtls: Any, tap: InboundTap) -> None:
    """Give a publisher's transport its arrival log (the fast path records into it) and
    make sure the feedback timer runs on this event loop."""
    loop = asyncio.get_running_loop()
    if getattr(dtls, "_huddle_twcc", None) is None:
        dtls._huddle_twcc = twcc.ArrivalLog(sender_ssrc=random.getrandbits(32))
        dtls._huddle_twcc_tap = tap  # its receiver's streams name an SSRC the publisher sends
        dtls._huddle_twcc_loop = loop
        _feedback_transports.add(dtls)
    if not _feedback_timer or _feedback_timer[0][0] is not loop:
        _schedule_feedback(loop)


def _schedule_feedback(loop: asyncio.AbstractEventLoop) -> None:
    if _feedback_timer:
        _feedback_timer.pop()[1].cancel()
    _feedback_timer.append((loop, loop.call_later(FEEDBACK_INTERVAL_S, _send_feedback, loop)))


def _send_feedback(loop: asyncio.AbstractEventLoop) -> None:
    """Every publisher transport's feedback since the last round; the timer stops once no
    transport is left and restarts with the next tap."""
    _feedback_timer.clear()
    for dtls in list(_feedback_transports):
        if (
            dtls._state in (DtlsState.CLOSED, DtlsState.FAILED)
            or dtls._huddle_twcc_loop is not loop
        ):
            _feedback_transports.discard(dtls)
            continue
        try:
            _send_transport_feedback(dtls)
        except Exception:  # one transport's failure must not stop everyone's feedback
            log.exception("transport feedback failed: no more for this transport")
            _feedback_transports.discard(dtls)
    if _feedback_transports:
        _schedule_feedback(loop)


def _send_transport_feedback(dtls: Any) -> None:
    """One transport's feedback packets, in as few SRTCP datagrams as fit."""
    if dtls._state is not _DTLS_CONNECTED or dtls._tx_srtp is None:
        return
    arrivals: twcc.ArrivalLog = dtls._huddle_twcc
    streams = dtls._huddle_twcc_tap._streams
    if streams:
        arrivals.media_ssrc = next(iter(streams))
    packets = arrivals.feedback()
    pair = dtls._transport._connection._nominated.get(1)
    if not packets or pair is None:
        return
    datagrams = [b""]
    for packet in packets:
        if datagrams[-1] and len(datagrams[-1]) + len(packet) > _FEEDBACK_DATAGRAM_BYTES:
            datagrams.append(b"")
        datagrams[-1] += packet
    for datagram in datagrams:
        pair.protocol.transport.sendto(dtls._tx_srtp.protect_rtcp(datagram), pair.remote_addr)


# --- transport-wide congestion control feedback from subscribers (sfu.bwe) ----------------

FeedbackHandler = Callable[[bytes], None]


def take_transport_feedback(dtls: Any, handler: FeedbackHandler) -> None:
    """Hand every transport-feedback packet a subscriber sends on ``dtls`` to ``handler``
    (its bytes, header included) before aiortc sees its RTCP: aiortc's parser reads that
    format as a NACK and keeps none of it. The rest of each compound packet goes on to
    aiortc as before."""
    if getattr(dtls, "_huddle_feedback", None) is not None:
        dtls._huddle_feedback = handler
        return
    dtls._huddle_feedback = handler
    original = dtls._handle_rtcp_data

    async def handle_rtcp_data(data: bytes) -> None:
        rest = split_transport_feedback(data, dtls._huddle_feedback)
        if rest:
            await original(rest)

    dtls._handle_rtcp_data = handle_rtcp_data


def split_transport_feedback(data: bytes, handler: FeedbackHandler) -> bytes:
    """Give ``handler`` each transport-feedback packet of a compound RTCP packet; return the
    others, in order (a malformed length ends the walk: the rest goes on unread, as aiortc
    would refuse it)."""
    rest = bytearray()
    at = 0
    while at + 4 <= len(data):
        length = (struct.unpack_from("!H", data, at + 2)[0] + 1) * 4
        if at + length > len(data):
            break
        if data[at + 1] == twcc.RTPFB and data[at] & 0x1F == twcc.FMT_TRANSPORT_CC:
            try:
                handler(data[at : at + length])
            except Exception:  # one bad packet must not stop the subscriber's RTCP
                log.exception("transport feedback could not be read")
        else:
            rest += data[at : at + length]
        at += length
    rest += data[at:]
    return bytes(rest)
