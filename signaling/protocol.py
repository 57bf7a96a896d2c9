"""Signaling protocol v1: every message as a typed structure, one registry per direction.

Pure module: no I/O. The same classes travel over the WebSocket and over Redis.

Wire conventions (see docs/protocol.md):
- client requests carry ``id``; the server answers each with exactly one ``ok`` reply or one
  ``error`` reply whose ``re`` is that id;
- server events carry ``seq``, which counts the events of one connection from 1;
- unknown fields are ignored (fields are added, never renamed); unknown types and fields of
  the wrong type are errors with codes.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Final, Literal

import msgspec

from chat.wire import CHAT_EVENTS, CHAT_REPLIES, CHAT_REQUESTS

# Re-exported: every message class is reachable as signaling.protocol.NAME.
from sfu.types import IceServer as IceServer
from sfu.types import PublishedTrackStats as PublishedTrackStats
from sfu.types import SubscribedTrackStats as SubscribedTrackStats
from signaling.wire import Event as Event
from signaling.wire import Identity as Identity
from signaling.wire import Message as Message
from signaling.wire import Ok as Ok
from signaling.wire import Reply as Reply
from signaling.wire import Request as Request
from signaling.wire import RequestId as RequestId
from signaling.ws_frames import text_frame_header

PROTOCOL_VERSION: Final = 1

DeviceId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$(?!\n)")
]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
UserList = Annotated[list[Identity], msgspec.Meta(min_length=1, max_length=500)]
RoomName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$(?!\n)")
]
Sdp = Annotated[str, msgspec.Meta(min_length=1, max_length=65536)]
Source = Literal["camera", "microphone", "screen", "screen_audio"]
DeviceStatus = Literal["online", "away"]
CallId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$(?!\n)")
]
CallMedia = Literal["audio", "video"]
CallEndReason = Literal["declined", "no_answer", "cancelled", "hangup"]
CallLeftReason = Literal["declined", "no_answer", "hangup"]
UserStatus = Literal["online", "away", "offline"]


# --- client -> server -------------------------------------------------------------------


class Hello(Request, tag="hello", kw_only=True):
    """First frame of every connection: authenticates the device."""

    token: Token
    protocol: int = PROTOCOL_VERSION
    device: DeviceId | None = None
    client: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    status: DeviceStatus = "online"


class Ping(Request, tag="ping", kw_only=True):
    """Application-level keepalive for clients that cannot send WebSocket pings."""


class AuthRefresh(Request, tag="auth.refresh", kw_only=True):
    """Swap the connection's token for a fresh one of the same identity."""

    token: Token


class PresenceSubscribe(Request, tag="presence.subscribe", kw_only=True):
    users: UserList


class PresenceUnsubscribe(Request, tag="presence.unsubscribe", kw_only=True):
    users: UserList


class PresenceSet(Request, tag="presence.set", kw_only=True):
    status: DeviceStatus


class CallJoin(Request, tag="call.join", kw_only=True):
    """Join (or open) a group call room. The node answers with the participant list."""

    room: RoomName


class CallLeave(Request, tag="call.leave", kw_only=True):
    room: RoomName


class LayerInfo(msgspec.Struct, kw_only=True):
    """One simulcast layer, sent as a track of its own: layers of one ``source`` group."""

    source: Annotated[
        str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$(?!\n)")
    ]
    quality: Annotated[int, msgspec.Meta(ge=0, le=2)]
    height: Annotated[int, msgspec.Meta(ge=1, le=4320)]


class SfuPublish(Request, tag="sfu.publish", kw_only=True):
    """The offer of the publisher connection; the reply carries the SFU's answer.

    ``sources`` names what each offered m-line carries, by its ``mid``.
    """

    room: RoomName
    sdp: Sdp
    sources: dict[str, Source] = msgspec.field(default_factory=dict)
    layers: dict[str, LayerInfo] = msgspec.field(default_factory=dict)


class SfuTrackSettings(Request, tag="sfu.track_settings", kw_only=True):
    """How a received track is shown: ``max_height`` is the tile's height in pixels (null:
    no limit). The SFU never forwards a simulcast layer taller than that."""

    room: RoomName
    track: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    max_height: Annotated[int, msgspec.Meta(ge=1, le=4320)] | None


