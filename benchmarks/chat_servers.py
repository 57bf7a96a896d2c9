"""The servers the chat load benchmark starts, and what it reads of them.

``benchmarks.chat_load`` starts the Huddle nodes and the bare relay here (on one
redis-server it starts itself), reads their logs and counters after a target's run, and
clocks the CPU of the servers, Redis and the driver processes over each phase's window.
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
import redis

from benchmarks.chat_xmpp import start_ejabberd, wait_ejabberd
from benchmarks.common import command_stats, node_metrics
from benchmarks.procs import (
    cpu_seconds,
    free_port,
    huddle_command,
    machine_busy_seconds,
    node_env,
    start_logged,
    stop_process,
    wait_healthy,
)
from benchmarks.progress import nodes_count
from benchmarks.target import NodeClock, NodeUse


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


# The servers that are not Huddle nodes (no /metrics, no /healthz of ours).
BASELINES: Final = ("bare", "ejabberd")


def start_servers(
    folder: Path,
    redis_url: str,
    api_key: str,
    api_secret: str,
    nodes: int,
    bare: bool,
    ejabberd: bool = False,
) -> list[Server]:
    """Start the nodes, the bare relay and ejabberd (all at once: see ``wait_servers``)."""
    env = node_env(
        api_key,
        api_secret,
        REDIS_URL=redis_url,
        # Measure the node, not its limiters: one device sends far above a person's rate.
        HUDDLE_RATE_PER_S="100000",
        HUDDLE_RATE_BURST="100000",
        HUDDLE_CHAT_SEND_PER_S="1000000",
        # Chat only: no SFU worker processes competing for the two cores.
        HUDDLE_SFU_WORKERS="0",
        HUDDLE_LOG_LEVEL="warning",
    )
    servers: list[Server] = []
    try:
        for i in range(nodes):
            port = free_port()
            cmd = huddle_command(port, folder / f"node{i + 1}")
            log = folder / f"node{i + 1}.log"
            proc = start_logged(cmd, env, log)
            servers.append(Server(f"node{i + 1}", f"http://127.0.0.1:{port}", proc, log))
        if bare:
            port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.chat_bare",
                "--port",
                str(port),
                "--redis-url",
                redis_url,
            ]
            log = folder / "bare.log"
            proc = start_logged(cmd, dict(os.environ), log)
            servers.append(Server("bare", f"http://127.0.0.1:{port}", proc, log))
        if ejabberd:
            port = free_port()
            log = folder / "ejabberd.out"
            proc = start_ejabberd(folder / "ejabberd", port, log)
            servers.append(Server("ejabberd", f"ws://127.0.0.1:{port}/ws", proc, log))
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def wait_servers(servers: Sequence[Server]) -> None:
    for server in servers:
        if server.name == "ejabberd":
            wait_ejabberd(server.url, server.proc, server.log_path)
        else:
            wait_healthy(server.url, server.proc, server.log_path)


def stop_servers(servers: Sequence[Server]) -> None:
    """SIGTERM to all first: they shut down side by side."""
    for server in servers:
        if server.proc.poll() is None:
            server.proc.terminate()
    for server in servers:
        stop_process(server.proc)


def _tree_cpu_seconds(pid: int) -> float:
    total = cpu_seconds(pid)
    with contextlib.suppress(psutil.Error):
        total += sum(cpu_seconds(c.pid) for c in psutil.Process(pid).children(recursive=True))
    return total


def node_counters(url: str) -> dict[str, float]:
    """Error replies and closes by code from a node's /metrics (those that happened)."""
    samples = node_metrics(url, ("huddle_ws_errors_total", "huddle_ws_closes_total"))
    return {name: value for name, value in samples.items() if value}


# --- measuring --------------------------------------------------------------------------


@dataclass
class CpuUse:
    """CPU over a phase's sending window, as a share of one core (1.0 = one core busy)."""

    wall_s: float
    servers_core: list[float]  # each server process with its children
    redis_core: float
    drivers_core: list[float]
    machine_busy: float  # system-wide, as a share of all cores
    # Of that: interrupts (mostly the loopback traffic's softirq) and time the hypervisor took.
    kernel_busy: float
    others_busy: float  # and what neither our processes nor the kernel explain
    servers_s: float  # CPU seconds of the servers together
    drivers_s: float


