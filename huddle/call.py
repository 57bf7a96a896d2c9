"""Calls from the Python client: the publisher and subscriber peer connections of one room.

    call = CallClient(client, "standup")
    await call.join()
    await call.publish(video_track, audio_track)
    track, info = await call.next_track()        # a forwarded track and whose it is

Subscriber offers (``sfu.offer``) are answered automatically. When the server says the
room's media server restarted (``call.reconnect``), the call joins again and publishes the
same sources again by itself.

``call.paused_tracks`` and ``call.unselected_tracks`` list the received tracks the SFU does
not send now, as the latest ``sfu.paused`` said: those this connection's downlink has no
room for, and the video that stream selection in a large room leaves out (it forwards only
the video of the ``video_last_n`` most recent speakers and of pinned participants).

The peer connections never depend on the WebSocket. When it drops, the call goes on over a
new connection of the same device: ``await call.resume(new_client)`` (connected, not yet past
``hello``) says hello for it and waits for ``call.resumed``; a request the call made
meanwhile waits for that and is sent again, instead of failing with ``ConnectionClosed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from huddle.client import ConnectionClosed, HuddleClient, RequestError
from signaling import protocol as p

log = logging.getLogger("huddle.call")
_ICE_UFRAG: Final = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)
DEFAULT_TIMEOUT_S: Final = 15.0
# After hello on a new connection, how long resume() waits for call.resumed before taking the
# call as left (the device came back after call_resume_s) and joining the room again.
RESUME_WAIT_S: Final = 3.0
# A request of the call whose connection closed waits this long for resume(), then fails.
RESUME_GIVE_UP_S: Final = 60.0


# A resumed relay skips at most this many stale frames, and takes a frame that took this
# long to come as the first one on time.
CATCH_UP_MAX_FRAMES: Final = 600
CATCH_UP_WAITED_S: Final = 0.004


class _Relay(MediaStreamTrack):
    """Hands a source's frames to one sender; stopping it (as a closing connection does)
    leaves the source running, so that it can be published again after a rejoin."""

    def __init__(self, source: MediaStreamTrack, *, resumed: bool = False) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        # A paced source that was not read for a while (a paused simulcast layer) hands out
        # the frames it fell behind on all at once: skip those, send from the present on.
        self._catching_up = resumed

    async def recv(self) -> Any:
        if not self._catching_up:
            return await self.source.recv()
        self._catching_up = False
        loop = asyncio.get_running_loop()
        for _ in range(CATCH_UP_MAX_FRAMES):
            asked = loop.time()
            frame = await self.source.recv()
            if loop.time() - asked >= CATCH_UP_WAITED_S:
                return frame  # the source had to wait for it: it is on time again
        return frame


def ice_ufrag(sdp: str) -> str | None:
    """The ICE username fragment of a session description (its first ``a=ice-ufrag``)."""
    match = _ICE_UFRAG.search(sdp)
    return match.group(1) if match else None


def split_candidates(sdp: str) -> tuple[str, list[tuple[str | None, int, str]]]:
    """The SDP without its ICE candidates, and the candidates as (mid, m-line index, line)."""
    kept: list[str] = []
    found: list[tuple[str | None, int, str]] = []
    index, mid = -1, None
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            index, mid = index + 1, None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        if line.startswith("a=candidate:"):
            found.append((mid, index, line[len("a=") :]))
            continue
        if line == "a=end-of-candidates":
            continue
        kept.append(line)
    # a=mid may follow the candidates of its section: fill mids in afterwards.
    mids: dict[int, str] = {}
    index = -1
    for line in kept:
        if line.startswith("m="):
            index += 1
        elif line.startswith("a=mid:"):
            mids[index] = line[len("a=mid:") :]
    return "\r\n".join(kept), [(mids.get(i, m), i, c) for m, i, c in found]


class CallClient:
    def __init__(
        self, client: HuddleClient, room: str, *, trickle: bool = False, relay_only: bool = False
    ) -> None:
        self.client = client
        # Send local ICE candidates one by one (sfu.candidate) after the SDP, as browsers do,
        # instead of inside it.
        self.trickle = trickle
        # Media only through the TURN servers of the join reply (a bot on a network that
        # lets nothing else out).
        self.relay_only = relay_only
        self.room = room
        self.participant = ""
        self.joined: p.CallJoinOk | None = None
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.tracks: asyncio.Queue[tuple[MediaStreamTrack, p.TrackInfo]] = asyncio.Queue()
        self.track_info: dict[str, p.TrackInfo] = {}
        # Tracks the SFU stopped forwarding (their publisher left or unpublished them).
        self.ended: asyncio.Queue[p.TrackInfo] = asyncio.Queue()
        self.offers_answered = 0
        self.rejoins = 0
        self.restarts = 0
        # Start the media over (restart_media) when a peer connection fails.
        self.auto_restart = True
        self._restarting: asyncio.Task[None] | None = None
        # What was published, to publish again after a rejoin: (track, source, layer).
        self._published: list[
            tuple[MediaStreamTrack, p.Source | None, tuple[str, int, int] | None]
        ] = []
        self._rejoining: asyncio.Task[None] | None = None
        self._config = RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self._offers: asyncio.Queue[p.SfuOffer] = asyncio.Queue()
        self._offer_ufrag: str | None = None  # the SFU's ICE username in its last offer
        self._stale_ufrags: set[str] = set()  # ... in offers for connections since dropped
        # Rewrites SDP from the SFU before use (kind "answer" for the publisher connection,
        # "offer" for the subscriber one): for NAT experiments and network tests.
        self.remote_sdp_filter: Callable[[str, str], Awaitable[str]] | None = None
        self._answerer: asyncio.Task[None] | None = None
        # Settled when the call is carried on over a new connection (resume).
        self._back: asyncio.Future[None] | None = None
        self._closing = False
        self.resumes = 0
        self._listen(client)
        self._senders: dict[str, tuple[Any, MediaStreamTrack]] = {}  # mid -> (transceiver, source)
        self.paused_layers: list[str] = []
        # Received tracks the SFU does not send now: this connection's downlink has no room
        # for them (sfu.paused); show a placeholder for each.
        self.paused_tracks: list[str] = []
        # Received video the SFU does not send now because of stream selection (sfu.paused
        # unselected): above selective_forwarding_above participants the room forwards only
        # the video of the video_last_n most recent speakers and of pinned participants.
        self.unselected_tracks: list[str] = []
        self.removed = asyncio.Event()

    def _listen(self, client: HuddleClient) -> None:
        client.on("sfu.offer", self._on_offer_event)
        client.on("call.reconnect", self._on_reconnect_event)
        client.on("call.removed", self._on_removed_event)
        client.on("sfu.layers", self._on_layers_event)
        client.on("sfu.paused", self._on_paused_event)

    async def _request(self, message: p.Request, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        """A request of this call. One whose connection closed waits for ``resume`` and is
        sent again over the new connection, so that a short drop fails nothing."""
        while True:
            client = self.client
            try:
                return await client.request(message, timeout=timeout)
            except ConnectionClosed as exc:
                if self._closing:
                    raise
                await self._wait_resumed(client, exc)

    async def _wait_resumed(self, old: HuddleClient, error: ConnectionClosed) -> None:
        if self.client is not old:
            return  # already carried on over a new connection: send again now
        if self._back is None or self._back.done():
            self._back = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(RESUME_GIVE_UP_S):
                await asyncio.shield(self._back)
        except TimeoutError:
            raise error from None

    async def resume(self, client: HuddleClient, *, timeout: float = RESUME_WAIT_S) -> bool:
        """Carry the call on over ``client``, a new connection of this device after the old
        one dropped: connected, not yet past ``hello`` (this says hello for it, with the old
        connection's device id unless it has its own). True when the server resumed the
        call (``call.resumed``: the same participant, media never stopped); False when the
        device came back too late and the call joined the room again and published again.
        Requests the call made meanwhile are sent again once it is back."""
        if client.hello_reply is not None:
            raise ValueError("resume() says hello itself: give it a client before hello")
        loop = asyncio.get_running_loop()
        resumed: asyncio.Future[p.CallResumed] = loop.create_future()

        def on_resumed(event: p.Event) -> None:
            if isinstance(event, p.CallResumed) and event.room == self.room and not resumed.done():
                resumed.set_result(event)

        client.on("call.resumed", on_resumed)
        self._listen(client)
        device = client.device or self.client.device
        self.client = client
        await client.hello(device=device)
        try:
            async with asyncio.timeout(timeout):
                event = await resumed
            back = event.participant == self.participant
        except TimeoutError:
            back = False
        if back:
            self.resumes += 1
        else:
            log.info("call not resumed in time: joining %s again", self.room)
            # The SFU closed our connections when it let us go: a media restart started for
            # that is moot, the rejoin starts everything over.
            restarting, self._restarting = self._restarting, None
            if restarting is not None:
                restarting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await restarting
            await self._rejoin()
        if self._back is not None and not self._back.done():
            self._back.set_result(None)
        return back

    async def join(self) -> p.CallJoinOk:
        reply: p.CallJoinOk = await self._request(p.CallJoin(id="", room=self.room))
        self.joined = reply
        self.participant = reply.participant
        self._config = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in reply.ice_servers
            ],
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            iceTransportPolicy=(
                RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
            ),
        )
        if self._answerer is not None:
            self._answerer.cancel()
        self._answerer = asyncio.create_task(self._answer_offers())
        return reply

    async def publish(
        self,
        *tracks: MediaStreamTrack,
        sources: dict[int, p.Source] | None = None,
        layers: dict[int, tuple[str, int, int]] | None = None,
    ) -> None:
        """Publish tracks (a new offer on the publisher connection each call).

        ``layers`` makes tracks simulcast layers of one source: by track index,
        (source name, quality 0-2, height). The SFU may ask to pause layers (``sfu.layers``):
        the call stops and restarts sending them by itself."""
        if self.publisher is None:
            self.publisher = RTCPeerConnection(self._config)
            self._watch(self.publisher)
        for index, track in enumerate(tracks):
            self._published.append(
                (
                    track,
                    sources.get(index) if sources else None,
                    layers.get(index) if layers else None,
                )
            )
        transceivers = [
            self.publisher.addTransceiver(_Relay(track), direction="sendonly") for track in tracks
        ]
        await self.publisher.setLocalDescription(await self.publisher.createOffer())
        by_mid: dict[str, p.Source] = {}
        layer_info: dict[str, p.LayerInfo] = {}
        for index, transceiver in enumerate(transceivers):
            if transceiver.mid is None:
                continue
            self._senders[transceiver.mid] = (transceiver, tracks[index])
            if sources and index in sources:
                by_mid[transceiver.mid] = sources[index]
            if layers and index in layers:
                source, quality, height = layers[index]
                layer_info[transceiver.mid] = p.LayerInfo(
                    source=source, quality=quality, height=height
                )
        try:
            await self._send_offer(by_mid, layer_info)
        except RequestError:
            # Refused, so nothing of this offer is published: these tracks are forgotten,
            # and their sections stay inactive in later offers.
            for transceiver in transceivers:
                transceiver.direction = "inactive"
                self._senders.pop(transceiver.mid or "", None)
            del self._published[len(self._published) - len(tracks) :]
            raise

    async def unpublish(self, *tracks: MediaStreamTrack) -> None:
        """Stop publishing ``tracks`` (e.g. the end of a screen share): their sections go
        inactive in a new offer, and subscribers are offered the change in turn."""
        if self.publisher is None:
            return
        for mid, (transceiver, source) in list(self._senders.items()):
            if source in tracks:
                transceiver.direction = "inactive"
                del self._senders[mid]
        self._published = [e for e in self._published if e[0] not in tracks]
        await self.publisher.setLocalDescription(await self.publisher.createOffer())
        await self._send_offer({}, {})

    async def _send_offer(
        self, sources: dict[str, p.Source], layers: dict[str, p.LayerInfo]
    ) -> None:
        assert self.publisher is not None
        offer, candidates = self._local_sdp(self.publisher)
        reply: p.SfuPublishOk = await self._request(
            p.SfuPublish(id="", room=self.room, sdp=offer, sources=sources, layers=layers),
            timeout=DEFAULT_TIMEOUT_S,
        )
        answer = reply.sdp
        if self.remote_sdp_filter is not None:
            answer = await self.remote_sdp_filter("answer", answer)
        await self.publisher.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await self._trickle("publisher", candidates)

    async def set_state(
        self,
        *,
        audio_muted: bool | None = None,
        video_muted: bool | None = None,
        screen_sharing: bool | None = None,
    ) -> None:
        await self._request(
            p.CallState(
                id="",
                room=self.room,
                audio_muted=audio_muted,
                video_muted=video_muted,
                screen_sharing=screen_sharing,
            )
        )

    async def mute(self, participant: str, kind: Literal["audio", "video"]) -> None:
        """Room admins only."""
        await self._request(p.CallMute(id="", room=self.room, participant=participant, kind=kind))

    async def remove(self, participant: str) -> None:
        """Room admins only."""
        await self._request(p.CallRemove(id="", room=self.room, participant=participant))

    def _on_layers_event(self, event: p.Event) -> None:
        if not isinstance(event, p.SfuLayers) or event.room != self.room:
            return
        for mid, (transceiver, source) in self._senders.items():
            paused = mid in event.paused
            if paused and mid not in self.paused_layers:
                transceiver.sender.replaceTrack(None)
            elif not paused and mid in self.paused_layers:
                transceiver.sender.replaceTrack(_Relay(source, resumed=True))
        self.paused_layers = list(event.paused)

    def _on_paused_event(self, event: p.Event) -> None:
        if isinstance(event, p.SfuPaused) and event.room == self.room:
            self.paused_tracks = list(event.tracks)
            self.unselected_tracks = list(event.unselected)

    async def set_max_height(self, track: str, max_height: int | None) -> None:
        """The height the received ``track`` is shown at (sfu.track_settings)."""
        await self._request(
            p.SfuTrackSettings(id="", room=self.room, track=track, max_height=max_height)
        )

    def _on_removed_event(self, event: p.Event) -> None:
        if isinstance(event, p.CallRemoved) and event.room == self.room:
            self.removed.set()

    def _local_sdp(self, pc: RTCPeerConnection) -> tuple[str, list[tuple[str | None, int, str]]]:
        sdp = pc.localDescription.sdp
        if not self.trickle:
            return sdp, []
        return split_candidates(sdp)

    async def _trickle(
        self, which: Literal["publisher", "subscriber"], found: list[tuple[str | None, int, str]]
    ) -> None:
        if not self.trickle:
            return
        for mid, index, candidate in found:
            await self._request(
                p.SfuCandidate(
                    id="",
                    room=self.room,
                    pc=which,
                    candidate=candidate,
                    sdp_mid=mid,
                    sdp_mline_index=index,
                )
            )
        await self._request(p.SfuCandidate(id="", room=self.room, pc=which, candidate=None))

    async def next_track(
        self, timeout: float = DEFAULT_TIMEOUT_S
    ) -> tuple[MediaStreamTrack, p.TrackInfo]:
        return await asyncio.wait_for(self.tracks.get(), timeout)

    async def leave(self) -> None:
        # The SFU closes our connections as we leave: that is no failure to restart from.
        self.auto_restart = False
        self._closing = True
        with contextlib.suppress(Exception):
            await self.client.request(p.CallLeave(id="", room=self.room))
        await self.close()

    def _on_reconnect_event(self, event: p.Event) -> None:
        busy = self._rejoining is not None and not self._rejoining.done()
        if isinstance(event, p.CallReconnect) and event.room == self.room and not busy:
            self._rejoining = asyncio.create_task(self._rejoin())

    async def _rejoin(self) -> None:
        await self._close_connections()
        try:
            await self.join()
            await self._republish()
        except Exception:
            log.exception("rejoin failed")
            return
        self.rejoins += 1

    async def _republish(self) -> None:
        published, self._published = self._published, []
        if published:
            await self.publish(
                *(track for track, _, _ in published),
                sources={i: s for i, (_, s, _) in enumerate(published) if s is not None},
                layers={i: x for i, (_, _, x) in enumerate(published) if x is not None},
            )

    async def restart_media(self) -> None:
        """Start the media over on new peer connections (``sfu.restart``), keeping the
        place in the room: what an ICE restart does when the network changed. Done by
        itself when a connection fails (``auto_restart``)."""
        await self._close_connections()
        await self._request(p.SfuRestart(id="", room=self.room))
        await self._republish()
        self.restarts += 1

    async def _close_connections(self) -> None:
        # Offers for the subscriber connection being dropped may still be on their way: the
        # SFU's ICE credentials tell them from offers for the next one.
        if self._offer_ufrag is not None:
            self._stale_ufrags.add(self._offer_ufrag)
        # Forget them before closing: a connection of ours that closes is taken as failed.
        pcs = (self.publisher, self.subscriber)
        self.publisher = self.subscriber = None
        for pc in pcs:
            if pc is not None:
                await pc.close()
        for info in self.track_info.values():
            self.ended.put_nowait(info)
        self.track_info.clear()
        self._senders.clear()
        self.paused_layers = []
        self.paused_tracks = []
        self.unselected_tracks = []
        while not self._offers.empty():
            self._offers.get_nowait()

    def _watch(self, pc: RTCPeerConnection) -> None:
        @pc.on("connectionstatechange")
        def changed() -> None:
            # When consent freshness expires, aiortc's DTLS transport sees the ICE connection
            # end before its ICE transport does, and the connection closes itself: it goes
            # from "connected" to "closed" without "failed". A connection closes only through
            # us (after forgetting it), a failure, or the SFU's end closing it.
            if pc.connectionState not in ("failed", "closed") or self._restarting:
                return
            if not self.auto_restart or self.removed.is_set():
                return
            if pc is not self.publisher and pc is not self.subscriber:
                return  # an old connection, already replaced or closed by us
            log.info("peer connection %s: restarting media", pc.connectionState)
            self._restarting = asyncio.create_task(self._restart_on_failure())

    async def _restart_on_failure(self) -> None:
        try:
            await self.restart_media()
        except RequestError as exc:
            if exc.code != p.ErrorCode.NOT_IN_CALL:
                log.exception("media restart failed")
            # Otherwise out of the room meanwhile (removed, say): nothing to restart.
        except ConnectionClosed:
            log.info("media not restarted: the signaling connection closed")
        except Exception:
            log.exception("media restart failed")
        finally:
            self._restarting = None

    async def close(self) -> None:
        self.auto_restart = False
        self._closing = True
        if self._back is not None and not self._back.done():
            self._back.cancel()
        for task in (self._rejoining, self._restarting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._answerer is not None:
            self._answerer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._answerer
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                await pc.close()

    def _on_offer_event(self, event: p.Event) -> None:
        if isinstance(event, p.SfuOffer) and event.room == self.room:
            self._offers.put_nowait(event)

    async def _answer_offers(self) -> None:
        while True:
            offer = await self._offers.get()
            ufrag = ice_ufrag(offer.sdp)
            if ufrag in self._stale_ufrags:
                log.info("offer for a dropped connection skipped")
                continue
            self._offer_ufrag = ufrag
            offered = {info.mid for info in offer.tracks}
            for mid in [m for m in self.track_info if m not in offered]:
                # No longer forwarded: its section is inactive in this offer.
                self.ended.put_nowait(self.track_info.pop(mid))
            for info in offer.tracks:
                self.track_info[info.mid] = info
            if self.subscriber is None:
                self.subscriber = RTCPeerConnection(self._config)
                self.subscriber.on("track", self._on_track)
                self._watch(self.subscriber)
            pc = self.subscriber
            sdp = offer.sdp
            if self.remote_sdp_filter is not None:
                sdp = await self.remote_sdp_filter("offer", sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            answer, candidates = self._local_sdp(pc)
            try:
                await self._request(p.SfuAnswer(id="", room=self.room, sdp=answer))
                await self._trickle("subscriber", candidates)
            except Exception:
                log.exception("subscriber answer refused")
                continue
            self.offers_answered += 1

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.subscriber is not None
        for transceiver in self.subscriber.getTransceivers():
            if transceiver.receiver.track is track and transceiver.mid in self.track_info:
                self.tracks.put_nowait((track, self.track_info[transceiver.mid]))
                return
        log.warning("track without track info")
