"""Hello, auth, ping and token lifetime over a real socket against a real Redis."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from huddle.client import HuddleClient, RequestError
from signaling import protocol as p
from signaling.auth import mint_token
from signaling.server import HUB
from tests.conftest import StartNode
from tests.helpers import TEST_KEY, TEST_SECRET, Node, make_token


async def test_hello_returns_identity_and_session(node: Node) -> None:
    client = await node.client("alice", device="phone", hello=False)
    reply = await client.hello()
    assert reply.identity == "alice"
    assert reply.device == "phone"
    assert reply.protocol == p.PROTOCOL_VERSION
    assert reply.node == node.settings.node_id
    assert abs(reply.server_time_ms / 1000 - time.time()) < 5
    pong = await client.request(p.Ping(id=""))
    assert pong.server_time_ms >= reply.server_time_ms


async def test_hello_tells_the_nodes_limits(start_node: StartNode) -> None:
    """What a client checks before sending: a frame past max_frame_bytes closes the
    connection (a client that cannot know the limit resends it after each reconnect)."""
    node = await start_node(max_frame_bytes=10_000, chat_max_text_chars=300)
    reply = await (await node.client("alice", hello=False)).hello()
    assert (reply.max_frame_bytes, reply.max_text_chars) == (10_000, 300)


async def test_hello_without_device_gets_generated_one(node: Node) -> None:
    a = await node.client("alice")
    b = await node.client("alice")
    assert a.device and b.device and a.device != b.device


async def test_requests_before_hello_are_refused(node: Node) -> None:
    client = await node.client("alice", hello=False)
    with pytest.raises(RequestError) as info:
        await client.request(p.Ping(id=""))
    assert info.value.code == "not_authenticated"
    assert (await client.hello()).identity == "alice"


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("not-a-jwt", "invalid_token"),
        (make_token("alice", secret="wrong-secret-" + "x" * 32), "invalid_token"),
        (make_token("alice", key="unknown-key"), "invalid_token"),
        (
            mint_token(
                api_key=TEST_KEY,
                api_secret=TEST_SECRET,
                identity="alice",
                ttl_s=10,
                now=time.time() - 3600,
            ),
            "token_expired",
        ),
    ],
)
async def test_bad_tokens_get_error_and_close_code(node: Node, token: str, code: str) -> None:
    client = HuddleClient(node.url, token)
    node.clients.append(client)
    await client.connect()
    with pytest.raises(RequestError) as info:
        await client.hello()
    assert info.value.code == code
    assert TEST_SECRET not in info.value.message
    assert await client.wait_closed() == p.CloseCode.AUTH_FAILED


async def test_unsupported_protocol_version(node: Node) -> None:
    client = await node.client("alice", hello=False)
    with pytest.raises(RequestError) as info:
        await client.hello(protocol=99)
    assert info.value.code == "unsupported_protocol"
    assert await client.wait_closed() == p.CloseCode.UNSUPPORTED_PROTOCOL


async def test_second_hello_is_refused(node: Node) -> None:
    client = await node.client("alice")
    with pytest.raises(RequestError) as info:
        await client.hello()
    assert info.value.code == "already_authenticated"


async def test_hello_timeout_closes(start_node: StartNode) -> None:
    node = await start_node(hello_timeout_s=0.3)
    client = await node.client("alice", hello=False)
    assert await client.wait_closed(5) == p.CloseCode.HELLO_TIMEOUT


async def test_token_expiry_notice_refresh_and_close(node: Node) -> None:
    def short(identity: str, ttl: int) -> str:
        return mint_token(api_key=TEST_KEY, api_secret=TEST_SECRET, identity=identity, ttl_s=ttl)

    # Notice 60 s ahead of a 62 s token: auth.expiring comes at once-ish (2 s).
    client = HuddleClient(node.url, short("alice", 62))
    node.clients.append(client)
    await client.connect()
    await client.hello()
    notice = await client.next_event("auth.expiring", timeout=6)
    assert notice.expires_at == client.hello_reply.token_expires_at  # type: ignore[union-attr]
    assert notice.seq == 1
    # A token for someone else is refused; the right one moves the deadline.
    with pytest.raises(RequestError) as info:
        await client.request(p.AuthRefresh(id="", token=short("mallory", 600)))
    assert info.value.code == "identity_mismatch"
    refreshed = await client.request(p.AuthRefresh(id="", token=short("alice", 600)))
    assert refreshed.token_expires_at > notice.expires_at
    # And a connection whose token runs out is closed with the documented code.
    doomed = HuddleClient(node.url, short("bob", 2))
    node.clients.append(doomed)
    await doomed.connect()
    await doomed.hello()
    assert await doomed.wait_closed(8) == p.CloseCode.TOKEN_EXPIRED
    assert not client.closed.is_set()


async def test_same_device_again_replaces_old_connection(node: Node) -> None:
    old = await node.client("alice", device="phone")
    other = await node.client("alice", device="laptop")
    await node.client("alice", device="phone")
    assert await old.wait_closed() == p.CloseCode.REPLACED
    await asyncio.sleep(0.1)
    assert not other.closed.is_set()


async def test_dead_peer_detected_by_heartbeat(start_node: StartNode) -> None:
    node = await start_node(heartbeat_s=0.4)
    async with aiohttp.ClientSession() as http:
        # autoping=False: the client never answers the server's pings, like a dead peer.
        ws = await node.raw_ws(http, autoping=False)
        await ws.send_str(p.encode(p.Hello(id="h", token=make_token("alice"))).decode())
        started = time.monotonic()
        while not ws.closed and time.monotonic() - started < 5:
            msg = await ws.receive(timeout=5)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert time.monotonic() - started < 3
    hub = node.app[HUB]
    for _ in range(50):
        if not hub.sessions:
            break
        await asyncio.sleep(0.05)
    assert not hub.sessions


async def test_same_device_name_of_another_user_is_left_alone(node: Node) -> None:
    alice = await node.client("alice", device="phone")
    await node.client("bob", device="phone")
    await asyncio.sleep(0.3)
    assert not alice.closed.is_set()
    assert (await alice.request(p.Ping(id=""))).server_time_ms > 0
