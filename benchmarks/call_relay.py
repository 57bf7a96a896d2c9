"""A user-space link with loss and jitter between two network namespaces (``netem`` does not
exist on these machines): copies Ethernet frames between a TAP device in the namespace it runs
in (the hub, where the device is a port of its bridge) and one in ``--peer-netns``, dropping
UDP datagrams at random and delaying every frame by a random extra of up to ``--jitter-ms``.

    ip netns exec HUB python -m benchmarks.call_relay --hub-dev T1 --peer-netns P \
        --peer-dev T2 --loss 0.05 --jitter-ms 20 --stats relay.json

Both TAP devices exist already (``ip tuntap add``, persistent); benchmarks/call_net.py makes
them. Only UDP is dropped: the media is what the benchmark measures, and the signaling (TCP)
would only be slowed by a loss, ARP stalled. A delayed frame never overtakes an earlier one in
the same direction, so the jitter is delay variation, not reordering. The process stops after
``--max-s`` or on SIGTERM or SIGINT, and then writes its counters to ``--stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import fcntl
import json
import os
import random
import signal
import struct
import time
from pathlib import Path
from typing import Final

from benchmarks.procs import bounded

TUNSETIFF: Final = 0x400454CA
IFF_TAP: Final = 0x0002
IFF_NO_PI: Final = 0x1000
CLONE_NEWNET: Final = 0x40000000
IPPROTO_UDP: Final = 17
ETHERNET_HEADER: Final = 14
ETHERTYPE_IPV4: Final = b"\x08\x00"
ETHERTYPE_IPV6: Final = b"\x86\xdd"
MTU_READ: Final = 65536


def open_tap(name: str) -> int:
    """Attach to the persistent TAP device ``name`` of this process's network namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into network namespace ``name``; file
    descriptors opened before stay bound to the namespace they were opened in."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def is_udp(frame: bytes) -> bool:
    """An Ethernet frame carrying a UDP datagram (IPv4 or IPv6; no VLAN tags here)."""
    kind = frame[12:14]
    if kind == ETHERTYPE_IPV4 and len(frame) > ETHERNET_HEADER + 9:
        return frame[ETHERNET_HEADER + 9] == IPPROTO_UDP
    if kind == ETHERTYPE_IPV6 and len(frame) > ETHERNET_HEADER + 6:
        return frame[ETHERNET_HEADER + 6] == IPPROTO_UDP
    return False


class Direction:
    """One way through the link: read from ``src``, written to ``dst`` when due."""

    def __init__(
        self, name: str, src: int, dst: int, loss: float, jitter_s: float, rng: random.Random
    ) -> None:
        self.name = name
        self.src, self.dst = src, dst
        self.loss, self.jitter_s, self.rng = loss, jitter_s, rng
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.last_due = 0.0
        self.wakeup = asyncio.Event()
        self.counts = {"packets": 0, "bytes": 0, "udp": 0, "dropped": 0, "write_errors": 0}

    def on_readable(self) -> None:
        while True:
            try:
                packet = os.read(self.src, MTU_READ)
            except BlockingIOError:
                return
            except OSError:
                self.counts["write_errors"] += 1
                return
            self.counts["packets"] += 1
            self.counts["bytes"] += len(packet)
            if is_udp(packet):
                self.counts["udp"] += 1
                if self.rng.random() < self.loss:
                    self.counts["dropped"] += 1
                    continue
            if self.jitter_s <= 0 and not self.queue:
                self._write(packet)
                continue
            due = max(time.monotonic() + self.rng.uniform(0, self.jitter_s), self.last_due)
            self.last_due = due
            self.queue.append((due, packet))
            self.wakeup.set()

    def _write(self, packet: bytes) -> None:
        try:
            os.write(self.dst, packet)
        except OSError:  # the device's queue is full: the packet is lost, as on a wire
            self.counts["write_errors"] += 1

    async def deliver(self) -> None:
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            due, packet = self.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self.queue.popleft()
            self._write(packet)


async def relay(args: argparse.Namespace) -> dict[str, object]:
    hub_fd = open_tap(args.hub_dev)
    enter_netns(args.peer_netns)
    peer_fd = open_tap(args.peer_dev)
    rng = random.Random(args.seed)
    jitter_s = args.jitter_ms / 1000
    directions = [
        Direction("down", hub_fd, peer_fd, args.loss, jitter_s, rng),
        Direction("up", peer_fd, hub_fd, args.loss, jitter_s, rng),
    ]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = []
    for d in directions:
        loop.add_reader(d.src, d.on_readable)
        tasks.append(asyncio.create_task(d.deliver()))
    started = time.monotonic()
    try:
        await asyncio.wait_for(stop.wait(), args.max_s)
    except TimeoutError:
        pass
    finally:
        for d in directions:
            loop.remove_reader(d.src)
        for task in tasks:
            task.cancel()
        os.close(hub_fd)
        os.close(peer_fd)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "loss": args.loss,
        "jitter_ms": args.jitter_ms,
        **{d.name: d.counts for d in directions},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hub-dev", required=True)
    parser.add_argument("--peer-netns", required=True)
    parser.add_argument("--peer-dev", required=True)
    parser.add_argument("--loss", type=bounded(float, 0, 1), default=0.0)
    parser.add_argument("--jitter-ms", type=bounded(float, 0, 2000), default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-s", type=bounded(float, 1, 3600), default=600.0)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()
    counts = asyncio.run(relay(args))
    args.stats.write_text(json.dumps(counts, indent=1) + "\n")


if __name__ == "__main__":
    main()
