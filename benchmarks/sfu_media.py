"""Media for the SFU load bots: a pre-encoded clip, paced tracks, and RTP accounting.

- ``ensure_fixture`` encodes a few seconds of a moving 640x360@30 pattern (VP8) and a
  modulated tone with noise (Opus) once, with PyAV, into ``benchmarks/fixtures/`` (not
  committed: it is rebuilt on a fresh checkout in a few seconds).
- ``PacedPacketTrack`` hands that clip's packets to an aiortc sender as ``av.Packet``s, paced
  in real time, looping with timestamps that keep increasing: nothing is encoded by the bots.
- ``Recorder`` (installed with ``install_recorder``) patches aiortc in the bot process:
  every RTP packet a publisher sends is logged with its send time, and every RTP packet a
  subscriber's transport receives is counted and logged where aiortc would hand it to a
  receiver: it is never depacketized, so no decoder ever runs in a bot. Publishers' audio
  packets carry an RFC 6464 level. Written for aiortc 1.16 (see ``sfu.aiortc_glue``).

Delay method: a packet is known by its RTP payload (CRC-32 and length). The forwarding SFUs
(Huddle, Janus) rewrite SSRC, sequence number and header extensions but pass the payload
through unchanged, and aiortc's VP8 payload descriptor carries a picture id that changes
every frame, so a payload is unique within the clip. A subscriber's receive time minus the
publisher's send time of the same payload (the latest send before the receive: the clip
loops every few seconds) is the one-way delay through the server. Send times are
``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process of the machine), read in
the publishing bot's aiortc stack before SRTP protection. Each reception has two times:
``recv_stamps``, the kernel's stamp of the datagram's arrival at the subscriber's socket
(``benchmarks.sfu_stamps``), so the delay is what the server adds plus the publisher's send
path; and ``recv_times``, read after SRTP unprotection in the subscriber's stack, which adds
however long the datagram waited for the subscribing bot's event loop.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import os
import time
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
import pylibsrtp
from aioice.ice import Connection, StunProtocol
from aiortc import MediaStreamTrack
from aiortc.codecs import is_rtx
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtcrtpsender import RTCEncodedFrame, RTCRtpSender
from aiortc.rtp import RtpPacket, is_rtcp

from benchmarks.sfu_stamps import LAST_STAMP, kernel_stamp

FIXTURES: Final = Path(__file__).parent / "fixtures"
WIDTH: Final = 640
HEIGHT: Final = 360
FPS: Final = 30
CLIP_S: Final = 4
KEYFRAME_EVERY: Final = 2 * FPS  # a new subscriber waits at most this long for a key frame
VIDEO_BITRATE: Final = 500_000
AUDIO_BITRATE: Final = 48_000
AUDIO_RATE: Final = 48_000
AUDIO_PTIME_S: Final = 0.02
FIXTURE_VERSION: Final = 1
# A bot this far behind its schedule drops the backlog instead of sending it in a burst.
MAX_LAG_S: Final = 0.25
# A receive is matched to a send at most this long before it.
MAX_DELAY_S: Final = 1.0
# The RFC 6464 level (dBov) bots' audio packets carry: someone talking. aiortc measures the
# level of frames it encodes only, and an SFU that picks the loudest speakers in large rooms
# would otherwise see every bot as silent.
AUDIO_LEVEL_DBOV: Final = -30


def fixture_path() -> Path:
    return FIXTURES / f"sfu-vp8-opus-{WIDTH}x{HEIGHT}-{FPS}fps-{CLIP_S}s-v{FIXTURE_VERSION}.webm"


def ensure_fixture() -> Path:
    """The clip, encoded on first use (a few seconds of CPU, a few hundred KB)."""
    path = fixture_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        _encode_fixture(partial)
        os.replace(partial, path)  # atomic: a concurrent run sees all of it or nothing
    finally:
        partial.unlink(missing_ok=True)
    return path


def _encode_fixture(path: Path) -> None:
    rng = np.random.default_rng(20240601)
    out = av.open(str(path), "w", format="webm")
    try:
        video: Any = out.add_stream("libvpx", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = VIDEO_BITRATE
        video.gop_size = KEYFRAME_EVERY
        # As a real-time sender encodes: no look-ahead frames, no alt-ref.
        video.options = {
            "deadline": "realtime",
            "cpu-used": "8",
            "lag-in-frames": "0",
            "auto-alt-ref": "0",
        }
        audio: Any = out.add_stream("libopus", rate=AUDIO_RATE)
        audio.layout = "stereo"
        audio.bit_rate = AUDIO_BITRATE

        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
        for i in range(CLIP_S * FPS):
            image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
            image[..., 0] = (xx + 4 * i) % 256
            image[..., 1] = (yy + 2 * i) % 256
            image[..., 2] = ((xx + yy) // 4 + 3 * i) % 256
            x0 = (i * 7) % (WIDTH - 80)
            image[100:180, x0 : x0 + 80] = 255
            image += rng.integers(0, 8, image.shape, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = fractions.Fraction(1, FPS)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)

        # A gliding tone with noise: every 20 ms Opus packet of the clip differs.
        n = CLIP_S * AUDIO_RATE
        t = np.arange(n) / AUDIO_RATE
        wave = 0.2 * np.sin(2 * np.pi * 440 * t * (1 + 0.1 * np.sin(3 * t)))
        wave += 0.05 * rng.standard_normal(n)
        samples = (wave * 32767).astype(np.int16)
        step = int(AUDIO_RATE * AUDIO_PTIME_S)
        for k in range(0, n, step):
            chunk = samples[k : k + step]
            stereo = np.ascontiguousarray(np.stack([chunk, chunk], 1).reshape(1, -1))
            aframe = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
            aframe.sample_rate = AUDIO_RATE
            aframe.pts = k
            aframe.time_base = fractions.Fraction(1, AUDIO_RATE)
            for packet in audio.encode(aframe):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    finally:
        out.close()


@dataclass(frozen=True)
class Clip:
    """The fixture's packets: one VP8 frame each (the first a key frame), one Opus packet each."""

    video: list[bytes]
    audio: list[bytes]

    @classmethod
    def load(cls, path: Path) -> Clip:
        video: list[bytes] = []
        audio: list[bytes] = []
        with av.open(str(path)) as container:
            for packet in container.demux():
                if packet.size == 0:
                    continue
                (video if packet.stream.type == "video" else audio).append(bytes(packet))
        if not video or not audio:
            raise RuntimeError(f"{path}: no video or no audio packets")
        return cls(video=video, audio=audio)

    def tracks(self) -> tuple[PacedPacketTrack, PacedPacketTrack]:
        return (
            PacedPacketTrack("video", self.video, 1 / FPS, 90_000),
            PacedPacketTrack("audio", self.audio, AUDIO_PTIME_S, AUDIO_RATE),
        )


