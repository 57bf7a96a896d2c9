"""Chat messages of signaling protocol v1: requests, replies and events of the ``chat.`` area.

Pure module. The same classes are stored in Redis: a conversation's event log holds each
event exactly as devices receive it (``seq`` 0, stamped per connection when sent), and its
message hash holds each :class:`ChatMessage`.

Two kinds of events carry a position a device keeps as its cursor:
- conversation events (``ev``): messages, edits, recalls, reactions, read receipts; each
  conversation numbers its own from 1 with no holes;
- feed events (``fev``): what concerns one user across conversations (added to or removed
  from one, a read in a broadcast channel, mute and block settings); numbered per user.

Each log has an epoch (``epoch``, ``feed_epoch``) that changes when the log is made anew or
goes back in time; a cursor is a number with its epoch (see chat.resume). Every logged event
also carries a ``stamp``, unique to it among all events ever logged, which a device sends
back with its cursor so that the event under that number can be checked to be the same.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from chat.resume import GapReason
from signaling.wire import Event, Identity, Reply, Request

ConvId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$(?!\n)")
]
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# The configured limit (chat_max_text_chars) is checked by the service with its own code.
Text = Annotated[str, msgspec.Meta(max_length=65536)]
ConvName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Emoji = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
MediaId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Every integer of a request is one a JavaScript client holds exactly (up to
# Number.MAX_SAFE_INTEGER either way): beyond, it was never sent by one, and past 64 bits it
# fits no database column.
MAX_INT: Final = 2**53 - 1
Seq = Annotated[int, msgspec.Meta(ge=1, le=MAX_INT)]
Cursor = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
# Milliseconds since the Unix epoch, before it too.
Millis = Annotated[int, msgspec.Meta(ge=-MAX_INT, le=MAX_INT)]
Epoch = Annotated[str, msgspec.Meta(max_length=64)]
Stamp = Annotated[str, msgspec.Meta(max_length=64)]
Members = Annotated[list[Identity], msgspec.Meta(max_length=500)]
ConvKind = Literal["direct", "group", "channel"]
Role = Literal["owner", "admin", "member", "follower"]
SendKind = Literal["text", "image", "file", "voice", "sticker"]
MessageKind = Literal["text", "image", "file", "voice", "sticker", "system"]
SystemEvent = Literal[
    "created",
    "member_joined",
    "member_left",
    "member_removed",
    "role_changed",
    "renamed",
    "call_started",
    "call_ended",
    "call_missed",
]
LeftReason = Literal["left", "removed", "unfollowed"]


# --- stored shapes ----------------------------------------------------------------------


class MediaRef(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A file of the media store, as a message carries it."""

    id: str
    name: str
    size: int
    mime: str
    duration_ms: int | None = None
    width: int | None = None
    height: int | None = None
    thumbnail: str | None = None
    waveform: list[int] | None = None


class SystemInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    event: SystemEvent
    by: str | None = None
    users: list[str] | None = None
    name: str | None = None
    role: Role | None = None
    call: str | None = None
    media: str | None = None
    duration_s: int | None = None
    reason: str | None = None


class ThreadSummary(msgspec.Struct, kw_only=True):
    count: int
    last_seq: int


class ChatMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message. ``seq`` numbers the messages of its conversation from 1."""

    # seq first: the send script substitutes it into the stored and published forms.
    seq: int
    ts: int
    sender: str
    kind: MessageKind
    client_id: str | None = None
    text: str | None = None
    mentions: list[str] | None = None
    media: MediaRef | None = None
    sticker: str | None = None
    system: SystemInfo | None = None
    reply_to: int | None = None
    edited: bool = False
    edited_ts: int | None = None
    recalled: bool = False
    recalled_by: str | None = None
    # Filled in when read (kept in hashes of their own so that they change without a rewrite).
    thread: ThreadSummary | None = None
    reactions: dict[str, list[str]] | None = None


class ConvSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One conversation as the user's list shows it."""

    conv: str
    kind: ConvKind
    name: str
    role: Role
    members: int
    ev: int
    epoch: str | None = None
    last_seq: int = 0
    last_ts: int = 0
    last: ChatMessage | None = None
    read_seq: int = 0
    unread: int = 0
    muted: bool = False
    peer: str | None = None


