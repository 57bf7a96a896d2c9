"""Rooms, participants and their two peer connections (publisher and subscriber).

A participant's publisher connection is offered by the client and answered here; every
track it publishes is tapped at the RTP level and handed to a ``TrackForwarder``. Its
subscriber connection is offered from here whenever the set of tracks it should receive
changes, and answered by the client; each forwarded track is an idle sender on it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as sdp_parser
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from sfu import layers as simulcast
from sfu import selection, twcc
from sfu.aiortc_glue import (
    IdleTrack,
    InboundTap,
    OutboundPort,
    RtpPacket,
    accept_transport_cc,
    negotiated_codec,
    send_reports,
    take_transport_feedback,
)
from sfu.bwe import PROBE_MIN_PACKETS, LossWindow, SendSideEstimator
from sfu.downlink import TIER, Allocation, Allocator, DownlinkEstimate, Stream
from sfu.forwarder import TrackForwarder
from sfu.layer_declarations import Declared, InvalidLayers, Section, check_layers
from sfu.layers import Layer
from sfu.retransmit import RepairBudget
from sfu.sdp import announce, answered_transport_cc, keep_codecs, offer_transport_cc
from sfu.speakers import SpeakerDetector

log = logging.getLogger("huddle.sfu.room")

# Forwarding never transcodes: publishers and subscribers must agree on these.
VIDEO_CODEC: Final = "video/VP8"
AUDIO_CODEC: Final = "audio/opus"
MAX_SDP_BYTES: Final = 64 * 1024


class SfuError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _codecs_for(
    kind: str, capabilities: list[RTCRtpCodecCapability]
) -> list[RTCRtpCodecCapability]:
    wanted = VIDEO_CODEC if kind == "video" else AUDIO_CODEC
    chosen = [c for c in capabilities if c.mimeType.lower() == wanted.lower()]
    if kind == "video":
        chosen += [c for c in capabilities if c.mimeType.lower() == "video/rtx"]
    return chosen


def _check_sdp(sdp: str, expected: str) -> sdp_parser.SessionDescription:
    """Refuse what aiortc's parser would choke on before any connection state changes."""
    if len(sdp) > MAX_SDP_BYTES:
        raise SfuError("bad_sdp", f"SDP larger than {MAX_SDP_BYTES} bytes")
    if not sdp.startswith("v=0"):
        raise SfuError("bad_sdp", f"not an SDP {expected}")
    try:
        parsed = sdp_parser.SessionDescription.parse(sdp)
    except Exception as exc:  # the parser asserts and indexes freely on hostile input
        raise SfuError("bad_sdp", f"unparsable SDP {expected}: {type(exc).__name__}") from None
    if not parsed.media:
        raise SfuError("bad_sdp", f"SDP {expected} has no media section")
    for media in parsed.media:
        if media.kind not in ("audio", "video"):
            raise SfuError("bad_sdp", f"unsupported media section {media.kind!r}")
    return parsed


def _sending(media: sdp_parser.MediaDescription) -> bool:
    return media.port != 0 and media.direction in ("sendonly", "sendrecv", None)


def _declared(track: PublishedTrack) -> Declared | None:
    """How ``track`` was declared when it was published (None: a plain track)."""
    if track.group is None:
        return None
    return (track.group.split(":", 1)[1], track.quality, track.height)


def _check_publish_offer(parsed: sdp_parser.SessionDescription, max_tracks: int) -> None:
    """Every offered track must carry the codec forwarding uses, within the track limit
    (sections the client stopped sending on do not count)."""
    if sum(_sending(m) for m in parsed.media) > max_tracks:
        raise SfuError("too_many_tracks", f"at most {max_tracks} published tracks")
    for media in parsed.media:
        if not _sending(media):
            continue
        wanted = VIDEO_CODEC if media.kind == "video" else AUDIO_CODEC
        if not any(c.mimeType.lower() == wanted.lower() for c in media.rtp.codecs):
            raise SfuError(
                "unsupported_codec", f"{media.kind} must be offered with {wanted.split('/')[1]}"
            )


@dataclass(eq=False)
class PublishedTrack:
    """One track a participant publishes."""

    key: str
    owner: Participant
    kind: str
    source: str
    tap: InboundTap
    forwarder: TrackForwarder
    media_ssrc: int | None = None
    started: float = field(default_factory=time.monotonic)
    # Simulcast: the layers of one source share a group; quality 0 is the smallest.
    group: str | None = None
    quality: int = 0
    height: int = 0
    mid: str = ""
    bitrate_bps: float = 0.0  # what forwarding it costs a subscriber, headers included
    _bytes_seen: int = 0
    _packets_seen: int = 0

    def as_layer(self) -> Layer:
        return Layer(self.quality, self.height, self.bitrate_bps)


