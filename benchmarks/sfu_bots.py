"""The SFU load bots: one process's share of a scenario's participants, on the parent's commands.

A participant publishes the pre-encoded clip (``benchmarks.sfu_media``), subscribes to the
other publishers of its scenario, or both. The same bots speak three dialects: Huddle's
protocol through ``huddle.call.CallClient``, the Janus VideoRoom over its HTTP API, and the
naive relay's JSON (``benchmarks.sfu_naive``). Subscriber receivers only count packets
(``Recorder``): no bot ever decodes or encodes media.

Commands, each answered on the pipe with ``("ok", result)`` or ``("error", traceback)``:
``publish`` -> {name: feed id}; ``subscribe`` (feeds); ``wait_flowing`` (deadline) ->
(streams flowing, streams expected); ``measure`` (start, end) -> ``BotMeasurement``; ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from benchmarks.procs import ignore_interrupts, serve_commands
from benchmarks.sfu_janus import JanusSession
from benchmarks.sfu_media import Clip, PacedPacketTrack, Recorder, install_recorder
from benchmarks.sfu_stamps import install_kernel_stamps
from huddle.call import CallClient
from huddle.client import HuddleClient
from sfu.aiortc_glue import install
from signaling.auth import Grants, mint_token

Target = Literal["huddle", "janus", "naive"]
CONNECT_TIMEOUT_S: Final = 30.0
CLOSE_TIMEOUT_S: Final = 15.0
TOKEN_TTL_S: Final = 3600
# Time after a window's end for packets already sent to arrive before the figures are read.
WINDOW_GRACE_S: Final = 0.3
# The bot's own event-loop lag is sampled this often during a window: a subscriber whose
# loop is late reads packets late, which would count as delay through the server.
LAG_PROBE_S: Final = 0.01


@dataclass(frozen=True)
class ParticipantSpec:
    name: str
    publishes: bool
    subscribes_to: tuple[str, ...]  # names of the publishers it receives


@dataclass(frozen=True)
class BotSpec:
    target: Target
    index: int
    url: str  # huddle and naive: http://127.0.0.1:PORT; janus: http://ADDR:PORT/janus
    ice_address: str  # the address the bots gather ICE candidates on ("": every one)
    room: str
    janus_room: int
    participants: tuple[ParticipantSpec, ...]
    fixture: str
    api_key: str = ""
    api_secret: str = ""
    nice: int = 0  # added to the bot process's niceness (see sfu_load --bot-nice)
    # Starts every identity and device (--url: a run's own users, apart from other runs').
    users: str = ""


@dataclass
class StreamFigures:
    kind: str
    packets: int  # received in the window
    payload_bytes: int
    expected: int  # from sequence numbers: highest - lowest + 1 in the window
    # When its latest packet in the window arrived (time.monotonic()): a stream that stopped
    # (its node gone) still has highest - lowest + 1 == received, so no loss shows.
    last_at: float | None = None


@dataclass
class BotMeasurement:
    streams: list[StreamFigures]
    expected_streams: int
    send_keys: array[int]
    send_times: array[float]
    recv_keys: array[int]
    recv_times: array[float]
    recv_stamps: array[float]
    unstamped: int
    loop_lags_ms: list[float]  # this process's event-loop lag, one sample per LAG_PROBE_S
    max_late_ms: float  # how far behind schedule a publisher track has been
    resyncs: int  # backlogs a starved publisher dropped
    rtx_packets: int
    unrouted: int  # received by a subscriber's transport, but not routable to a receiver
    unknown_payload_type: int
    errors: list[str] = field(default_factory=list)


class Participant(Protocol):
    spec: ParticipantSpec
    tracks: tuple[PacedPacketTrack, ...]

    async def start(self) -> str: ...

    async def subscribe(self, feeds: dict[str, str]) -> None: ...

    async def close(self) -> None: ...


def _prefer(pc: RTCPeerConnection, kind: str, mime: str) -> None:
    """Offer only the fixture's codec on the publisher's transceivers."""
    capabilities = RTCRtpSender.getCapabilities(kind)
    for transceiver in pc.getTransceivers():
        if transceiver.kind == kind:
            transceiver.setCodecPreferences(
                [c for c in capabilities.codecs if c.mimeType.lower() == mime]
            )


def _publisher_pc(tracks: tuple[PacedPacketTrack, ...]) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
    _prefer(pc, "video", "video/vp8")
    _prefer(pc, "audio", "audio/opus")
    return pc


async def _connected(pc: RTCPeerConnection, what: str) -> None:
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise ConnectionError(f"{what}: connection {pc.connectionState}")
            await asyncio.sleep(0.05)


class HuddleParticipant:
    def __init__(self, bot: BotSpec, spec: ParticipantSpec, clip: Clip, http: Any) -> None:
        self.spec = spec
        self.tracks: tuple[PacedPacketTrack, ...] = clip.tracks() if spec.publishes else ()
        name = f"{bot.users}-{spec.name}" if bot.users else spec.name
        token = mint_token(
            api_key=bot.api_key,
            api_secret=bot.api_secret,
            identity=name,
            ttl_s=TOKEN_TTL_S,
            grants=Grants(
                rooms=[bot.room],
                can_publish=spec.publishes,
                can_subscribe=bool(spec.subscribes_to),
            ),
        )
        self.client = HuddleClient(bot.url, token, device=name, session=http)
        self.call = CallClient(self.client, bot.room)

    async def start(self) -> str:
        await self.client.connect()
        await self.client.hello()
        await self.call.join()
        if self.tracks:
            await self.call.publish(*self.tracks, sources={0: "camera", 1: "microphone"})
            assert self.call.publisher is not None
            await _connected(self.call.publisher, f"{self.spec.name} publisher")
        return self.call.participant

    async def subscribe(self, feeds: dict[str, str]) -> None:
        return None  # the SFU offers every publisher's tracks by itself (sfu.offer)

    async def close(self) -> None:
        await self.call.leave()
        await self.client.close()


class JanusParticipant:
    def __init__(self, bot: BotSpec, spec: ParticipantSpec, clip: Clip, http: Any) -> None:
        self.spec = spec
        self.tracks: tuple[PacedPacketTrack, ...] = clip.tracks() if spec.publishes else ()
        self.room = bot.janus_room
        self.session = JanusSession(http, bot.url)
        self.pcs: list[RTCPeerConnection] = []

    async def start(self) -> str:
        await self.session.create()
        if not self.tracks:
            return ""
        handle = await self.session.attach()
        joined = await self.session.message(
            handle,
            {"request": "join", "ptype": "publisher", "room": self.room, "display": self.spec.name},
        )
        feed = str(joined["plugindata"]["data"]["id"])
        pc = _publisher_pc(self.tracks)
        self.pcs.append(pc)
        await pc.setLocalDescription(await pc.createOffer())
        reply = await self.session.message(
            handle,
            {"request": "configure", "audio": True, "video": True},
            jsep={"type": "offer", "sdp": pc.localDescription.sdp},
        )
        jsep = reply.get("jsep")
        if not jsep:
            raise RuntimeError(f"janus configure: no answer in {reply}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
        await _connected(pc, f"{self.spec.name} publisher")
        return feed

    async def subscribe(self, feeds: dict[str, str]) -> None:
        if not self.spec.subscribes_to:
            return
        handle = await self.session.attach()
        streams = [{"feed": int(feeds[name])} for name in self.spec.subscribes_to]
        attached = await self.session.message(
            handle,
            {"request": "join", "ptype": "subscriber", "room": self.room, "streams": streams},
        )
        jsep = attached.get("jsep")
        if not jsep:
            raise RuntimeError(f"janus subscribe: no offer in {attached}")
        pc = RTCPeerConnection()
        self.pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.session.message(
            handle, {"request": "start"}, jsep={"type": "answer", "sdp": pc.localDescription.sdp}
        )

    async def close(self) -> None:
        await self.session.destroy()
        for pc in self.pcs:
            await pc.close()


class NaiveParticipant:
    def __init__(self, bot: BotSpec, spec: ParticipantSpec, clip: Clip, http: Any) -> None:
        self.spec = spec
        self.tracks: tuple[PacedPacketTrack, ...] = clip.tracks() if spec.publishes else ()
        self.url = bot.url
        self.http: aiohttp.ClientSession = http
        self.pcs: dict[str, RTCPeerConnection] = {}

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=CONNECT_TIMEOUT_S)
        async with self.http.post(f"{self.url}{path}", json=body, timeout=timeout) as resp:
            resp.raise_for_status()
            doc: dict[str, Any] = await resp.json()
        return doc

    async def start(self) -> str:
        if not self.tracks:
            return ""
        pc = _publisher_pc(self.tracks)
        await pc.setLocalDescription(await pc.createOffer())
        reply = await self._post("/publish", {"sdp": pc.localDescription.sdp})
        self.pcs[reply["id"]] = pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        await _connected(pc, f"{self.spec.name} publisher")
        return str(reply["id"])

    async def subscribe(self, feeds: dict[str, str]) -> None:
        if not self.spec.subscribes_to:
            return
        offer = await self._post(
            "/subscribe", {"feeds": [feeds[name] for name in self.spec.subscribes_to]}
        )
        pc = RTCPeerConnection()
        self.pcs[offer["id"]] = pc
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._post("/answer", {"id": offer["id"], "sdp": pc.localDescription.sdp})

    async def close(self) -> None:
        for name, pc in self.pcs.items():
            with contextlib.suppress(Exception):
                await self._post("/close", {"id": name})
            await pc.close()


_KINDS: Final[dict[Target, Any]] = {
    "huddle": HuddleParticipant,
    "janus": JanusParticipant,
    "naive": NaiveParticipant,
}


class Bot:
    def __init__(self, spec: BotSpec, recorder: Recorder, http: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.recorder = recorder
        clip = Clip.load(Path(spec.fixture))
        cls = _KINDS[spec.target]
        self.participants: list[Participant] = [cls(spec, p, clip, http) for p in spec.participants]
        self.expected_streams = 2 * sum(len(p.subscribes_to) for p in spec.participants)
        self.errors: list[str] = []

    async def publish(self) -> dict[str, str]:
        feeds = await asyncio.gather(*(p.start() for p in self.participants))
        return {
            p.spec.name: feed
            for p, feed in zip(self.participants, feeds, strict=True)
            if p.spec.publishes
        }

    async def subscribe(self, feeds: dict[str, str]) -> None:
        await asyncio.gather(*(p.subscribe(feeds) for p in self.participants))

    async def wait_flowing(self, deadline: float) -> tuple[int, int]:
        while time.monotonic() < deadline:
            if self.recorder.flowing() >= self.expected_streams:
                break
            await asyncio.sleep(0.1)
        return self.recorder.flowing(), self.expected_streams

    async def measure(self, start: float, end: float) -> BotMeasurement:
        rec = self.recorder
        rec.arm(start, end)
        tracks = [t for p in self.participants for t in p.tracks]
        for track in tracks:
            track.max_late_s = 0.0
            track.resyncs = 0
        lags = await self._probe_lag(start, end)
        await asyncio.sleep(max(0.0, end + WINDOW_GRACE_S - time.monotonic()))
        streams = [
            StreamFigures(
                s.kind, s.window_packets, s.window_bytes, s.window_expected, s.window_last_at
            )
            for s in rec.streams.values()
        ]
        return BotMeasurement(
            streams=streams,
            expected_streams=self.expected_streams,
            send_keys=rec.send_keys,
            send_times=rec.send_times,
            recv_keys=rec.recv_keys,
            recv_times=rec.recv_times,
            recv_stamps=rec.recv_stamps,
            unstamped=rec.unstamped,
            loop_lags_ms=lags,
            max_late_ms=1000 * max((t.max_late_s for t in tracks), default=0.0),
            resyncs=sum(t.resyncs for t in tracks),
            rtx_packets=rec.rtx,
            unrouted=rec.unrouted,
            unknown_payload_type=rec.unknown_payload_type,
            errors=list(self.errors),
        )

    @staticmethod
    async def _probe_lag(start: float, end: float) -> list[float]:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        lags: list[float] = []
        while (now := time.monotonic()) < end:
            await asyncio.sleep(LAG_PROBE_S)
            lags.append(1000 * max(0.0, time.monotonic() - now - LAG_PROBE_S))
        return lags

    async def close(self) -> None:
        async def one(p: Participant) -> None:
            try:
                await p.close()
            except Exception as exc:
                self.errors.append(f"close {p.spec.name}: {type(exc).__name__}: {exc}")

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.gather(*(one(p) for p in self.participants))

    async def run(self, command: tuple[Any, ...]) -> Any:
        name = command[0]
        if name == "publish":
            return await self.publish()
        if name == "subscribe":
            return await self.subscribe(command[1])
        if name == "wait_flowing":
            return await self.wait_flowing(command[1])
        if name == "measure":
            return await self.measure(command[1], command[2])
        raise ValueError(f"unknown bot command {name!r}")


async def _serve(conn: Connection, spec: BotSpec) -> None:
    # No address: gather on every interface, as a client reaching a deployment does.
    install(host_addresses=[spec.ice_address] if spec.ice_address else ())
    recorder = install_recorder()  # after install(): its counting receive path wins
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        bot = Bot(spec, recorder, http)
        try:
            await serve_commands(conn, bot.run)
        finally:
            await bot.close()
            with contextlib.suppress(OSError):
                conn.send(("closed", bot.errors))


def bot_main(conn: Connection, spec: BotSpec) -> None:
    ignore_interrupts()
    if spec.nice:
        os.nice(spec.nice)
    # asyncio's own loop, not uvloop: only it lets the bots read kernel receive times.
    install_kernel_stamps()
    asyncio.run(_serve(conn, spec))