class PacedPacketTrack(MediaStreamTrack):
    """Pre-encoded packets in real time, looping; aiortc's sender only packetizes them.

    aiortc's ``MediaPlayer(decode=False, loop=True)`` sends the clip at full speed when it
    rewinds; this track schedules packet ``i`` at ``start + i * interval`` instead, with
    ``pts = i * interval`` so that RTP timestamps keep increasing across loops."""

    def __init__(self, kind: str, packets: list[bytes], interval_s: float, clock_rate: int):
        super().__init__()
        self.kind = kind
        self._packets = packets
        self._interval = interval_s
        self._ticks = round(interval_s * clock_rate)
        self._time_base = fractions.Fraction(1, clock_rate)
        self._index = 0
        self._start: float | None = None
        self.max_late_s = 0.0  # how far behind its schedule this track has been
        self.resyncs = 0

    async def recv(self) -> av.Packet[Any]:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._index * self._interval
        if due > now:
            await asyncio.sleep(due - now)
        else:
            late = now - due
            self.max_late_s = max(self.max_late_s, late)
            if late > MAX_LAG_S:
                self._start += late  # a starved bot drops its backlog, as a live source would
                self.resyncs += 1
        packet = av.Packet(self._packets[self._index % len(self._packets)])
        packet.pts = self._index * self._ticks
        packet.time_base = self._time_base
        self._index += 1
        return packet


def payload_key(payload: bytes | memoryview) -> int:
    """What identifies a packet across the server: CRC-32 and length of its RTP payload."""
    return (zlib.crc32(payload) << 16) | (len(payload) & 0xFFFF)


def rtp_payload(data: bytes) -> memoryview:
    """The payload of a serialized (unprotected) RTP packet without padding."""
    view = memoryview(data)
    pos = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        pos += 4 + 4 * int.from_bytes(data[pos + 2 : pos + 4], "big")
    end = len(data)
    if data[0] & 0x20:
        end -= data[-1]
    return view[pos:end]


