"""Chat requests: checks, then one store write each, then the feeds of the users it touches."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from calls.record import CallRecord, GroupCallRecord
from chat import send_limit, window
from chat import wire as w
from chat.config import ChatConfig
from chat.history.archiver import Archiver
from chat.history.events import page_range
from chat.history.store import HistoryStore
from chat.resume import Position
from chat.router import Reader, Router, feed_id
from chat.search import search
from chat.send_limit import SendLimiter
from chat.store import (
    MESSAGE_DECODER,
    ChatError,
    ChatStore,
    ConvMeta,
    MissingMessage,
    SendCount,
    conv_channel,
    direct_id,
    encode_template,
    not_member,
    system_message,
)
from media_store.meta import visible_meta
from signaling.keys import media_key
from signaling.redis_client import UNREACHABLE_ERRORS, RedisClient
from signaling.wire import Ok, Reply, Request

if TYPE_CHECKING:
    from signaling.broker import Broker

log = logging.getLogger("huddle.chat")
Handler = Callable[[Reader, Any], Awaitable[Reply]]
_MEDIA_KINDS = {"image": ("image/",), "voice": ("audio/",), "file": ("",)}
_CALL_EVENTS: dict[str, w.SystemEvent] = {
    "started": "call_started",
    "ended": "call_ended",
    "missed": "call_missed",
}
# Compare-and-set retries of an edit or recall racing other changes to the same message.
REWRITE_TRIES = 5
# Direct conversations whose users a node keeps in memory (forgotten all at once beyond).
DIRECT_PEERS_KEPT = 10_000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ok() -> Ok:
    return Ok(re="")


class ChatService:
    def __init__(
        self,
        settings: ChatConfig,
        client: RedisClient,
        broker: Broker,
        spawn: Callable[[Any], None],
    ) -> None:
        self.settings = settings
        self.redis = client
        self.broker = broker
        self.store = ChatStore(client, settings.chat_replay_events, settings.chat_feed_events)
        self.store.replica_ack_ms = settings.chat_replica_ack_ms
        self.router = Router(self.store, broker, spawn, settings.chat_sync_max_events)
        self.filters = [re.compile(p, re.IGNORECASE) for p in settings.chat_word_filter]
        self.spawn = spawn
        self.limiter = SendLimiter(settings.chat_send_per_s)
        self._reconciling = False
        self._forgotten = 0  # the second the limiter last forgot what came before
        # The history store on disk, set by the node (huddle.app): messages below each
        # conversation's hot window are read from it (chat.window).
        self.history_store: HistoryStore | None = None
        # Its archiver: a search first archives what the store lacks (chat.search).
        self.archiver: Archiver | None = None
        # The two users of each direct conversation this node sent in, which never change
        # (members.lua refuses any change to a direct conversation's members): a send there
        # with ``to`` does not make sure it exists.
        self._direct_peers: dict[str, tuple[str, ...]] = {}
        self.handlers: dict[str, Handler] = {
            "chat.create": self.create,
            "chat.send": self.send,
            "chat.edit": self.edit,
            "chat.recall": self.recall,
            "chat.react": self.react,
            "chat.read": self.read,
            "chat.typing": self.typing,
            "chat.history": self.history,
            "chat.thread": self.thread,
            "chat.edits": self.edits,
            "chat.list": self.conv_list,
            "chat.info": self.info,
            "chat.sync": self.sync,
            "chat.add": self.add,
            "chat.remove": self.remove,
            "chat.leave": self.leave,
            "chat.rename": self.rename,
            "chat.role": self.role,
            "chat.follow": self.follow,
            "chat.unfollow": self.unfollow,
            "chat.silence": self.silence,
            "chat.mute": self.mute,
            "chat.block": self.block,
            "chat.report": self.report,
            "chat.reports": self.reports,
            "chat.search": self.search,
        }
        assert set(self.handlers) == {c.__struct_config__.tag for c in w.CHAT_REQUESTS}

    async def handle(self, reader: Reader, request: Request) -> Reply:
        tag: str = request.__struct_config__.tag  # type: ignore[assignment]
        reply = await self.handlers[tag](reader, request)
        reply.re = request.id
        return reply

    # --- checks -------------------------------------------------------------------------

    async def _member(self, conv: str, user: str) -> tuple[ConvMeta, str]:
        """The conversation and the user's role in it. Nothing else about a conversation is
        looked at before this: an outsider gets the same answer whether it exists or not."""
        rows = await self.store.metas([conv], user)
        if not rows:
            raise not_member()
        meta, role, _ = rows[0]
        return meta, role

    def _check_text(self, text: str | None) -> None:
        if text is None:
            return
        if len(text) > self.settings.chat_max_text_chars:
            raise ChatError(
                "message_too_large",
                f"text is {len(text)} characters; at most {self.settings.chat_max_text_chars}",
            )
        for pattern in self.filters:
            if pattern.search(text):
                raise ChatError("content_filtered", "the message contains filtered words")

    def _summary(
        self, meta: ConvMeta, user: str, role: str, read: int = 0, muted: bool = False
    ) -> w.ConvSummary:
        return w.ConvSummary(
            conv=meta.conv,
            kind=meta.kind,
            name=meta.display_name(user),
            role=role,  # type: ignore[arg-type]
            members=meta.count,
            ev=meta.last_ev,
            epoch=meta.epoch or None,
            last_seq=meta.last_seq,
            last_ts=meta.last_ts,
            last=MESSAGE_DECODER.decode(meta.last) if meta.last else None,
            read_seq=read,
            unread=max(0, meta.last_seq - read),
            muted=muted,
            peer=meta.display_name(user) if meta.kind == "direct" else None,
        )

    async def _joined(self, conv: str, users: list[str], ev: int) -> None:
        """Put ``conv`` on each user's list, with the feed event their devices follow."""
        meta = await self.store.meta(conv)
        if meta is None:
            return
        roles = await self.store.roles(conv, users)
        reads = await self.store.reads(conv, users)
        for user in users:
            role = roles.get(user)
            if role is None:
                continue
            info = self._summary(meta, user, role, reads.get(user, 0))
            event = w.ChatJoined(
                seq=0, fev=-1, conv=conv, ev=ev, epoch=meta.epoch or None, info=info
            )
            await self.store.user_change(user, "join", conv, event, ev)

    async def _left(self, conv: str, users: list[str], reason: w.LeftReason) -> None:
        for user in users:
            event = w.ChatLeft(seq=0, fev=-1, conv=conv, reason=reason)
            await self.store.user_change(user, "leave", conv, event)

    # --- conversations ------------------------------------------------------------------

    async def create(self, reader: Reader, req: w.ChatCreate) -> Reply:
        me = reader.identity
        members = [u for u in dict.fromkeys(req.members) if u != me]
        if req.kind == "group" and len(members) + 1 > self.settings.chat_max_members:
            raise ChatError(
                "conversation_full", f"at most {self.settings.chat_max_members} members"
            )
        conv = ("g-" if req.kind == "group" else "c-") + secrets.token_urlsafe(12)
        ts = _now_ms()
        ev = await self.store.create(conv, req.kind, req.name, me, members, ts)
        await self._joined(conv, [me, *members], ev)
        await self.store.mark_indexed(conv)
        meta, role = await self._member(conv, me)
        return w.ChatCreateOk(re="", conv=self._summary(meta, me, role))

    async def conv_list(self, reader: Reader, req: w.ChatList) -> Reply:
        me = reader.identity
        convs = await self.store.user_convs(me)
        rows = await self.store.metas(convs, me)
        muted = await self.store.muted(me)
        out = [self._summary(m, me, role, read, m.conv in muted) for m, role, read in rows]
        out.sort(key=lambda s: (s.last_ts, s.conv), reverse=True)
        if req.before_ts is not None:
            after = (req.before_ts, req.before_conv or "")
            out = [s for s in out if (s.last_ts, s.conv) < after]
        return w.ChatListOk(re="", conversations=out[: req.limit])

    async def info(self, reader: Reader, req: w.ChatInfo) -> Reply:
        me = reader.identity
        rows = await self.store.metas([req.conv], me)
        if not rows:
            raise not_member()
        [(meta, role, read)] = rows
        muted = req.conv in await self.store.muted(me)
        members = await self.store.members(req.conv)
        # Read positions tell a new device who has read what ("read by"); a channel's
        # followers are not shown each other's.
        reads = await self.store.reads(req.conv, members) if meta.kind != "channel" else {}
        return w.ChatInfoOk(
            re="",
            conv=self._summary(meta, me, role, read, muted),
            members=[
                w.MemberInfo(user=u, role=r, read=reads.get(u))  # type: ignore[arg-type]
                for u, r in members.items()
            ],
        )

    async def add(self, reader: Reader, req: w.ChatAdd) -> Reply:
        meta, role = await self._member(req.conv, reader.identity)
        if meta.kind != "group" or role not in ("owner", "admin"):
            raise ChatError("forbidden", "only the owner and admins of a group add members")
        roles = await self.store.roles(req.conv, dict.fromkeys(req.users))
        new = [u for u, r in roles.items() if r is None]
        if not new:
            return _ok()
        info = w.SystemInfo(event="member_joined", by=reader.identity, users=new)
        ev = await self.store.change_members(
            req.conv, "add", reader.identity, _now_ms(), new, info, self.settings.chat_max_members
        )
        await self._joined(req.conv, new, ev)
        return _ok()

    async def remove(self, reader: Reader, req: w.ChatRemove) -> Reply:
        await self._member(req.conv, reader.identity)
        users = list(dict.fromkeys(req.users))
        roles = await self.store.roles(req.conv, users)
        missing = [u for u, r in roles.items() if r is None]
        if missing:
            raise ChatError("not_member", f"not members: {', '.join(missing[:5])}")
        info = w.SystemInfo(event="member_removed", by=reader.identity, users=users)
        await self._change(reader, req.conv, "remove", users, info)
        await self._left(req.conv, users, "removed")
        return _ok()

    async def leave(self, reader: Reader, req: w.ChatLeave) -> Reply:
        me = reader.identity
        _, role = await self._member(req.conv, me)
        if role == "follower":
            return await self.unfollow(reader, w.ChatUnfollow(id=req.id, conv=req.conv))
        successor = ""
        if role == "owner":
            # Admins first, then whoever has been a member longest.
            members = await self.store.members(req.conv, limit=100_000)
            joined = await self.store.join_times(req.conv)
            others = [
                (r != "admin", joined.get(u, 0), u)
                for u, r in members.items()
                if u != me and r != "follower"
            ]
            successor = min(others)[2] if others else ""
        info = w.SystemInfo(event="member_left", by=me)
        if successor:
            info.users, info.role = [successor], "owner"
        await self._change(reader, req.conv, "leave", [successor], info)
        await self._left(req.conv, [me], "left")
        return _ok()

    async def rename(self, reader: Reader, req: w.ChatRename) -> Reply:
        info = w.SystemInfo(event="renamed", by=reader.identity, name=req.name)
        await self._change(reader, req.conv, "rename", [req.name], info)
        return _ok()

    async def role(self, reader: Reader, req: w.ChatRole) -> Reply:
        info = w.SystemInfo(
            event="role_changed", by=reader.identity, users=[req.user], role=req.role
        )
        await self._change_user(reader, req.conv, "role", req.user, [req.role], info)
        return _ok()

    async def silence(self, reader: Reader, req: w.ChatSilence) -> Reply:
        until = _now_ms() + req.seconds * 1000 if req.seconds else 0
        await self._change_user(reader, req.conv, "silence", req.user, [str(until)], None)
        return _ok()

    async def _change_user(
        self,
        reader: Reader,
        conv: str,
        op: str,
        user: str,
        args: list[str],
        info: w.SystemInfo | None,
    ) -> int:
        """A change to one member: once the sender is known to be a member, ``not_member``
        from the script is about ``user``."""
        await self._member(conv, reader.identity)
        try:
            return await self._change(reader, conv, op, [user, *args], info)
        except ChatError as exc:
            if exc.code == "not_member":
                raise ChatError("not_member", f"{user!r} is not a member") from None
            raise

    async def follow(self, reader: Reader, req: w.ChatFollow) -> Reply:
        me = reader.identity
        if await self.store.role(req.conv, me) is None:
            meta = await self.store.meta(req.conv)
            if meta is None or meta.kind != "channel":
                # Groups and direct conversations are not to be found by their ids.
                raise ChatError("unknown_conversation", "no channel has this id")
        ev = await self._change(reader, req.conv, "follow", [], None)
        await self._joined(req.conv, [me], ev + 1)
        meta, role = await self._member(req.conv, me)
        read = (await self.store.reads(req.conv, [me])).get(me, 0)
        return w.ChatCreateOk(re="", conv=self._summary(meta, me, role, read))

    async def unfollow(self, reader: Reader, req: w.ChatUnfollow) -> Reply:
        await self._change(reader, req.conv, "unfollow", [], None)
        await self._left(req.conv, [reader.identity], "unfollowed")
        return _ok()

    async def _change(
        self, reader: Reader, conv: str, op: str, args: list[str], info: w.SystemInfo | None
    ) -> int:
        return await self.store.change_members(
            conv, op, reader.identity, _now_ms(), args, info, self.settings.chat_max_members
        )

    async def mute(self, reader: Reader, req: w.ChatMute) -> Reply:
        me = reader.identity
        await self._member(req.conv, me)
        event = w.ChatMuted(seq=0, fev=-1, conv=req.conv, muted=req.muted)
        op = "mute" if req.muted else "unmute"
        await self.store.user_change(me, op, req.conv, event)
        return _ok()

    async def block(self, reader: Reader, req: w.ChatBlock) -> Reply:
        me = reader.identity
        if req.user == me:
            raise ChatError("bad_message_content", "you cannot block yourself")
        event = w.ChatBlocked(seq=0, fev=-1, user=req.user, blocked=req.blocked)
        # The user's list (their slot) is what their devices see; the copy in the two users'
        # direct conversation (its slot) is what a send there reads. Two slots, two writes,
        # in this order: the copy holds every block the list holds at every moment, so a
        # block shown is always in force, and a failure between the writes leaves at most
        # a block in force that the list no longer shows, which the next request (block or
        # unblock, written to the copy whatever the list holds) sets right.
        if req.blocked:
            await self.store.set_direct_block(me, req.user, True)
            await self.store.user_change(me, "block", req.user, event)
        else:
            await self.store.user_change(me, "unblock", req.user, event)
            await self.store.set_direct_block(me, req.user, False)
        return _ok()

    # --- messages -----------------------------------------------------------------------

    async def send(self, reader: Reader, req: w.ChatSend) -> Reply:
        me = reader.identity
        if (req.conv is None) == (req.to is None):
            raise ChatError("bad_message_content", "give exactly one of `conv` and `to`")
        self._check_content(req)
        ts = _now_ms()
        second = ts // 1000
        if not self.limiter.allow(me, second):
            raise ChatError("rate_limited", "too many messages; slow down")
        if not self.store.counts_sends:
            self._reconcile_soon()
            return await self._send(reader, req, ts, None)
        # On one Redis the send script adds the send to the counter (chat.send_limit).
        count = SendCount(second)
        self.limiter.sending(me, second)
        try:
            return await self._send(reader, req, ts, count)
        finally:
            self.limiter.sent(me, second, count.total)
            if count.total is None:
                self._reconcile_soon()
            elif second > self._forgotten:
                # What the reconcile does after each report, here once a second.
                self._forgotten = second
                self.limiter.forget_before(second)

    async def _send(
        self, reader: Reader, req: w.ChatSend, ts: int, count: SendCount | None
    ) -> Reply:
        me = reader.identity
        if req.to is not None:
            if req.to == me:
                raise ChatError("bad_message_content", "a direct message needs another user")
            conv = direct_id(me, req.to)
        else:
            conv = req.conv or ""
        # The send script checks membership, blocks and the message replied to, in the
        # order docs/protocol.md gives; a file is checked before them (its record is in
        # another slot), except where that order puts membership and blocks first.
        media = None
        if req.media is not None:
            peer = req.to or ""
            if req.to is None and (conv.startswith("d-") or req.reply_to is not None):
                meta, _ = await self._member(conv, me)
                peer = meta.display_name(me) if meta.kind == "direct" else ""
            if peer and peer != me and await self.store.is_blocked(peer, me):
                raise ChatError("blocked", "this user does not accept your messages")
            media = await self._media(req, me)
        if req.to is not None and me not in self._direct_peers.get(conv, ()):
            # Everything that can refuse the message is checked before a direct conversation
            # is made for it; once made, the send script checks the blocks.
            if req.media is None and await self.store.is_blocked(req.to, me):
                raise ChatError("blocked", "this user does not accept your messages")
            if req.reply_to is not None and await self._stored(conv, req.reply_to) is None:
                raise ChatError("unknown_message", f"no message {req.reply_to} to reply to")
            await self._direct(me, req.to, ts)
            self._remember_direct(conv, (me, req.to))
        msg = w.ChatMessage(
            seq=-2,
            ts=ts,
            sender=me,
            kind=req.kind,
            client_id=req.client_id,
            text=req.text,
            mentions=req.mentions or None,
            media=media,
            sticker=req.sticker,
        )
        try:
            status, seq = await self._store_message(conv, msg, req.reply_to or 0, count)
        except ChatError as exc:
            if exc.code != "not_member" or self._direct_peers.pop(conv, None) is None:
                raise
            if req.to is None:
                raise
            # A direct conversation this node knew, gone from Redis (its keys lost): made anew.
            await self._direct(me, req.to, ts)
            status, seq = await self._store_message(conv, msg, req.reply_to or 0, count)
        if status == "duplicate":
            first = await self.store.message(conv, seq)
            ts = first[1].ts if first else ts
        elif media is not None:
            await self.store.add_shared(media_key(media.id, "shared"), conv)
        return w.ChatSendOk(re="", conv=conv, seq=seq, ts=ts, duplicate=status == "duplicate")

    async def _store_message(
        self, conv: str, msg: w.ChatMessage, reply_to: int, count: SendCount | None
    ) -> tuple[str, int]:
        """``store.send``, once more after copying back a message of the thread replied to
        that left Redis's hot window."""
        for _ in range(3):
            try:
                status, seq, _ = await self.store.send(conv, msg, reply_to, count=count)
                return status, seq
            except MissingMessage as exc:
                if not await self._warm(conv, exc.seq):
                    raise ChatError(
                        "unknown_message", f"no message {reply_to} to reply to"
                    ) from None
        raise ChatError("conflict", "the thread keeps changing; retry")

    def _reconcile_soon(self) -> None:
        if not self._reconciling:
            self._reconciling = True
            self.spawn(self._reconcile_sends())

    async def _reconcile_sends(self) -> None:
        """Report this node's sends to the users' counters, and learn the other nodes'."""
        try:
            while True:
                await asyncio.sleep(send_limit.RECONCILE_S)
                sends = self.limiter.unreported()
                if not sends:
                    return
                totals = await self.store.add_sends(sends)
                for (user, second, _), total in zip(sends, totals, strict=True):
                    self.limiter.learn(user, second, total)
                self.limiter.forget_before(_now_ms() // 1000)
        except UNREACHABLE_ERRORS as exc:
            # What was not reported stays uncounted by the other nodes: the limit holds per
            # node meanwhile.
            log.warning("send counts not reported", extra={"error": str(exc)})
        finally:
            self._reconciling = False

    def _check_content(self, req: w.ChatSend) -> None:
        needs = {"text": req.text, "sticker": req.sticker}.get(req.kind, req.media)
        if not needs:
            field = (
                "text" if req.kind == "text" else "sticker" if req.kind == "sticker" else "media"
            )
            raise ChatError("bad_message_content", f"a {req.kind} message needs `{field}`")
        if req.kind == "text" and not (req.text or "").strip():
            raise ChatError("bad_message_content", "text is empty")
        self._check_text(req.text)

    def _remember_direct(self, conv: str, peers: tuple[str, ...]) -> None:
        if len(self._direct_peers) >= DIRECT_PEERS_KEPT:
            self._direct_peers.clear()
        self._direct_peers[conv] = peers

    async def _direct(self, me: str, peer: str, ts: int) -> str:
        conv = direct_id(me, peer)
        if await self.store.ensure_direct(conv, me, peer, ts):
            await self._joined(conv, [me, peer], await self.store.conv_head(conv) + 1)
            await self.store.mark_indexed(conv)
        return conv

    async def _media(self, req: w.ChatSend, me: str) -> w.MediaRef:
        meta = await visible_meta(self.redis, req.media or "", me)
        if meta is None:
            raise ChatError("unknown_media", "no such file, or not yours to share")
        prefixes = _MEDIA_KINDS.get(req.kind, ("",))
        if not meta.mime.startswith(prefixes):
            raise ChatError("bad_message_content", f"a {req.kind} message cannot carry {meta.mime}")
        return w.MediaRef(
            id=meta.id,
            name=meta.name,
            size=meta.size,
            mime=meta.mime,
            duration_ms=round(meta.duration * 1000) if meta.duration is not None else None,
            width=meta.width,
            height=meta.height,
            thumbnail=meta.thumbnail,
            waveform=meta.waveform,
        )

    async def edit(self, reader: Reader, req: w.ChatEdit) -> Reply:
        me = reader.identity
        await self._member(req.conv, me)
        if not req.text.strip():
            raise ChatError("bad_message_content", "text is empty")
        self._check_text(req.text)
        for _ in range(REWRITE_TRIES):
            raw, msg = await self._message(req.conv, req.seq)
            if msg.sender != me or msg.kind != "text":
                raise ChatError("forbidden", "only the sender may edit a text message")
            ts = _now_ms()
            new = msgspec.structs.replace(
                msg, text=req.text, mentions=req.mentions or None, edited=True, edited_ts=ts
            )
            event = w.ChatEdited(
                seq=0,
                conv=req.conv,
                ev=-1,
                msg_seq=req.seq,
                text=req.text,
                mentions=new.mentions,
                edited_ts=ts,
            )
            try:
                await self.store.rewrite(req.conv, req.seq, raw, new, event, keep_history=True)
            except ChatError as exc:
                if exc.code == "conflict":
                    continue
                raise
            return w.ChatSendOk(re="", conv=req.conv, seq=req.seq, ts=ts)
        raise ChatError("conflict", "the message keeps changing; retry")

    async def recall(self, reader: Reader, req: w.ChatRecall) -> Reply:
        me = reader.identity
        meta, role = await self._member(req.conv, me)
        for _ in range(REWRITE_TRIES):
            raw, msg = await self._message(req.conv, req.seq)
            if msg.kind == "system":
                raise ChatError("forbidden", "system messages cannot be recalled")
            ts = _now_ms()
            admin = role in ("owner", "admin") and meta.kind != "direct"
            if msg.sender != me and not admin:
                raise ChatError("forbidden", "only the sender or an admin may recall a message")
            window_ms = self.settings.chat_recall_window_s * 1000
            if not admin and ts - msg.ts > window_ms:
                raise ChatError(
                    "recall_window_passed",
                    f"messages can be recalled for {self.settings.chat_recall_window_s:g} s",
                )
            new = w.ChatMessage(
                seq=msg.seq,
                ts=msg.ts,
                sender=msg.sender,
                kind=msg.kind,
                client_id=msg.client_id,
                reply_to=msg.reply_to,
                recalled=True,
                recalled_by=me,
            )
            event = w.ChatRecalled(seq=0, conv=req.conv, ev=-1, msg_seq=req.seq, by=me)
            try:
                await self.store.rewrite(req.conv, req.seq, raw, new, event, keep_history=False)
            except ChatError as exc:
                if exc.code == "conflict":
                    continue
                raise
            return w.ChatSendOk(re="", conv=req.conv, seq=req.seq, ts=ts)
        raise ChatError("conflict", "the message keeps changing; retry")

    async def _stored(self, conv: str, seq: int) -> tuple[bytes, w.ChatMessage] | None:
        """Message ``seq`` as Redis stores it, copied back first when it left the window."""
        found = await self.store.message(conv, seq)
        if found is None and await self._warm(conv, seq):
            found = await self.store.message(conv, seq)
        return found

    async def _warm(self, conv: str, seq: int) -> bool:
        if self.history_store is None:
            return False
        meta = await self.store.meta(conv)
        cold = meta.cold_seq if meta is not None else 0
        return await window.warm(self.store, self.history_store, conv, cold, seq)

    async def _message(self, conv: str, seq: int) -> tuple[bytes, w.ChatMessage]:
        found = await self._stored(conv, seq)
        if found is None:
            raise ChatError("unknown_message", f"no message {seq}")
        if found[1].recalled:
            raise ChatError("recalled", f"message {seq} was recalled")
        return found

    async def react(self, reader: Reader, req: w.ChatReact) -> Reply:
        for last in (False, True):
            try:
                await self.store.react(
                    req.conv,
                    req.seq,
                    req.emoji,
                    reader.identity,
                    not req.remove,
                    self.settings.chat_max_reaction_kinds,
                )
            except ChatError as exc:
                # A message below the window is copied back, once, then reacted to.
                if exc.code != "unknown_message" or last:
                    raise
                if not await self._warm(req.conv, req.seq):
                    raise
                continue
            break
        return _ok()

    async def read(self, reader: Reader, req: w.ChatRead) -> Reply:
        me = reader.identity
        _, read_seq, kind, moved = await self.store.read(req.conv, me, req.seq)
        if moved and kind == "channel":
            event = w.ChatReadEvent(seq=0, conv=req.conv, fev=-1, user=me, read_seq=read_seq)
            await self.store.user_change(me, "event", req.conv, event)
        return _ok()

    async def typing(self, reader: Reader, req: w.ChatTyping) -> Reply:
        _, role = await self._member(req.conv, reader.identity)
        if role == "follower":
            raise ChatError("forbidden", "followers of a channel do not type in it")
        event = w.ChatTypingEvent(seq=0, conv=req.conv, user=reader.identity, typing=req.typing)
        await self.broker.publish(conv_channel(req.conv), encode_template(event))
        return _ok()

    async def history(self, reader: Reader, req: w.ChatHistory) -> Reply:
        meta, _ = await self._member(req.conv, reader.identity)
        last = meta.last_seq
        start, end = page_range(
            last, before=req.before, after=req.after, around=req.around, limit=req.limit
        )
        msgs = await window.messages(
            self.store, self.history_store, req.conv, meta.cold_seq, range(start, end + 1)
        )
        return w.ChatMessages(re="", conv=req.conv, messages=msgs, last_seq=last)

    async def thread(self, reader: Reader, req: w.ChatThread) -> Reply:
        meta, _ = await self._member(req.conv, reader.identity)
        msgs = await window.thread(
            self.store, self.history_store, req.conv, meta.cold_seq, req.root, req.after, req.limit
        )
        return w.ChatMessages(re="", conv=req.conv, messages=msgs, last_seq=meta.last_seq)

    async def edits(self, reader: Reader, req: w.ChatEdits) -> Reply:
        meta, _ = await self._member(req.conv, reader.identity)
        versions = await window.edits(
            self.store, self.history_store, req.conv, meta.cold_seq, req.seq
        )
        return w.ChatEditsOk(re="", conv=req.conv, seq=req.seq, versions=versions)

    async def report(self, reader: Reader, req: w.ChatReport) -> Reply:
        meta, _ = await self._member(req.conv, reader.identity)
        cold = meta.cold_seq
        if not await window.messages(self.store, self.history_store, req.conv, cold, [req.seq]):
            raise ChatError("unknown_message", f"no message {req.seq}")
        report = w.Report(seq=req.seq, by=reader.identity, reason=req.reason, ts=_now_ms())
        await self.store.report(req.conv, report)
        return _ok()

    async def reports(self, reader: Reader, req: w.ChatReports) -> Reply:
        meta, role = await self._member(req.conv, reader.identity)
        if role not in ("owner", "admin") or meta.kind == "direct":
            raise ChatError("forbidden", "only admins review reports")
        return w.ChatReportsOk(
            re="", conv=req.conv, reports=await self.store.reports(req.conv, req.limit)
        )

    async def search(self, reader: Reader, req: w.ChatSearch) -> Reply:
        me = reader.identity
        if req.conv is not None:
            await self._member(req.conv, me)
            convs = [req.conv]
        else:
            rows = await self.store.metas(await self.store.user_convs(me), me)
            convs = [m.conv for m, _, _ in rows]
        if self.history_store is None:
            raise ChatError("internal", "search needs the history store")
        return w.ChatSearchOk(
            re="", hits=await search(self.history_store, self.archiver, convs, req)
        )

    # --- calls --------------------------------------------------------------------------

    async def record_call(self, record: CallRecord) -> None:
        """A one-to-one call started or ended: a system message in the two users' chat."""
        a, b = record.users
        callee = b if record.caller == a else a
        conv = direct_id(a, b)
        ts = _now_ms()
        if await self.store.ensure_direct(conv, a, b, ts):
            await self._joined(conv, [a, b], await self.store.conv_head(conv) + 1)
            await self.store.mark_indexed(conv)
        info = w.SystemInfo(
            event=_CALL_EVENTS[record.event],
            by=record.by,
            users=[record.caller, callee],
            call=record.call,
            media=record.media,
            duration_s=record.duration_s,
            reason=record.reason,
        )
        # The same change can be recorded by more than one node: the client id stores it once.
        msg = system_message(ts, record.caller, info)
        msg.client_id = f"call-{record.call}-{record.event}"
        await self.store.send(conv, msg, blocks=False)

    async def may_call(self, conv: str, user: str) -> bool:
        """Whether ``user`` may join ``conv``'s call: a member of a group (direct
        conversations ring; a channel's followers only read)."""
        rows = await self.store.metas([conv], user)
        return bool(rows) and rows[0][0].kind == "group"

    async def record_group_call(self, record: GroupCallRecord) -> None:
        """A group's call started or ended: a system message in the group."""
        info = w.SystemInfo(
            event=_CALL_EVENTS[record.event],
            by=record.by,
            users=list(record.users),
            call=record.call,
            media="video",
            duration_s=record.duration_s,
        )
        msg = system_message(_now_ms(), record.by, info)
        msg.client_id = f"call-{record.call}-{record.event}"
        await self.store.send(record.conv, msg, blocks=False)

    # --- sync ---------------------------------------------------------------------------

    async def sync(self, reader: Reader, req: w.ChatSync) -> Reply:
        """Replay what the device missed, then keep it live (see chat.router)."""
        me = reader.identity
        feed_cursor = None
        if req.feed is not None:
            feed_cursor = Position(req.feed, req.feed_epoch, req.feed_stamp)
        feed = await self.router.attach(reader, feed_id(me), feed_cursor)
        joins = await self.store.user_joins(me)
        rows = await self.store.metas(list(joins), me)
        heads: dict[str, int] = {}
        epochs: dict[str, str] = {}
        gaps: list[str] = []
        for meta, _, _ in rows:
            cursor = None
            if meta.conv in req.cursors:
                conv = meta.conv
                cursor = Position(req.cursors[conv], req.epochs.get(conv), req.stamps.get(conv))
            elif req.feed is not None and feed.gap is None:
                # Joined while this device was away: everything since the join is news to it.
                cursor = Position(max(0, joins[meta.conv] - 1))
            at = await self.router.attach(reader, meta.conv, cursor)
            heads[meta.conv] = at.ev
            if at.epoch:
                epochs[meta.conv] = at.epoch
            if at.gap is not None:
                gaps.append(meta.conv)
        removed = [c for c in req.cursors if c not in heads]
        return w.ChatSyncOk(
            re="",
            heads=heads,
            feed=feed.ev,
            gaps=gaps,
            removed=removed,
            feed_gap=feed.gap is not None,
            epochs=epochs,
            feed_epoch=feed.epoch or None,
        )
