"""The call quality benchmark's network: the SFU's namespace and one namespace per browser.

    host ──veth──┐
                 hub: a bridge holding the hub's address (the SFU is bound to it)
                 ├──veth or relay── participant 1 (one Chromium)
                 ├──veth or relay── participant 2
                 ...

Each participant's namespace reaches the SFU through its own link into the hub's bridge, so
that each gets its own caps: a ``tc tbf`` on the hub's end of its link limits what the SFU
sends it (its downlink), one on its own end what it sends (its uplink). All of them share one
/24, so that an SFU that binds its media sockets to the device of its address (Janus does)
reaches every participant through the bridge. The hub routes nothing: nothing a browser sends
goes further than the SFU (or the host's end, there for health checks and ``/metrics``).

A link is a veth pair, or, where a scenario wants loss and jitter (``netem`` does not exist on
these machines), a pair of TAP devices joined by ``benchmarks.call_relay``, a process in the
hub that copies frames between them, dropping and delaying UDP datagrams.

Names and the /24 of 10.214.0.0/16 derive from the pid, so two runs never collide; a run's
leftovers (a killed benchmark) are removed by the next one. Needs root (``ip netns``, ``tc``).
Everything made here is removed on the way out, also on failure: every process left in the
namespaces is killed, then the host's veth end and the namespaces are deleted (which deletes
the links inside them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from benchmarks.procs import die_with_parent

PREFIX: Final = "huddle-cq-"
MAX_PARTICIPANTS: Final = 200  # .11 to .210 of the run's /24
IP_TIMEOUT_S: Final = 10.0
# A tbf bucket of a few full packets: a short queue at the cap, as a home router's.
TBF_BURST: Final = "4000"
TBF_LATENCY: Final = "50ms"


class NetworkError(RuntimeError):
    pass


def run_ip(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(args)}: {done.stderr.strip()}")


def netns_pids(name: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=IP_TIMEOUT_S
    )
    return [int(word) for word in out.stdout.split() if word.isdigit()]


def in_netns(name: str, *argv: str) -> list[str]:
    """``argv`` run inside namespace ``name`` (``ip netns exec`` execs it: same pid)."""
    return ["ip", "netns", "exec", name, *argv]


def remove_stale() -> list[str]:
    """Namespaces of earlier runs whose benchmark is gone; returns the names deleted."""
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=IP_TIMEOUT_S
    )
    gone = []
    for line in listing.stdout.splitlines():
        name = line.split(" ", 1)[0]
        pid = name.removeprefix(PREFIX).split("-", 1)[0]
        if name.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            for left in netns_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(left, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
            gone.append(name)
    return gone


@dataclass
class Participant:
    index: int
    netns: str
    address: str
    hub_address: str  # the SFU's address, on the hub's bridge
    hub_dev: str
    dev: str
    relay: subprocess.Popen[bytes] | None = None
    relay_stats: Path | None = None

    def command(self, *argv: str) -> list[str]:
        return in_netns(self.netns, *argv)


@dataclass
class Network:
    """The hub and its participants; made by :func:`network`."""

    tag: str
    third: int
    hub: str
    host_dev: str
    host_address: str
    hub_address: str
    bridge: str
    participants: list[Participant] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    def hub_command(self, *argv: str) -> list[str]:
        return in_netns(self.hub, *argv)

    def _add_netns(self, name: str) -> None:
        run_ip("ip", "netns", "add", name)
        self._namespaces.append(name)
        run_ip("ip", "-n", name, "link", "set", "lo", "up")

    def add_participant(
        self,
        workdir: Path,
        loss: float = 0.0,
        jitter_ms: float = 0.0,
        seed: int = 0,
        max_s: float = 600.0,
    ) -> Participant:
        """A participant's namespace and its link to the hub: a veth pair, or the relay's
        TAP pair when ``loss`` or ``jitter_ms`` is set (its counters go to ``workdir``)."""
        i = len(self.participants) + 1
        if i > MAX_PARTICIPANTS:
            raise NetworkError(f"at most {MAX_PARTICIPANTS} participants")
        p = Participant(
            index=i,
            netns=f"{self.hub}-p{i}",
            address=f"10.214.{self.third}.{10 + i}",
            hub_address=self.hub_address,
            hub_dev=f"cq{self.tag}p{i}h",
            dev=f"cq{self.tag}p{i}n",
        )
        self._add_netns(p.netns)
        self.participants.append(p)
        if loss or jitter_ms:
            run_ip("ip", "-n", self.hub, "tuntap", "add", "dev", p.hub_dev, "mode", "tap")
            run_ip("ip", "-n", p.netns, "tuntap", "add", "dev", p.dev, "mode", "tap")
            stats = workdir / f"relay-{i}.json"
            p.relay_stats = stats
            with (workdir / f"relay-{i}.log").open("wb") as sink:
                p.relay = subprocess.Popen(
                    self.hub_command(
                        sys.executable,
                        "-m",
                        "benchmarks.call_relay",
                        "--hub-dev",
                        p.hub_dev,
                        "--peer-netns",
                        p.netns,
                        "--peer-dev",
                        p.dev,
                        "--loss",
                        str(loss),
                        "--jitter-ms",
                        str(jitter_ms),
                        "--seed",
                        str(seed + i),
                        "--max-s",
                        str(max_s),
                        "--stats",
                        str(stats),
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=sink,
                    preexec_fn=die_with_parent,
                )
        else:
            run_ip(
                "ip", "-n", self.hub, "link", "add", p.hub_dev, "type", "veth",
                "peer", "name", p.dev, "netns", p.netns,
            )  # fmt: skip
        run_ip("ip", "-n", self.hub, "link", "set", p.hub_dev, "master", self.bridge)
        run_ip("ip", "-n", p.netns, "addr", "add", f"{p.address}/24", "dev", p.dev)
        run_ip("ip", "-n", self.hub, "link", "set", p.hub_dev, "up")
        run_ip("ip", "-n", p.netns, "link", "set", p.dev, "up")
        run_ip("ip", "-n", p.netns, "route", "add", "default", "via", p.hub_address)
        return p

    def cap(self, p: Participant, down_kbit: int | None, up_kbit: int | None) -> None:
        """``tc tbf`` caps on the participant's link (None: that direction uncapped)."""
        for netns, dev, kbit in ((self.hub, p.hub_dev, down_kbit), (p.netns, p.dev, up_kbit)):
            if kbit is None:
                subprocess.run(
                    ["tc", "-n", netns, "qdisc", "del", "dev", dev, "root"],
                    capture_output=True,
                    timeout=IP_TIMEOUT_S,
                )
                continue
            run_ip(
                "tc", "-n", netns, "qdisc", "replace", "dev", dev, "root", "tbf",
                "rate", f"{kbit}kbit", "burst", TBF_BURST, "latency", TBF_LATENCY,
            )  # fmt: skip

    def namespace_pids(self) -> dict[str, list[int]]:
        return {name: netns_pids(name) for name in self._namespaces}

    def stop_relays(self) -> None:
        """Stop the relays; each writes its counters to ``relay_stats`` as it goes."""
        for p in self.participants:
            if p.relay is not None and p.relay.poll() is None:
                p.relay.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.relay.wait(5)

    def close(self) -> None:
        """Kill what runs in the namespaces (the relays first, gently), then delete the
        host's veth end and the namespaces."""
        self.stop_relays()
        for name in self._namespaces:
            for pid in netns_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for p in self.participants:
            if p.relay is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.relay.wait(5)
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True, timeout=10)
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self._namespaces.clear()


