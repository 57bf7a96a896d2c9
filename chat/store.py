"""Chat state in Redis: conversations, messages, receipts, user lists and feeds.

Every write is one Lua script of chat.scripts; this module encodes what they store, runs
them, and turns their refusals into :class:`ChatError` with a protocol error code.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import msgspec
from redis.crc import key_slot

from chat import scripts
from chat import wire as w
from chat.resume import LogState
from signaling.keys import conv_key, user_key
from signaling.redis_client import (
    RedisClient,
    execute,
    is_cluster,
    queue_script,
    run_replicated,
    run_script,
)
from signaling.wire import Event

ENCODER: Final = msgspec.json.Encoder()
MESSAGE_DECODER: Final = msgspec.json.Decoder(w.ChatMessage)
_REACTIONS_DECODER: Final = msgspec.json.Decoder(dict[str, list[str]])
# Conversation-level refusals of the scripts, and the codes devices get for them (an
# outsider's refusal is ``not_member``, see ``refusal``).
_CODES: Final = {
    "forbidden": "forbidden",
    "silenced": "silenced",
    "unknown_message": "unknown_message",
    "conversation_full": "conversation_full",
    "conflict": "conflict",
    "recalled": "recalled",
    "too_many": "bad_message_content",
}
# A reply's thread root until the send script puts it in (chat/lua/send.lua).
REPLY_TO_MARKER: Final = -3
# The largest sequence part of a stream entry's ID: "{ev}-{this}" is the last ID event ev
# can have.
_LAST_ID_SEQ: Final = 2**64 - 1
# Encoded in the message's place in a message event, then replaced by the message.
_MESSAGE_SLOT: Final = w.ChatMessage(seq=0, ts=0, sender="", kind="text")
_MESSAGE_SLOT_JSON: Final = ENCODER.encode(_MESSAGE_SLOT)
_META_FIELDS: Final = (
    "kind",
    "name",
    "last_seq",
    "last_ts",
    "last_ev",
    "last",
    "count",
    "peers",
    "epoch",
    "cold_seq",
)


# How long a user's send counter of one second lives (as in chat/lua/rate.lua).
SEND_COUNTER_MS: Final = 2000


def send_counter_key(user: str, second: int) -> str:
    """On a cluster: the user's counter of sends in ``second``, shared by every node
    (chat.send_limit), in the user's slot."""
    return user_key(user, f"sends:{second}")


def send_counts_key(second: int) -> str:
    """On one Redis: every user's counter of sends in ``second`` (field: user), one hash
    whose life is set once a second by each node, not once for each user's first send.
    Never used on a cluster (its tag would put every user's counter on one shard)."""
    return f"huddle:{{sends:{second}}}"


class SendCount:
    """A send's place in its sender's counter (on one Redis, where the send script adds the
    send to it, ``ChatStore.send``): ``total`` is the counter after; None until then."""

    __slots__ = ("key", "second", "total")

    def __init__(self, second: int) -> None:
        self.key = send_counts_key(second)
        self.second = second
        self.total: int | None = None


class ChatError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MissingMessage(ChatError):
    """A reply's message (or its thread's root) is not in Redis: it may have left the hot
    window, to be copied back (chat.window.warm) before the send is tried again."""

    def __init__(self, seq: int) -> None:
        super().__init__("unknown_message", f"no message {seq} to reply to")
        self.seq = seq


def not_member() -> ChatError:
    """The one answer for a conversation the user has no role in, and for one that does not
    exist: whoever is not in a conversation learns nothing of it, not even that it exists."""
    return ChatError("not_member", "you are not a member of this conversation")


def refusal(reply: str, what: str) -> ChatError:
    if reply in ("not_member", "unknown_conversation"):
        return not_member()
    return ChatError(_CODES.get(reply, "internal"), f"{what}: {reply.replace('_', ' ')}")


def direct_id(a: str, b: str) -> str:
    """The one direct conversation of two users, the same whoever writes first."""
    low, high = sorted((a, b))
    return "d-" + hashlib.sha256(f"{low}\n{high}".encode()).hexdigest()[:32]


