"""Signaling load: N authenticated WebSocket clients on one node, beside a bare aiohttp baseline.

    python -m benchmarks.signaling_load                     # N=2000, starts its own node
    python -m benchmarks.signaling_load --n 200 --json results/signaling.json
    python -m benchmarks.signaling_load --url http://127.0.0.1:8080 --server-pid PID \\
        --api-key KEY --api-secret SECRET

For each target (the Huddle node, then a bare aiohttp echo server this script starts) it
measures the connect rate, the server's memory per idle connection, ping round trips under a
moderate load (every client one ping per interval) and the request rate under saturation
(every client sending back to back). Load comes from several driver processes whose own CPU
is reported beside the server's, so a client-bound run is never read as the server's limit.
Loopback only; every phase is bounded in count and time. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
import json
import math
import os
import platform
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import aiohttp
import psutil
from aiohttp import WSMsgType, web

from benchmarks.procs import (
    SERVER_START_TIMEOUT_S,
    ProcessPool,
    bounded,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    serve_until_signal,
    start_logged,
    stop_process,
    wait_healthy,
)
from huddle.client import HuddleClient
from signaling import protocol as p
from signaling.auth import mint_token

Kind = Literal["huddle", "bare"]

DEFAULT_N: Final = 2000
MAX_N: Final = 20_000
MAX_PROCS: Final = 32
MAX_DURATION_S: Final = 60.0
DEFAULT_DURATION_S: Final = 5.0
# Longer than the node's presence refresh interval (15 s by default), so that its periodic
# work falls inside the latency window instead of in it by chance.
DEFAULT_PACED_S: Final = 16.0
DEFAULT_PING_INTERVAL_S: Final = 1.0
DEFAULT_CONNECT_CONCURRENCY: Final = 64
CONNECT_TIMEOUT_S: Final = 20.0
REQUEST_TIMEOUT_S: Final = 10.0
CLOSE_TIMEOUT_S: Final = 30.0
# Drivers start each phase together at a shared monotonic instant this far ahead.
START_DELAY_S: Final = 0.3
# Time for the server to finish the last hellos and free transient buffers before RSS is read.
SETTLE_S: Final = 1.0
# Connections opened and closed before the baseline RSS, so one-time allocations (first JWT
# check, first Lua script load, lazily built encoders) are not charged to the N connections.
WARMUP_PER_DRIVER: Final = 5
TOKEN_TTL_S: Final = 3600
# A process above this share of one core is taken as saturated.
SATURATED: Final = 0.85
# Processes other than ours busier than this share of the machine make a phase's figures suspect.
DISTURBED: Final = 0.15

TARGET_RATE_VS_BARE: Final = 0.5
TARGET_KIB_PER_CONNECTION: Final = 30.0
TARGET_P99_MS: Final = 20.0

_PING_FRAME: Final = p.encode(p.Ping(id="r1")).decode()


# --- driver processes ------------------------------------------------------------------


@dataclass(frozen=True)
class DriverSpec:
    kind: Kind
    url: str
    index: int
    first: int  # global number of this driver's first client
    count: int
    total: int
    connect_concurrency: int
    api_key: str
    api_secret: str


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

    def __init__(self, spec: DriverSpec, identity: str, http: aiohttp.ClientSession) -> None:
        token = mint_token(
            api_key=spec.api_key,
            api_secret=spec.api_secret,
            identity=identity,
            ttl_s=TOKEN_TTL_S,
        )
        self._client = HuddleClient(spec.url, token, device=identity, session=http)

    async def open(self) -> None:
        await self._client.connect()
        await self._client.hello()

    async def roundtrip(self) -> None:
        await self._client.request(p.Ping(id=""), timeout=REQUEST_TIMEOUT_S)

    async def close(self) -> None:
        await self._client.close()


class BareLoadClient:
    """Connected is all there is; a round trip is the echo of the same ping frame."""

    def __init__(self, spec: DriverSpec, identity: str, http: aiohttp.ClientSession) -> None:
        self._url = spec.url.replace("http", "ws", 1) + "/v1/ws"
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

    def _new(self, identity: str) -> LoadClient:
        cls = HuddleLoadClient if self.spec.kind == "huddle" else BareLoadClient
        return cls(self.spec, identity, self._http)

    async def _open(self, identity: str, result: PhaseResult) -> LoadClient | None:
        client = self._new(identity)
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
            client = await self._open(f"bench-warmup-{self.spec.index}-{i}", result)
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
                client = await self._open(f"bench-{number}", result)
            if client is not None:
                self.clients.append(client)

        await _sleep_until(start_at)
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
                await _sleep_until(due)
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

        await _sleep_until(start_at)
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


async def _sleep_until(instant: float) -> None:
    delay = instant - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _drive(conn: Connection, spec: DriverSpec) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        driver = Driver(spec, http)
        try:
            conn.send(("ready", None))
            while True:
                command = await asyncio.to_thread(conn.recv)
                if command[0] == "stop":
                    return
                try:
                    conn.send(("ok", await driver.run(command)))
                except Exception:
                    conn.send(("error", traceback.format_exc()))
        finally:
            await driver.close_all()


def _driver_main(conn: Connection, spec: DriverSpec) -> None:
    # Ctrl-C reaches the whole process group: the parent alone cleans up, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _run_loop(_drive(conn, spec))


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop like ``huddle serve`` does, so drivers and servers get the same loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


class DriverPool(ProcessPool):
    """The driver processes of one target, with a pipe each for phase commands."""

    def __init__(self, specs: Sequence[DriverSpec]) -> None:
        super().__init__(_driver_main, specs, SERVER_START_TIMEOUT_S)

    def run(self, command: tuple[Any, ...], timeout: float) -> list[PhaseResult]:
        return [r for r in super().run(command, timeout) if isinstance(r, PhaseResult)]


async def _bare_ws(request: web.Request) -> web.WebSocketResponse:
    # Same socket options as the node's endpoint; the reply is the frame itself.
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


async def _bare_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _serve_bare(port: int) -> None:
    app = web.Application()
    app.router.add_get("/v1/ws", _bare_ws)
    app.router.add_get("/healthz", _bare_health)
    await serve_until_signal(app, port)


@dataclass
class Server:
    """A server process this script started, or (``proc`` None) one given by ``--url``."""

    url: str
    pid: int | None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def helpers_pids(self) -> list[int]:
        """The server's children (the node's embedded redis-server)."""
        if self.pid is None:
            return []
        with contextlib.suppress(psutil.Error):
            return [c.pid for c in psutil.Process(self.pid).children(recursive=True)]
        return []

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def _start_server(cmd: list[str], env: dict[str, str], port: int, log_path: Path) -> Server:
    proc = start_logged(cmd, env, log_path)
    server = Server(url=f"http://127.0.0.1:{port}", pid=proc.pid, proc=proc, log_path=log_path)
    try:
        wait_healthy(server.url, server.proc, server.log_path)
    except BaseException:
        server.stop()
        raise
    return server


def start_huddle(data_dir: Path, api_key: str, api_secret: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_")}
    env.pop("REDIS_URL", None)  # the node starts and supervises its own redis-server
    env.update(HUDDLE_API_KEY=api_key, HUDDLE_API_SECRET=api_secret)
    cmd = [
        sys.executable, "-m", "huddle", "serve",
        "--port", str(port),
        "--data-dir", str(data_dir),
        "--log-level", "warning",
        # Measure throughput, not the per-connection limiter.
        "--rate-per-s", "100000",
        "--rate-burst", "100000",
    ]  # fmt: skip
    return _start_server(cmd, env, port, data_dir / "node.log")


def start_bare(folder: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.signaling_load", "--bare-server", str(port)]
    return _start_server(cmd, dict(os.environ), port, folder / "bare.log")


# --- measuring -----------------------------------------------------------------------


def _rss_kib(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total / 1024


@dataclass
class CpuUse:
    """CPU seconds over one phase, and as a share of one core (1.0 = one core busy)."""

    wall_s: float
    server_s: float | None
    helpers_s: float | None  # the node's redis-server
    drivers_s: list[float]
    server_core: float | None
    helpers_core: float | None
    drivers_core: list[float]
    machine_busy: float  # system-wide, as a share of all cores
    others_busy: float  # of that, what the measured processes do not explain


class CpuClock:
    def __init__(self, server: Server, pool: DriverPool) -> None:
        self._server = server
        self._pool = pool
        self._start = self._sample()

    def _sample(self) -> tuple[float, float | None, dict[int, float], list[float], float, float]:
        pid = self._server.pid
        server = cpu_seconds(pid) if pid is not None else None
        # By pid: a helper restarted during the phase must not count negative.
        helpers = {h: cpu_seconds(h) for h in self._server.helpers_pids()}
        return time.monotonic(), server, helpers, self._pool.cpu_seconds(), *machine_busy_seconds()

    def stop(self) -> CpuUse:
        t0, s0, h0, d0, b0, all0 = self._start
        t1, s1, h1, d1, b1, all1 = self._sample()
        wall = max(t1 - t0, 1e-9)
        server = s1 - s0 if s0 is not None and s1 is not None else None
        helpers = sum(h1[h] - h0.get(h, 0.0) for h in h1) if h0 or h1 else None
        drivers = [b - a for a, b in zip(d0, d1, strict=True)]
        ours = sum(drivers) + (server or 0.0) + (helpers or 0.0)
        machine = (b1 - b0) / max(all1 - all0, 1e-9)
        return CpuUse(
            wall_s=wall,
            server_s=server,
            helpers_s=helpers,
            drivers_s=drivers,
            server_core=None if server is None else server / wall,
            helpers_core=None if helpers is None else helpers / wall,
            drivers_core=[d / wall for d in drivers],
            machine_busy=machine,
            others_busy=max(0.0, machine - ours / (wall * (os.cpu_count() or 1))),
        )


@dataclass
class LoadFigures:
    requests: int
    errors: int
    seconds: float
    rate_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    per_server_cpu_s: float | None  # requests per CPU second of the server process
    cpu: CpuUse


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def _load_figures(results: list[PhaseResult], cpu: CpuUse) -> LoadFigures:
    rtts = [r for res in results for r in res.rtts]
    ok = sum(r.ok for r in results)
    seconds = max(r.ended for r in results) - min(r.started for r in results)

    def ms(v: float | None) -> float | None:
        return None if v is None else v * 1000

    return LoadFigures(
        requests=ok,
        errors=sum(r.errors for r in results),
        seconds=seconds,
        rate_per_s=ok / seconds if seconds > 0 else 0.0,
        p50_ms=ms(percentile(rtts, 50)),
        p99_ms=ms(percentile(rtts, 99)),
        max_ms=ms(max(rtts) if rtts else None),
        per_server_cpu_s=ok / cpu.server_s if cpu.server_s else None,
        cpu=cpu,
    )


@dataclass
class TargetResult:
    kind: Kind
    connected: int
    connect_errors: int
    connect_s: float
    connect_rate_per_s: float
    connect_cpu: CpuUse
    rss_baseline_kib: float | None
    rss_idle_kib: float | None
    rss_after_close_kib: float | None
    kib_per_idle_connection: float | None
    helpers_kib_per_idle_connection: float | None  # the node's redis-server
    latency: LoadFigures
    saturation: LoadFigures
    close_errors: int
    first_errors: list[str]
    server_counters: dict[str, float]
    server_log: dict[str, int]


@dataclass
class Options:
    n: int
    procs: int
    duration: float
    paced_duration: float
    ping_interval: float
    connect_concurrency: int
    api_key: str
    api_secret: str


def _specs(kind: Kind, url: str, opts: Options) -> list[DriverSpec]:
    procs = min(opts.procs, opts.n)
    share, extra = divmod(opts.n, procs)
    specs: list[DriverSpec] = []
    first = 0
    for i in range(procs):
        count = share + (1 if i < extra else 0)
        specs.append(
            DriverSpec(
                kind=kind,
                url=url,
                index=i,
                first=first,
                count=count,
                total=opts.n,
                connect_concurrency=max(1, opts.connect_concurrency // procs),
                api_key=opts.api_key,
                api_secret=opts.api_secret,
            )
        )
        first += count
    return specs


def _phase_timeout(opts: Options, seconds: float) -> float:
    return seconds + CONNECT_TIMEOUT_S + REQUEST_TIMEOUT_S + opts.n / 50


def run_target(
    kind: Kind, server: Server, opts: Options, say: Callable[[str], None]
) -> TargetResult:
    """Drive one server through warm-up, connect, idle, paced, saturated and close phases."""
    server_pids = [server.pid] if server.pid is not None else []
    pool = DriverPool(_specs(kind, server.url, opts))

    def timed(name: str, *args: float) -> tuple[list[PhaseResult], CpuUse]:
        """One phase, started by every driver at the same instant, with its CPU use."""
        start_at = time.monotonic() + START_DELAY_S
        seconds = max(opts.duration, opts.paced_duration) if name != "connect" else 0.0
        time.sleep(max(0.0, start_at - time.monotonic()))
        clock = CpuClock(server, pool)
        results = pool.run((name, start_at, *args), _phase_timeout(opts, seconds))
        return results, clock.stop()

    try:
        pool.run(("warmup",), _phase_timeout(opts, 0))
        time.sleep(SETTLE_S)
        rss0 = _rss_kib(server_pids) if server_pids else None
        helpers0 = _rss_kib(server.helpers_pids())

        say(f"{kind}: connecting {opts.n} clients")
        results, connect_cpu = timed("connect")
        connected = sum(r.ok for r in results)
        connect_s = max(r.ended for r in results) - min(r.started for r in results)
        time.sleep(SETTLE_S)
        rss1 = _rss_kib(server_pids) if server_pids else None
        helpers1 = _rss_kib(server.helpers_pids())

        say(f"{kind}: paced pings for {opts.paced_duration:g} s")
        paced, cpu = timed("paced", opts.paced_duration, opts.ping_interval)
        latency = _load_figures(paced, cpu)
        say(f"{kind}: saturating for {opts.duration:g} s")
        saturated, cpu = timed("saturate", opts.duration)
        saturation = _load_figures(saturated, cpu)
        counters = _server_counters(server) if kind == "huddle" else {}

        closed = pool.run(("close",), CLOSE_TIMEOUT_S + 10)
        time.sleep(SETTLE_S)
        rss2 = _rss_kib(server_pids) if server_pids else None
    finally:
        # After a failure or Ctrl-C a driver may be mid-phase: do not wait for it to finish.
        pool.close(CLOSE_TIMEOUT_S if sys.exc_info()[0] is None else 2.0)

    def per_connection(before: float | None, after: float | None) -> float | None:
        if before is None or after is None or not connected:
            return None
        return (after - before) / connected

    every = [*results, *paced, *saturated, *closed]
    return TargetResult(
        kind=kind,
        connected=connected,
        connect_errors=sum(r.errors for r in results),
        connect_s=connect_s,
        connect_rate_per_s=connected / connect_s if connect_s > 0 else 0.0,
        connect_cpu=connect_cpu,
        rss_baseline_kib=rss0,
        rss_idle_kib=rss1,
        rss_after_close_kib=rss2,
        kib_per_idle_connection=per_connection(rss0, rss1),
        helpers_kib_per_idle_connection=per_connection(helpers0, helpers1) if helpers0 else None,
        latency=latency,
        saturation=saturation,
        close_errors=sum(r.errors for r in closed),
        first_errors=sorted({r.first_error for r in every if r.first_error}),
        server_counters=counters,
        server_log=_log_problems(server),
    )


def _server_counters(server: Server) -> dict[str, float]:
    """Error, close and message counters from the node's /metrics, to spot refused requests."""
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    wanted = ("huddle_ws_errors_total", "huddle_ws_closes_total", "huddle_ws_authenticated")
    counters: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            counters[name] = float(value)
    return counters


