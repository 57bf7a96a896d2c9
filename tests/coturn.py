"""coturn (Debian's ``coturn``, binary ``turnserver``) run by a test with the configuration
of docs/deploy.md: the doc's ``/etc/turnserver.conf`` block as it stands, with only what is
the site's replaced (addresses, ports, the secret, the certificate, the SFU's address, logging
to the test's folder). So the tests check the doc: TURN REST API credentials checked against
the node's TURN secret, private peers denied but the SFU, no listener but the TURN port.

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
DEPLOY_DOC: Final = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"
# Options of the doc's config that are the site's: the test gives its own.
SITE_OPTIONS: Final = frozenset(
    {
        "listening-ip",
        "relay-ip",
        "external-ip",
        "listening-port",
        "tls-listening-port",
        "cert",
        "pkey",
        "static-auth-secret",
        "allowed-peer-ip",
        "syslog",
    }
)


def require_coturn() -> None:
    """TURN tests never skip: they fail saying what to install."""
    if shutil.which(TURNSERVER) is None:
        pytest.fail(
            "TURN test cannot run without coturn's turnserver (apt-get install coturn); "
            "scripts/setup.sh --dev installs it.",
            pytrace=False,
        )


def documented_config() -> list[tuple[str, str | None]]:
    """The options of docs/deploy.md's coturn config block, in order: (name, value)."""
    text = DEPLOY_DOC.read_text()
    marker = "`/etc/turnserver.conf`:\n\n```ini\n"
    assert marker in text, f"{DEPLOY_DOC}: no coturn config block after {marker!r}"
    block = text.split(marker, 1)[1].split("```", 1)[0]
    options: list[tuple[str, str | None]] = []
    for line in block.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        options.append((name, value if sep else None))
    return options


def coturn_config(
    *,
    listen: str,
    relay: str,
    port: int,
    secret: str,
    allowed_peers: Sequence[str],
    workdir: Path,
    loopback_peers: bool = False,
    tls: tuple[int, Path, Path] | None = None,
) -> str:
    """The doc's config with the test's site: no TLS unless ``tls`` (port, certificate, key)."""
    options = documented_config()
    names = {name for name, _ in options}
    missing = {"use-auth-secret", "listening-ip", "static-auth-secret", "allowed-peer-ip"} - names
    assert not missing, f"{DEPLOY_DOC}: the coturn config lost {sorted(missing)}"
    lines = [
        f"{name}={value}" if value is not None else name
        for name, value in options
        if name not in SITE_OPTIONS
    ]
    lines += [
        f"listening-ip={listen}",
        f"relay-ip={relay}",
        f"listening-port={port}",
        f"static-auth-secret={secret}",
        *(f"allowed-peer-ip={peer}" for peer in allowed_peers),
        f"userdb={workdir / 'turndb'}",
        f"pidfile={workdir / 'turnserver.pid'}",
        f"log-file={workdir / 'turnserver.log'}",
        "simple-log",
        "no-stdout-log",
    ]
    if tls is None:
        lines.append("no-tls")
    else:
        tls_port, cert, key = tls
        lines += [f"tls-listening-port={tls_port}", f"cert={cert}", f"pkey={key}"]
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
