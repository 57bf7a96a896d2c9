"""Kernel receive times for the SFU load bots' datagrams.

A bot's event loop runs late whenever the bots' own work piles up (they share the machine's
cores with the server under test). A receive time read in the bot's aiortc stack is then the
server's delay plus however long the datagram waited in the bot's socket buffer. The kernel
stamps every datagram as it is queued to the socket (``SO_TIMESTAMPNS``); on loopback that
is the moment the server's ``sendto`` handed it over, so delay measured to that stamp is what
the server (and the publishing bot's own send path) added, not the receiving bot's lag.

``install_kernel_stamps`` patches, in a bot process on the standard asyncio event loop
(uvloop does not hand out ancillary data):

- the selector loop's datagram transport turns the stamps on for its socket, reads with
  ``recvmsg`` and keeps each datagram's
  stamp, converted to ``time.monotonic()``'s clock, in ``LAST_STAMP`` while the datagram is
  handed to its protocol;
- one socket of the process's own (``hold_arrival_stamps``) keeps the kernel's arrival
  stamping on for the process's whole life. Linux stamps datagrams on arrival only while
  some socket on the machine asks for stamps, and when the first one asks it turns that on
  later, from a kernel worker (a static key flipped in ``net_enable_timestamp``'s deferred
  work). A datagram queued before then is stamped when it is read instead
  (``__sock_recv_timestamp``: "race occurred between timestamp enabling and packet
  receiving"), which on a loaded machine made a new socket's first datagrams read as having
  no delay at all. The same happens again after the machine's last stamping socket closes;
  a socket held for the process's life rules out both;
- aioice's ``Connection`` queues that stamp next to each data datagram it queues, and on
  ``recv`` exposes the stamp of the datagram it returns as ``last_stamp``. aiortc's DTLS
  transport handles each datagram fully before it asks for the next, so while an RTP
  packet is handled, ``kernel_stamp(dtls_transport)`` is that packet's stamp.

Written for Python 3.11's asyncio and aioice 0.13 (both are private internals).
"""

from __future__ import annotations

import asyncio.selector_events
import socket
import struct
import time
from collections import deque
from typing import Any, Final

from aioice.ice import Connection

SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux
_TIMESPEC: Final = struct.Struct("@qq")  # struct timespec on 64-bit Linux
_ANCILLARY_SIZE: Final = socket.CMSG_SPACE(_TIMESPEC.size)


class _Stamp:
    value: float | None = None


LAST_STAMP: Final = _Stamp()
# How long hold_arrival_stamps waits for the kernel to stamp on arrival (its worker may wait
# behind a loaded machine's other work), and how long each probe datagram stays queued.
HOLD_TIMEOUT: float = 5.0
HOLD_PROBE_WAIT: float = 0.002
_holder: list[socket.socket] = []
_Transport: Any = asyncio.selector_events._SelectorDatagramTransport  # type: ignore[attr-defined]
_original_transport_init: Final = _Transport.__init__
_original_data_received: Final = Connection.data_received
_original_recv: Final = Connection.recv


def _realtime(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds: int
            nanoseconds: int
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds + nanoseconds * 1e-9
    return None


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    stamp = _realtime(ancillary)
    if stamp is None:
        return None
    # The stamp is on CLOCK_REALTIME: carried over to the monotonic clock.
    return time.monotonic() - (time.time() - stamp)


def hold_arrival_stamps() -> None:
    """Keep the kernel stamping datagrams on arrival for this process's life, and return once
    it does.

    Opens one loopback socket with stamps on (the kernel stamps every socket's datagrams on
    arrival while any socket asks for stamps), then sends itself a datagram until one comes
    back stamped before it was read, not as it was read (see the module docstring).
    Idempotent; RuntimeError if the kernel has not turned stamping on within HOLD_TIMEOUT."""
    if _holder:
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("127.0.0.1", 0))
        address = sock.getsockname()
        deadline = time.monotonic() + HOLD_TIMEOUT
        while True:
            sock.sendto(b"probe", address)
            time.sleep(HOLD_PROBE_WAIT)
            before_read = time.time()
            _data, ancillary, _flags, _addr = sock.recvmsg(16, _ANCILLARY_SIZE)
            stamp = _realtime(ancillary)
            if stamp is not None and stamp < before_read:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the kernel did not stamp datagrams on arrival within {HOLD_TIMEOUT} s"
                )
    except BaseException:
        sock.close()
        raise
    _holder.append(sock)


def _stamping_init(self: Any, loop: Any, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    _original_transport_init(self, loop, sock, *args, **kwargs)


def _stamped_read_ready(self: Any) -> None:
    if self._conn_lost:
        return
    try:
        data, ancillary, _flags, addr = self._sock.recvmsg(self.max_size, _ANCILLARY_SIZE)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        self._protocol.error_received(exc)
        return
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        self._fatal_error(exc, "Fatal read error on datagram transport")
        return
    LAST_STAMP.value = _arrival(ancillary)
    try:
        self._protocol.datagram_received(data, addr)
    finally:
        LAST_STAMP.value = None


def _stamped_data_received(self: Connection, data: bytes, component: int) -> None:
    stamps: deque[float | None] | None = getattr(self, "_kernel_stamps", None)
    if stamps is None:
        stamps = self._kernel_stamps = deque()  # type: ignore[attr-defined]
    stamps.append(LAST_STAMP.value)
    _original_data_received(self, data, component)


async def _stamped_recv(self: Connection) -> bytes:
    data = await _original_recv(self)
    stamps: deque[float | None] | None = getattr(self, "_kernel_stamps", None)
    self.last_stamp = stamps.popleft() if stamps else None  # type: ignore[attr-defined]
    return data


def install_kernel_stamps() -> None:
    """Patch this process (see the module docstring); it must run on asyncio's own loop."""
    hold_arrival_stamps()
    _Transport.__init__ = _stamping_init
    _Transport._read_ready = _stamped_read_ready
    Connection.data_received = _stamped_data_received  # type: ignore[method-assign]
    Connection.recv = _stamped_recv  # type: ignore[method-assign]


def kernel_stamp(dtls_transport: Any) -> float | None:
    """The kernel receive time (monotonic clock) of the datagram ``dtls_transport`` is
    handling, or None where it is unknown."""
    connection = getattr(dtls_transport.transport, "_connection", None)
    stamp: float | None = getattr(connection, "last_stamp", None)
    return stamp