@dataclass(eq=False)
class Subscription:
    track: PublishedTrack  # for a simulcast source: the layer being forwarded now
    transceiver: RTCRtpTransceiver
    port: OutboundPort
    started: float = field(default_factory=time.monotonic)
    layers: list[PublishedTrack] = field(default_factory=list)  # simulcast: by quality
    pending: PublishedTrack | None = None  # the layer switched to, until its key frame
    max_height: int | None = None  # the size the subscriber renders (sfu.track_settings)
    selected: bool = True  # False: stream selection in a large room leaves it out
    downlink_paused: bool = False  # the subscriber's downlink has no room for it now


NotifyOffer = Callable[["Participant", str, list[dict[str, str]]], None]
NotifySpeakers = Callable[["Room", list[tuple[str, int]]], None]
NotifyLayers = Callable[["Participant", list[str]], None]
# A subscriber's received tracks not sent now: (its downlink has no room for them, video
# stream selection leaves out), each sorted.
NotifyPaused = Callable[["Participant", list[str], list[str]], None]
SPEAKER_TICK_S: Final = 0.25
# Subscribers' sender reports (RTCP SR), one compound packet per connection: once a second,
# as aiortc's own senders do on average.
REPORT_INTERVAL_S: Final = 1.0


@dataclass(frozen=True)
class RoomPolicy:
    """What a room forwards. Above ``select_above`` participants each subscriber gets only
    the ``audio_max`` loudest audio streams and the video of the last ``video_last_n``
    speakers."""

    capacity: int = 50
    max_tracks: int = 8  # tracks one participant may publish (camera, mic, screen, layers)
    select_above: int = 12
    audio_max: int = 3
    video_last_n: int = 9
    # Offer subscribers transport-wide congestion control: browsers then report arrivals
    # and the SFU estimates (and probes) their downlink itself (sfu.bwe); off, they send
    # REMB as before.
    transport_cc: bool = True


def _no_speakers(room: Room, speakers: list[tuple[str, int]]) -> None:
    return None


def _no_layers(participant: Participant, paused: list[str]) -> None:
    return None


def _no_paused(participant: Participant, paused: list[str], unselected: list[str]) -> None:
    return None


# A probe's padding is sent on a timer of this period (what fell due since the last).
PROBE_PACE_S: Final = 0.005
# What a subscriber was sent is measured over at least this long (for its downlink).
SENT_WINDOW_S: Final = 1.0
# Loss from transport-wide feedback is read over at least SENT_WINDOW_S and this many packets.
LOSS_MIN_PACKETS: Final = 20
# What a forwarded packet carries beside its payload (RTP header and extensions, SRTP tag):
# a 100-byte audio packet costs a third more than its payload.
PACKET_OVERHEAD_BYTES: Final = 32