# --- client -> server -------------------------------------------------------------------


class ChatCreate(Request, tag="chat.create", kw_only=True):
    """Create a group (``members`` join at once) or a broadcast channel."""

    kind: Literal["group", "channel"]
    name: ConvName
    members: Members = msgspec.field(default_factory=list)


class ChatSend(Request, tag="chat.send", kw_only=True):
    """Send to ``conv``, or to user ``to`` (their direct conversation, made on first use)."""

    conv: ConvId | None = None
    to: Identity | None = None
    client_id: ClientMsgId
    kind: SendKind = "text"
    text: Text | None = None
    mentions: Members | None = None
    media: MediaId | None = None
    sticker: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    reply_to: Seq | None = None


class ChatEdit(Request, tag="chat.edit", kw_only=True):
    conv: ConvId
    seq: Seq
    text: Text
    mentions: Members | None = None


class ChatRecall(Request, tag="chat.recall", kw_only=True):
    conv: ConvId
    seq: Seq


class ChatReact(Request, tag="chat.react", kw_only=True):
    conv: ConvId
    seq: Seq
    emoji: Emoji
    remove: bool = False


class ChatRead(Request, tag="chat.read", kw_only=True):
    """Everything up to ``seq`` has been read (unread counts follow on every device)."""

    conv: ConvId
    seq: Seq


class ChatTyping(Request, tag="chat.typing", kw_only=True):
    conv: ConvId
    typing: bool = True


class ChatHistory(Request, tag="chat.history", kw_only=True):
    """A page of messages: the newest, or ``before``/``after``/``around`` a sequence number."""

    conv: ConvId
    before: Seq | None = None
    after: Cursor | None = None
    around: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50


class ChatThread(Request, tag="chat.thread", kw_only=True):
    conv: ConvId
    root: Seq
    after: Cursor = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50


class ChatEdits(Request, tag="chat.edits", kw_only=True):
    """The earlier versions of an edited message."""

    conv: ConvId
    seq: Seq


class ChatList(Request, tag="chat.list", kw_only=True):
    """The user's conversations, most recently active first (by ``last_ts``, then by ``conv``,
    both descending). A page goes on after the last one received: ``before_ts`` its
    ``last_ts``, ``before_conv`` its ``conv`` (without it, every conversation of that
    ``last_ts`` is left out)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    before_ts: Millis | None = None
    before_conv: ConvId | None = None

    def __post_init__(self) -> None:
        if self.before_conv is not None and self.before_ts is None:
            raise ValueError("before_conv needs before_ts")


class ChatInfo(Request, tag="chat.info", kw_only=True):
    conv: ConvId


class ChatSync(Request, tag="chat.sync", kw_only=True):
    """Catch up from the device's cursors, then receive chat events live. ``epochs`` and
    ``feed_epoch``: the epoch of each cursor (left out: only the position is checked).
    ``stamps`` and ``feed_stamp``: the stamp of the event at each cursor (left out: not
    checked)."""

    cursors: dict[ConvId, Cursor] = msgspec.field(default_factory=dict)
    feed: Cursor | None = None
    epochs: dict[ConvId, Epoch] = msgspec.field(default_factory=dict)
    feed_epoch: Epoch | None = None
    stamps: dict[ConvId, Stamp] = msgspec.field(default_factory=dict)
    feed_stamp: Stamp | None = None


class ChatAdd(Request, tag="chat.add", kw_only=True):
    conv: ConvId
    users: Annotated[list[Identity], msgspec.Meta(min_length=1, max_length=500)]


class ChatRemove(Request, tag="chat.remove", kw_only=True):
    conv: ConvId
    users: Annotated[list[Identity], msgspec.Meta(min_length=1, max_length=500)]


class ChatLeave(Request, tag="chat.leave", kw_only=True):
    conv: ConvId


class ChatRename(Request, tag="chat.rename", kw_only=True):
    conv: ConvId
    name: ConvName


class ChatRole(Request, tag="chat.role", kw_only=True):
    conv: ConvId
    user: Identity
    role: Literal["admin", "member"]


class ChatFollow(Request, tag="chat.follow", kw_only=True):
    conv: ConvId


class ChatUnfollow(Request, tag="chat.unfollow", kw_only=True):
    conv: ConvId


class ChatSilence(Request, tag="chat.silence", kw_only=True):
    """An admin stops a member from sending for ``seconds`` (0 lifts it)."""

    conv: ConvId
    user: Identity
    seconds: Annotated[int, msgspec.Meta(ge=0, le=366 * 86400)]


class ChatMute(Request, tag="chat.mute", kw_only=True):
    """The user's own notification setting for a conversation, shared by their devices."""

    conv: ConvId
    muted: bool = True