@contextlib.contextmanager
def network() -> Iterator[Network]:
    """The hub namespace with its veth to the host; participants are added to it."""
    if os.geteuid() != 0:
        raise NetworkError("the call benchmark needs root (ip netns, tc)")
    remove_stale()
    pid = os.getpid()
    third = pid % 250 + 1
    tag = str(pid % 10_000_000)
    net = Network(
        tag=tag,
        third=third,
        hub=f"{PREFIX}{pid}",
        host_dev=f"cq{tag}hh",
        host_address=f"10.214.{third}.1",
        hub_address=f"10.214.{third}.2",
        bridge=f"cq{tag}br",
    )
    try:
        net._add_netns(net.hub)
        # A new namespace routes nothing; said here so that it never depends on the host's.
        run_ip(*net.hub_command("sysctl", "-qw", "net.ipv4.ip_forward=0"))
        run_ip(
            "ip", "link", "add", net.host_dev, "type", "veth",
            "peer", "name", f"cq{tag}hn", "netns", net.hub,
        )  # fmt: skip
        run_ip("ip", "-n", net.hub, "link", "add", net.bridge, "type", "bridge")
        run_ip("ip", "-n", net.hub, "addr", "add", f"{net.hub_address}/24", "dev", net.bridge)
        run_ip("ip", "-n", net.hub, "link", "set", net.bridge, "up")
        run_ip("ip", "-n", net.hub, "link", "set", f"cq{tag}hn", "master", net.bridge)
        run_ip("ip", "-n", net.hub, "link", "set", f"cq{tag}hn", "up")
        run_ip("ip", "addr", "add", f"{net.host_address}/24", "dev", net.host_dev)
        run_ip("ip", "link", "set", net.host_dev, "up")
        yield net
    finally:
        net.close()