def _log_problems(server: Server) -> dict[str, int]:
    """Warnings and errors the server logged, counted by message."""
    if server.log_path is None or not server.log_path.exists():
        return {}
    seen: Counter[str] = Counter()
    for line in server.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if line.strip():
                seen[line.strip()[:120]] += 1
            continue
        if isinstance(record, dict) and record.get("level") in ("warning", "error", "critical"):
            detail = f" ({record['error']})" if "error" in record else ""
            seen[f"{record['level']}: {record.get('msg')}{detail}"[:200]] += 1
    return dict(seen)


# --- report --------------------------------------------------------------------------


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _rows(huddle: TargetResult, bare: TargetResult | None) -> list[tuple[str, str, str, str]]:
    def row(
        label: str, get: Callable[[TargetResult], float | None], digits: int = 1
    ) -> tuple[str, str, str, str]:
        ours = get(huddle)
        theirs = get(bare) if bare is not None else None
        return label, _fmt(ours, digits), _fmt(theirs, digits), _fmt(_ratio(ours, theirs), 2)

    return [
        row("connected clients", lambda t: t.connected, 0),
        row("connect rate (conn/s; huddle: + hello)", lambda t: t.connect_rate_per_s),
        row("server RSS per idle connection (KiB)", lambda t: t.kib_per_idle_connection),
        row("redis-server RSS per connection (KiB)", lambda t: t.helpers_kib_per_idle_connection),
        row("paced load (req/s)", lambda t: t.latency.rate_per_s),
        row("paced RTT p50 (ms)", lambda t: t.latency.p50_ms, 2),
        row("paced RTT p99 (ms)", lambda t: t.latency.p99_ms, 2),
        row("paced RTT max (ms)", lambda t: t.latency.max_ms, 2),
        row("saturated request rate (req/s)", lambda t: t.saturation.rate_per_s),
        row("  requests per server CPU second", lambda t: t.saturation.per_server_cpu_s),
        row("saturated RTT p50 (ms)", lambda t: t.saturation.p50_ms),
        row("saturated RTT p99 (ms)", lambda t: t.saturation.p99_ms),
        row("errors (connect, requests, close)", _error_count, 0),
    ]