class ChatBlock(Request, tag="chat.block", kw_only=True):
    user: Identity
    blocked: bool = True


class ChatReport(Request, tag="chat.report", kw_only=True):
    conv: ConvId
    seq: Seq
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class ChatReports(Request, tag="chat.reports", kw_only=True):
    """Reports filed in a conversation, for its admins to review."""

    conv: ConvId
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50


class ChatSearch(Request, tag="chat.search", kw_only=True):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    conv: ConvId | None = None
    sender: Identity | None = None
    after_ts: Millis | None = None
    before_ts: Millis | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 20


# --- replies ----------------------------------------------------------------------------


class ChatCreateOk(Reply, tag="ok", kw_only=True):
    conv: ConvSummary


class ChatSendOk(Reply, tag="ok", kw_only=True):
    """``duplicate``: this ``client_id`` was sent before; its first result is repeated."""

    conv: str
    seq: int
    ts: int
    duplicate: bool = False


class ChatMessages(Reply, tag="ok", kw_only=True):
    conv: str
    messages: list[ChatMessage]
    last_seq: int


class ChatEditsOk(Reply, tag="ok", kw_only=True):
    conv: str
    seq: int
    versions: list[ChatMessage]


class ChatListOk(Reply, tag="ok", kw_only=True):
    conversations: list[ConvSummary]


class MemberInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``read``: how far the member has read (the last ``seq``), in groups and direct
    conversations; left out in channels, whose followers do not see each other."""

    user: str
    role: Role
    read: int | None = None


class ChatInfoOk(Reply, tag="ok", kw_only=True):
    conv: ConvSummary
    members: list[MemberInfo]


class ChatSyncOk(Reply, tag="ok", kw_only=True):
    """Sent after every missed event. ``gaps``: not replayable (too far behind, or the log
    was made anew or went back in time), reload by page; ``feed_gap``: the feed too, so
    reload the conversation list (``chat.list``). ``epochs`` and ``feed_epoch``: the epochs of
    the positions in ``heads`` and ``feed`` (a log without one yet is left out)."""

    heads: dict[str, int]
    feed: int
    gaps: list[str]
    removed: list[str]
    feed_gap: bool = False
    epochs: dict[str, str] = msgspec.field(default_factory=dict)
    feed_epoch: str | None = None


class Report(msgspec.Struct, kw_only=True):
    seq: int
    by: str
    reason: str
    ts: int


class ChatReportsOk(Reply, tag="ok", kw_only=True):
    conv: str
    reports: list[Report]


class SearchHit(msgspec.Struct, kw_only=True):
    conv: str
    message: ChatMessage
    snippet: str
    ranges: list[tuple[int, int]]


class ChatSearchOk(Reply, tag="ok", kw_only=True):
    hits: list[SearchHit]


# --- events -----------------------------------------------------------------------------
# Conversation events declare ``conv`` then ``ev`` first: the scripts that store them find
# the numbers they fill in by position-free markers (see chat.scripts).


class ChatMessageEvent(Event, tag="chat.message", kw_only=True):
    conv: str
    ev: int
    epoch: str | None = None
    stamp: str | None = None
    message: ChatMessage


class ChatEdited(Event, tag="chat.edited", kw_only=True):
    conv: str
    ev: int
    epoch: str | None = None
    stamp: str | None = None
    msg_seq: int
    text: str
    mentions: list[str] | None = None
    edited_ts: int


class ChatRecalled(Event, tag="chat.recalled", kw_only=True):
    conv: str
    ev: int
    epoch: str | None = None
    stamp: str | None = None
    msg_seq: int
    by: str


class ChatReaction(Event, tag="chat.reaction", kw_only=True):
    """``users``: everyone who now reacts with ``emoji`` to message ``msg_seq``."""

    conv: str
    ev: int
    epoch: str | None = None
    stamp: str | None = None
    msg_seq: int
    emoji: str
    user: str
    added: bool
    users: list[str]


class ChatReadEvent(Event, tag="chat.receipt", kw_only=True):
    """A read receipt. In direct and group conversations a conversation event every member
    gets (``ev``); in broadcast channels a feed event for the reader's own devices (``fev``)."""

    conv: str
    ev: int | None = None
    epoch: str | None = None
    fev: int | None = None
    feed_epoch: str | None = None
    stamp: str | None = None
    user: str
    read_seq: int