class SfuCandidate(Request, tag="sfu.candidate", kw_only=True):
    """Trickle ICE: one of the client's candidates for its publisher or subscriber
    connection, as ``RTCIceCandidate.candidate`` (with or without ``candidate:``); null
    ``candidate`` ends the client's candidates."""

    room: RoomName
    pc: Literal["publisher", "subscriber"]
    candidate: Annotated[str, msgspec.Meta(max_length=512)] | None
    sdp_mid: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    sdp_mline_index: Annotated[int, msgspec.Meta(ge=0, le=64)] | None = None


class SfuAnswer(Request, tag="sfu.answer", kw_only=True):
    """The client's answer to an ``sfu.offer`` for its subscriber connection."""

    room: RoomName
    sdp: Sdp


class SfuRestart(Request, tag="sfu.restart", kw_only=True):
    """Start this participant's media over on new peer connections (an ICE restart when
    its network changed): the SFU closes both, keeps its place in the room, offers its
    subscriptions again, and waits for a new publisher offer."""

    room: RoomName


class CallState(Request, tag="call.state", kw_only=True):
    """This participant's own state; omitted fields keep their value."""

    room: RoomName
    audio_muted: bool | None = None
    video_muted: bool | None = None
    screen_sharing: bool | None = None


class CallMute(Request, tag="call.mute", kw_only=True):
    """A room admin (token grant ``admin``) mutes another participant's audio or video."""

    room: RoomName
    participant: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    kind: Literal["audio", "video"]


class CallRemove(Request, tag="call.remove", kw_only=True):
    """A room admin removes another participant from the room."""

    room: RoomName
    participant: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CallPin(Request, tag="call.pin", kw_only=True):
    """Participants whose video this participant always receives, even in a large room
    that forwards only the last speakers' video (replaces the previous list)."""

    room: RoomName
    participants: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]],
        msgspec.Meta(max_length=16),
    ]


class CallStats(Request, tag="call.stats", kw_only=True):
    """Statistics of this participant's published and received tracks."""

    room: RoomName


class CallInvite(Request, tag="call.invite", kw_only=True):
    """Ring every device of ``to``; with ``call``, invite them into that accepted call."""

    to: Identity
    media: CallMedia
    call: CallId | None = None


class CallAccept(Request, tag="call.accept", kw_only=True):
    """Answer a ringing call on this device; the first accept of a callee wins."""

    call: CallId


class CallDecline(Request, tag="call.decline", kw_only=True):
    call: CallId


class CallCancel(Request, tag="call.cancel", kw_only=True):
    """The caller gives up a call that still rings."""

    call: CallId


class CallHangup(Request, tag="call.hangup", kw_only=True):
    call: CallId


class CallUpdate(Request, tag="call.update", kw_only=True):
    """Switch an accepted call's media, e.g. from audio to video."""

    call: CallId
    media: CallMedia


