"""Ringing calls in Redis: invite, accept, decline, cancel, hang up, ring timeouts.

Every change of a call is one Lua script (``calls.ring_script.SCRIPT``) on the call's keys
that checks the request against ``calls.state.RULES`` (rendered into the script) and writes;
then the node applies what it means for the users (markers, rings) and publishes the
resulting ``calls.state.Transition`` to the user channel of each member concerned. Every node
with devices of that user turns it into events for them (``calls.state.events_for``), so a
call works across nodes, on one Redis or a cluster.

Its keys and the script are in ``calls.ring_script``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Literal, cast

import msgspec

from calls.config import CallsConfig
from calls.members import CallError
from calls.members import RingingSession as Session
from calls.record import CallRecord
from calls.ring_script import (
    DEADLINES,
    MARKER,
    SCRIPT,
    call_key,
    members_key,
    room_for,
    user_call_channel,
    user_call_key,
    user_ringing_key,
)
from calls.state import CallState, MemberState, Transition, events_for
from signaling import protocol as p
from signaling.redis_client import UNREACHABLE_ERRORS, RedisClient, execute, queue_script

log = logging.getLogger("huddle.ringing")
E = p.ErrorCode

SWEEP_BATCH: Final = 500
ENDED_TTL_S: Final = 300
KEEPALIVE_MIN_S: Final = 60.0

_MESSAGES: Final = {
    E.UNKNOWN_CALL: "no such call",
    E.CALL_NOT_RINGING: "the call is not ringing for you any more",
    E.CALL_NOT_ACTIVE: "the call is not in progress",
    E.BUSY: "the other party is busy in another call",
    E.ALREADY_IN_CALL: "you are already in a call",
    E.FORBIDDEN: "only the caller can cancel a call",
    E.ROOM_FULL: "the call is full",
}


class _Member(msgspec.Struct, kw_only=True):
    """A member's entry in ``huddle:{call:ID}:members``, as the script writes it."""

    s: MemberState
    r: str = ""
    by: str = ""
    bn: str = ""
    m: p.CallMedia = "audio"
    x: float = 0


_transition_decoder: Final = msgspec.json.Decoder(Transition)
_member_decoder: Final = msgspec.json.Decoder(_Member)


def _now_ms() -> int:
    return int(time.time() * 1000)


# Requests after which a call may have started or ended.
_RECORDED: Final = frozenset({"accept", "decline", "cancel", "hangup", "leave", "timeout"})


def new_call_id() -> str:
    return secrets.token_hex(8)


class _Placed:
    """A call a local connection placed (``call.invite`` without ``call``), while it rings.

    Two users who call each other at once each place a call that rings the other. They
    merge into one: the call with the smaller id goes on, and the caller of the other gives
    theirs up and answers it (``_merge``). Only that caller acts, so both sides agree without
    talking. It finds the crossing call right after placing its own (the callee's marker,
    read once the reply has gone: the reply waits for nothing), or when the crossing call's
    ring reaches its node (``on_message``): its marker is set before its ring is published,
    so one of the two always sees it.
    """

    __slots__ = ("call", "crossed", "to")

    def __init__(self, to: str) -> None:
        self.to = to
        self.call = ""  # once the script placed it
        self.crossed = ""  # a call from ``to`` heard of before that


