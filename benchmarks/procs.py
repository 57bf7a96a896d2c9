"""Processes the benchmarks start and measure: servers on loopback, their CPU, their logs.

Shared by every benchmark so that each one starts, waits for, stops and measures its
servers the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, TypeVar

import psutil
from aiohttp import web

SERVER_START_TIMEOUT_S: Final = 30.0
SERVER_STOP_TIMEOUT_S: Final = 20.0
LOG_TAIL_CHARS: Final = 3000
_PR_SET_PDEATHSIG: Final = 1
_T = TypeVar("_T")


def die_with_parent() -> None:
    """``preexec_fn``: a server outliving a killed benchmark would keep its port and CPU."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_env(api_key: str, api_secret: str, **settings: str) -> dict[str, str]:
    """A Huddle node's environment: this one less any ``HUDDLE_*`` setting and ``REDIS_URL``
    of the shell the benchmark runs in (with no ``REDIS_URL`` the node supervises its own
    redis-server), the run's API key and secret, then ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_")}
    env.pop("REDIS_URL", None)
    env.update(HUDDLE_API_KEY=api_key, HUDDLE_API_SECRET=api_secret, **settings)
    return env


def huddle_command(port: int, data_dir: Path, *options: str) -> list[str]:
    """``huddle serve`` on loopback at ``port`` with its data in ``data_dir``, then ``options``."""
    serve = [sys.executable, "-m", "huddle", "serve", "--port", str(port)]
    return [*serve, "--data-dir", str(data_dir), *options]


def start_logged(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with its output in ``log_path``, tied to this process's life."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None, log_path: Path | None) -> None:
    """Until ``url``/healthz answers 200; fails with the log's end if the server died."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited at start:\n{log_tail(log_path)}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not healthy in time:\n{log_tail(log_path)}")
        time.sleep(0.05)


def start_healthy(
    cmd: list[str], env: dict[str, str], url: str, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start a server and wait until ``url`` is healthy; stopped again if it never is."""
    proc = start_logged(cmd, env, log_path)
    try:
        wait_healthy(url, proc, log_path)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def machine_busy_seconds() -> tuple[float, float]:
    """System-wide (busy, total) CPU seconds, every core and every process."""
    times = psutil.cpu_times()
    total = float(sum(times))
    return total - times.idle - getattr(times, "iowait", 0.0), total


def bounded(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], Any]:
    """An argparse type: a number within [low, high]."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


async def serve_until_signal(
    app: web.Application, port: int, on_stop: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until SIGINT or SIGTERM (a baseline server)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if on_stop is not None:
            await on_stop()
        await runner.cleanup()


# --- the child side of a ProcessPool -------------------------------------------------------


def ignore_interrupts() -> None:
    """In a pool's child: Ctrl-C reaches the whole process group, and the parent alone
    cleans up, in order (it stops the children after its servers' last figures)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """Run on uvloop like ``huddle serve`` does, so drivers and servers get the same loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def sleep_until(instant: float) -> None:
    """Until ``time.monotonic()`` reaches ``instant``: one clock for every process here."""
    delay = instant - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def serve_commands(
    conn: Connection, run: Callable[[tuple[Any, ...]], Awaitable[Any]]
) -> None:
    """A pool child's command loop: says it is ready, then answers each command with
    ``("ok", run(command))`` or ``("error", traceback)`` until ``("stop",)``. A failed
    command leaves the child serving: the parent decides whether the run goes on."""
    conn.send(("ready", None))
    while True:
        command = await asyncio.to_thread(conn.recv)
        if command[0] == "stop":
            return
        try:
            conn.send(("ok", await run(command)))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class ProcessPool:
    """Load-driver processes, each running ``main(pipe, spec)``, with a pipe each for
    commands. A driver answers each command with ``("ok", payload)`` or
    ``("error", traceback)``, and stops on ``("stop",)``: :func:`serve_commands`."""

    # What one process is called in error messages.
    role = "driver"

    def __init__(
        self, main: Callable[[Connection, Any], None], specs: Sequence[Any], start_timeout: float
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for spec in specs:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=main, args=(theirs, spec), daemon=True)
            proc.start()
            theirs.close()
            self._pipes.append(ours)
            self.procs.append(proc)
        self.collect(start_timeout, "start")

    @property
    def pids(self) -> list[int]:
        return [proc.pid or 0 for proc in self.procs]

    def send(self, command: tuple[Any, ...]) -> None:
        for pipe in self._pipes:
            pipe.send(command)

    def run(self, command: tuple[Any, ...], timeout: float) -> list[Any]:
        self.send(command)
        return self.collect(timeout, str(command[0]))

    def collect(self, timeout: float, what: str) -> list[Any]:
        """Each driver's answer to the last command, in driver order."""
        deadline = time.monotonic() + timeout
        results: list[Any] = []
        for i, pipe in enumerate(self._pipes):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(
                    f"{self.role} {i} did not finish {what!r} within {timeout:.0f} s"
                )
            status, payload = pipe.recv()
            if status == "error":
                raise RuntimeError(f"{self.role} {i} failed in {what!r}:\n{payload}")
            results.append(payload)
        return results

    def cpu_seconds(self) -> list[float]:
        return [cpu_seconds(pid) if pid else 0.0 for pid in self.pids]

    def close(self, wait_s: float) -> None:
        """Stop the drivers: each closes its clients, or is terminated after ``wait_s``."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("stop",))
        deadline = time.monotonic() + wait_s
        self._stopping(deadline)
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self._pipes:
            pipe.close()

    def _stopping(self, deadline: float) -> None:
        """Between asking the processes to stop and waiting for them to end (a hook)."""