_REQUEST_CLASSES: tuple[type[Request], ...] = (
    Hello,
    Ping,
    AuthRefresh,
    PresenceSubscribe,
    PresenceUnsubscribe,
    PresenceSet,
    CallInvite,
    CallAccept,
    CallDecline,
    CallCancel,
    CallHangup,
    CallUpdate,
    CallJoin,
    CallLeave,
    SfuPublish,
    SfuAnswer,
    SfuCandidate,
    CallStats,
    CallState,
    CallMute,
    CallRemove,
    CallPin,
    SfuTrackSettings,
    SfuRestart,
    *CHAT_REQUESTS,
)
CLIENT_MESSAGES: Final[dict[str, type[Request]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in _REQUEST_CLASSES
}


# --- server -> client: replies ----------------------------------------------------------


class HelloOk(Reply, tag="ok", kw_only=True):
    protocol: int
    identity: str
    name: str
    device: str
    session: str
    node: str
    heartbeat_s: float
    token_expires_at: int
    server_time_ms: int
    # The node's limits, for a client to check what it sends before the node refuses it
    # (a frame past max_frame_bytes closes the connection).
    max_frame_bytes: int
    max_text_chars: int


class PingOk(Reply, tag="ok", kw_only=True):
    server_time_ms: int


class AuthRefreshOk(Reply, tag="ok", kw_only=True):
    token_expires_at: int


class DevicePresence(msgspec.Struct, kw_only=True):
    device: str
    status: DeviceStatus


class UserPresence(msgspec.Struct, kw_only=True):
    """A user's presence: online if any device is online, away if all are away."""

    user: str
    status: UserStatus
    devices: list[DevicePresence]
    last_seen_ms: int | None
    version: int


class PresenceSubscribeOk(Reply, tag="ok", kw_only=True):
    presence: list[UserPresence]


class ParticipantInfo(msgspec.Struct, kw_only=True):
    participant: str
    identity: str
    name: str
    audio_muted: bool = False
    video_muted: bool = False
    screen_sharing: bool = False


class CallJoinOk(Reply, tag="ok", kw_only=True):
    room: str
    participant: str
    participants: list[ParticipantInfo]
    ice_servers: list[IceServer]


class SfuPublishOk(Reply, tag="ok", kw_only=True):
    sdp: str


class CallStatsOk(Reply, tag="ok", kw_only=True):
    room: str
    published: list[PublishedTrackStats]
    subscribed: list[SubscribedTrackStats]


class CallInviteOk(Reply, tag="ok", kw_only=True):
    call: str
    room: str
    # The invitee was calling this user at that moment: ``call`` is their call, answered by
    # this device (as with call.accept): join ``room`` now.
    answered: bool = False


class CallAcceptOk(Reply, tag="ok", kw_only=True):
    call: str
    room: str


class Error(Message, tag="error", kw_only=True):
    """A refused request (``re`` set) or a connection-level problem (``re`` null)."""

    re: str | None
    code: str
    message: str


# The reply each request type gets on success.
REPLIES: Final[dict[str, type[Reply]]] = {
    "hello": HelloOk,
    "ping": PingOk,
    "auth.refresh": AuthRefreshOk,
    "presence.subscribe": PresenceSubscribeOk,
    "presence.unsubscribe": Ok,
    "presence.set": Ok,
    "call.join": CallJoinOk,
    "call.leave": Ok,
    "call.invite": CallInviteOk,
    "call.accept": CallAcceptOk,
    "call.decline": Ok,
    "call.cancel": Ok,
    "call.hangup": Ok,
    "call.update": Ok,
    "sfu.publish": SfuPublishOk,
    "sfu.answer": Ok,
    "sfu.candidate": Ok,
    "call.stats": CallStatsOk,
    "call.state": Ok,
    "call.mute": Ok,
    "call.remove": Ok,
    "call.pin": Ok,
    "sfu.track_settings": Ok,
    "sfu.restart": Ok,
    **{
        tag: CHAT_REPLIES.get(tag, Ok)
        for tag in (cls.__struct_config__.tag for cls in CHAT_REQUESTS)
        if isinstance(tag, str)
    },
}


# --- server -> client: events -----------------------------------------------------------


class PresenceUpdate(Event, tag="presence.update", kw_only=True):
    """A watched user's presence changed (any device came, went or changed status)."""

    presence: UserPresence


class AuthExpiring(Event, tag="auth.expiring", kw_only=True):
    """The token expires soon: send ``auth.refresh`` before ``expires_at`` or be closed."""

    expires_at: int


class CallParticipantJoined(Event, tag="call.participant_joined", kw_only=True):
    room: str
    participant: ParticipantInfo


class CallParticipantLeft(Event, tag="call.participant_left", kw_only=True):
    room: str
    participant: str


class TrackInfo(msgspec.Struct, kw_only=True):
    """One forwarded track on the subscriber connection, found by its ``mid``."""

    mid: str
    track: str
    kind: Literal["audio", "video"]
    source: str
    participant: str
    identity: str


class SfuOffer(Event, tag="sfu.offer", kw_only=True):
    """A new offer for the subscriber connection: answer it with ``sfu.answer``."""

    room: str
    sdp: str
    tracks: list[TrackInfo]


class CallParticipantState(Event, tag="call.participant_state", kw_only=True):
    """A participant's state changed (muted, unmuted, screen sharing)."""

    room: str
    participant: ParticipantInfo


class CallMuted(Event, tag="call.muted", kw_only=True):
    """A room admin muted this participant: the SFU stops forwarding its ``kind`` until it
    unmutes itself with ``call.state``."""

    room: str
    kind: Literal["audio", "video"]
    by: str


class CallRemoved(Event, tag="call.removed", kw_only=True):
    """A room admin removed this participant from the room."""

    room: str
    by: str


class SfuLayers(Event, tag="sfu.layers", kw_only=True):
    """To a simulcast publisher: the layers (by ``mid``) nobody receives now; stop sending
    them until they are no longer listed."""

    room: str
    paused: list[str]


class SfuPaused(Event, tag="sfu.paused", kw_only=True):
    """To a subscriber: the received tracks (ids as in ``sfu.offer``) it is not sent now.
    ``tracks``: those its downlink has no room for; they resume once it has. ``unselected``:
    video the room leaves out by stream selection (above ``selective_forwarding_above``
    participants only the video of the ``video_last_n`` most recent speakers and of pinned
    participants is forwarded); it resumes once its publisher is among them again. Sent
    whenever either list changes."""

    room: str
    tracks: list[str]
    unselected: list[str] = msgspec.field(default_factory=list)


class CallReconnect(Event, tag="call.reconnect", kw_only=True):
    """The room's media server restarted: this participant is out of the room and should
    ``call.join`` it again (and publish again). ``reason`` says why."""

    room: str
    reason: str


class CallResumed(Event, tag="call.resumed", kw_only=True):
    """This device was in ``room`` when its previous socket dropped, less than
    ``call_resume_s`` ago: it is still the same participant and its media never stopped."""

    room: str
    participant: str


class Speaker(msgspec.Struct, kw_only=True):
    participant: str
    level: int  # smoothed loudness, 0 (silent) to 127 (0 dBov)


class CallSpeakers(Event, tag="call.speakers", kw_only=True):
    """Who is speaking, loudest first; sent when it changes, at most 4 times a second."""

    room: str
    speakers: list[Speaker]


class CallIncoming(Event, tag="call.incoming", kw_only=True):
    """Someone calls this user: ring. ``from`` is who invited them."""

    call: str
    from_: str = msgspec.field(name="from")
    from_name: str
    media: CallMedia


class CallOutgoing(Event, tag="call.outgoing", kw_only=True):
    """Another device of this user placed a call that now rings; with ``resumed``, this very
    device did, and said hello again while it rings (it is still the caller)."""

    call: str
    to: str
    media: CallMedia
    resumed: bool = False


class CallAccepted(Event, tag="call.accepted", kw_only=True):
    """``by`` answered on ``device``: join ``room``."""

    call: str
    room: str
    device: str
    by: str


class CallMerged(Event, tag="call.merged", kw_only=True):
    """This device's call ``call`` crossed a call from its callee to this user (both called
    at once): ``call`` is given up, and this device answered theirs, ``into``: join ``room``."""

    call: str
    into: str
    room: str


class CallAnsweredElsewhere(Event, tag="call.answered_elsewhere", kw_only=True):
    """Another device of this user answered: stop ringing."""

    call: str


class CallDeclined(Event, tag="call.declined", kw_only=True):
    """``by`` declined, and with that the call is over."""

    call: str
    by: str


class CallCancelled(Event, tag="call.cancelled", kw_only=True):
    """The call that rang here is over before anyone here answered: stop ringing."""

    call: str


class CallMissed(Event, tag="call.missed", kw_only=True):
    """Nobody answered within the ring timeout: stop ringing, show a missed call."""

    call: str
    from_: str = msgspec.field(name="from")
    from_name: str
    media: CallMedia


class CallEnded(Event, tag="call.ended", kw_only=True):
    call: str
    reason: CallEndReason


class CallUpdated(Event, tag="call.updated", kw_only=True):
    call: str
    media: CallMedia
    by: str


class CallLeft(Event, tag="call.left", kw_only=True):
    """``user`` is no longer part of a call that goes on without them."""

    call: str
    user: str
    reason: CallLeftReason


_EVENT_CLASSES: tuple[type[Event], ...] = (
    PresenceUpdate,
    AuthExpiring,
    CallParticipantJoined,
    CallParticipantLeft,
    SfuOffer,
    CallIncoming,
    CallOutgoing,
    CallAccepted,
    CallMerged,
    CallAnsweredElsewhere,
    CallDeclined,
    CallCancelled,
    CallMissed,
    CallEnded,
    CallUpdated,
    CallLeft,
    CallSpeakers,
    CallReconnect,
    CallResumed,
    CallParticipantState,
    CallMuted,
    CallRemoved,
    SfuLayers,
    SfuPaused,
    *CHAT_EVENTS,
)
SERVER_EVENTS: Final[dict[str, type[Event]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in _EVENT_CLASSES
}


# --- error codes and close codes --------------------------------------------------------


class ErrorCode:
    BAD_JSON: Final = "bad_json"
    BAD_MESSAGE: Final = "bad_message"
    UNKNOWN_TYPE: Final = "unknown_type"
    INVALID_FIELD: Final = "invalid_field"
    BINARY_NOT_SUPPORTED: Final = "binary_not_supported"
    NOT_AUTHENTICATED: Final = "not_authenticated"
    ALREADY_AUTHENTICATED: Final = "already_authenticated"
    UNSUPPORTED_PROTOCOL: Final = "unsupported_protocol"
    INVALID_TOKEN: Final = "invalid_token"
    TOKEN_EXPIRED: Final = "token_expired"
    IDENTITY_MISMATCH: Final = "identity_mismatch"
    RATE_LIMITED: Final = "rate_limited"
    TOO_MANY_SUBSCRIPTIONS: Final = "too_many_subscriptions"
    FORBIDDEN: Final = "forbidden"
    ROOM_FULL: Final = "room_full"
    ROOM_ELSEWHERE: Final = "room_elsewhere"
    ALREADY_IN_CALL: Final = "already_in_call"
    NOT_IN_CALL: Final = "not_in_call"
    UNKNOWN_CALL: Final = "unknown_call"
    CALL_NOT_RINGING: Final = "call_not_ringing"
    CALL_NOT_ACTIVE: Final = "call_not_active"
    BUSY: Final = "busy"
    CANNOT_CALL_SELF: Final = "cannot_call_self"
    BAD_SDP: Final = "bad_sdp"
    UNSUPPORTED_CODEC: Final = "unsupported_codec"
    NO_OFFER: Final = "no_offer"
    UNKNOWN_PARTICIPANT: Final = "unknown_participant"
    TOO_MANY_TRACKS: Final = "too_many_tracks"
    INVALID_LAYERS: Final = "invalid_layers"
    BAD_CANDIDATE: Final = "bad_candidate"
    UNKNOWN_TRACK: Final = "unknown_track"
    NOT_MEMBER: Final = "not_member"
    UNKNOWN_CONVERSATION: Final = "unknown_conversation"
    UNKNOWN_MESSAGE: Final = "unknown_message"
    UNKNOWN_MEDIA: Final = "unknown_media"
    BAD_MESSAGE_CONTENT: Final = "bad_message_content"
    MESSAGE_TOO_LARGE: Final = "message_too_large"
    CONTENT_FILTERED: Final = "content_filtered"
    BLOCKED: Final = "blocked"
    SILENCED: Final = "silenced"
    RECALL_WINDOW_PASSED: Final = "recall_window_passed"
    RECALLED: Final = "recalled"
    CONVERSATION_FULL: Final = "conversation_full"
    CONFLICT: Final = "conflict"
    UNAVAILABLE: Final = "unavailable"
    INTERNAL: Final = "internal"


ERROR_CODES: Final[frozenset[str]] = frozenset(
    v for k, v in vars(ErrorCode).items() if not k.startswith("_")
)


class CloseCode:
    """WebSocket close codes the server uses (4000-4999 are application codes)."""

    NORMAL: Final = 1000
    GOING_AWAY: Final = 1001  # server shutting down
    INVALID_TEXT: Final = 1007  # a text frame that is not UTF-8 (aiohttp's reader closes)
    MESSAGE_TOO_BIG: Final = 1009  # frame above the configured maximum
    INTERNAL_ERROR: Final = 1011
    TRY_AGAIN_LATER: Final = 1013  # Redis unavailable during hello
    UNSUPPORTED_PROTOCOL: Final = 4000  # hello asked for a protocol version we do not speak
    AUTH_FAILED: Final = 4001  # hello refused: missing, forged or expired token
    HELLO_TIMEOUT: Final = 4002  # no hello in time
    TOKEN_EXPIRED: Final = 4003  # the token ran out during the connection
    FLOOD: Final = 4008  # kept sending after being rate limited
    REPLACED: Final = 4009  # the same device connected again elsewhere
    SLOW_CONSUMER: Final = 4010  # did not read its events fast enough


class ProtocolError(Exception):
    """A frame that cannot be turned into a request; ``re`` is its id when recoverable."""

    def __init__(self, code: str, message: str, re: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.re = re


_json_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()


def decode_request(frame: str | bytes) -> Request:
    """Parse one client frame into its typed request, or raise ProtocolError with a code."""
    # Two passes, the object then its class: one straight into the requests' union would
    # skip the fields no request has without reading their values, and accept a frame
    # whose number does not fit (1e400, 5,000 digits) that is refused here as bad JSON.
    try:
        raw = _json_decoder.decode(frame)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"frame is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a frame must be a JSON object")
    rid = raw.get("id")
    re = rid if isinstance(rid, str) and 0 < len(rid) <= 64 else None
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "missing string field `type`", re)
    cls = CLIENT_MESSAGES.get(kind)
    if cls is None:
        shown = kind if len(kind) <= 64 else kind[:64] + "..."
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {shown!r}", re)
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_FIELD, str(exc), re) from None


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def error(code: str, message: str, re: str | None = None) -> bytes:
    return _encoder.encode(Error(re=re, code=code, message=message))


