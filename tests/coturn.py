"""coturn (Debian's ``coturn``, binary ``turnserver``) run by a test, configured as
docs/deploy.md configures it in production: TURN REST API credentials checked against the
node's TURN secret (``use-auth-secret``), peers limited to the SFU's addresses, no listener
but the one TURN port (UDP and TCP) on the addresses given.

The config file is written into the test's folder and removed with coturn's database when
the server stops; its log stays there for the test's diagnostics.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

TURNSERVER: Final = "turnserver"
READY_S: Final = 10.0
REALM: Final = "huddle.test"


def require_coturn() -> None:
    """TURN tests never skip: they fail saying what to install."""
    if shutil.which(TURNSERVER) is None:
        pytest.fail(
            "TURN test cannot run without coturn's turnserver (apt-get install coturn); "
            "scripts/setup.sh --dev installs it.",
            pytrace=False,
        )


def coturn_config(
    *,
    listen: str,
    relay: str,
    port: int,
    secret: str,
    allowed_peers: Sequence[str],
    denied_peers: Sequence[str],
    workdir: Path,
    loopback_peers: bool = False,
    tls: tuple[int, Path, Path] | None = None,
) -> str:
    if tls is None:
        tls_lines = ["no-tls"]
    else:
        tls_port, cert, key = tls
        tls_lines = [
            f"tls-listening-port={tls_port}",
            f"cert={cert}",
            f"pkey={key}",
            "no-tlsv1",
            "no-tlsv1_1",
        ]
    lines = [
        f"listening-ip={listen}",
        f"relay-ip={relay}",
        f"listening-port={port}",
        f"realm={REALM}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        "fingerprint",
        # The TURN port (and TLS's if asked) only: no DTLS, no RFC 5780 alternate port, no
        # admin CLI.
        *tls_lines,
        "no-dtls",
        "no-rfc5780",
        "no-cli",
        "no-multicast-peers",
        "no-software-attribute",
        *(f"denied-peer-ip={r}" for r in denied_peers),
        *(f"allowed-peer-ip={r}" for r in allowed_peers),
        f"userdb={workdir / 'turndb'}",
        f"pidfile={workdir / 'turnserver.pid'}",
        f"log-file={workdir / 'turnserver.log'}",
        "simple-log",
        "no-stdout-log",
    ]
    if loopback_peers:
        lines.append("allow-loopback-peers")  # tests on 127.0.0.1 only, never in production
    return "\n".join(lines) + "\n"


@dataclass
class Coturn:
    proc: subprocess.Popen[bytes]
    workdir: Path
    listen: str
    port: int
    tls_port: int | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "turnserver.log"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no coturn log)"

    def listeners(self, prefix: Sequence[str] = ()) -> list[tuple[str, str]]:
        """(protocol, local address) of every socket turnserver listens on."""
        done = subprocess.run(
            [*prefix, "ss", "-Hlntup"], capture_output=True, text=True, timeout=10
        )
        found = []
        for line in done.stdout.splitlines():
            words = line.split()
            if f"pid={self.proc.pid}," in line and len(words) >= 5:
                found.append((words[0], words[4]))
        return sorted(set(found))


def _wait_listening(server: Coturn, prefix: Sequence[str]) -> None:
    wanted = {("tcp", f"{server.listen}:{server.port}"), ("udp", f"{server.listen}:{server.port}")}
    if server.tls_port is not None:
        wanted.add(("tcp", f"{server.listen}:{server.tls_port}"))
    deadline = time.monotonic() + READY_S
    while not wanted <= set(server.listeners(prefix)):
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"turnserver exited ({server.proc.returncode}):\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"turnserver not listening within {READY_S} s:\n{server.log_tail()}")
        time.sleep(0.1)


@contextlib.contextmanager
def coturn(
    workdir: Path,
    *,
    listen: str,
    port: int,
    secret: str,
    relay: str | None = None,
    allowed_peers: Sequence[str] = (),
    denied_peers: Sequence[str] = (),
    loopback_peers: bool = False,
    tls: tuple[int, Path, Path] | None = None,
    prefix: Sequence[str] = (),
) -> Iterator[Coturn]:
    """turnserver listening on ``listen:port`` (UDP and TCP), relaying from ``relay``
    (default ``listen``); ``tls`` (port, certificate, key) adds TURN over TLS; ``prefix``
    runs it elsewhere (``ip netns exec NS``)."""
    require_coturn()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "turnserver.conf"
    config.write_text(
        coturn_config(
            listen=listen,
            relay=relay or listen,
            port=port,
            secret=secret,
            allowed_peers=allowed_peers,
            denied_peers=denied_peers,
            workdir=workdir,
            loopback_peers=loopback_peers,
            tls=tls,
        )
    )
    config.chmod(0o600)  # it holds the secret
    with (workdir / "turnserver.out").open("wb") as out:
        proc = subprocess.Popen(
            [*prefix, TURNSERVER, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Coturn(
        proc=proc,
        workdir=workdir,
        listen=listen,
        port=port,
        tls_port=tls[0] if tls is not None else None,
    )
    try:
        _wait_listening(server, prefix)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for name in ("turnserver.conf", "turndb", "turnserver.pid"):
            (workdir / name).unlink(missing_ok=True)
