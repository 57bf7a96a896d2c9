"""The signaling load benchmark's driver processes: its clients and the phases they run.

Each driver process holds one contiguous share of a target's N clients (a Huddle device
that says ``hello`` with a minted token, or a bare WebSocket) and runs the phases that
``benchmarks.signaling_load`` sends it over a pipe: warm-up, connect, paced, saturate,
close. Each phase answers with a :class:`PhaseResult`: counts, the round trips it timed and
its first error. :class:`DriverPool` is the parent's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Final, Literal, Protocol

import aiohttp
from aiohttp import WSMsgType

from benchmarks.procs import (
    SERVER_START_TIMEOUT_S,
    ProcessPool,
    ignore_interrupts,
    run_loop,
    serve_commands,
    sleep_until,
)
from huddle.client import HuddleClient
from signaling import protocol as p
from signaling.auth import mint_token

Kind = Literal["huddle", "bare"]

CONNECT_TIMEOUT_S: Final = 20.0
REQUEST_TIMEOUT_S: Final = 10.0
CLOSE_TIMEOUT_S: Final = 30.0
# Connections opened and closed before the baseline RSS, so one-time allocations (first JWT
# check, first Lua script load, lazily built encoders) are not charged to the N connections.
WARMUP_PER_DRIVER: Final = 5
TOKEN_TTL_S: Final = 3600

_PING_FRAME: Final = p.encode(p.Ping(id="r1")).decode()


@dataclass(frozen=True)
class DriverSpec:
    kind: Kind
    urls: tuple[str, ...]  # every node: client k connects to urls[k % len(urls)]
    index: int
    first: int  # global number of this driver's first client
    count: int
    total: int
    connect_concurrency: int
    api_key: str
    api_secret: str
    # Starts every identity: a run against a deployment (or each shard) uses its own users.
    users: str = "bench"

    def url(self, number: int) -> str:
        """The node client ``number`` (global, from 0) connects to: clients are spread over
        the nodes in turn, whichever driver holds them."""
        return self.urls[number % len(self.urls)]


@dataclass
class PhaseResult:
    """What one driver saw in one phase. Times are ``time.monotonic()``, system-wide on Linux."""

    ok: int = 0
    errors: int = 0
    started: float = 0.0
    ended: float = 0.0
    rtts: list[float] = field(default_factory=list)  # seconds
    first_error: str = ""

    def fail(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"


class LoadClient(Protocol):
    async def open(self) -> None: ...

    async def roundtrip(self) -> None: ...

    async def close(self) -> None: ...


class HuddleLoadClient:
    """Connect + hello with a minted token; a round trip is ``ping`` -> ``ok``."""

    def __init__(
        self, spec: DriverSpec, url: str, identity: str, http: aiohttp.ClientSession
    ) -> None:
        token = mint_token(
            api_key=spec.api_key,
            api_secret=spec.api_secret,
            identity=identity,
            ttl_s=TOKEN_TTL_S,
        )
        self._client = HuddleClient(url, token, device=identity, session=http)

    async def open(self) -> None:
        await self._client.connect()
        await self._client.hello()

    async def roundtrip(self) -> None:
        await self._client.request(p.Ping(id=""), timeout=REQUEST_TIMEOUT_S)

    async def close(self) -> None:
        await self._client.close()


class BareLoadClient:
    """Connected is all there is; a round trip is the echo of the same ping frame."""

    def __init__(
        self, spec: DriverSpec, url: str, identity: str, http: aiohttp.ClientSession
    ) -> None:
        self._url = url.replace("http", "ws", 1) + "/v1/ws"
        self._http = http
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        self._ws = await self._http.ws_connect(self._url)

    async def roundtrip(self) -> None:
        assert self._ws is not None
        await self._ws.send_str(_PING_FRAME)
        msg = await self._ws.receive(timeout=REQUEST_TIMEOUT_S)
        if msg.type is not WSMsgType.TEXT:
            raise ConnectionError(f"expected the echo, got {msg.type.name}")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()


class Driver:
    """One process's share of the clients, run phase by phase on the parent's commands."""

    def __init__(self, spec: DriverSpec, http: aiohttp.ClientSession) -> None:
        self.spec = spec
        self._http = http
        self.clients: list[LoadClient] = []

    def _new(self, url: str, identity: str) -> LoadClient:
        cls = HuddleLoadClient if self.spec.kind == "huddle" else BareLoadClient
        return cls(self.spec, url, identity, self._http)

    async def _open(self, url: str, identity: str, result: PhaseResult) -> LoadClient | None:
        client = self._new(url, identity)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await client.open()
        except Exception as exc:
            result.fail(exc)
            with contextlib.suppress(Exception):
                await client.close()
            return None
        result.ok += 1
        return client

    async def warmup(self) -> PhaseResult:
        result = PhaseResult(started=time.monotonic())
        for i in range(min(WARMUP_PER_DRIVER, self.spec.count)):
            identity = f"{self.spec.users}-warmup-{self.spec.index}-{i}"
            client = await self._open(self.spec.url(self.spec.first + i), identity, result)
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.roundtrip()
                await client.close()
        result.ended = time.monotonic()
        return result

    async def connect(self, start_at: float) -> PhaseResult:
        result = PhaseResult()
        gate = asyncio.Semaphore(self.spec.connect_concurrency)

        async def one(number: int) -> None:
            async with gate:
                identity = f"{self.spec.users}-{number}"
                client = await self._open(self.spec.url(number), identity, result)
            if client is not None:
                self.clients.append(client)

        await sleep_until(start_at)
        result.started = time.monotonic()
        first = self.spec.first
        await asyncio.gather(*(one(first + i) for i in range(self.spec.count)))
        result.ended = time.monotonic()
        return result

    async def paced(self, start_at: float, duration: float, interval: float) -> PhaseResult:
        """Each client sends one ping per ``interval``, the clients evenly spread over it."""
        result = PhaseResult(started=start_at)
        deadline = start_at + duration

        async def one(client: LoadClient, number: int) -> None:
            due = start_at + interval * number / self.spec.total
            while due < deadline:
                await sleep_until(due)
                if not await self._timed(client, result):
                    return
                due += interval
                now = time.monotonic()
                while due < now:  # a reply slower than the interval: skip the missed slots
                    due += interval

        await asyncio.gather(*(one(c, self.spec.first + i) for i, c in enumerate(self.clients)))
        result.ended = time.monotonic()
        return result

    async def saturate(self, start_at: float, duration: float) -> PhaseResult:
        """Every client sends requests back to back, one in flight each, until the deadline."""
        result = PhaseResult(started=start_at)
        deadline = start_at + duration

        async def one(client: LoadClient) -> None:
            while time.monotonic() < deadline and await self._timed(client, result):
                pass

        await sleep_until(start_at)
        await asyncio.gather(*(one(c) for c in self.clients))
        result.ended = time.monotonic()
        return result

    async def _timed(self, client: LoadClient, result: PhaseResult) -> bool:
        """One round trip, timed. False after a failure: that client stops for this phase
        (a closed socket fails at once and would otherwise spin until the deadline)."""
        sent = time.perf_counter()
        try:
            await client.roundtrip()
        except Exception as exc:
            result.fail(exc)
            return False
        result.rtts.append(time.perf_counter() - sent)
        result.ok += 1
        return True

    async def close_all(self) -> PhaseResult:
        result = PhaseResult(started=time.monotonic())
        clients, self.clients = self.clients, []

        async def one(client: LoadClient) -> None:
            try:
                await client.close()
            except Exception as exc:
                result.fail(exc)
            else:
                result.ok += 1

        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.gather(*(one(c) for c in clients))
        except TimeoutError as exc:
            result.fail(exc)
        result.ended = time.monotonic()
        return result

    async def run(self, command: tuple[Any, ...]) -> PhaseResult:
        name = command[0]
        if name == "warmup":
            return await self.warmup()
        if name == "connect":
            return await self.connect(command[1])
        if name in ("paced", "saturate"):
            # The driver's own collector pauses would read as server latency; a timed
            # phase is short and bounded, so its garbage waits until the phase ends.
            gc.collect()
            gc.disable()
            try:
                if name == "paced":
                    return await self.paced(command[1], command[2], command[3])
                return await self.saturate(command[1], command[2])
            finally:
                gc.enable()
        if name == "close":
            return await self.close_all()
        raise ValueError(f"unknown driver command {name!r}")


async def _drive(conn: Connection, spec: DriverSpec) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        driver = Driver(spec, http)
        try:
            await serve_commands(conn, driver.run)
        finally:
            await driver.close_all()


def _driver_main(conn: Connection, spec: DriverSpec) -> None:
    ignore_interrupts()
    run_loop(_drive(conn, spec))


class DriverPool(ProcessPool):
    """The driver processes of one target, with a pipe each for phase commands."""

    def __init__(self, specs: Sequence[DriverSpec]) -> None:
        super().__init__(_driver_main, specs, SERVER_START_TIMEOUT_S)

    def run(self, command: tuple[Any, ...], timeout: float) -> list[PhaseResult]:
        return [r for r in super().run(command, timeout) if isinstance(r, PhaseResult)]