class Ringing:
    """The node's side of ringing calls: requests of local connections, fan-out to them."""

    def __init__(
        self,
        settings: CallsConfig,
        client: RedisClient,
        local_sessions: Callable[[str], Iterable[Session]],
    ) -> None:
        self._redis = client
        self._local = local_sessions
        self._ring_ms = int(settings.ring_timeout_s * 1000)
        self._keep_ms = int(max(KEEPALIVE_MIN_S, 3 * settings.presence_refresh_s) * 1000)
        self._capacity = settings.room_capacity
        self._resume_s = settings.call_resume_s
        self._script = client.register_script(SCRIPT)
        self._marker = client.register_script(MARKER)
        # Local connections that placed or accepted a call: kept alive, hung up when they go.
        self.in_call: dict[Session, str] = {}
        # Rings announced to a connection right after its hello, to drop the same ring if it
        # also arrives through pub/sub (subscribed just before): (call, deadline).
        self._announced: dict[Session, set[tuple[str, int]]] = {}
        # Rings delivered to a connection through pub/sub, so that the read at its hello
        # (device_connected) does not ring it again when pub/sub was quicker.
        self._rung: dict[Session, set[tuple[str, int]]] = {}
        self._leaving: dict[Session, asyncio.TimerHandle] = {}
        # Calls local connections placed that still ring: a crossing call merges into one.
        self._placed: dict[Session, _Placed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Told of each call that started or ended by a request or sweep of this node (once
        # per change, whichever node made it): chat records it in the callers' conversation.
        self.on_record: Callable[[CallRecord], Awaitable[None]] | None = None

    # --- requests -----------------------------------------------------------------------

    def _args(
        self,
        op: str,
        call: str,
        session: Session | None,
        *extra: str | int,
        current: tuple[str, str] = ("", ""),
    ) -> list[Any]:
        actor = session.identity if session else ""
        name = session.claims.name if session and session.claims else ""
        return [
            op,
            call,
            _now_ms(),
            actor,
            session.id if session else "",
            session.device if session else "",
            name,
            self._ring_ms,
            self._keep_ms,
            ENDED_TTL_S * 1000,
            *current,
            *extra,
        ]

    async def _run(
        self,
        op: str,
        call: str,
        session: Session | None,
        *extra: str | int,
        current: tuple[str, str] = ("", ""),
    ) -> str:
        payload = await self._change(op, call, session, *extra, current=current)
        if op in _RECORDED:
            await self._record(op, call, session.identity if session else "")
        return payload

    async def _change(
        self,
        op: str,
        call: str,
        session: Session | None,
        *extra: str | int,
        current: tuple[str, str] = ("", ""),
    ) -> str:
        """Run the call's script and apply its effects; the script's reply payload."""
        result = cast(
            list[bytes | str],
            await self._script(
                keys=[call_key(call), members_key(call)],
                args=self._args(op, call, session, *extra, current=current),
            ),
        )
        status, payload = _text(result[0]), _text(result[1])
        if status == "error":
            raise CallError(payload, _MESSAGES.get(payload, payload.replace("_", " ")))
        await self._apply(call, result[2:])
        return payload

    async def _current_calls(self, *users: str) -> tuple[str, ...]:
        """The live call each user is in ('' for none), from their markers: a marker left by
        a call that is over for the user does not count."""
        pipe = self._redis.pipeline(transaction=False)
        for user in users:
            pipe.get(user_call_key(user))
        marked = [_text(c) if c is not None else "" for c in await pipe.execute()]
        if not any(marked):
            return tuple(marked)
        pipe = self._redis.pipeline(transaction=False)
        for user, call in zip(users, marked, strict=True):
            if call:
                pipe.hget(call_key(call), "state")
                pipe.hget(members_key(call), user)
        replies = iter(await pipe.execute())
        current: list[str] = []
        for call in marked:
            if not call:
                current.append("")
                continue
            state, raw = next(replies), next(replies)
            live = state is not None and _text(state) in ("ringing", "accepted")
            joined = raw is not None and _member_decoder.decode(raw).s is MemberState.JOINED
            current.append(call if live and joined else "")
        return tuple(current)

    async def _apply(self, call: str, effects: list[bytes | str]) -> None:
        """Apply what the call's script said a change means for other keys (see
        ``calls/lua/ringing.lua``): users' keys first, then the fan-out, so that whoever
        reacts to an event finds the markers in place."""
        if not effects:
            return
        fields = [_text(x) for x in effects]
        pipe = self._redis.pipeline(transaction=False)
        published: list[tuple[str, str]] = []
        for i in range(0, len(fields), 4):
            kind, user, a, b = fields[i : i + 4]
            if kind == "ring":
                pipe.zadd(DEADLINES, {b: int(a)})
                pipe.zadd(user_ringing_key(user), {call: int(a)})
                keep = self._ring_ms + self._keep_ms
                queue_script(pipe, self._marker, [user_ringing_key(user)], ["keep", "", keep])
            elif kind == "unring":
                pipe.zrem(DEADLINES, a)
                pipe.zrem(user_ringing_key(user), call)
            elif kind == "unindex":
                pipe.zrem(DEADLINES, a)
            elif kind == "mark":
                pipe.set(user_call_key(user), call, px=int(a))
            elif kind == "keepmark":
                queue_script(pipe, self._marker, [user_call_key(user)], ["keep", call, int(a)])
            elif kind == "release":
                queue_script(pipe, self._marker, [user_call_key(user)], ["release", call, 0])
            elif kind == "pub":
                published.append((user, a))
        if len(pipe):
            await execute(pipe)
        if published:
            pipe = self._redis.pipeline(transaction=False)
            for user, payload in published:
                pipe.spublish(user_call_channel(user), payload)
            await pipe.execute()

    async def _record(self, op: str, call: str, actor: str) -> None:
        """Tell ``on_record`` that a one-to-one call started or ended."""
        if self.on_record is None:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(
                call_key(call), ["state", "caller", "media", "accepted_ms", "ended_ms", "reason"]
            )
            pipe.hkeys(members_key(call))
            fields, members = await pipe.execute()
        state, caller, media, accepted, ended, reason = (
            _text(f) if f is not None else "" for f in fields
        )
        users = sorted(_text(m) for m in members)
        if len(users) != 2 or not caller:
            return  # group calls are not recorded in a direct conversation
        event: Literal["started", "ended", "missed"]
        if op == "accept" and state == "accepted":
            event = "started"
        elif state == "ended":
            event = "ended" if accepted else "missed"
        else:
            return
        duration = (int(ended) - int(accepted)) // 1000 if accepted and ended else None
        record = CallRecord(
            call=call,
            event=event,
            caller=caller,
            users=(users[0], users[1]),
            media=media,
            reason=reason or None,
            duration_s=duration,
            by=actor or caller,
        )
        try:
            await self.on_record(record)
        except Exception:
            log.exception("could not record a call in chat", extra={"call": call})

    async def invite(self, session: Session, req: p.CallInvite) -> p.CallInviteOk:
        if req.to == session.identity:
            raise CallError(E.CANNOT_CALL_SELF, "you cannot call yourself")
        mine, theirs = await self._current_calls(session.identity, req.to)
        current = (mine, theirs)
        if req.call is not None:
            room = await self._run(
                "add", req.call, session, req.to, req.media, "", self._capacity, current=current
            )
            return p.CallInviteOk(re=req.id, call=req.call, room=room)
        if theirs and not mine and await self._crossing(theirs, req.to, session.identity):
            # They are calling this user right now: answer their call instead.
            room = await self._answer(session, theirs)
            return p.CallInviteOk(re=req.id, call=theirs, room=room, answered=True)
        placed = self._placed[session] = _Placed(req.to)
        try:
            call = new_call_id()
            room = await self._run(
                "invite", call, session, req.to, req.media, room_for(call), current=current
            )
        except BaseException:
            self._placed.pop(session, None)
            raise
        self.in_call[session] = placed.call = call
        # After this reply (the task starts once the request is answered).
        self._spawn(self._look_for_crossing(session, placed))
        return p.CallInviteOk(re=req.id, call=call, room=room)

    async def _look_for_crossing(self, session: Session, placed: _Placed) -> None:
        """Right after placing ``placed``: the callee's call to this user, if one rings, and
        its id is the smaller, takes over (see ``_Placed``)."""
        try:
            (theirs,) = await self._current_calls(placed.to)
        except UNREACHABLE_ERRORS as exc:
            log.warning("crossing calls not looked for", extra={"error": str(exc)})
            return
        for crossing in sorted({theirs, placed.crossed} - {"", placed.call}):
            if crossing > placed.call:
                continue  # theirs gives way
            if not await self._crossing(crossing, placed.to, session.identity):
                continue
            if self._placed.get(session) is not placed:
                return  # merged, answered or over meanwhile
            del self._placed[session]
            await self._merge(session, placed.call, crossing)
            return

    async def _crossing(self, call: str, caller: str, callee: str) -> bool:
        """Whether ``call`` is ``caller``'s call that still rings for ``callee``."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(call_key(call), ["state", "caller"])
            pipe.hget(members_key(call), callee)
            (state, by), raw = await pipe.execute()
        if state is None or _text(state) != "ringing" or by is None or _text(by) != caller:
            return False
        return raw is not None and _member_decoder.decode(raw).s is MemberState.RINGING

    async def _answer(self, session: Session, call: str) -> str:
        (current,) = await self._current_calls(session.identity)
        room = await self._run("accept", call, session, current=(current, ""))
        self.in_call[session] = call
        return room

    async def _merge(self, session: Session, mine: str, theirs: str) -> None:
        """Give up ``mine`` (placed by ``session``, still ringing) and answer ``theirs``, the
        call its callee placed to this user meanwhile; the device hears of it in
        ``call.merged`` (its invite's reply has gone). When ``mine`` no longer rings it
        stands. The call given up is recorded nowhere: the two talk in the other."""
        try:
            try:
                await self._change("cancel", mine, session)
            except CallError:
                return  # it no longer rings: it stands
            if self.in_call.get(session) == mine:
                del self.in_call[session]
            room = await self._answer(session, theirs)
        except CallError as exc:
            log.info("crossing calls not merged", extra={"call": mine, "error": exc.code})
            return
        except UNREACHABLE_ERRORS as exc:
            log.warning("crossing calls not merged", extra={"call": mine, "error": str(exc)})
            return
        session.send_event(p.EncodedEvent(p.CallMerged(seq=0, call=mine, into=theirs, room=room)))

    async def accept(self, session: Session, req: p.CallAccept) -> p.CallAcceptOk:
        return p.CallAcceptOk(re=req.id, call=req.call, room=await self._answer(session, req.call))

    async def decline(self, session: Session, req: p.CallDecline) -> None:
        await self._run("decline", req.call, session)

    async def cancel(self, session: Session, req: p.CallCancel) -> None:
        await self._run("cancel", req.call, session)

    async def hangup(self, session: Session, req: p.CallHangup) -> None:
        await self._run("hangup", req.call, session)
        if self.in_call.get(session) == req.call:
            del self.in_call[session]

    async def room_left(self, session: Session, room: str) -> None:
        """The device left ``room``: when that is the room of the call it is in, it hangs up
        too. A page reloaded mid-call is still in its call for the node (same device, back
        within call_resume_s) but knows no call id, only the room (call.resumed); and a call
        whose room a member left was otherwise kept for the others as if it were in it."""
        call = self.in_call.get(session)
        if call is None or room_for(call) != room:
            return
        try:
            await self.hangup(session, p.CallHangup(id="", call=call))
        except CallError:
            self.in_call.pop(session, None)  # ended meanwhile

    async def update(self, session: Session, req: p.CallUpdate) -> None:
        await self._run("update", req.call, session, "", req.media)

    # --- connections --------------------------------------------------------------------

    async def device_connected(self, session: Session) -> None:
        """A device said hello: it takes back its place in a call it was in moments ago (on
        any node), and it rings for the calls that ring for its user."""
        user, now = session.identity, _now_ms()
        try:
            current = await self._redis.get(user_call_key(user))
            if current is not None:
                call = _text(current)
                resumed = await self._run("resume", call, session)
                if resumed in ("ringing", "accepted"):
                    self.in_call[session] = call
                if resumed == "ringing":
                    await self._still_calling(session, call)
            found = await self._redis.zrangebyscore(user_ringing_key(user), now, "+inf")
            calls = [_text(c) for c in cast(list[bytes], found)]
            if not calls:
                return
            pipe = self._redis.pipeline(transaction=False)
            for call in calls:
                pipe.hget(members_key(call), user)
            entries = await pipe.execute()
        except UNREACHABLE_ERRORS as exc:
            log.warning("ringing calls not read at hello", extra={"error": str(exc)})
            return
        announced = self._announced.setdefault(session, set())
        rung = self._rung.get(session, set())
        for call, raw in zip(calls, entries, strict=True):
            if raw is None:
                continue
            m = _member_decoder.decode(raw)
            if m.s is not MemberState.RINGING or m.x <= now:
                continue
            if (call, int(m.x)) in rung:
                continue  # pub/sub was quicker than this read: already rung
            announced.add((call, int(m.x)))
            event = p.CallIncoming(seq=0, call=call, from_=m.by, from_name=m.bn, media=m.m)
            session.send_event(p.EncodedEvent(event))

    async def _still_calling(self, session: Session, call: str) -> None:
        """The device placed ``call``, which still rings: tell it (``call.outgoing`` with
        ``resumed``), as a page reloaded meanwhile knows nothing of it."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(call_key(call), "media")
            pipe.hgetall(members_key(call))
            media, members = await pipe.execute()
        rung = [
            _text(user)
            for user, raw in cast(dict[bytes, bytes], members).items()
            if _member_decoder.decode(raw).s is MemberState.RINGING
        ]
        if not rung or media is None:
            return  # ended meanwhile
        event = p.CallOutgoing(
            seq=0, call=call, to=rung[0], media=cast(p.CallMedia, _text(media)), resumed=True
        )
        session.send_event(p.EncodedEvent(event))

    async def session_gone(self, session: Session) -> None:
        """The connection that placed or accepted a call closed. Unless the same device comes
        back within ``call_resume_s`` (see ``device_connected``), cancel or hang up for it."""
        self._announced.pop(session, None)
        self._rung.pop(session, None)
        self._placed.pop(session, None)
        call = self.in_call.pop(session, None)
        if call is None or self._closed:
            return
        if self._resume_s > 0:
            self._leaving[session] = asyncio.get_running_loop().call_later(
                self._resume_s, self._leave_later, session, call
            )
            return
        await self._leave(session, call)

    def _leave_later(self, session: Session, call: str) -> None:
        self._leaving.pop(session, None)
        self._spawn(self._leave(session, call))

    async def _leave(self, session: Session, call: str) -> None:
        try:
            await self._run("leave", call, session)
        except UNREACHABLE_ERRORS as exc:
            # The call keys expire once nobody keeps them alive.
            log.warning("call not left", extra={"call": call, "error": str(exc)})

    def close(self) -> None:
        """The node stops: its devices may resume their calls on other nodes."""
        self._closed = True
        for timer in self._leaving.values():
            timer.cancel()
        self._leaving.clear()

    # --- fan-out ------------------------------------------------------------------------

    def on_message(self, payload: bytes) -> None:
        """A transition published to the user channel of one of this node's users."""
        try:
            t = _transition_decoder.decode(payload)
        except msgspec.DecodeError:
            log.warning("malformed call transition")
            return
        if t.state is CallState.ENDED:
            for s, call in list(self.in_call.items()):
                if call == t.call:
                    del self.in_call[s]
        if self._placed:
            self._watch_placed(t)
        sessions = [s for s in self._local(t.to) if s.id != t.session]
        if not sessions:
            return
        ring = (t.call, int(t.deadline_ms))
        for event in events_for(t, t.to):
            encoded = p.EncodedEvent(event)
            for s in sessions:
                if isinstance(event, p.CallIncoming):
                    if ring in self._announced.get(s, ()):
                        self._announced[s].discard(ring)
                        continue
                    self._rung.setdefault(s, set()).add(ring)
                s.send_event(encoded)

    def _watch_placed(self, t: Transition) -> None:
        """Forget placed calls that stopped ringing; merge one that a call from its callee
        crosses (see ``_Placed``)."""
        if t.state is not CallState.RINGING:
            for s, gone in list(self._placed.items()):
                if gone.call == t.call:
                    del self._placed[s]
            return
        if t.kind != "invite" or t.subject != t.to:
            return
        for s in self._local(t.to):
            placed = self._placed.get(s)
            if placed is None or placed.to != t.inviter or placed.call == t.call:
                continue
            if not placed.call:
                placed.crossed = t.call  # placing it still: _look_for_crossing takes it
            elif t.call < placed.call:
                del self._placed[s]
                self._spawn(self._merge(s, placed.call, t.call))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- periodic duties ----------------------------------------------------------------

    async def refresh(self) -> None:
        """Keep alive the calls local connections are in; forget those that are over."""
        if not self.in_call:
            return
        held = list(self.in_call.items())
        pipe = self._redis.pipeline(transaction=False)
        for session, call in held:
            queue_script(
                pipe,
                self._script,
                [call_key(call), members_key(call)],
                self._args("keepalive", call, session),
            )
        for (session, call), result in zip(held, await execute(pipe), strict=True):
            await self._apply(call, result[2:])
            if _text(result[1]) == "gone" and self.in_call.get(session) == call:
                del self.in_call[session]

    async def sweep(self) -> None:
        expired = await self.expire_due()
        if expired:
            log.info("rings timed out", extra={"count": expired})

    async def expire_due(self) -> int:
        """End the rings whose deadline passed, whichever node placed them. Returns count."""
        now = _now_ms()
        members = cast(
            list[bytes], await self._redis.zrangebyscore(DEADLINES, "-inf", now, 0, SWEEP_BATCH)
        )
        expired = 0
        for member in members:
            try:
                call, user = msgspec.json.decode(member, type=tuple[str, str])
            except msgspec.DecodeError:  # ValidationError included
                await self._redis.zrem(DEADLINES, member)
                continue
            if await self._change("timeout", call, None, user) == "expired":
                expired += 1
                await self._record("timeout", call, "")
        return expired


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