@dataclass
class StreamCount:
    """One received stream (a subscriber receiver and an SSRC)."""

    kind: str
    packets: int = 0
    # Extended sequence numbers, unwrapped across 16-bit wrap-arounds.
    last_seq: int = -1
    cycles: int = 0
    # Within the measuring window.
    window_packets: int = 0
    window_bytes: int = 0
    window_first: int = -1
    window_last: int = -1
    window_last_at: float = -math.inf  # when the window's latest packet arrived (monotonic)

    def extend(self, seq: int) -> int:
        if self.last_seq < 0:
            self.last_seq = seq
            return seq
        if ((seq - self.last_seq) & 0xFFFF) < 0x8000:  # forward (maybe wrapped)
            if seq < self.last_seq:
                self.cycles += 0x10000
            self.last_seq = seq
            return self.cycles + seq
        # a late (reordered) packet from before the last one
        return self.cycles + seq - (0x10000 if seq > self.last_seq else 0)

    @property
    def window_expected(self) -> int:
        if self.window_first < 0:
            return 0
        return self.window_last - self.window_first + 1


@dataclass
class Recorder:
    """Send and receive accounting of one bot process (see the module docstring)."""

    window_start: float = math.inf
    window_end: float = -math.inf
    sends_from: float = math.inf
    streams: dict[tuple[int, int], StreamCount] = field(default_factory=dict)
    send_keys: array[int] = field(default_factory=lambda: array("Q"))
    send_times: array[float] = field(default_factory=lambda: array("d"))
    recv_keys: array[int] = field(default_factory=lambda: array("Q"))
    recv_times: array[float] = field(default_factory=lambda: array("d"))
    recv_stamps: array[float] = field(default_factory=lambda: array("d"))  # kernel's
    unstamped: int = 0  # window receptions with no kernel stamp (recv_times stands in)
    unknown_payload_type: int = 0
    unrouted: int = 0  # received, but aiortc found no receiver for them
    rtx: int = 0

    def arm(self, start: float, end: float) -> None:
        """Count receptions in [start, end); log sends from a delay's reach before start."""
        self.streams_reset_window()
        self.send_keys, self.send_times = array("Q"), array("d")
        self.recv_keys, self.recv_times = array("Q"), array("d")
        self.recv_stamps = array("d")
        self.unstamped = 0
        self.sends_from = start - MAX_DELAY_S
        self.window_start, self.window_end = start, end

    def streams_reset_window(self) -> None:
        for stream in self.streams.values():
            stream.window_packets = stream.window_bytes = 0
            stream.window_first = stream.window_last = -1
            stream.window_last_at = -math.inf

    def sent(self, data: bytes, now: float) -> None:
        if self.sends_from <= now < self.window_end:
            self.send_keys.append(payload_key(rtp_payload(data)))
            self.send_times.append(now)

    def received(
        self, receiver: int, kind: str, packet: RtpPacket, now: float, stamp: float | None
    ) -> None:
        key = (receiver, packet.ssrc)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = StreamCount(kind)
        stream.packets += 1
        ext = stream.extend(packet.sequence_number)
        if self.window_start <= now < self.window_end:
            stream.window_packets += 1
            stream.window_bytes += len(packet.payload)
            if stream.window_first < 0 or ext < stream.window_first:
                stream.window_first = ext
            stream.window_last = max(stream.window_last, ext)
            stream.window_last_at = max(stream.window_last_at, now)
            self.recv_keys.append(payload_key(packet.payload))
            self.recv_times.append(now)
            if stamp is None:
                self.unstamped += 1
                stamp = now
            self.recv_stamps.append(stamp)

    def flowing(self) -> int:
        return sum(1 for s in self.streams.values() if s.packets > 0)


RECORDER: Final = Recorder()


def _kind(receiver: Any) -> str:
    return str(receiver._RTCRtpReceiver__kind)


async def _counting_handle_rtp_data(
    self: RTCDtlsTransport, data: bytes, arrival_time_ms: int
) -> None:
    """Replaces ``RTCDtlsTransport._handle_rtp_data`` in bot processes: count, never decode
    (``count_rtp``)."""
    count_rtp(self, data, kernel_stamp(self))