@dataclass(eq=False)
class Participant:
    id: str
    identity: str
    name: str
    room: Room
    can_publish: bool = True
    can_subscribe: bool = True
    publisher: RTCPeerConnection | None = None
    subscriber: RTCPeerConnection | None = None
    published: dict[str, PublishedTrack] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    pinned: set[str] = field(default_factory=set)  # participants whose video always comes
    paused_layers: list[str] = field(default_factory=list)  # mids last told to pause
    negotiating: bool = False
    renegotiate: bool = False
    # Subscriptions were removed: the next subscriber offer marks their sections inactive.
    stale: bool = False
    # Its connections ended under the room: nothing is offered until it restarts its media.
    media_lost: bool = False
    closed: bool = False
    # Retransmissions to this participant, whichever track they repair (sfu.retransmit).
    repair: RepairBudget = field(init=False)
    # Its downlink (sfu.downlink): the estimate, and what of the room is sent within it.
    downlink: DownlinkEstimate = field(default_factory=DownlinkEstimate)
    allocator: Allocator = field(default_factory=Allocator)
    downlink_paused: list[str] = field(default_factory=list)  # track ids, as last told
    # Video track ids stream selection leaves out (sfu.paused unselected), as last told.
    unselected: list[str] = field(default_factory=list)
    sent_bps: float = 0.0  # media and retransmissions sent to it lately
    media_bps: float = 0.0  # the media alone
    _sent_mark: tuple[float, int, int] | None = None
    # By sender SSRC: the receiver reports read so far, and its bytes_sent at the last one.
    _reports_seen: dict[int, tuple[int, int]] = field(default_factory=dict)
    # Transport-wide feedback's losses since the last reading.
    _fed_loss: LossWindow = field(
        default_factory=lambda: LossWindow(SENT_WINDOW_S, LOSS_MIN_PACKETS)
    )
    # The SFU's own estimate of its downlink, where its answer took transport-wide
    # congestion control (sfu.bwe); feedback packets that could not be read.
    bwe: SendSideEstimator | None = None
    bad_feedback: int = 0

    def __post_init__(self) -> None:
        self.repair = RepairBudget(self._media_bytes)

    def _media_bytes(self) -> int:
        return sum(sub.port.bytes_sent for sub in self.subscriptions.values())

    def on_remb(self, bps: int) -> None:
        now = time.monotonic()
        self.downlink.on_remb(bps, now)
        self.repair.on_estimate(int(self.downlink.delay_value(now)))

    def on_transport_feedback(self, data: bytes) -> None:
        bwe = self.bwe
        if bwe is None:
            return
        try:
            feedback = twcc.decode_feedback(data)
        except ValueError:
            self.bad_feedback += 1
            return
        bwe.on_feedback(feedback, time.monotonic())
        if bwe.estimate_bps is not None:
            # Taken as a REMB would be: a fresh estimate with every feedback.
            self.on_remb(bwe.estimate_bps)

    def use_transport_cc(self, accepted: dict[str, int]) -> None:
        """Its subscriber answer took transport-wide congestion control for the sections
        ``accepted`` (mid -> extension id): those senders number their packets for the
        SFU's own estimate."""
        if not accepted:
            return
        if self.bwe is None:
            self.bwe = SendSideEstimator(self.downlink.policy.start_bps, secrets.randbits(16))
            self.downlink.padding = True
        for sub in self.subscriptions.values():
            ext = accepted.get(sub.transceiver.mid or "")
            port = sub.port
            if ext is None or port.bwe is not None:
                continue
            port.bwe, port.transport_seq_id = self.bwe, ext
            port.ready = False  # its header layout is read again, with the extension
            take_transport_feedback(sub.transceiver.sender.transport, self.on_transport_feedback)

    def measure_downlink(self, now: float) -> None:
        """What it was sent lately, and its downlink's loss: from its transport-wide feedback
        where it sends that, else from its latest receiver reports."""
        media = sum(s.port.bytes_sent for s in self.subscriptions.values())
        sent = media + sum(s.port.retransmitted_bytes for s in self.subscriptions.values())
        if self._sent_mark is None:
            self._sent_mark = (now, sent, media)
        elif now - self._sent_mark[0] >= SENT_WINDOW_S:
            since, before, media_before = self._sent_mark
            self.sent_bps = max(0, sent - before) * 8 / (now - since)
            self.media_bps = max(0, media - media_before) * 8 / (now - since)
            self._sent_mark = (now, sent, media)
        if self.bwe is not None:
            self._feedback_loss(self.bwe, now)
            return
        lost = weight = 0.0
        for sub in self.subscriptions.values():
            port = sub.port
            reports, sent_then = self._reports_seen.get(port.ssrc, (0, 0))
            if port.reports != reports:
                self._reports_seen[port.ssrc] = (port.reports, port.bytes_sent)
                # Weighed by what the sender sent since its previous report: a report on a
                # sender that was paused, or had just resumed, says little (one on a video
                # just resumed read 81 % lost and paused it again on a free link).
                share = float(port.bytes_sent - sent_then)
                if share <= 0:
                    continue
                lost += port.fraction_lost / 256 * share
                weight += share
        if weight:
            # Loss cuts what the media takes (retransmissions come on top of it).
            self.downlink.on_loss(lost / weight, self.media_bps, now)

    def _feedback_loss(self, bwe: SendSideEstimator, now: float) -> None:
        """The downlink's loss from its transport-wide feedback, once a second or so: the
        loss of this link alone. Receiver reports count the publisher's losses too (its
        uplink's, repaired or not), which no layer sent here can mend: measured, 5 % lost
        each way read as 10 % here and held video at its lowest layer."""
        fraction = self._fed_loss.add(*bwe.take_loss(), now)
        if fraction is not None:
            self.downlink.on_loss(fraction, self.media_bps, now)

    def info(self) -> dict[str, str]:
        return {"participant": self.id, "identity": self.identity, "name": self.name}


