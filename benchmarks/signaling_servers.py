"""The servers the signaling load benchmark measures, and how it measures them.

``benchmarks.signaling_load`` starts a Huddle node (with its embedded redis-server) or takes
one by ``--url``, and starts the baseline here: a bare aiohttp WebSocket echo server with
the node's socket options. Over each phase it reads their memory and clocks the CPU of the
server, its helpers and the driver processes (:class:`CpuClock`); after a target's run, the
node's error counters.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil
from aiohttp import WSMsgType, web

from benchmarks.common import node_metrics
from benchmarks.procs import (
    ProcessPool,
    cpu_seconds,
    free_port,
    huddle_command,
    machine_busy_seconds,
    node_env,
    serve_until_signal,
    start_healthy,
    stop_process,
)
from benchmarks.target import NodeClock, sample_node

# The node's counters that tell refused requests and dropped connections.
NODE_COUNTERS: Final = (
    "huddle_ws_errors_total",
    "huddle_ws_closes_total",
    "huddle_ws_authenticated",
)


# --- the baseline ----------------------------------------------------------------------


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


async def serve_bare(port: int) -> None:
    """The bare echo server (``signaling_load --bare-server PORT``), until SIGTERM."""
    app = web.Application()
    app.router.add_get("/v1/ws", _bare_ws)
    app.router.add_get("/healthz", _bare_health)
    await serve_until_signal(app, port)


# --- starting and stopping ---------------------------------------------------------------


@dataclass
class Server:
    """A server process this script started, or (``proc`` None) one given by ``--url``."""

    url: str
    pid: int | None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # --url without --server-pid: every node of the deployment, measured by its /metrics.
    urls: tuple[str, ...] = ()

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

    def rss_kib(self) -> tuple[float | None, float | None]:
        """(the server, its helpers) resident memory: by pid, or from the nodes' /metrics
        (the nodes with their SFU workers; their embedded Redis)."""
        if self.pid is not None:
            return rss_kib([self.pid]), rss_kib(self.helpers_pids())
        if not self.urls:
            return None, None
        samples = [sample_node(u, ()) for u in self.urls]
        if not all(s.ok for s in samples):
            return None, None
        node = sum(s.rss.get("node", 0.0) + s.rss.get("workers", 0.0) for s in samples)
        redis = sum(s.rss.get("redis", 0.0) for s in samples)
        return node / 1024, redis / 1024


def _start_server(cmd: list[str], env: dict[str, str], port: int, log_path: Path) -> Server:
    url = f"http://127.0.0.1:{port}"
    proc = start_healthy(cmd, env, url, log_path)
    return Server(url=url, pid=proc.pid, proc=proc, log_path=log_path)


def start_huddle(data_dir: Path, api_key: str, api_secret: str) -> Server:
    port = free_port()
    env = node_env(api_key, api_secret)  # the node starts its own redis-server
    # Measure throughput, not the per-connection limiter.
    limits = ["--rate-per-s", "100000", "--rate-burst", "100000"]
    cmd = huddle_command(port, data_dir, "--log-level", "warning", *limits)
    return _start_server(cmd, env, port, data_dir / "node.log")


def start_bare(folder: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.signaling_load", "--bare-server", str(port)]
    return _start_server(cmd, dict(os.environ), port, folder / "bare.log")


# --- measuring -----------------------------------------------------------------------


def rss_kib(pids: Sequence[int]) -> float:
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
    """CPU of the server, its helpers (by pid) and the drivers from now until ``stop``."""

    def __init__(self, server: Server, pool: ProcessPool) -> None:
        self._server = server
        self._pool = pool
        self._nodes = NodeClock(server.urls, ()) if server.pid is None and server.urls else None
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
        if self._nodes is not None:
            nodes = self._nodes.stop()
            if not nodes.missing:
                server, helpers = sum(nodes.node_s), nodes.redis_s
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


def server_counters(server: Server) -> dict[str, float]:
    """Error, close and message counters from the node's /metrics, to spot refused requests
    (every node's together)."""
    counts: dict[str, float] = {}
    for url in server.urls or (server.url,):
        for name, value in node_metrics(url, NODE_COUNTERS).items():
            counts[name] = counts.get(name, 0.0) + value
    return counts
