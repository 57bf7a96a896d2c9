"""The TURN credentials a node hands out in call.join work with coturn configured as
docs/deploy.md says (``use-auth-secret`` with the node's TURN secret): an allocation over UDP,
TCP and TLS relays to the SFU's address, while wrong or expired credentials and peers outside
the allowed addresses are refused. The TURN client is aioice's, the one aiortc uses."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final, cast

import av
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from huddle.call import CallClient
from huddle.client import HuddleClient
from sfu.ice_servers import turn_credentials
from tests.conftest import StartNode
from tests.coturn import Coturn, coturn
from tests.helpers import free_port, make_token
from tests.media import ColorTrack, close_colour, mean_rgb

SECRET = "turn-secret-for-the-test-0123456789"
SFU = "127.0.0.1"  # the only peer the relay may reach, as the SFU in production
OTHER = "127.0.0.2"  # stands for a private network behind the TURN server
ECHO_WAIT_S: Final = 10.0


class Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


class Echo(asyncio.DatagramProtocol):
    """A peer that answers each datagram to whoever sent it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo " + data, addr)


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "turn.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def turn(tmp_path: Path) -> Iterator[Coturn]:
    cert, key = _certificate(tmp_path / "tls")
    with coturn(
        tmp_path / "coturn",
        listen="127.0.0.1",
        port=free_port(),
        secret=SECRET,
        allowed_peers=[SFU],
        loopback_peers=True,
        tls=(free_port(), cert, key),
    ) as server:
        yield server


def _trusting(turn: Coturn) -> ssl.SSLContext:
    """A TLS client that verifies coturn's certificate (the test's own), as browsers do."""
    return ssl.create_default_context(cafile=str(turn.workdir.parent / "tls" / "cert.pem"))


async def _echo_through(
    turn: Coturn,
    username: str,
    password: str,
    transport: str,
    peer_host: str,
    tls: ssl.SSLContext | None = None,
) -> tuple[bytes, tuple[str, int]]:
    """Allocate on the TURN server (on its TLS port with ``tls``), send one datagram through
    the relay to an echo peer on ``peer_host`` and return its answer."""
    loop = asyncio.get_running_loop()
    port = turn.tls_port if tls is not None else turn.port
    assert port is not None
    relay, receiver = await asyncio.wait_for(
        create_turn_endpoint(
            Receiver, (turn.listen, port), username, password, ssl=tls, transport=transport
        ),
        10,
    )
    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=(peer_host, 0))
    try:
        relay.sendto(b"hello", echo.get_extra_info("sockname"))
        deadline = loop.time() + ECHO_WAIT_S
        while receiver.received.empty():
            if receiver.errors:
                raise receiver.errors[0]  # the relay refused to send (its channel bind failed)
            if loop.time() > deadline:
                raise TimeoutError(f"no echo through the relay within {ECHO_WAIT_S} s")
            await asyncio.sleep(0.05)
        return receiver.received.get_nowait()
    finally:
        echo.close()
        relay.close()


async def test_node_credentials_relay_over_udp_tcp_and_tls(
    turn: Coturn, start_node: StartNode
) -> None:
    # coturn listens on the TURN port (UDP and TCP) and its TLS port alone: no DTLS, CLI or
    # RFC 5780 ports.
    assert turn.listeners() == sorted(
        [
            ("tcp", f"127.0.0.1:{turn.port}"),
            ("tcp", f"127.0.0.1:{turn.tls_port}"),
            ("udp", f"127.0.0.1:{turn.port}"),
        ]
    ), turn.log_tail()
    urls = [
        f"turn:127.0.0.1:{turn.port}?transport=udp",
        f"turn:127.0.0.1:{turn.port}?transport=tcp",
        f"turns:127.0.0.1:{turn.tls_port}?transport=tcp",
    ]
    node = await start_node(turn_urls=urls, turn_secret=SECRET, turn_ttl_s=600)
    client = HuddleClient(node.url, make_token("alice"))
    node.clients.append(client)
    await client.connect()
    await client.hello()
    call = CallClient(client, "turn")
    reply = await call.join()
    [server] = [s for s in reply.ice_servers if s.username is not None]
    assert server.urls == urls
    assert server.username is not None and server.credential is not None
    assert server.username.endswith(":alice")

    for transport, tls in (("udp", None), ("tcp", None), ("tcp", _trusting(turn))):
        data, addr = await _echo_through(
            turn, server.username, server.credential, transport, SFU, tls
        )
        assert data == b"echo hello", (transport, tls)
        assert addr[0] == SFU, (transport, tls, addr)
    await call.close()


async def test_wrong_or_expired_credentials_and_other_peers_are_refused(turn: Coturn) -> None:
    now = int(time.time())
    wrong = turn_credentials("not-the-node-secret", "alice", now, 600)
    expired = turn_credentials(SECRET, "alice", now - 120, 60)  # expired a minute ago
    for username, password in (wrong, expired):
        for transport, tls in (("udp", None), ("tcp", None), ("tcp", _trusting(turn))):
            with pytest.raises(stun.TransactionFailed) as failed:
                await _echo_through(turn, username, password, transport, SFU, tls)
            assert failed.value.response.attributes["ERROR-CODE"][0] == 401, (transport, tls)

    # Valid credentials, but a peer the relay must not reach (a private network behind it).
    valid = turn_credentials(SECRET, "alice", now, 600)
    with pytest.raises(stun.TransactionFailed) as failed:
        await _echo_through(turn, *valid, "udp", OTHER)
    assert failed.value.response.attributes["ERROR-CODE"][0] == 403, turn.log_tail()


async def test_python_clients_call_through_coturn_over_tcp_relay_only(
    turn: Coturn, start_node: StartNode
) -> None:
    """The Python client with ``relay_only`` and a TCP-only TURN URL: its media reaches the
    SFU through coturn alone, and the SFU (aioice) takes the relayed candidates."""
    node = await start_node(
        ice_addresses=[SFU],
        turn_urls=[f"turn:127.0.0.1:{turn.port}?transport=tcp"],
        turn_secret=SECRET,
    )
    calls = []
    for identity in ("alice", "bob"):
        client = HuddleClient(node.url, make_token(identity))
        node.clients.append(client)
        await client.connect()
        await client.hello()
        call = CallClient(client, "relayed", relay_only=True)
        await call.join()
        calls.append(call)
    alice, bob = calls
    await alice.publish(ColorTrack((30, 160, 90)))
    track, _ = await bob.next_track()
    for _ in range(5):
        frame = await asyncio.wait_for(track.recv(), 10)
    assert isinstance(frame, av.VideoFrame)
    assert close_colour(mean_rgb(frame), (30, 160, 90))
    # The clients offered relayed candidates only: the media went through coturn.
    for pc in (alice.publisher, bob.subscriber):
        assert pc is not None and pc.localDescription is not None
        lines = [x for x in pc.localDescription.sdp.splitlines() if x.startswith("a=candidate:")]
        assert lines and all(" typ relay " in x for x in lines), lines
    await alice.close()
    await bob.close()