def _phases(result: TargetResult) -> list[tuple[str, CpuUse]]:
    return [
        ("connect", result.connect_cpu),
        ("paced", result.latency.cpu),
        ("saturated", result.saturation.cpu),
    ]


def _cpu_rows(results: Sequence[TargetResult]) -> list[tuple[str, ...]]:
    return [
        (
            f"{result.kind} {phase}",
            f"{use.wall_s:.1f}",
            _pct(use.server_core),
            _pct(use.helpers_core),
            "+".join(_pct(c) for c in use.drivers_core),
            _pct(use.machine_busy),
            _pct(use.others_busy),
        )
        for result in results
        for phase, use in _phases(result)
    ]


def _error_count(t: TargetResult) -> float:
    return t.connect_errors + t.latency.errors + t.saturation.errors + t.close_errors


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for i, r in enumerate((header, *rows)):
        rest = [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        yield " | ".join([r[0].ljust(widths[0]), *rest]).rstrip()
        if i == 0:
            yield "-+-".join("-" * w for w in widths)


def bottleneck(use: CpuUse) -> str:
    """Which process limited the saturated rate, from the CPU shares of that phase."""
    drivers = "+".join(_pct(c) for c in use.drivers_core)
    facts = f"server {_pct(use.server_core)}, drivers {drivers}, machine {_pct(use.machine_busy)}"
    if use.server_core is not None and use.server_core >= SATURATED:
        return f"server-bound (one server process uses at most one core): {facts}"
    if use.machine_busy >= SATURATED:
        return f"machine-bound, every core busy, so the server's own limit is higher: {facts}"
    if any(c >= SATURATED for c in use.drivers_core):
        return f"client-bound, a driver saturated its core (raise --procs): {facts}"
    return f"no process saturated (latency-bound): {facts}"


def summary(huddle: TargetResult, bare: TargetResult | None) -> dict[str, float | None]:
    return {
        "request_rate_vs_bare": _ratio(
            huddle.saturation.rate_per_s, bare.saturation.rate_per_s if bare else None
        ),
        "kib_per_idle_connection": huddle.kib_per_idle_connection,
        "p99_ms": huddle.latency.p99_ms,
    }


def targets(figures: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    def met(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None else ok(value)

    rate = figures["request_rate_vs_bare"]
    kib = figures["kib_per_idle_connection"]
    p99 = figures["p99_ms"]
    return {
        "request_rate_vs_bare": {
            "target": f">= {TARGET_RATE_VS_BARE}",
            "value": rate,
            "met": met(rate, lambda v: v >= TARGET_RATE_VS_BARE),
        },
        "kib_per_idle_connection": {
            "target": f"< {TARGET_KIB_PER_CONNECTION}",
            "value": kib,
            "met": met(kib, lambda v: v < TARGET_KIB_PER_CONNECTION),
        },
        "p99_ms": {
            "target": f"< {TARGET_P99_MS} (paced load)",
            "value": p99,
            "met": met(p99, lambda v: v < TARGET_P99_MS),
        },
    }


def report(opts: Options, huddle: TargetResult, bare: TargetResult | None) -> str:
    results = [huddle] if bare is None else [huddle, bare]
    lines = [
        f"signaling_load: N={opts.n} clients, {opts.procs} driver process(es), "
        f"{opts.paced_duration:g} s paced, {opts.duration:g} s saturated, "
        f"{os.cpu_count()} cores",
        f"paced: every client one ping every {opts.ping_interval:g} s, spread evenly "
        f"(~{opts.n / opts.ping_interval:,.0f} req/s in all); "
        "saturated: every client back to back, one request in flight each",
        "",
        *_table(_rows(huddle, bare), ("metric", "huddle", "bare", "ratio")),
        "",
        "CPU, share of one core (machine and others: share of all cores)",
        *_table(
            _cpu_rows(results),
            ("phase", "wall s", "server", "redis", "drivers", "machine", "others"),
        ),
        "",
    ]
    for result in results:
        lines.append(f"{result.kind} saturated: {bottleneck(result.saturation.cpu)}")
        for phase, use in _phases(result):
            if use.others_busy >= DISTURBED:
                lines.append(
                    f"WARNING {result.kind} {phase}: other processes kept "
                    f"{use.others_busy:.0%} of the machine busy; figures disturbed"
                )
        lines.extend(f"{result.kind} client error: {e}" for e in result.first_errors)
        lines.extend(f"{result.kind} server log: {n} x {m}" for m, n in result.server_log.items())
    refused = {k: v for k, v in huddle.server_counters.items() if "errors" in k and v}
    if refused:
        lines.append(f"huddle error replies: {refused}")
    goals = targets(summary(huddle, bare))
    verdict = {True: "yes", False: "NO", None: "-"}
    rows = [
        (name, _fmt(goal["value"], 2), goal["target"], verdict[goal["met"]])
        for name, goal in goals.items()
    ]
    lines.extend(["", *_table(rows, ("target", "measured", "goal", "met"))])
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------


def raise_fd_limit(n: int) -> int:
    """Room for N client sockets and N server sockets (children inherit the limit)."""
    want = 2 * n + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    try:  # raising the hard limit needs privileges
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        return want
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def _loopback_url(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(f"only loopback targets are allowed, not {host!r}")
    return url.rstrip("/")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.signaling_load",
        description="N authenticated WebSocket clients against a Huddle node and a bare "
        "aiohttp echo server: connect rate, memory per idle connection, ping RTT, request rate.",
    )
    ap.add_argument("--n", type=bounded(int, 1, MAX_N), default=DEFAULT_N, help="clients")
    ap.add_argument(
        "--procs",
        type=bounded(int, 1, MAX_PROCS),
        default=max(1, min(4, os.cpu_count() or 1)),
        help="driver processes (default: cores, at most 4)",
    )
    ap.add_argument(
        "--duration",
        type=bounded(float, 0.1, MAX_DURATION_S),
        default=DEFAULT_DURATION_S,
        help="seconds of the saturated phase",
    )
    ap.add_argument(
        "--paced-duration",
        type=bounded(float, 0.1, MAX_DURATION_S),
        default=DEFAULT_PACED_S,
        help="seconds of the paced (latency) phase",
    )
    ap.add_argument(
        "--ping-interval",
        type=bounded(float, 0.01, 60),
        default=DEFAULT_PING_INTERVAL_S,
        help="seconds between one client's pings in the paced (latency) phase",
    )
    ap.add_argument(
        "--connect-concurrency",
        type=bounded(int, 1, MAX_N),
        default=DEFAULT_CONNECT_CONCURRENCY,
        help="connects in flight at once, all drivers together",
    )
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--url", type=_loopback_url, help="an already running node (loopback only)")
    ap.add_argument("--server-pid", type=int, help="with --url: the node's pid, for RSS and CPU")
    ap.add_argument("--api-key", help="with --url: the node's API key")
    ap.add_argument("--api-secret", help="with --url: the node's API secret")
    ap.add_argument("--skip-bare", action="store_true", help="no baseline run")
    ap.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.bare_server is not None:
        _run_loop(_serve_bare(args.bare_server))
        return 0
    if args.url and not (args.api_key and args.api_secret):
        parser().error("--url needs --api-key and --api-secret to mint tokens")
    opts = Options(
        n=args.n,
        procs=min(args.procs, args.n),
        duration=args.duration,
        paced_duration=args.paced_duration,
        ping_interval=args.ping_interval,
        connect_concurrency=args.connect_concurrency,
        api_key=args.api_key or "bench",
        api_secret=args.api_secret or secrets.token_urlsafe(32),
    )
    fd_limit = raise_fd_limit(opts.n)

    def say(text: str) -> None:
        print(f"# {text}", file=sys.stderr, flush=True)

    huddle: TargetResult | None = None
    bare: TargetResult | None = None
    with tempfile.TemporaryDirectory(prefix="huddle-bench-") as tmp:
        folder = Path(tmp)
        if args.url:
            node = Server(url=args.url, pid=args.server_pid)
        else:
            say("starting huddle serve (embedded Redis)")
            node = start_huddle(folder / "node", opts.api_key, opts.api_secret)
        try:
            huddle = run_target("huddle", node, opts, say)
        finally:
            node.stop()
        if not args.skip_bare:
            say("starting the bare aiohttp echo server")
            echo = start_bare(folder)
            try:
                bare = run_target("bare", echo, opts, say)
            finally:
                echo.stop()

    print(report(opts, huddle, bare))
    if args.json:
        figures = summary(huddle, bare)
        doc = {
            "benchmark": "signaling_load",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "fd_limit": fd_limit,
            },
            "config": {**dataclasses.asdict(opts), "api_secret": None, "url": args.url},
            "n": opts.n,
            "summary": figures,
            "targets": targets(figures),
            "huddle": dataclasses.asdict(huddle),
            "bare": dataclasses.asdict(bare) if bare is not None else None,
            "ratios": {
                "connect_rate": _ratio(
                    huddle.connect_rate_per_s, bare.connect_rate_per_s if bare else None
                ),
                "request_rate": figures["request_rate_vs_bare"],
                "requests_per_server_cpu_s": _ratio(
                    huddle.saturation.per_server_cpu_s,
                    bare.saturation.per_server_cpu_s if bare else None,
                ),
                "paced_p50": _ratio(huddle.latency.p50_ms, bare.latency.p50_ms if bare else None),
                "paced_p99": _ratio(huddle.latency.p99_ms, bare.latency.p99_ms if bare else None),
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        say(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    # Run the importable copy, so that the classes pickled to and from the spawned drivers
    # resolve as benchmarks.signaling_load.*, not as __main__.*.
    from benchmarks.signaling_load import main as _main

    try:
        sys.exit(_main())
    except KeyboardInterrupt:  # subprocesses were stopped on the way out
        sys.exit(130)