class EncodedEvent:
    """An event serialized once, then stamped with each connection's own ``seq``.

    Fan-out sends one event to many connections: encoding it once and splicing the number in
    keeps the per-connection work to a concatenation.
    """

    __slots__ = ("_prefixes", "head", "tail", "type")

    def __init__(self, event: Event | None, blob: bytes = b"") -> None:
        if event is not None:
            blob = _encoder.encode(msgspec.structs.replace(event, seq=0))
        marker = b'"seq":0'
        at = blob.index(marker)
        self.head = blob[: at + len(marker) - 1]
        self.tail = blob[at + len(marker) :]
        self.type: str = (
            event.__struct_config__.tag  # type: ignore[assignment]
            if event is not None
            else blob[9 : blob.index(b'"', 9)].decode()
        )
        # By how many digits ``seq`` has: a text frame's header and ``head`` (ws_frame).
        self._prefixes: dict[int, bytes] = {}

    @classmethod
    def from_blob(cls, blob: bytes) -> EncodedEvent:
        """An event stored already encoded with ``seq`` 0 (``{"type":"...","seq":0,...}``)."""
        return cls(None, blob)

    def with_seq(self, seq: int) -> str:
        return self.frame(seq).decode()

    def frame(self, seq: int) -> bytes:
        """The event as sent to a connection whose next number is ``seq``."""
        return b"%s%d%s" % (self.head, seq, self.tail)

    def ws_frame(self, seq: int) -> bytes:
        """``frame(seq)`` as a WebSocket text frame, its header included (signaling.ws_frames).

        Made once per connection that gets the event: the header and the part before the
        number depend only on how many digits the number has, so they are joined once."""
        number = b"%d" % seq
        digits = len(number)
        prefix = self._prefixes.get(digits)
        if prefix is None:
            size = len(self.head) + digits + len(self.tail)
            prefix = self._prefixes[digits] = text_frame_header(size) + self.head
        return b"".join((prefix, number, self.tail))


