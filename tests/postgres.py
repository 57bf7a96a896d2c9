"""A real PostgreSQL for the tests (Debian's ``postgresql`` package): one server per test
session on a fresh data folder, reached only by its unix socket, and a fresh database per
test.

PostgreSQL refuses to run as root, and tests and CI run as root: the server then runs as the
``postgres`` user the package creates, in a folder of its own under /tmp (pytest's own
folders are closed to other users). ``fsync=off`` makes it faster and is for tests only.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg
import pytest

from tests.helpers import free_port

BIN_DIRS: Final = tuple(Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15))
READY_S: Final = 30.0
RUN_AS: Final = "postgres"


def _bin_dir() -> Path:
    """PostgreSQL tests never skip: they fail saying what to install."""
    for folder in BIN_DIRS:
        if (folder / "initdb").exists():
            return folder
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    pytest.fail(
        "PostgreSQL tests cannot run without PostgreSQL's server (apt-get install postgresql); "
        "scripts/setup.sh --dev installs it.",
        pytrace=False,
    )


@dataclass(frozen=True)
class Postgres:
    folder: Path
    port: int
    user: str
    # The server's options (pg_ctl -o), for start().
    options: str = ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{database}?host={self.folder}&port={self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.folder / "log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no PostgreSQL log)"

    def stop(self) -> None:
        """Stop the server at once (a fast shutdown: every session ends)."""
        _run([self._pg_ctl(), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"])

    def start(self) -> None:
        """Start the server again after :meth:`stop`."""
        data, log = str(self.folder / "data"), str(self.folder / "log")
        _run([self._pg_ctl(), "-D", data, "-l", log, "-o", self.options, "-w", "-t", "30", "start"])
        _wait_ready(self)

    @staticmethod
    def _pg_ctl() -> str:
        return str(_bin_dir() / "pg_ctl")

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _as_server_user(argv: Sequence[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else list(argv)


def _run(argv: Sequence[str]) -> None:
    done = subprocess.run(
        _as_server_user(argv), capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


@contextlib.contextmanager
def postgres_server(kept: Path | None = None) -> Iterator[Postgres]:
    """A running server on a fresh data folder, stopped and removed at the end; or, with
    ``kept``, on the data of that folder (made there if it has none), stopped and left
    there for the next run (benchmarks that seed a large store once)."""
    bin_dir = _bin_dir()
    folder = kept or Path(tempfile.mkdtemp(prefix="huddle-pg-"))
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(RUN_AS)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    port = free_port()
    options = (
        f"-k {folder} -p {port} -c listen_addresses='' -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    server = Postgres(folder=folder, port=port, user="huddle", options=options)
    data = folder / "data"
    try:
        if not (data / "PG_VERSION").exists():
            _run([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", server.user])
        pg_ctl = str(bin_dir / "pg_ctl")
        log = str(folder / "log")
        _run([pg_ctl, "-D", str(data), "-l", log, "-o", options, "-w", "-t", "30", "start"])
        _wait_ready(server)
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                mode = "fast" if kept else "immediate"
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"])
        if kept is None:
            shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(server: Postgres) -> None:
    deadline = time.monotonic() + READY_S
    while True:
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"PostgreSQL not ready within {READY_S} s:\n{server.log_tail()}"
                ) from None
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL for the test session; each test takes its own database."""
    with postgres_server() as server:
        yield server