class RedisCommandClock:
    """What one Redis ran over a phase, by command: calls and microseconds (INFO
    commandstats, which counts a script's own commands under their names as well as inside
    the script's time)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._start = self._sample()

    def _sample(self) -> dict[str, tuple[int, int]]:
        client = redis.Redis.from_url(self._url)
        try:
            return command_stats(client.info("commandstats"))
        finally:
            client.close()

    def stop(self) -> dict[str, tuple[int, int]]:
        """Calls and microseconds of each command run since the clock began (the INFO
        calls themselves left out)."""
        end = self._sample()
        out: dict[str, tuple[int, int]] = {}
        for name, (calls, usec) in end.items():
            calls0, usec0 = self._start.get(name, (0, 0))
            if calls > calls0 and name != "info":
                out[name] = (calls - calls0, usec - usec0)
        return out


ARCHIVE_METRIC: Final = "huddle_chat_archive_cpu_seconds_total"


class ArchiveClock:
    """What archiving took of the nodes' CPU over a phase (their
    ``huddle_chat_archive_cpu_seconds_total``: the archiver's task and SQLite's threads),
    every node together; read just before and after the phase's CPU window, so that the
    reads are not in it."""

    def __init__(self, urls: Sequence[str]) -> None:
        # None from a node that does not answer, or an older one without the metric.
        self._sample = nodes_count(list(urls), ARCHIVE_METRIC)
        self._start = self._sample()

    def stop(self) -> float | None:
        end = self._sample()
        if end is None or self._start is None:
            return None
        return end - self._start


def _kernel_seconds() -> float:
    times = psutil.cpu_times()
    return sum(float(getattr(times, f, 0.0)) for f in ("irq", "softirq", "steal"))


class CpuClock:
    """CPU of the target's servers, Redis (one redis-server, or every process of a cluster,
    added up) and the drivers; ``idle`` are our other processes (the servers of the other
    targets, this script), counted only to tell others apart."""

    def __init__(
        self,
        servers: Sequence[int],
        redis_pid: int | Sequence[int],
        drivers: Sequence[int],
        idle: Sequence[int],
    ) -> None:
        self._servers, self._drivers = list(servers), list(drivers)
        self._redis = [redis_pid] if isinstance(redis_pid, int) else list(redis_pid)
        self._idle = list(idle)
        self._start = self._sample()

    def _sample(self) -> tuple[float, list[float], float, list[float], float, float, float, float]:
        return (
            time.monotonic(),
            [_tree_cpu_seconds(pid) for pid in self._servers],
            sum(cpu_seconds(pid) for pid in self._redis),
            [cpu_seconds(pid) for pid in self._drivers],
            # This script's own process alone: its children are the measured ones.
            sum(
                cpu_seconds(pid) if pid == os.getpid() else _tree_cpu_seconds(pid)
                for pid in self._idle
            ),
            _kernel_seconds(),
            *machine_busy_seconds(),
        )

    def stop(self) -> CpuUse:
        t0, s0, r0, d0, i0, k0, b0, all0 = self._start
        t1, s1, r1, d1, i1, k1, b1, all1 = self._sample()
        wall = max(t1 - t0, 1e-9)
        servers = [b - a for a, b in zip(s0, s1, strict=True)]
        drivers = [b - a for a, b in zip(d0, d1, strict=True)]
        ours = sum(servers) + (r1 - r0) + sum(drivers) + (i1 - i0)
        every = max(all1 - all0, 1e-9)
        machine, kernel = (b1 - b0) / every, (k1 - k0) / every
        return CpuUse(
            wall_s=wall,
            servers_core=[s / wall for s in servers],
            redis_core=(r1 - r0) / wall,
            drivers_core=[d / wall for d in drivers],
            machine_busy=machine,
            kernel_busy=kernel,
            others_busy=max(0.0, machine - kernel - ours / (wall * (os.cpu_count() or 1))),
            servers_s=sum(servers),
            drivers_s=sum(drivers),
        )


class DeploymentCpuClock:
    """A running deployment's CPU (``--url``): the nodes' from their /metrics, since they may
    run on another machine, the drivers' and this machine's from here."""

    def __init__(self, urls: Sequence[str], drivers: Sequence[int]) -> None:
        self._drivers = list(drivers)
        self.nodes: NodeUse | None = None
        self._start = self._sample()
        self._clock = NodeClock(urls, ())

    def _sample(self) -> tuple[list[float], float, float, float, float]:
        return (
            [cpu_seconds(pid) for pid in self._drivers],
            cpu_seconds(os.getpid()),
            _kernel_seconds(),
            *machine_busy_seconds(),
        )

    def stop(self) -> CpuUse:
        nodes = self.nodes = self._clock.stop()
        d0, me0, k0, b0, all0 = self._start
        d1, me1, k1, b1, all1 = self._sample()
        wall = nodes.wall_s
        drivers = [b - a for a, b in zip(d0, d1, strict=True)]
        every = max(all1 - all0, 1e-9)
        machine, kernel = (b1 - b0) / every, (k1 - k0) / every
        ours = sum(drivers) + (me1 - me0)
        return CpuUse(
            wall_s=wall,
            servers_core=[s / wall for s in nodes.node_s],
            redis_core=nodes.redis_s / wall,
            drivers_core=[d / wall for d in drivers],
            # This machine's: the nodes count as "others" when they run here too.
            machine_busy=machine,
            kernel_busy=kernel,
            others_busy=max(0.0, machine - kernel - ours / (wall * (os.cpu_count() or 1))),
            servers_s=sum(nodes.node_s),
            drivers_s=sum(drivers),
        )