class Room:
    def __init__(
        self,
        name: str,
        *,
        rtc_config: RTCConfiguration,
        on_offer: NotifyOffer,
        policy: RoomPolicy | None = None,
        on_speakers: NotifySpeakers = _no_speakers,
        announced: dict[str, str] | None = None,
        on_layers: NotifyLayers = _no_layers,
        on_paused: NotifyPaused = _no_paused,
    ) -> None:
        self._announced = announced or {}
        self._on_layers = on_layers
        self._on_paused = on_paused
        self._last_tick = time.monotonic()
        self._next_reports = self._last_tick + REPORT_INTERVAL_S
        self.name = name
        self.policy = policy or RoomPolicy()
        self.capacity = self.policy.capacity
        self.participants: dict[str, Participant] = {}
        self.speakers = SpeakerDetector()
        self._recent_speakers: list[str] = []  # participant ids, most recent first
        self._rtc_config = rtc_config
        self._on_offer = on_offer
        self._on_speakers = on_speakers
        self._background: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    # --- membership ---------------------------------------------------------------------

    def join(
        self, identity: str, name: str, *, can_publish: bool, can_subscribe: bool
    ) -> Participant:
        if len(self.participants) >= self.capacity:
            raise SfuError("room_full", f"room {self.name!r} is full ({self.capacity})")
        p = Participant(
            id=f"p-{secrets.token_hex(5)}",
            identity=identity,
            name=name,
            room=self,
            can_publish=can_publish,
            can_subscribe=can_subscribe,
        )
        self.participants[p.id] = p
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever())
        if can_subscribe:
            self._spawn(self._sync_subscriptions(p))
        return p

    async def leave(self, participant: Participant) -> None:
        if participant.closed:
            return
        participant.closed = True
        self.participants.pop(participant.id, None)
        for track in participant.published.values():
            self.speakers.forget(track.key)
        if participant.id in self._recent_speakers:
            self._recent_speakers.remove(participant.id)
        self._unsubscribe_all_from(participant)
        for pc in (participant.publisher, participant.subscriber):
            if pc is not None:
                await pc.close()

    def _unsubscribe_all_from(self, publisher: Participant, keys: set[str] | None = None) -> None:
        """Stop forwarding ``publisher``'s tracks (or those of ``keys``) to everyone, and
        renegotiate their subscriber connections with those sections inactive."""

        def gone(sub: Subscription) -> bool:
            if sub.track.owner is not publisher:
                return False
            tracks = [sub.track, *sub.layers]
            return keys is None or any(t.key in keys for t in tracks)

        for other in self.participants.values():
            doomed = [k for k, sub in other.subscriptions.items() if gone(sub)]
            for key in doomed:
                sub = other.subscriptions.pop(key)
                _stop_feeding(sub)
                sub.transceiver.direction = "inactive"
            if doomed and not other.closed:
                other.stale = True
                self._spawn(self._sync_subscriptions(other))

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for participant in list(self.participants.values()):
            await self.leave(participant)
        for task in list(self._background):
            task.cancel()

    @property
    def empty(self) -> bool:
        return not self.participants

    # --- publishing ---------------------------------------------------------------------

    async def publish(
        self,
        participant: Participant,
        offer_sdp: str,
        sources: dict[str, str],
        layers: dict[str, tuple[str, int, int]] | None = None,
    ) -> str:
        """Answer a publisher offer; every new track becomes forwardable. ``layers`` maps a
        mid to (source group, quality, height) for simulcast layers sent as tracks."""
        if not participant.can_publish:
            raise SfuError("forbidden", "this token may not publish")
        parsed = _check_sdp(offer_sdp, "offer")
        _check_publish_offer(parsed, self.policy.max_tracks)
        try:
            declared = check_layers(
                layers or {},
                {m.rtp.muxId: Section(m.kind, _sending(m)) for m in parsed.media},
                {t.mid: _declared(t) for t in participant.published.values()},
            )
        except InvalidLayers as exc:
            raise SfuError(exc.code, str(exc)) from None
        idle_mids = {m.rtp.muxId for m in parsed.media if not _sending(m)}
        stopped = {f"{participant.id}:{mid}" for mid in idle_mids} & set(participant.published)
        offer_sdp = keep_codecs(offer_sdp, {"video": "VP8", "audio": "opus"})
        pc = participant.publisher
        if pc is None:
            pc = participant.publisher = RTCPeerConnection(self._rtc_config)
            self._watch(participant, pc)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc raises many kinds on a bad offer
            raise SfuError("bad_sdp", f"offer refused: {exc}") from None
        accept_transport_cc(pc, parsed)  # the publisher's own uplink estimate needs it
        new_tracks: list[PublishedTrack] = []
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid or ""
            key = f"{participant.id}:{mid}"
            if key in participant.published or transceiver.receiver is None:
                continue
            if mid in idle_mids:
                continue  # offered already stopped: nothing to forward
            kind = transceiver.kind
            capabilities = RTCRtpReceiver.getCapabilities(kind)
            codecs = _codecs_for(kind, capabilities.codecs if capabilities else [])
            transceiver.setCodecPreferences(codecs)
            transceiver.direction = "recvonly"
            track = self._tap(
                participant,
                key,
                kind,
                sources.get(mid, _default_source(kind)),
                transceiver.receiver,
            )
            track.mid = mid
            if mid in declared:
                group, track.quality, track.height = declared[mid]
                track.group = f"{participant.id}:{group}"
            participant.published[key] = track
            new_tracks.append(track)
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:
            await self._drop_publisher(participant)
            raise SfuError("unsupported_codec", f"cannot answer: {exc}") from None
        for track in new_tracks:
            codec = negotiated_codec(track.tap.receiver, pc)
            wanted = VIDEO_CODEC if track.kind == "video" else AUDIO_CODEC
            if codec is None or codec.lower() != wanted.lower():
                # The offer listed our codec but preferred another: forwarding it to
                # subscribers negotiated for ours would break their decoders.
                await self._drop_publisher(participant)
                raise SfuError(
                    "unsupported_codec", f"{track.kind} negotiated {codec}, not {wanted}"
                )
        if stopped:
            self._unpublish(participant, stopped)
        for other in self.participants.values():
            if other is not participant and other.can_subscribe:
                self._spawn(self._sync_subscriptions(other))
        return announce(pc.localDescription.sdp, self._announced)

    async def restart_media(self, participant: Participant) -> None:
        """Drop both peer connections of ``participant`` but keep it in the room: others stop
        getting its tracks until it publishes again, and it is offered theirs anew."""
        await self._drop_media(participant)
        participant.media_lost = False
        if participant.can_subscribe and not participant.closed:
            self._spawn(self._sync_subscriptions(participant))

    async def _drop_media(self, participant: Participant) -> None:
        if participant.published:
            self._unpublish(participant, set(participant.published))
        for sub in participant.subscriptions.values():
            _stop_feeding(sub)
        participant.subscriptions.clear()
        participant.paused_layers = []
        # What it was told is not sent goes with its subscriptions: a restarted client
        # starts with nothing paused, and is told anew.
        participant.downlink_paused = []
        participant.unselected = []
        participant.negotiating = participant.renegotiate = participant.stale = False
        pcs = (participant.publisher, participant.subscriber)
        participant.publisher = participant.subscriber = None
        for pc in pcs:
            if pc is not None:
                await pc.close()

    def _watch(self, participant: Participant, pc: RTCPeerConnection) -> None:
        """A connection of the participant's that fails or closes by itself (the device
        dropped it, or ICE consent expired) takes its media with it: the others stop getting
        its tracks, and nothing is offered to it until it restarts its media (sfu.restart)."""

        @pc.on("connectionstatechange")
        def changed() -> None:
            if pc.connectionState not in ("failed", "closed") or participant.closed:
                return
            if pc is not participant.publisher and pc is not participant.subscriber:
                return  # replaced or closed by the room itself
            log.info(
                "media connection lost",
                extra={
                    "room": self.name,
                    "participant": participant.id,
                    "state": pc.connectionState,
                },
            )
            participant.media_lost = True
            self._spawn(self._drop_media(participant))

    def _unpublish(self, participant: Participant, keys: set[str]) -> None:
        """The publisher stopped sending these tracks (a re-offer marked them inactive)."""
        for key in keys:
            track = participant.published.pop(key)
            self.speakers.forget(track.key)
        self._unsubscribe_all_from(participant, keys)

    async def _drop_publisher(self, participant: Participant) -> None:
        """Forget a publisher connection whose negotiation failed half way, and its tracks."""
        self._unsubscribe_all_from(participant)
        participant.published.clear()
        pc, participant.publisher = participant.publisher, None
        if pc is not None:
            await pc.close()

    def _tap(
        self, participant: Participant, key: str, kind: str, source: str, receiver: RTCRtpReceiver
    ) -> PublishedTrack:
        def request_keyframe() -> None:
            if track.media_ssrc is not None:
                self._spawn(track.tap.request_keyframe(track.media_ssrc))

        def on_packet(packet: RtpPacket, _codec: object) -> None:
            track.media_ssrc = packet.ssrc
            level = packet.extensions.audio_level
            if level is not None:
                self.speakers.observe(key, level[1], time.monotonic())
            forwarder.on_packet(packet)

        forwarder = TrackForwarder.create(kind, request_keyframe)
        tap = InboundTap(receiver, on_packet)
        track = PublishedTrack(
            key=key, owner=participant, kind=kind, source=source, tap=tap, forwarder=forwarder
        )
        return track

    async def add_candidate(
        self,
        participant: Participant,
        which: str,
        candidate: str | None,
        sdp_mid: str | None,
        sdp_mline_index: int | None,
    ) -> None:
        """Trickle ICE from the client: one remote candidate, or None for the last one."""
        pc = participant.publisher if which == "publisher" else participant.subscriber
        if pc is None or pc.remoteDescription is None:
            raise SfuError("no_offer", f"no {which} connection negotiated yet")
        if candidate is None:
            await pc.addIceCandidate(None)
            return
        text = candidate[len("candidate:") :] if candidate.startswith("candidate:") else candidate
        try:
            parsed = sdp_parser.candidate_from_sdp(text)
        except Exception:  # the parser indexes and converts freely
            raise SfuError("bad_candidate", "unparsable ICE candidate") from None
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index if sdp_mid is None else None
        if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
            parsed.sdpMLineIndex = 0
        try:
            await pc.addIceCandidate(parsed)
        except ValueError as exc:
            raise SfuError("bad_candidate", str(exc)) from None

    def set_paused(self, participant: Participant, kind: str, paused: bool) -> None:
        for track in participant.published.values():
            if track.kind == kind:
                track.forwarder.set_paused(paused)

    # --- subscribing --------------------------------------------------------------------

    async def _sync_subscriptions(self, participant: Participant) -> None:
        """Offer the participant every track it does not receive yet (one offer at a time)."""
        if participant.negotiating:
            participant.renegotiate = True
            return
        if participant.closed or participant.media_lost:
            return
        wanted = [
            unit for unit in self._units(participant) if unit[0] not in participant.subscriptions
        ]
        if not wanted and not participant.stale:
            return
        participant.stale = False
        pc = participant.subscriber
        if pc is None:
            pc = participant.subscriber = RTCPeerConnection(self._rtc_config)
            self._watch(participant, pc)
        for key, tracks in wanted:
            kind = tracks[0].kind
            transceiver = pc.addTransceiver(IdleTrack(kind), direction="sendonly")
            capabilities = RTCRtpSender.getCapabilities(kind)
            transceiver.setCodecPreferences(_codecs_for(kind, capabilities.codecs))
            port = OutboundPort(transceiver)
            port.repair = participant.repair
            port.on_remb = participant.on_remb
            participant.subscriptions[key] = Subscription(
                tracks[-1], transceiver, port, layers=tracks if len(tracks) > 1 else []
            )
        participant.negotiating = True
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        infos = [
            {
                "mid": sub.transceiver.mid or "",
                "track": key,
                "kind": sub.track.kind,
                "source": sub.track.source,
                "participant": sub.track.owner.id,
                "identity": sub.track.owner.identity,
            }
            for key, sub in participant.subscriptions.items()
        ]
        sdp = announce(pc.localDescription.sdp, self._announced)
        if self.policy.transport_cc:
            sdp = offer_transport_cc(sdp, twcc.EXTENSION_URI, twcc.FEEDBACK_TYPE)
        self._on_offer(participant, sdp, infos)

    def _units(self, participant: Participant) -> list[tuple[str, list[PublishedTrack]]]:
        """What the participant should receive: each plain track, and each simulcast source
        once (its layers, smallest first)."""
        units: list[tuple[str, list[PublishedTrack]]] = []
        groups: dict[str, list[PublishedTrack]] = {}
        for other in self.participants.values():
            if other is participant:
                continue
            for track in other.published.values():
                if track.group is None:
                    units.append((track.key, [track]))
                else:
                    groups.setdefault(track.group, []).append(track)
        for group, layers in groups.items():
            units.append((group, sorted(layers, key=lambda t: t.quality)))
        return units

    async def subscriber_answer(self, participant: Participant, answer_sdp: str) -> None:
        pc = participant.subscriber
        if pc is None or not participant.negotiating:
            raise SfuError("no_offer", "no subscriber offer is waiting for an answer")
        _check_sdp(answer_sdp, "answer")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        except Exception as exc:
            raise SfuError("bad_sdp", f"answer refused: {exc}") from None
        participant.negotiating = False
        if self.policy.transport_cc:
            participant.use_transport_cc(
                answered_transport_cc(answer_sdp, twcc.EXTENSION_URI, twcc.FEEDBACK_TYPE)
            )
        now = time.monotonic()
        for sub in participant.subscriptions.values():
            if sub.port.ssrc not in sub.track.forwarder.outputs and sub.port.negotiated():
                if sub.layers:
                    sub.track = self._first_layer(participant, sub, now)
                sub.track.forwarder.add(sub.port)
        if participant.renegotiate:
            participant.renegotiate = False
            self._spawn(self._sync_subscriptions(participant))

    # --- speakers and stream selection ------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(SPEAKER_TICK_S)
            self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        ranking = self.speakers.changed(now)
        if ranking is not None:
            owners: dict[str, int] = {}
            for key in ranking:
                owner = key.split(":", 1)[0]
                if owner in self.participants and owner not in owners:
                    owners[owner] = round(self.speakers.loudness(key, now))
            self._recent_speakers = selection.last_speakers(self._recent_speakers, list(owners))
            self._on_speakers(self, list(owners.items()))
        self._select(now)
        self._select_layers(now)
        if now >= self._next_reports:
            self._next_reports = now + REPORT_INTERVAL_S
            send_reports(
                (sub.port for p in self.participants.values() for sub in p.subscriptions.values()),
                now,
            )

    # --- simulcast ----------------------------------------------------------------------

    def set_max_height(self, participant: Participant, track: str, height: int | None) -> None:
        sub = participant.subscriptions.get(track)
        if sub is None:
            raise SfuError("unknown_track", "no such track on this subscriber connection")
        sub.max_height = height

    def _first_layer(
        self, participant: Participant, sub: Subscription, now: float
    ) -> PublishedTrack:
        """The layer a new subscription starts on: the largest that fits the subscriber's
        estimate alone (its allocation takes over at the next tick)."""
        layers = simulcast.allowed([t.as_layer() for t in sub.layers], sub.max_height)
        budget = participant.allocator.budget(participant.downlink.value(now))
        costs = simulcast.rates(layers)
        fitting = [i for i, rate in enumerate(costs) if rate <= budget] or [0]
        return sub.layers[fitting[-1]]

    def _select_layers(self, now: float) -> None:
        elapsed = now - self._last_tick
        self._last_tick = now
        for participant in self.participants.values():
            for track in participant.published.values():
                f = track.forwarder
                grown = f.bytes_in - track._bytes_seen
                grown += (f.packets_in - track._packets_seen) * PACKET_OVERHEAD_BYTES
                track._bytes_seen, track._packets_seen = f.bytes_in, f.packets_in
                track.bitrate_bps = selection.layer_bitrate(
                    track.bitrate_bps,
                    grown,
                    elapsed,
                    paused=track.mid in participant.paused_layers,
                )
        wanted: dict[Participant, set[str]] = {}
        for participant in self.participants.values():
            self._allocate(participant, now)
            for sub in participant.subscriptions.values():
                if not sub.layers or sub.port.ssrc not in sub.track.forwarder.outputs:
                    continue
                if sub.downlink_paused or not sub.selected:
                    # Nobody gets a layer its downlink has no room for, or one stream
                    # selection leaves out: a publisher nobody selects sends no video.
                    continue
                owner = wanted.setdefault(sub.track.owner, set())
                owner.add(sub.track.mid)
                if sub.pending is not None:
                    owner.add(sub.pending.mid)
        for publisher in self.participants.values():
            grouped = [t for t in publisher.published.values() if t.group is not None]
            if not grouped:
                continue
            paused = selection.layers_to_pause((t.mid for t in grouped), wanted.get(publisher, ()))
            if paused != publisher.paused_layers:
                publisher.paused_layers = paused
                self._on_layers(publisher, paused)

    # --- each subscriber's downlink (sfu.downlink) --------------------------------------

    def _allocate(self, participant: Participant, now: float) -> None:
        """Fit what the participant is sent to its downlink estimate: layers, and video
        paused or resumed (one decision per tick, never per packet)."""
        participant.measure_downlink(now)
        order = selection.speaking_order(self._recent_speakers, self.participants)
        rank = {who: i for i, who in enumerate(order)}
        streams: list[Stream] = []
        choices: dict[str, tuple[Subscription, list[PublishedTrack]]] = {}
        for key, sub in participant.subscriptions.items():
            track = sub.track
            if sub.port.ssrc not in track.forwarder.outputs:
                continue  # not negotiated yet
            if not sub.selected or track.forwarder.paused:
                continue  # not sent whatever the downlink
            if sub.layers:
                layers = simulcast.allowed([t.as_layer() for t in sub.layers], sub.max_height)
                costs = simulcast.rates(layers)
                tracks = sub.layers[: len(layers)]
            else:
                costs, tracks = (track.bitrate_bps,), [track]
            owner = track.owner.id
            tier = 0 if track.source == "screen" else 1 if owner in participant.pinned else 2
            priority = tier * TIER + rank.get(owner, TIER - 1)
            streams.append(Stream(key, track.kind, costs, priority))
            choices[key] = (sub, tracks)
        decided = participant.allocator.decide(
            streams, participant.downlink, participant.sent_bps, now
        )
        # Retransmissions follow the delay-based estimate: loss is what they repair, and a
        # budget cut by loss would leave key frames unrepaired on a lossy path.
        delay = participant.downlink.delay_value(now)
        if not math.isinf(delay):
            participant.repair.on_estimate(int(delay))
        self._apply(participant, decided, choices)
        probe, participant.allocator.probe_bps = participant.allocator.probe_bps, None
        if probe is not None:
            self._probe(participant, probe, now)

    def _probe(self, participant: Participant, bps: float, now: float) -> None:
        """Probe the participant's downlink at ``bps`` (sfu.bwe): every packet it is sent
        until the probe ends counts, and RTX padding fills it up to the rate. The padding
        keeps to its schedule from the clock (a late timer sends what fell due meanwhile),
        and the probe ends with its last padding packet: measured, timers that ran late
        left a probe of 256 kbit/s carrying 150."""
        bwe = participant.bwe
        ports = [
            sub.port
            for sub in participant.subscriptions.values()
            if sub.port.bwe is not None and sub.port.rtx_payload_type is not None
        ]
        if bwe is None or not ports or bwe.probing:
            return
        port = ports[0]
        duration = bwe.start_probe(bps, now)
        loop = asyncio.get_running_loop()
        padded = 0

        def pace() -> None:
            nonlocal padded
            t = time.monotonic()
            end = t - now >= duration
            while bwe.probe_bytes_due(t) > 0 or (end and padded < PROBE_MIN_PACKETS):
                if not port.send_padding(t):
                    break
                padded += 1
            if end:
                bwe.end_probe(t)
                return
            loop.call_later(PROBE_PACE_S, pace)

        pace()

    def _apply(
        self,
        participant: Participant,
        decided: Allocation,
        choices: dict[str, tuple[Subscription, list[PublishedTrack]]],
    ) -> None:
        for key, layer in decided.items():
            sub, tracks = choices[key]
            if layer is None:
                if sub.pending is not None:
                    sub.pending.forwarder.remove(sub.port)
                    sub.pending = None
                sub.downlink_paused = True
            else:
                target = tracks[min(layer, len(tracks) - 1)]
                if sub.downlink_paused and target is not sub.track:
                    # Resuming on another layer than it stopped on: fed from that one.
                    sub.track.forwarder.remove(sub.port)
                    sub.track = target
                    target.forwarder.add(sub.port)
                elif target is sub.track and sub.pending is not None:
                    sub.pending.forwarder.remove(sub.port)  # back down before the switch
                    sub.pending = None
                elif target is not sub.track and target is not sub.pending:
                    self._switch(sub, target)
                sub.downlink_paused = False
            out = sub.track.forwarder.outputs.get(sub.port.ssrc)
            if out is not None:
                sub.track.forwarder.set_active(out, sub.selected and not sub.downlink_paused)
        self._notify_paused(participant)

    def _notify_paused(self, participant: Participant) -> None:
        """Tell the subscriber what of its received tracks is not sent now (sfu.paused), if
        that changed since it was last told: what its downlink has no room for, and the
        video stream selection leaves out."""
        subs = participant.subscriptions.items()
        paused = sorted(k for k, sub in subs if sub.downlink_paused)
        unselected = sorted(k for k, sub in subs if sub.track.kind == "video" and not sub.selected)
        if paused == participant.downlink_paused and unselected == participant.unselected:
            return
        participant.downlink_paused = paused
        participant.unselected = unselected
        self._on_paused(participant, paused, unselected)

    def _switch(self, sub: Subscription, target: PublishedTrack) -> None:
        """Feed the subscriber from another layer, from its next key frame on; the old layer
        goes on until then, so the picture never freezes."""
        if sub.pending is not None:
            sub.pending.forwarder.remove(sub.port)
        sub.pending = target

        def started() -> None:
            if sub.pending is not target:
                return
            sub.track.forwarder.retire(sub.port)
            sub.track, sub.pending = target, None

        target.forwarder.add(sub.port, on_start=started)

    def _select(self, now: float) -> None:
        policy = self.policy
        selective = selection.is_selective(len(self.participants), policy.select_above)
        loudest = self.speakers.loudest(now, policy.audio_max + 1) if selective else []
        order = selection.speaking_order(self._recent_speakers, self.participants)
        for participant in self.participants.values():
            chosen = None
            if selective:
                chosen = selection.select(
                    participant.id,
                    loudest=loudest,
                    order=order,
                    pinned=participant.pinned,
                    audio_max=policy.audio_max,
                    video_last_n=policy.video_last_n,
                )
            for sub in participant.subscriptions.values():
                out = sub.track.forwarder.outputs.get(sub.port.ssrc)
                if out is None:
                    continue
                track = sub.track
                sub.selected = chosen is None or chosen.forwards(
                    track.kind, track.key, track.owner.id
                )
                track.forwarder.set_active(out, sub.selected and not sub.downlink_paused)
            self._notify_paused(participant)

    def _spawn(self, job: object) -> None:
        task = asyncio.ensure_future(job)  # type: ignore[call-overload]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)


def _stop_feeding(sub: Subscription) -> None:
    """Take the subscriber's sender off the layer it gets and the one it waits for."""
    sub.track.forwarder.remove(sub.port)
    if sub.pending is not None:
        sub.pending.forwarder.remove(sub.port)


def _default_source(kind: str) -> str:
    return "camera" if kind == "video" else "microphone"


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("room task failed", exc_info=task.exception())