class ChatTypingEvent(Event, tag="chat.user_typing", kw_only=True):
    """Ephemeral: never stored, never replayed."""

    conv: str
    user: str
    typing: bool


class ChatJoined(Event, tag="chat.joined", kw_only=True):
    """Feed event: the user is now in ``conv``; its events from ``ev`` on follow (``epoch``:
    the conversation's epoch then)."""

    fev: int
    feed_epoch: str | None = None
    stamp: str | None = None
    conv: str
    ev: int
    epoch: str | None = None
    info: ConvSummary


class ChatLeft(Event, tag="chat.left", kw_only=True):
    fev: int
    feed_epoch: str | None = None
    stamp: str | None = None
    conv: str
    reason: LeftReason


class ChatMuted(Event, tag="chat.muted", kw_only=True):
    fev: int
    feed_epoch: str | None = None
    stamp: str | None = None
    conv: str
    muted: bool


class ChatBlocked(Event, tag="chat.blocked", kw_only=True):
    fev: int
    feed_epoch: str | None = None
    stamp: str | None = None
    user: str
    blocked: bool


class ChatGap(Event, tag="chat.gap", kw_only=True):
    """A log this connection follows was made anew or went back in time (Redis restored from
    an older snapshot), or events of it that the connection missed in flight are no longer
    kept (``trimmed``), so what the device has of it may be wrong. For a conversation
    (``conv``, ``ev``, ``epoch``): drop what is cached of it and reload it by page. For the
    user's feed (``conv`` null, ``fev``, ``feed_epoch``): reload the list with ``chat.list``.
    The connection's position is now that number in that epoch; later events follow live."""

    conv: str | None = None
    ev: int | None = None
    epoch: str | None = None
    fev: int | None = None
    feed_epoch: str | None = None
    reason: GapReason


CHAT_REQUESTS: Final[tuple[type[Request], ...]] = (
    ChatCreate,
    ChatSend,
    ChatEdit,
    ChatRecall,
    ChatReact,
    ChatRead,
    ChatTyping,
    ChatHistory,
    ChatThread,
    ChatEdits,
    ChatList,
    ChatInfo,
    ChatSync,
    ChatAdd,
    ChatRemove,
    ChatLeave,
    ChatRename,
    ChatRole,
    ChatFollow,
    ChatUnfollow,
    ChatSilence,
    ChatMute,
    ChatBlock,
    ChatReport,
    ChatReports,
    ChatSearch,
)

CHAT_REPLIES: Final[dict[str, type[Reply]]] = {
    "chat.create": ChatCreateOk,
    "chat.send": ChatSendOk,
    "chat.edit": ChatSendOk,
    "chat.recall": ChatSendOk,
    "chat.history": ChatMessages,
    "chat.thread": ChatMessages,
    "chat.edits": ChatEditsOk,
    "chat.list": ChatListOk,
    "chat.info": ChatInfoOk,
    "chat.sync": ChatSyncOk,
    "chat.follow": ChatCreateOk,
    "chat.reports": ChatReportsOk,
    "chat.search": ChatSearchOk,
}

CHAT_EVENTS: Final[tuple[type[Event], ...]] = (
    ChatMessageEvent,
    ChatEdited,
    ChatRecalled,
    ChatReaction,
    ChatReadEvent,
    ChatTypingEvent,
    ChatJoined,
    ChatLeft,
    ChatMuted,
    ChatBlocked,
    ChatGap,
)
