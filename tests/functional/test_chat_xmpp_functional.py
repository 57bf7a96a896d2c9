"""The chat benchmark's XMPP peer (benchmarks/chat_xmpp.py): ejabberd started as the
benchmark starts it, and its client logging in, sending and receiving a message."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from benchmarks.chat_xmpp import XmppClient, XmppError, XmppMessage, start_ejabberd, wait_ejabberd
from benchmarks.procs import free_port, stop_process
from tests.helpers import eventually


@pytest.fixture
def ejabberd(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "ejabberd.out"
    proc = start_ejabberd(tmp_path / "ejabberd", port, log)
    try:
        wait_ejabberd(f"ws://127.0.0.1:{port}/ws", proc, log)
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        stop_process(proc)
    assert proc.poll() is not None


async def test_a_message_goes_from_one_user_to_the_other(ejabberd: str) -> None:
    got: asyncio.Queue[XmppMessage] = asyncio.Queue()
    async with aiohttp.ClientSession() as http:
        alice = XmppClient(ejabberd, "alice", http, lambda m: None)
        bob = XmppClient(ejabberd, "bob", http, got.put_nowait)
        await alice.connect()
        await bob.connect()
        # Markup in the body travels escaped and arrives as it was written.
        await alice.send("bob", 'lunch <at> 12 & "later"')
        message = await asyncio.wait_for(got.get(), 5)
        assert message == XmppMessage("alice", 'lunch <at> 12 & "later"')
        await alice.close()
        assert alice.closed
        # To a name no one logged in as: it comes back undelivered, counted apart from what
        # bob receives, and bob still receives.
        await bob.send("nobody", "hello?")
        carol = XmppClient(ejabberd, "carol", http, lambda m: None)
        await carol.connect()
        await carol.send("bob", "second")
        assert (await asyncio.wait_for(got.get(), 5)).body == "second"
        assert got.empty()
        await eventually(lambda: bob.bounced == 1)
        assert carol.bounced == 0
        await carol.close()
        await bob.close()


async def test_a_server_that_is_not_xmpp_is_an_error(ejabberd: str) -> None:
    # ejabberd's HTTP listener answers other paths with 404: no WebSocket, no stream.
    url = ejabberd.removesuffix("/ws") + "/nothing"
    async with aiohttp.ClientSession() as http:
        client = XmppClient(url, "dave", http, lambda m: None)
        with pytest.raises((aiohttp.ClientError, XmppError)):
            await client.connect()
        assert client.closed