def conv_channel(conv: str) -> str:
    return conv_key(conv, "chan")


def feed_channel(user: str) -> str:
    return user_key(user, "feed_chan")


def encode_template(event: Event) -> bytes:
    """An event as stored: ``seq`` 0, numbered for each connection when sent; an event whose
    number the script assigns (-1) gets its log's epoch and its own stamp there too."""
    changes: dict[str, Any] = {"seq": 0}
    if getattr(event, "ev", None) == -1:
        changes["epoch"] = changes["stamp"] = ""
    if getattr(event, "fev", None) == -1:
        changes["feed_epoch"] = changes["stamp"] = ""
    return ENCODER.encode(msgspec.structs.replace(event, **changes))


_SEQ_MARKER: Final = b'"seq":-2'
# Where the send script puts a message event's number, epoch, stamp and message, in order.
_EVENT_MARKERS: Final = (b'"ev":-1', b'"epoch":""', b'"stamp":""', _MESSAGE_SLOT_JSON)
_EVENT_FILLS: Final = ((b'"ev":', b""), (b'"epoch":"', b'"'), (b'"stamp":"', b'"'), (b"", b""))


def split_at(blob: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """``blob`` before and after its one ``marker``."""
    head, found, tail = blob.partition(marker)
    if not found:
        raise ValueError(f"no {marker!r} in {blob!r}")
    return head, tail


@functools.lru_cache(maxsize=4096)
def event_pieces(conv: str) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    """A message event of ``conv`` as stored (``encode_template``), cut where the send
    script puts its event number, its log's epoch, its stamp and its message: the script
    joins them (chat/lua/send.lua), the message once, no pattern to search for."""
    event = w.ChatMessageEvent(seq=0, conv=conv, ev=-1, message=_MESSAGE_SLOT)
    rest = encode_template(event)
    pieces = []
    after = b""
    for marker, (before, close) in zip(_EVENT_MARKERS, _EVENT_FILLS, strict=True):
        head, rest = split_at(rest, marker)
        pieces.append(after + head + before)
        after = close
    pieces.append(after + rest)
    one, two, three, four, five = pieces
    return one, two, three, four, five


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reply(raw: Any) -> list[str]:
    return [_s(v) for v in raw]


class ConvMeta(msgspec.Struct, kw_only=True):
    conv: str
    kind: w.ConvKind
    name: str
    last_seq: int
    last_ts: int
    last_ev: int
    last: bytes | None
    count: int
    peers: tuple[str, ...]
    epoch: str = ""
    # Messages up to this seq left Redis for the history store (chat/lua/trim.lua).
    cold_seq: int = 0

    def display_name(self, user: str) -> str:
        if self.kind == "direct":
            return next((p for p in self.peers if p != user), user)
        return self.name


def _log_fields(user_feed: bool, name: str) -> tuple[str, str, str]:
    """The hash that holds a log's counter and epoch, and their fields."""
    if user_feed:
        return user_key(name, "chat"), "fev", "fepoch"
    return conv_key(name, "meta"), "last_ev", "epoch"


def _meta(conv: str, values: Sequence[Any]) -> ConvMeta | None:
    kind, name, last_seq, last_ts, last_ev, last, count, peers, epoch, cold_seq = values
    if kind is None:
        return None
    return ConvMeta(
        conv=conv,
        kind=_s(kind),  # type: ignore[arg-type]
        name=_s(name or b""),
        last_seq=int(last_seq or 0),
        last_ts=int(last_ts or 0),
        last_ev=int(last_ev or 0),
        last=last,
        count=int(count or 0),
        peers=tuple(_s(peers).split("\n")) if peers else (),
        epoch=_s(epoch or b""),
        cold_seq=int(cold_seq or 0),
    )


class ChatStore:
    def __init__(self, client: RedisClient, replay_events: int, feed_events: int) -> None:
        self.redis = client
        self.replay_events = replay_events
        self.feed_events = feed_events
        # On a cluster, how long a send waits for a replica of its shard (0: not at all).
        self.replica_ack_ms = 0
        # Whether ``send`` adds a send to its ``SendCount``: on one Redis (a cluster keeps a
        # user's counter in another slot than the conversation's keys).
        self.counts_sends = not is_cluster(client)
        self._send = client.register_script(scripts.SEND)
        self._create = client.register_script(scripts.CREATE)
        self._ensure_direct = client.register_script(scripts.ENSURE_DIRECT)
        self._direct_blocks = client.register_script(scripts.DIRECT_BLOCKS)
        self._direct_block = client.register_script(scripts.DIRECT_BLOCK)
        self._members = client.register_script(scripts.MEMBERS)
        self._rewrite = client.register_script(scripts.REWRITE)
        self._react = client.register_script(scripts.REACT)
        self._read = client.register_script(scripts.READ)
        self._user = client.register_script(scripts.USER)
        self._rate = client.register_script(scripts.RATE)
        self._rate_hash = client.register_script(scripts.RATE_HASH)
        # The second whose send counters' life this node's send script set (one Redis).
        self._counts_life_set = -1
        self._rotate_epoch = client.register_script(scripts.ROTATE_EPOCH)
        self._trim = client.register_script(scripts.TRIM)
        self._warm = client.register_script(scripts.WARM)
        # Told the conversation after each write that may have logged an event in it (the
        # history archiver, chat.history.archiver).
        self.on_logged: Callable[[str], None] | None = None

    def _logged(self, conv: str) -> None:
        if self.on_logged is not None:
            self.on_logged(conv)

    # --- reads --------------------------------------------------------------------------

    async def meta(self, conv: str) -> ConvMeta | None:
        return _meta(conv, await self.redis.hmget(conv_key(conv, "meta"), _META_FIELDS))

    async def role(self, conv: str, user: str) -> str | None:
        raw = await self.redis.hget(conv_key(conv, "members"), user)
        return None if raw is None else _s(raw)

    async def members(self, conv: str, limit: int = 500) -> dict[str, str]:
        out: dict[str, str] = {}
        async for field, value in self.redis.hscan_iter(conv_key(conv, "members"), count=500):
            out[_s(field)] = _s(value)
            if len(out) >= limit:
                break
        return out

    async def reads(self, conv: str, users: Iterable[str]) -> dict[str, int]:
        """How far each of ``users`` has read ``conv`` (0: nothing yet)."""
        names = list(users)
        if not names:
            return {}
        raw = await self.redis.hmget(conv_key(conv, "reads"), names)
        return {u: int(v) if v is not None else 0 for u, v in zip(names, raw, strict=True)}

    async def join_times(self, conv: str) -> dict[str, int]:
        raw = await self.redis.hgetall(conv_key(conv, "joined"))
        return {_s(u): int(t) for u, t in raw.items()}

    async def roles(self, conv: str, users: Iterable[str]) -> dict[str, str | None]:
        names = list(users)
        if not names:
            return {}
        raw = await self.redis.hmget(conv_key(conv, "members"), names)
        return {u: None if r is None else _s(r) for u, r in zip(names, raw, strict=True)}

    async def user_convs(self, user: str) -> list[str]:
        return [_s(c) for c in await self.redis.hkeys(user_key(user, "convs"))]

    async def user_joins(self, user: str) -> dict[str, int]:
        """The user's conversations, each with the event number they joined at."""
        raw = await self.redis.hgetall(user_key(user, "convs"))
        return {_s(c): int(ev) for c, ev in raw.items()}

    async def metas(self, convs: Sequence[str], user: str) -> list[tuple[ConvMeta, str, int]]:
        """Each conversation's state with the user's role and read position (members only)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for conv in convs:
                pipe.hmget(conv_key(conv, "meta"), _META_FIELDS)
                pipe.hget(conv_key(conv, "members"), user)
                pipe.hget(conv_key(conv, "reads"), user)
            raw = await pipe.execute()
        out = []
        for i, conv in enumerate(convs):
            meta = _meta(conv, raw[3 * i])
            role = raw[3 * i + 1]
            if meta is not None and role is not None:
                out.append((meta, _s(role), int(raw[3 * i + 2] or 0)))
        return out

    async def muted(self, user: str) -> set[str]:
        return {_s(c) for c in await self.redis.smembers(user_key(user, "muted"))}

    async def is_blocked(self, blocker: str, user: str) -> bool:
        return bool(await self.redis.sismember(user_key(blocker, "blocked"), user))

    async def message(self, conv: str, seq: int) -> tuple[bytes, w.ChatMessage] | None:
        raw = await self.redis.hget(conv_key(conv, "msgs"), str(seq))
        if raw is None:
            return None
        blob = raw if isinstance(raw, bytes) else raw.encode()
        return blob, MESSAGE_DECODER.decode(blob)

    async def messages(self, conv: str, seqs: Sequence[int]) -> list[w.ChatMessage]:
        """The messages ``seqs`` that exist, with their thread summaries and reactions."""
        if not seqs:
            return []
        names = [str(s) for s in seqs]
        thread_fields = [f"{s}:{k}" for s in seqs for k in ("n", "last")]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(conv_key(conv, "msgs"), names)
            pipe.hmget(conv_key(conv, "reactions"), names)
            pipe.hmget(conv_key(conv, "threads"), thread_fields)
            msgs, reactions, threads = await pipe.execute()
        out = []
        for i, raw in enumerate(msgs):
            if raw is None:
                continue
            msg = MESSAGE_DECODER.decode(raw)
            if reactions[i] is not None:
                msg.reactions = _REACTIONS_DECODER.decode(reactions[i])
            count, last = threads[2 * i], threads[2 * i + 1]
            if count is not None:
                msg.thread = w.ThreadSummary(count=int(count), last_seq=int(last or 0))
            out.append(msg)
        return out

    async def thread(self, conv: str, root: int, after: int, limit: int) -> list[int]:
        raw = await self.redis.zrangebyscore(
            conv_key(conv, f"thread:{root}"), f"({after}", "+inf", start=0, num=limit
        )
        return [int(_s(s)) for s in raw]

    async def edits(self, conv: str, seq: int) -> list[w.ChatMessage]:
        raw = await self.redis.lrange(conv_key(conv, f"edits:{seq}"), 0, -1)
        return [MESSAGE_DECODER.decode(r) for r in raw]

    async def events_after(self, key: str, after: int, count: int) -> list[tuple[int, bytes]]:
        """Logged events numbered above ``after`` (at most ``count``), in order."""
        raw: Any = await self.redis.xrange(key, f"{after + 1}-0", "+", count=count)
        return [(int(_s(i).split("-", 1)[0]), fields[b"e"]) for i, fields in raw]

    async def logs_after(
        self, after: dict[str, int], count: int
    ) -> dict[str, list[tuple[bytes, dict[bytes, bytes]]]]:
        """For each conversation's log (its key -> the event to read after), the logged
        entries numbered above it (at most ``count``), as XRANGE gives them; logs with none
        are left out. On one Redis one XREAD for them all (a pipeline of an XRANGE each cost
        the client as much again, in redis-py's work per command); on a cluster a pipeline,
        its commands sent to each log's shard."""
        if not after:
            return {}
        if is_cluster(self.redis):
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, ev in after.items():
                    pipe.xrange(key, f"{ev + 1}-0", "+", count=count)
                found: list[Any] = await pipe.execute()
            return {key: entries for key, entries in zip(after, found, strict=True) if entries}
        # XREAD reads after the ID given: the last one event ``ev`` can have.
        raw: Any = await self.redis.xread(
            {key: f"{ev}-{_LAST_ID_SEQ}" for key, ev in after.items()}, count=count
        )
        return {_s(key): entries for key, entries in raw or () if entries}

    async def first_event(self, key: str) -> int | None:
        raw: Any = await self.redis.xrange(key, "-", "+", count=1)
        return int(_s(raw[0][0]).split("-", 1)[0]) if raw else None

    async def feed_head(self, user: str) -> int:
        return int(await self.redis.hget(user_key(user, "chat"), "fev") or 0)

    async def conv_head(self, conv: str) -> int:
        return int(await self.redis.hget(conv_key(conv, "meta"), "last_ev") or 0)

    async def log_state(self, user_feed: bool, name: str) -> LogState:
        """A conversation's (or with ``user_feed``, a user's feed's) head and epoch."""
        hash_key, counter, field = _log_fields(user_feed, name)
        head, epoch = await self.redis.hmget(hash_key, [counter, field])
        return LogState(int(head or 0), _s(epoch or b""))

    async def log_state_at(
        self, user_feed: bool, name: str, stream: str, ev: int
    ) -> tuple[LogState, tuple[int, bytes] | None]:
        """``log_state`` and, in the same round trip, the event numbered ``ev`` (None when the
        log holds nothing there)."""
        hash_key, counter, field = _log_fields(user_feed, name)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(hash_key, [counter, field])
            pipe.xrange(stream, str(ev), str(ev), count=1)
            (head, epoch), raw = await pipe.execute()
        event = (int(_s(raw[0][0]).split("-", 1)[0]), raw[0][1][b"e"]) if raw else None
        return LogState(int(head or 0), _s(epoch or b"")), event

    async def rotate_epoch(self, user_feed: bool, name: str, known: str) -> str:
        """Replace the log's epoch ``known`` by a new one (see chat.scripts.ROTATE_EPOCH)."""
        hash_key, counter, field = _log_fields(user_feed, name)
        return _s(await self._rotate_epoch(keys=[hash_key], args=[field, known, counter]))

    # --- writes -------------------------------------------------------------------------

    async def add_sends(self, sends: Sequence[tuple[str, int, int]]) -> list[int]:
        """Add (user, second, sends) to the users' send counters; replies each new total.

        One script call for them all on one Redis, one per slot on a cluster: a node that
        reports every sender's counts each ``send_limit.RECONCILE_S`` would otherwise make
        more script calls for them than for the sends themselves."""
        if not sends:
            return []
        if not is_cluster(self.redis):
            # On the hot path's own connection (run_script): no pipeline, no SCRIPT EXISTS.
            seconds: dict[int, int] = {}
            args: list[Any] = []
            for user, second, n in sends:
                args += (seconds.setdefault(second, len(seconds) + 1), user, n)
            keys = [send_counts_key(second) for second in seconds]
            reply = await run_script(self.redis, self._rate_hash, keys, [*args, SEND_COUNTER_MS])
            return [int(total) for total in reply]
        groups: dict[int, list[tuple[int, str, int]]] = {}
        for i, (user, second, n) in enumerate(sends):
            key = send_counter_key(user, second)
            groups.setdefault(key_slot(key.encode()), []).append((i, key, n))
        async with self.redis.pipeline(transaction=False) as pipe:
            for group in groups.values():
                queue_script(pipe, self._rate, [k for _, k, _ in group], [n for _, _, n in group])
            replies = await execute(pipe)
        totals = [0] * len(sends)
        for group, reply in zip(groups.values(), replies, strict=True):
            for (i, _, _), total in zip(group, reply, strict=True):
                totals[i] = int(total)
        return totals

    async def send(
        self,
        conv: str,
        msg: w.ChatMessage,
        reply_to: int = 0,
        blocks: bool = True,
        count: SendCount | None = None,
    ) -> tuple[str, int, int]:
        """Store and publish ``msg`` (seq -2 marks where its number goes), a reply to message
        ``reply_to`` (0: none) in its thread; with ``blocks``, refused (``blocked``) in a
        direct conversation whose other user blocked the sender. With ``count`` (and
        ``counts_sends``), the script adds the send to the sender's counter first, once
        (``count.total`` is set when it did), whatever the send's outcome.

        Replies (status, seq, ev): status ``ok``, or ``duplicate`` with the first seq; raises
        ``unknown_message`` with the seq Redis lacks in ``MissingMessage``."""
        if reply_to:
            # Where the thread's root goes, once the script has found it.
            msg = msgspec.structs.replace(msg, reply_to=REPLY_TO_MARKER)
        msg_head, msg_tail = split_at(ENCODER.encode(msg), _SEQ_MARKER)
        msg_head += b'"seq":'
        args: list[Any] = [
            msg.sender,
            msg.client_id or "",
            msg.ts,
            msg_head,
            msg_tail,
            *event_pieces(conv),
            self.replay_events,
            reply_to,
            conv_key(conv, ""),
            1 if blocks else 0,
            SEND_COUNTER_MS,
        ]
        keys = [conv_key(conv, "meta")]
        if count is not None and not self.counts_sends:
            count = None
        for _ in range(2):
            counted = count is not None and count.total is None
            life = count is not None and counted and count.second != self._counts_life_set
            args[-1] = SEND_COUNTER_MS if life else 0
            raw = await run_replicated(
                self.redis,
                self._send,
                [*keys, count.key] if count is not None and counted else keys,
                args,
                self.replica_ack_ms,
            )
            if count is not None and counted:
                if life:
                    self._counts_life_set = max(self._counts_life_set, count.second)
                count.total, raw = int(raw[0]), raw[1:]
            out = _reply(raw)
            if out[0] != "blocks_unknown":
                break
            await self.make_direct_blocks(conv)
        if out[0] == "ok":
            self._logged(conv)
            return "ok", int(out[1]), int(out[2])
        if out[0] == "duplicate":
            return "duplicate", int(out[1]), 0
        if out[0] == "silenced":
            raise ChatError("silenced", "an admin has stopped you from sending here for now")
        if out[0] == "blocked":
            raise ChatError("blocked", "this user does not accept your messages")
        if out[0] == "unknown_message" and len(out) > 1:
            raise MissingMessage(int(out[1]))
        raise refusal(out[0], "cannot send")

    async def make_direct_blocks(self, conv: str) -> None:
        """Make the direct conversation's copy of its users' blocks (chat/lua/direct_blocks.lua)
        from their block lists, where it was never made (a conversation made before the copy
        existed, or just now)."""
        raw = await self.redis.hget(conv_key(conv, "meta"), "peers")
        peers = _s(raw).split("\n") if raw else []
        if len(peers) != 2:
            return
        a, b = peers
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sismember(user_key(a, "blocked"), b)
            pipe.sismember(user_key(b, "blocked"), a)
            a_blocks, b_blocks = await pipe.execute()
        blockers = [u for u, yes in ((a, a_blocks), (b, b_blocks)) if yes]
        keys = [conv_key(conv, "meta"), conv_key(conv, "blocks")]
        await self._direct_blocks(keys=keys, args=blockers)

    async def set_direct_block(self, blocker: str, user: str, blocked: bool) -> None:
        """Write ``blocker``'s block of ``user`` (or its end) into the copy of their direct
        conversation, whether or not it exists yet (see chat.service.ChatService.block)."""
        conv = direct_id(blocker, user)
        keys = [conv_key(conv, "meta"), conv_key(conv, "blocks")]
        await self._direct_block(keys=keys, args=[blocker, 1 if blocked else 0])

    async def create(
        self, conv: str, kind: str, name: str, creator: str, members: Sequence[str], ts: int
    ) -> int:
        msg = system_message(ts, creator, w.SystemInfo(event="created", by=creator, name=name))
        event = w.ChatMessageEvent(seq=0, conv=conv, ev=-1, message=msg)
        first_role = "admin" if kind == "channel" else "member"
        k = conv_key
        out = _reply(
            await self._create(
                keys=[
                    k(conv, "meta"),
                    k(conv, "members"),
                    k(conv, "msgs"),
                    k(conv, "events"),
                    k(conv, "joined"),
                ],
                args=[
                    kind,
                    name,
                    creator,
                    ts,
                    conv_channel(conv),
                    self.replay_events,
                    ENCODER.encode(msg),
                    encode_template(event),
                    first_role,
                    *members,
                ],
            )
        )
        if out[0] != "ok":
            raise ChatError("conflict", "conversation id already taken; retry")
        self._logged(conv)
        return int(out[1])

    async def ensure_direct(self, conv: str, a: str, b: str, ts: int) -> bool:
        """Create the direct conversation if needed; True while users' lists lack it."""
        keys = [conv_key(conv, "meta"), conv_key(conv, "members")]
        return bool(await self._ensure_direct(keys=keys, args=[a, b, ts]))

    async def mark_indexed(self, conv: str) -> None:
        await self.redis.hset(conv_key(conv, "meta"), "indexed", 1)

    async def change_members(
        self,
        conv: str,
        op: str,
        actor: str,
        ts: int,
        args: Sequence[str],
        system: w.SystemInfo | None,
        max_members: int,
    ) -> int:
        """One membership or settings change (chat.scripts.MEMBERS); replies its event."""
        msg_tpl, ev_tpl = b"", b""
        if system is not None:
            msg = system_message(ts, actor, system)
            msg_tpl = ENCODER.encode(msg)
            ev_tpl = encode_template(w.ChatMessageEvent(seq=0, conv=conv, ev=-1, message=msg))
        k = conv_key
        out = _reply(
            await self._members(
                keys=[
                    k(conv, "meta"),
                    k(conv, "members"),
                    k(conv, "msgs"),
                    k(conv, "events"),
                    k(conv, "silenced"),
                    k(conv, "joined"),
                    k(conv, "reads"),
                ],
                args=[
                    op,
                    actor,
                    ts,
                    conv_channel(conv),
                    self.replay_events,
                    msg_tpl,
                    ev_tpl,
                    max_members,
                    *args,
                ],
            )
        )
        if out[0] != "ok":
            raise refusal(out[0], f"cannot {op}")
        self._logged(conv)
        return int(out[1])

    async def rewrite(
        self,
        conv: str,
        seq: int,
        old: bytes,
        new: w.ChatMessage,
        event: Event,
        keep_history: bool,
    ) -> int:
        k = conv_key
        keys = [k(conv, "meta"), k(conv, "msgs"), k(conv, "events"), k(conv, f"edits:{seq}")]
        args: list[Any] = [
            seq,
            old,
            ENCODER.encode(new),
            encode_template(event),
            conv_channel(conv),
            self.replay_events,
            1 if keep_history else 0,
        ]
        out = _reply(await self._rewrite(keys=keys, args=args))
        if out[0] != "ok":
            raise refusal(out[0], "message changed meanwhile")
        self._logged(conv)
        return int(out[1])

    async def react(
        self, conv: str, seq: int, emoji: str, user: str, add: bool, max_kinds: int
    ) -> int:
        """Add or remove one reaction; replies its event, or 0 when nothing changed."""
        event = w.ChatReaction(
            seq=0, conv=conv, ev=-1, msg_seq=seq, emoji=emoji, user=user, added=add, users=[]
        )
        k = conv_key
        out = _reply(
            await self._react(
                keys=[
                    k(conv, "meta"),
                    k(conv, "members"),
                    k(conv, "msgs"),
                    k(conv, "reactions"),
                    k(conv, "events"),
                ],
                args=[
                    user,
                    seq,
                    emoji,
                    1 if add else 0,
                    encode_template(event),
                    conv_channel(conv),
                    self.replay_events,
                    max_kinds,
                ],
            )
        )
        if out[0] == "too_many":
            raise ChatError("bad_message_content", f"at most {max_kinds} kinds of reaction")
        if out[0] != "ok":
            raise refusal(out[0], "cannot react")
        self._logged(conv)
        return int(out[1])

    async def read(self, conv: str, user: str, seq: int) -> tuple[int, int, str, bool]:
        """Move the user's read position; replies (ev or 0, read seq, kind, moved)."""
        event = w.ChatReadEvent(seq=0, conv=conv, ev=-1, user=user, read_seq=-2)
        k = conv_key
        out = _reply(
            await self._read(
                keys=[k(conv, "meta"), k(conv, "members"), k(conv, "reads"), k(conv, "events")],
                args=[user, seq, encode_template(event), conv_channel(conv), self.replay_events],
            )
        )
        if out[0] != "ok":
            raise refusal(out[0], "cannot mark read")
        self._logged(conv)
        return int(out[1]), int(out[2]), out[3], out[4] == "1"

    async def user_change(self, user: str, op: str, arg: str, event: Event, ev: int = 0) -> int:
        """A change to the user's list or settings, with its feed event; 0 if already so.

        ``ev``: for a join, the conversation event the user joined at."""
        keys = [
            user_key(user, "chat"),
            user_key(user, "convs"),
            user_key(user, "muted"),
            user_key(user, "blocked"),
            user_key(user, "feed"),
        ]
        args: list[Any] = [
            op,
            arg,
            encode_template(event),
            feed_channel(user),
            self.feed_events,
            ev,
        ]
        return int(await self._user(keys=keys, args=args))

    async def report(self, conv: str, report: w.Report) -> None:
        await self.redis.xadd(
            conv_key(conv, "reports"), {"r": ENCODER.encode(report)}, maxlen=10000
        )

    async def reports(self, conv: str, limit: int) -> list[w.Report]:
        raw: Any = await self.redis.xrevrange(conv_key(conv, "reports"), count=limit)
        return [msgspec.json.decode(fields[b"r"], type=w.Report) for _, fields in raw]

    # --- the hot window (chat.history.archiver) ---------------------------------------------

    async def window_state(self, conv: str) -> tuple[int, int, int, int, str]:
        """(last_ev, last_seq, cold_seq, trim_ev, epoch) of the conversation: ``trim_ev``
        the last event the log was trimmed to."""
        raw = await self.redis.hmget(
            conv_key(conv, "meta"), ("last_ev", "last_seq", "cold_seq", "trim_ev", "epoch")
        )
        last_ev, last_seq, cold, trimmed, epoch = raw
        return (
            int(last_ev or 0),
            int(last_seq or 0),
            int(cold or 0),
            int(trimmed or 0),
            _s(epoch or b""),
        )

    async def trim(
        self, conv: str, epoch: str, ev: int, seq: int, stored_ev: int
    ) -> tuple[int, int] | None:
        """Let events up to ``ev`` and messages up to ``seq`` leave Redis (the history store
        has them up to ``stored_ev`` in ``epoch``; chat/lua/trim.lua); replies (events
        left, cold_seq), None when the log is of another epoch."""
        k = conv_key
        out = await self._trim(
            keys=[
                k(conv, "meta"),
                k(conv, "msgs"),
                k(conv, "events"),
                k(conv, "reactions"),
                k(conv, "threads"),
                k(conv, "cids"),
                k(conv, "warm"),
            ],
            args=[epoch, ev, seq, stored_ev, k(conv, "")],
        )
        if int(out[0]) < 0:
            return None
        return int(out[0]), int(out[1])

    async def warm(self, conv: str, msg: w.ChatMessage) -> bool:
        """Copy a message that left the window back into Redis for a write to it."""
        body = msgspec.structs.replace(msg, thread=None, reactions=None)
        reactions = ENCODER.encode(msg.reactions) if msg.reactions else b""
        k = conv_key
        out = await self._warm(
            keys=[k(conv, "meta"), k(conv, "msgs"), k(conv, "reactions"), k(conv, "warm")],
            args=[msg.seq, ENCODER.encode(body), reactions],
        )
        return bool(out)

    async def add_shared(self, media_key: str, conv: str) -> None:
        await self.redis.sadd(media_key, conv)


def system_message(ts: int, by: str, info: w.SystemInfo) -> w.ChatMessage:
    return w.ChatMessage(seq=-2, ts=ts, sender=by, kind="system", system=info)
