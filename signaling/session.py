"""One device's WebSocket connection: request dispatch, ordered sending, token lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import WSMsgType, web

from calls.members import CallError
from chat.store import ChatError
from signaling import protocol as p
from signaling.auth import AuthError, Claims, verify_token
from signaling.flush_round import FlushRound
from signaling.ratelimit import RateLimiter, Verdict
from signaling.redis_client import RETRY_LATER_ERRORS, UNREACHABLE_ERRORS
from signaling.ws_frames import text_frame, text_payload

if TYPE_CHECKING:
    from signaling.hub import Hub

log = logging.getLogger("huddle.session")
E = p.ErrorCode
# Frames queued for a connection while the event loop runs one round of callbacks go to its
# socket together, in one write, once the round is over: a message's reply and its echo to
# the sender's device, the events of a replay. A connection whose socket has more than this
# many bytes not yet taken by the kernel is written through aiohttp instead, which waits for
# the socket to drain.
WRITE_BUFFER_HIGH: Final = 64 * 1024


class Session:
    """The protocol state of one connection. The hub owns node-wide state."""

    def __init__(
        self,
        hub: Hub,
        ws: web.WebSocketResponse,
        remote: str | None,
        transport: asyncio.Transport | None = None,
    ) -> None:
        s = hub.settings
        self.hub = hub
        self.ws = ws
        self.remote = remote
        self.id = secrets.token_urlsafe(12)
        self.claims: Claims | None = None
        self.device = ""
        self.status: p.DeviceStatus = "online"
        self.watching: set[str] = set()
        self.closed = False
        self._seq = 0
        # Queued: whole frames, header and all, where frames are written to the socket here
        # (``_transport``: a fan-out frames each copy of an event in one step), else messages
        # for aiohttp's writer.
        self._out: deque[bytes] = deque()
        self._max_out = s.max_outbound_queue
        self._sent = hub.metrics.sent
        self._round: FlushRound = hub.flush_round
        self._flush_soon = False
        self._writer: asyncio.Task[None] | None = None
        # Frames are written to the socket here unless the connection compresses them
        # (permessage-deflate): then aiohttp's writer does it, one frame at a time. (uvloop's
        # transports, the node's, are no asyncio.Transport instances: not checked by type.)
        self._transport = transport if transport is not None and not ws.compress else None
        self._limiter = RateLimiter(s.rate_per_s, s.rate_burst, s.flood_strikes, time.monotonic())
        self._timers: list[asyncio.TimerHandle] = []
        self._handlers: dict[str, Callable[[Any], Awaitable[None]]] = {
            "hello": self._hello,
            "ping": self._ping,
            "auth.refresh": self._auth_refresh,
            "presence.subscribe": self._presence_subscribe,
            "presence.unsubscribe": self._presence_unsubscribe,
            "presence.set": self._presence_set,
            "call.join": self._call_join,
            "call.leave": self._call_leave,
            "sfu.publish": self._sfu_publish,
            "sfu.answer": self._sfu_answer,
            "call.invite": self._call_invite,
            "call.accept": self._call_accept,
            "call.decline": self._call_decline,
            "call.cancel": self._call_cancel,
            "call.hangup": self._call_hangup,
            "call.update": self._call_update,
            "call.stats": self._call_stats,
            "call.state": self._call_state,
            "sfu.candidate": self._sfu_candidate,
            "call.mute": self._call_mute,
            "call.remove": self._call_remove,
            "call.pin": self._call_pin,
            "sfu.track_settings": self._sfu_track_settings,
            "sfu.restart": self._sfu_restart,
            **dict.fromkeys(hub.chat.handlers, self._chat),
        }
        assert set(self._handlers) == set(p.CLIENT_MESSAGES), "every request needs a handler"

    @property
    def identity(self) -> str:
        return self.claims.identity if self.claims else ""

    # --- receiving ----------------------------------------------------------------------

    async def on_text(self, frame: str) -> None:
        verdict = self._limiter.check(time.monotonic())
        if verdict is Verdict.CLOSE:
            await self.close(p.CloseCode.FLOOD, "rate limit exceeded repeatedly")
            return
        try:
            request = p.decode_request(frame)
        except p.ProtocolError as exc:
            self.hub.metrics.count_in("invalid")
            await self.send_error(exc.code, exc.message, exc.re)
            return
        kind: str = request.__struct_config__.tag  # type: ignore[assignment]
        self.hub.metrics.count_in(kind)
        if verdict is Verdict.REJECT:
            await self.send_error(E.RATE_LIMITED, "too many requests; slow down", request.id)
            return
        if self.claims is None and kind != "hello":
            await self.send_error(E.NOT_AUTHENTICATED, "send hello first", request.id)
            return
        try:
            await self._handlers[kind](request)
        except (CallError, ChatError) as exc:
            await self.send_error(exc.code, exc.message, request.id)
        except RETRY_LATER_ERRORS as exc:
            log.warning(
                "request failed: Redis unavailable", extra={"type": kind, "error": str(exc)}
            )
            await self.send_error(E.UNAVAILABLE, "temporarily unavailable; retry", request.id)
        except Exception:
            log.exception("request handler failed", extra={"type": kind})
            await self.send_error(E.INTERNAL, "internal error", request.id)

    async def on_binary(self) -> None:
        verdict = self._limiter.check(time.monotonic())
        if verdict is Verdict.CLOSE:
            await self.close(p.CloseCode.FLOOD, "rate limit exceeded repeatedly")
        elif verdict is Verdict.REJECT:
            await self.send_error(E.RATE_LIMITED, "too many requests; slow down")
        else:
            await self.send_error(E.BINARY_NOT_SUPPORTED, "frames must be JSON text")

    # --- sending ------------------------------------------------------------------------

    async def send_reply(self, reply: p.Reply) -> None:
        self._sent["reply"] += 1
        self._queue_message(p.encode(reply))

    async def send_error(self, code: str, message: str, re: str | None = None) -> None:
        self.hub.metrics.count_error(code)
        self._sent["error"] += 1
        self._queue_message(p.error(code, message, re))

    def send_event(self, event: p.EncodedEvent) -> None:
        """Queue one event, stamped with this connection's next ``seq``. Never blocks."""
        if self.closed:
            return
        self._seq = seq = self._seq + 1
        self._sent["event"] += 1
        self._queue(event.ws_frame(seq) if self._transport is not None else event.frame(seq))

    def _queue_message(self, payload: bytes) -> None:
        self._queue(text_frame(payload) if self._transport is not None else payload)

    def _queue(self, frame: bytes) -> None:
        # Replies and events share the queue: they go out in the order they were made.
        if self.closed:
            return
        out = self._out
        out.append(frame)
        if len(out) > self._max_out:
            out.clear()
            self.close_soon(p.CloseCode.SLOW_CONSUMER, "events not read")
            return
        if self._writer is None:
            self._flush_later()

    def _flush_later(self) -> None:
        """Flush once the event loop's current round of callbacks is over (once only)."""
        if not self._flush_soon:
            self._flush_soon = True
            self._round.add(self)

    def _keeps_up(self) -> bool:
        """Frames can be written to the socket here: it takes what it is given."""
        transport = self._transport
        return transport is not None and transport.get_write_buffer_size() <= WRITE_BUFFER_HIGH

    def flush(self) -> None:
        """Write what is queued: in one write where the socket keeps up, else through the
        writer task, which waits for it."""
        self._flush_soon = False
        out = self._out
        if self.closed or not out or self._writer is not None:
            return
        transport = self._transport
        if transport is None or not self._keeps_up():
            self._writer = asyncio.create_task(self._drain())
            return
        if self.ws.closed or transport.is_closing():
            out.clear()  # nothing goes after a close frame, nor into a socket going away
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.hub.metrics.writes += 1
        transport.write(data)

    async def _drain(self) -> None:
        # Through aiohttp, frame by frame, waiting for the socket whenever aiohttp does; back
        # to single writes once the socket keeps up again.
        try:
            while self._out and not self.closed:
                await self.ws.send_frame(self._take(), WSMsgType.TEXT)
                self.hub.metrics.writes += 1
                if self._keeps_up():
                    break
        except (ConnectionError, RuntimeError):
            self._out.clear()
        finally:
            self._writer = None
        if self._out and not self.closed:
            self._flush_later()

    def _take(self) -> bytes:
        """The next queued message, as aiohttp's writer takes it (without a frame header)."""
        frame = self._out.popleft()
        return frame if self._transport is None else text_payload(frame)

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.hub.metrics.closes.labels(str(code)).inc()
        log.info("closing connection", extra={"code": code, "reason": reason, "session": self.id})
        # What is queued (an error reply saying why, say) goes before the close frame.
        if self._writer is None and self._out:
            if self._keeps_up():
                self.flush()
            with contextlib.suppress(ConnectionError, RuntimeError):
                while self._out:
                    await self.ws.send_frame(self._take(), WSMsgType.TEXT)
                    self.hub.metrics.writes += 1
        self.closed = True
        await self.ws.close(code=code, message=reason.encode()[:120])

    def queued(self) -> int:
        """Frames waiting to be written to the socket."""
        return len(self._out)

    def close_soon(self, code: int, reason: str) -> None:
        """Close from synchronous code (timers, pub/sub handlers)."""
        if not self.closed:
            self.hub.spawn(self.close(code, reason))

    def dispose(self) -> None:
        self.closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._writer is not None:
            self._writer.cancel()

    # --- token lifetime -----------------------------------------------------------------

    def _arm_token_timers(self, expires_at: int) -> None:
        for timer in self._timers:
            timer.cancel()
        loop = asyncio.get_running_loop()
        left = expires_at - time.time()
        notice = left - self.hub.settings.auth_expiring_notice_s
        self._timers = [
            loop.call_later(max(0.0, notice), self._expiring, expires_at),
            loop.call_later(max(0.0, left), self._expired),
        ]

    def _expiring(self, expires_at: int) -> None:
        self.send_event(p.EncodedEvent(p.AuthExpiring(seq=0, expires_at=expires_at)))

    def _expired(self) -> None:
        self.close_soon(p.CloseCode.TOKEN_EXPIRED, "token expired")

    def _verify(self, token: str) -> Claims:
        return verify_token(token, keys=self.hub.api_keys)

    # --- handlers -----------------------------------------------------------------------

    async def _hello(self, req: p.Hello) -> None:
        if self.claims is not None:
            await self.send_error(E.ALREADY_AUTHENTICATED, "hello was already accepted", req.id)
            return
        if req.protocol != p.PROTOCOL_VERSION:
            await self.send_error(
                E.UNSUPPORTED_PROTOCOL,
                f"protocol {req.protocol} unsupported; this server speaks {p.PROTOCOL_VERSION}",
                req.id,
            )
            await self.close(p.CloseCode.UNSUPPORTED_PROTOCOL, "unsupported protocol")
            return
        try:
            claims = self._verify(req.token)
        except AuthError as exc:
            await self.send_error(exc.code, exc.message, req.id)
            await self.close(p.CloseCode.AUTH_FAILED, exc.code)
            return
        self.claims = claims
        self.device = req.device or f"d-{secrets.token_hex(6)}"
        self.status = req.status
        try:
            await self.hub.register(self)
        except UNREACHABLE_ERRORS:
            self.claims = None
            await self.send_error(E.UNAVAILABLE, "temporarily unavailable; retry", req.id)
            await self.close(p.CloseCode.TRY_AGAIN_LATER, "unavailable")
            return
        self._arm_token_timers(claims.expires_at)
        await self.send_reply(
            p.HelloOk(
                re=req.id,
                protocol=p.PROTOCOL_VERSION,
                identity=claims.identity,
                name=claims.name,
                device=self.device,
                session=self.id,
                node=self.hub.settings.node_id,
                heartbeat_s=self.hub.settings.heartbeat_s,
                token_expires_at=claims.expires_at,
                server_time_ms=int(time.time() * 1000),
                max_frame_bytes=self.hub.settings.max_frame_bytes,
                max_text_chars=self.hub.settings.chat_max_text_chars,
            )
        )
        resumed = self.hub.calls.attach(self)
        # Rings first: a ring placed right after the hello reply must not be announced twice.
        await self.hub.ringing.device_connected(self)
        if not resumed:
            try:
                await self.hub.calls.resume_elsewhere(self)
            except UNREACHABLE_ERRORS as exc:
                log.warning("call resume check failed", extra={"error": str(exc)})

    async def _ping(self, req: p.Ping) -> None:
        await self.send_reply(p.PingOk(re=req.id, server_time_ms=int(time.time() * 1000)))

    async def _auth_refresh(self, req: p.AuthRefresh) -> None:
        try:
            claims = self._verify(req.token)
        except AuthError as exc:
            await self.send_error(exc.code, exc.message, req.id)
            return
        if claims.identity != self.identity:
            await self.send_error(
                E.IDENTITY_MISMATCH, "a refreshed token must be for the same identity", req.id
            )
            return
        self.claims = claims
        self._arm_token_timers(claims.expires_at)
        await self.send_reply(p.AuthRefreshOk(re=req.id, token_expires_at=claims.expires_at))

    async def _presence_subscribe(self, req: p.PresenceSubscribe) -> None:
        new = set(req.users) - self.watching
        if len(self.watching) + len(new) > self.hub.settings.max_presence_subscriptions:
            await self.send_error(
                E.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self.hub.settings.max_presence_subscriptions} watched users",
                req.id,
            )
            return
        # Watch first, then read: a change in between arrives as an event, never lost.
        await self.hub.watch(self, new)
        try:
            snapshot = await self.hub.presence.get(dict.fromkeys(req.users))
        except BaseException:
            await self.hub.unwatch(self, new)
            raise
        await self.send_reply(p.PresenceSubscribeOk(re=req.id, presence=snapshot))

    async def _presence_unsubscribe(self, req: p.PresenceUnsubscribe) -> None:
        await self.hub.unwatch(self, set(req.users) & self.watching)
        await self.send_reply(p.Ok(re=req.id))

    async def _presence_set(self, req: p.PresenceSet) -> None:
        self.status = req.status
        await self.hub.presence.set(self.hub.entry(self))
        await self.send_reply(p.Ok(re=req.id))

    async def _call_join(self, req: p.CallJoin) -> None:
        reply = await self.hub.calls.join(self, req.room)
        reply.re = req.id
        await self.send_reply(reply)

    async def _call_leave(self, req: p.CallLeave) -> None:
        await self.hub.calls.leave(self, req.room)
        await self.hub.ringing.room_left(self, req.room)
        await self.send_reply(p.Ok(re=req.id))

    async def _sfu_publish(self, req: p.SfuPublish) -> None:
        sdp = await self.hub.calls.publish(self, req)
        await self.send_reply(p.SfuPublishOk(re=req.id, sdp=sdp))

    async def _sfu_candidate(self, req: p.SfuCandidate) -> None:
        await self.hub.calls.add_candidate(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _call_state(self, req: p.CallState) -> None:
        await self.hub.calls.set_state(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _call_mute(self, req: p.CallMute) -> None:
        await self.hub.calls.mute(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _call_remove(self, req: p.CallRemove) -> None:
        await self.hub.calls.remove(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _sfu_restart(self, req: p.SfuRestart) -> None:
        await self.hub.calls.restart(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _sfu_track_settings(self, req: p.SfuTrackSettings) -> None:
        await self.hub.calls.track_settings(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _call_pin(self, req: p.CallPin) -> None:
        await self.hub.calls.pin(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _call_stats(self, req: p.CallStats) -> None:
        reply = await self.hub.calls.stats(self, req.room)
        reply.re = req.id
        await self.send_reply(reply)

    async def _sfu_answer(self, req: p.SfuAnswer) -> None:
        await self.hub.calls.answer(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _chat(self, req: p.Request) -> None:
        await self.send_reply(await self.hub.chat.handle(self, req))

    async def _call_invite(self, req: p.CallInvite) -> None:
        await self.send_reply(await self.hub.ringing.invite(self, req))

    async def _call_accept(self, req: p.CallAccept) -> None:
        await self.send_reply(await self.hub.ringing.accept(self, req))

    async def _call_decline(self, req: p.CallDecline) -> None:
        await self.hub.ringing.decline(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _call_cancel(self, req: p.CallCancel) -> None:
        await self.hub.ringing.cancel(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _call_hangup(self, req: p.CallHangup) -> None:
        await self.hub.ringing.hangup(self, req)
        await self.send_reply(p.Ok(re=req.id))

    async def _call_update(self, req: p.CallUpdate) -> None:
        await self.hub.ringing.update(self, req)
        await self.send_reply(p.Ok(re=req.id))