def count_rtp(dtls: RTCDtlsTransport, data: bytes, stamp: float | None) -> None:
    """Count one unprotected RTP packet a subscriber's transport received.

    Every RTP packet the subscriber's transport receives is counted by SSRC, whether or not
    aiortc can route it to a receiver (a client-side routing fault would otherwise read as
    loss in the server); it goes no further than the receiver's statistics, so that RTCP
    receiver reports stay true, and never into a jitter buffer or a decoder. No NACK is sent:
    the loss counted is what the server delivered, unrepaired."""
    now = time.monotonic()
    try:
        packet = RtpPacket.parse(data, dtls._rtp_header_extensions_map)
    except ValueError:
        return
    router = dtls._rtp_router
    receiver = router.route_rtp(packet)
    if receiver is None:
        RECORDER.unrouted += 1
        candidates = router.payload_type_table.get(packet.payload_type)
        kind = _kind(next(iter(candidates))) if candidates else "unknown"
    else:
        codecs = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        codec = codecs.get(packet.payload_type)
        if codec is None:
            RECORDER.unknown_payload_type += 1
            return
        streams = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        if is_rtx(codec):
            RECORDER.rtx += 1
            return
        kind = _kind(receiver)
    RECORDER.received(id(dtls), kind, packet, now, stamp)


_original_stun_datagram_received: Final = StunProtocol.datagram_received
_original_set_state: Final = RTCDtlsTransport._set_state


def _bot_datagram_received(self: StunProtocol, data: bytes, addr: tuple[Any, ...]) -> None:
    """A bot's datagrams: RTP on a connected transport is unprotected and counted right here
    (no queue, task switch or coroutines: the bots share one core and must not be the
    bottleneck); everything else goes the usual way, RTP/RTCP without a STUN parse attempt."""
    if not data or data[0] < 128:
        _original_stun_datagram_received(self, data, addr)
        return
    connection = self.receiver
    dtls = connection._bot_dtls  # type: ignore[attr-defined]
    if dtls is None or connection._queue.qsize() or is_rtcp(data) or dtls._rx_srtp is None:
        connection.data_received(data, self.local_candidate.component)
        return
    try:
        plain = dtls._rx_srtp.unprotect(data)
    except pylibsrtp.Error:
        return
    count_rtp(dtls, plain, LAST_STAMP.value)


def _set_state_marking(self: RTCDtlsTransport, state: Any) -> None:
    _original_set_state(self, state)
    if state == DtlsState.CONNECTED:
        self._transport._connection._bot_dtls = self  # type: ignore[attr-defined]


_original_send_rtp: Final = RTCDtlsTransport._send_rtp


async def _recording_send_rtp(self: RTCDtlsTransport, data: bytes) -> None:
    if not is_rtcp(data):
        RECORDER.sent(data, time.monotonic())
    await _original_send_rtp(self, data)


_original_next_encoded_frame: Final = RTCRtpSender._next_encoded_frame


async def _next_encoded_frame_with_level(
    self: RTCRtpSender, codec: RTCRtpCodecParameters
) -> RTCEncodedFrame | None:
    frame = await _original_next_encoded_frame(self, codec)
    if frame is not None and frame.audio_level is None and self.kind == "audio":
        frame.audio_level = AUDIO_LEVEL_DBOV
    return frame


def install_recorder() -> Recorder:
    """Patch this process's aiortc: subscribers count without decoding, publishers log sends
    and label their pre-encoded audio with a speaking level."""
    RTCDtlsTransport._handle_rtp_data = _counting_handle_rtp_data  # type: ignore[method-assign]
    Connection._bot_dtls = None  # type: ignore[attr-defined]
    StunProtocol.datagram_received = _bot_datagram_received  # type: ignore[method-assign,assignment]
    RTCDtlsTransport._set_state = _set_state_marking  # type: ignore[method-assign]
    RTCDtlsTransport._send_rtp = _recording_send_rtp  # type: ignore[method-assign]
    RTCRtpSender._next_encoded_frame = _next_encoded_frame_with_level  # type: ignore[method-assign]
    return RECORDER


def match_delays(
    sends: list[tuple[array[int], array[float]]], recvs: list[tuple[array[int], array[float]]]
) -> tuple[list[tuple[float, float]], int]:
    """(receive time, one-way delay) of received packets matched to their sends, in seconds;
    and how many receptions stayed unmatched."""
    sent: dict[int, list[float]] = {}
    for keys, times in sends:
        for key, t in zip(keys, times, strict=True):
            sent.setdefault(key, []).append(t)
    for times_of_key in sent.values():
        times_of_key.sort()
    delays: list[tuple[float, float]] = []
    unmatched = 0
    for keys, times in recvs:
        for key, t in zip(keys, times, strict=True):
            candidates = sent.get(key)
            best = None
            if candidates:
                for s in reversed(candidates):
                    if s <= t:
                        best = s
                        break
            if best is None or t - best > MAX_DELAY_S:
                unmatched += 1
            else:
                delays.append((t, t - best))
    return delays, unmatched