def json_schema() -> dict[str, Any]:
    """JSON Schema of every message, by direction, generated from the types."""
    client = list(CLIENT_MESSAGES.values())
    replies = list(dict.fromkeys(REPLIES.values()))
    events = list(SERVER_EVENTS.values())
    everything: list[Any] = [*client, *replies, Error, *events]
    schemas, components = msgspec.json.schema_components(everything, ref_template="#/$defs/{name}")
    for component in components.values():
        # Docstrings as inspect.cleandoc leaves them: msgspec releases differ on indentation.
        if "description" in component:
            component["description"] = inspect.cleandoc(component["description"])
    names = [s["$ref"].rsplit("/", 1)[1] for s in schemas]
    n_client, n_replies = len(client), len(replies)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Huddle signaling protocol v{PROTOCOL_VERSION}",
        "protocol": PROTOCOL_VERSION,
        "client_messages": dict(zip(CLIENT_MESSAGES, names[:n_client], strict=True)),
        "replies": {req: cls.__name__ for req, cls in REPLIES.items()},
        "error": "Error",
        "server_events": dict(zip(SERVER_EVENTS, names[n_client + n_replies + 1 :], strict=True)),
        "error_codes": sorted(ERROR_CODES),
        "close_codes": {k.lower(): v for k, v in vars(CloseCode).items() if not k.startswith("_")},
        "$defs": components,
    }
