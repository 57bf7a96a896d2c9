"""Zero-copy sending of a local file on an HTTP connection, on any event loop.

``loop.sendfile`` exists only on asyncio's own loops: uvloop (what nodes run) inherits the
stub that raises ``NotImplementedError``, and aiohttp then reads the file in 256 KiB chunks
through the thread pool: four thread hops and two copies per MiB. Here the kernel's
``sendfile`` moves the bytes from the page cache to the connection's socket, on the loop's
thread, waiting for writability on a duplicate of the socket's descriptor (no loop lets a
reader or writer be added on a descriptor that a transport owns). The transport is left
alone meanwhile: aiohttp writes nothing else on a connection while its handler runs.

As with asyncio's own ``loop.sendfile``, a file not in the page cache is read from disk on
the loop's thread, a slice (what the socket's buffer takes) at a time.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Final

# Whether the kernel has sendfile(2) for sockets (Linux, macOS, the BSDs).
AVAILABLE: Final = hasattr(os, "sendfile")


def socket_fd(transport: asyncio.BaseTransport | None) -> int | None:
    """The descriptor of a plain TCP transport's socket; None for TLS or anything else."""
    if not AVAILABLE or transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("ssl_object") is not None or isinstance(
        transport.get_extra_info("sslcontext"), ssl.SSLContext
    ):
        return None
    sock = transport.get_extra_info("socket")
    fileno = getattr(sock, "fileno", None)
    fd = fileno() if callable(fileno) else -1
    return fd if isinstance(fd, int) and fd >= 0 else None


async def send(transport: asyncio.WriteTransport, file_fd: int, offset: int, count: int) -> None:
    """Send ``count`` bytes of ``file_fd`` from ``offset`` after what the transport holds.

    Raises ``ConnectionError`` if the connection goes away and ``EOFError`` if the file is
    shorter than promised; either way the response is cut short and the caller must not
    reuse the connection.
    """
    loop = asyncio.get_running_loop()
    sock_fd = socket_fd(transport)
    if sock_fd is None:
        raise ConnectionResetError("the connection closed before the download")
    # A descriptor of our own, taken before any await: the transport closes its own when
    # the client goes away, and that number could then be reused by another file.
    fd = os.dup(sock_fd)
    try:
        # Headers (or the end of an earlier response) still queued in the transport go
        # out first: the transport sends them when the socket is writable.
        while transport.get_write_buffer_size():
            await _writable(loop, fd, transport)
        while count > 0:
            if transport.is_closing():
                raise ConnectionResetError("the connection closed during a download")
            try:
                sent = os.sendfile(fd, file_fd, offset, count)
            except BlockingIOError:
                await _writable(loop, fd, transport)
                continue
            if sent == 0:
                raise EOFError("the file is shorter than its recorded size")
            offset += sent
            count -= sent
    finally:
        os.close(fd)


async def _writable(
    loop: asyncio.AbstractEventLoop, fd: int, transport: asyncio.BaseTransport
) -> None:
    if transport.is_closing():
        raise ConnectionResetError("the connection closed during a download")
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
