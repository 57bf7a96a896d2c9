"""A throwaway network namespace with a veth pair, for tests with real WebRTC peers.

Chromium and aioice leave loopback out of their ICE candidates, so a browser test needs a
non-loopback address that nothing else can reach: one end of a veth pair, inside a namespace
made for this run. The other end stays in the host namespace, so that the test can reach a
server in the namespace (health checks, logs). The namespace name, the interface names and
the /30 subnet are derived from the pid, so two runs on one machine never collide.

Needs root (``ip netns``). Teardown kills every process still in the namespace (all of them
started by the test) and deletes the namespace, which also removes the veth pair.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

PREFIX: Final = "huddle-test-"
_sequence = itertools.count()


class NamespaceError(RuntimeError):
    pass


@dataclass(frozen=True)
class NetworkNamespace:
    name: str
    host_interface: str
    interface: str
    host_address: str  # the host's end of the veth pair
    address: str  # the namespace's end: bind servers and browsers here

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=10
        )
        return [int(word) for word in out.stdout.split() if word.isdigit()]


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _remove_stale() -> None:
    """Delete namespaces of earlier runs whose process is gone (a killed pytest)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    for line in listing.stdout.splitlines():
        name = line.split(" ", 1)[0]
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _plan() -> NetworkNamespace:
    pid = os.getpid()
    n = next(_sequence) % 4
    index = ((pid % 4096) * 4 + n) % 16384  # one /30 of 10.213.0.0/16
    third, fourth = divmod(index * 4, 256)
    tag = f"{pid % 10_000_000}{n}"  # interface names: at most 15 characters
    return NetworkNamespace(
        name=f"{PREFIX}{pid}-{n}",
        host_interface=f"hb{tag}h",
        interface=f"hb{tag}n",
        host_address=f"10.213.{third}.{fourth + 1}",
        address=f"10.213.{third}.{fourth + 2}",
    )


def kill_all(ns: NetworkNamespace) -> list[int]:
    """SIGKILL every process left in the namespace; returns their pids."""
    left = ns.pids()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


@contextlib.contextmanager
def network_namespace() -> Iterator[NetworkNamespace]:
    if os.geteuid() != 0:
        raise NamespaceError("network namespaces need root (ip netns)")
    _remove_stale()
    ns = _plan()
    created = False
    try:
        _ip("netns", "add", ns.name)
        created = True
        _ip(
            "link",
            "add",
            ns.host_interface,
            "type",
            "veth",
            "peer",
            "name",
            ns.interface,
            "netns",
            ns.name,
        )
        _ip("addr", "add", f"{ns.host_address}/30", "dev", ns.host_interface)
        _ip("link", "set", ns.host_interface, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.address}/30", "dev", ns.interface)
        _ip("-n", ns.name, "link", "set", ns.interface, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        if created:
            kill_all(ns)
            subprocess.run(
                ["ip", "link", "del", ns.host_interface], capture_output=True, timeout=10
            )
            _ip("netns", "del", ns.name)
