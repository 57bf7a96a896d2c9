"""The pub/sub broker (signaling.broker) against real redis-server processes: subscriptions
counted per channel, a Redis restarted on its port, a stream that stops making sense, AUTH
and SELECT. On one Redis the broker reads through a connection of its own
(signaling.pubsub_pipe); ``own_reader=False`` runs the same through redis-py, as before."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AuthenticationError

from huddle.redis_server import find_redis_server
from signaling import broker as broker_module
from signaling import pubsub_pipe
from signaling.broker import Broker
from signaling.redis_client import RedisClient, connect, plain_redis, run_script
from tests.helpers import eventually


class TcpRedis:
    """A redis-server on a loopback TCP port, which a test may kill and start again there."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.args = args
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                find_redis_server(),
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.directory)),
                *("--logfile", str(self.directory / "redis.log"), *self.args),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(500):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            assert self.proc.poll() is None, "redis-server exited"
            time.sleep(0.01)
        raise AssertionError("redis-server did not listen")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


@pytest.fixture
def tcp_redis(tmp_path: Path) -> Iterator[TcpRedis]:
    server = TcpRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def looker(tcp_redis: TcpRedis) -> AsyncIterator[redis.Redis]:
    """A second client, to ask the Redis what is subscribed and to publish."""
    client = redis.Redis.from_url(tcp_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


async def shard_subscribers(client: RedisClient, *channels: str) -> list[int]:
    if isinstance(client, RedisCluster):
        counts: list[int] = []
        for channel in channels:
            node = client.get_node_from_key(channel)
            reply = await client.pubsub_shardnumsub(channel, target_nodes=node)
            counts.extend(int(n) for _, n in reply)
        return counts
    return [int(n) for _, n in await client.pubsub_shardnumsub(*channels)]


async def until_counted(client: RedisClient, channel: str, expected: int) -> None:
    """Wait until Redis counts ``expected`` subscribers of ``channel``."""
    async with asyncio.timeout(5):
        # Redis tells no one when a count changes: ask it again.
        while await shard_subscribers(client, channel) != [expected]:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


class Inbox:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    def handler(self, name: str) -> Callable[[bytes], None]:
        def handle(data: bytes) -> None:
            self.got.append((name, data))

        return handle


@pytest.mark.redis_cluster
async def test_subscriptions_are_counted_per_channel(redis_client: RedisClient) -> None:
    """Redis has one subscription per channel however many handlers it has, none once the
    last is gone, and none of the broker's once it stopped."""
    broker = Broker(redis_client, "counting")
    await broker.start()
    chan = "huddle:{conv:counted}:chan"
    got: list[bytes] = []
    first, second = got.append, lambda data: got.append(b"2:" + data)
    try:
        assert await shard_subscribers(redis_client, chan, broker.node_channel) == [0, 1]
        await broker.subscribe(chan, first)
        await broker.subscribe(chan, second)
        await eventually(lambda: broker.channel_count == 1)
        # Subscribed once Redis confirmed it (one Redis); the cluster client only wrote it.
        await until_counted(redis_client, chan, 1)
        await redis_client.spublish(chan, b"m1")
        await eventually(lambda: sorted(got) == [b"2:m1", b"m1"])
        await broker.unsubscribe(chan, first)
        await asyncio.sleep(0.05)
        assert await shard_subscribers(redis_client, chan) == [1]
        await broker.unsubscribe(chan, second)
        await until_counted(redis_client, chan, 0)
        await broker.unsubscribe(chan, second)  # not subscribed: nothing happens
        await broker.subscribe(chan, first)
        await until_counted(redis_client, chan, 1)
        await redis_client.spublish(chan, b"m2")
        await eventually(lambda: got[-1:] == [b"m2"])
    finally:
        await broker.stop()
    await until_counted(redis_client, chan, 0)
    await until_counted(redis_client, broker.node_channel, 0)
    assert len(got) == 3


@pytest.mark.parametrize(
    "own_reader",
    [True, False],
    ids=["own", "redis-py"],
)
async def test_a_redis_restarted_on_its_port_gets_every_subscription_back(
    tcp_redis: TcpRedis, looker: redis.Redis, own_reader: bool
) -> None:
    """Redis killed and started again on the same port: the broker subscribes every channel
    still wanted (one subscribed while Redis was away too, not one given up meanwhile), says
    so once, and later messages reach the handlers."""
    client = connect(tcp_redis.url)
    broker = Broker(client, "restarted", own_reader=own_reader)
    inbox = Inbox()
    reconnected: list[list[int]] = []
    kept, dropped, added = (f"huddle:{{conv:{n}}}:chan" for n in ("kept", "dropped", "added"))
    await broker.start()
    try:
        await broker.subscribe(kept, inbox.handler("kept"))
        await broker.subscribe(dropped, inbox.handler("dropped"))
        await eventually(lambda: broker.channel_count == 2)
        assert broker.connected and broker.reconnects == 0
        await looker.spublish(kept, b"before")
        await eventually(lambda: inbox.got == [("kept", b"before")])

        tcp_redis.kill()
        await eventually(lambda: not broker.connected)
        handler = inbox.handler("added")
        await broker.subscribe(added, handler)
        await broker.unsubscribe(dropped, broker._handlers[dropped][0])
        broker.on_reconnect.append(lambda: reconnected.append([broker.reconnects]))
        tcp_redis.start()
        await looker.aclose()  # its connection was to the Redis killed
        await eventually(lambda: broker.connected, timeout=10)
        await eventually(lambda: reconnected == [[1]])
        counts = await shard_subscribers(looker, kept, dropped, added, broker.node_channel)
        assert counts == [1, 0, 1, 1]
        for channel in (kept, dropped, added):
            await looker.spublish(channel, b"after")
        await eventually(lambda: len(inbox.got) == 3)
        assert inbox.got[1:] == [("kept", b"after"), ("added", b"after")]
        assert reconnected == [[1]] and broker.reconnects == 1
    finally:
        await broker.stop()
        await client.aclose()


class Relay:
    """A TCP relay between the broker and a real Redis, which can slip bytes of its own into
    what Redis sends back on the connections open now, or cut them off without a word (what
    either side sends is dropped, nothing is closed: a host gone, a network cut)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.to_clients: list[asyncio.StreamWriter] = []
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.cut_off: set[int] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        number = len(self.to_clients)
        self.to_clients.append(writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if number not in self.cut_off:
                        dst.write(data)
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        """Forward nothing more on the connections open now, and close none of them."""
        self.cut_off.update(range(len(self.to_clients)))

    def inject(self, data: bytes) -> None:
        for writer in self.to_clients:
            if not writer.is_closing():
                writer.write(data)

    async def close(self) -> None:
        for writer in self.to_clients:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Relayed:
    """A broker whose Redis is behind a ``Relay``, subscribed to one channel, whose
    reconnects are noted."""

    def __init__(self, relay: Relay, broker: Broker, chan: str) -> None:
        self.relay, self.broker, self.chan = relay, broker, chan
        self.inbox = Inbox()
        self.reconnected: list[int] = []
        broker.on_reconnect.append(lambda: self.reconnected.append(broker.reconnects))

    async def made_anew(self, looker: redis.Redis, timeout: float) -> None:
        """Wait for one reconnect; then the node has its channels back, and a message
        published after reaches it."""
        await eventually(lambda: self.reconnected == [1], timeout=timeout)
        assert self.broker.connected
        assert self.relay.accepted == 2
        assert await shard_subscribers(looker, self.chan, self.broker.node_channel) == [1, 1]
        await looker.spublish(self.chan, b"two")
        await eventually(lambda: self.inbox.got == [("x", b"one"), ("x", b"two")])


@contextlib.asynccontextmanager
async def relayed(
    tcp_redis: TcpRedis, looker: redis.Redis, name: str, *, own_reader: bool = True
) -> AsyncIterator[Relayed]:
    """A started broker behind a relay, which has had one message of its channel."""
    relay = Relay(tcp_redis.port)
    port = await relay.start()
    client = connect(f"redis://127.0.0.1:{port}")
    broker = Broker(client, name, own_reader=own_reader)
    it = Relayed(relay, broker, f"huddle:{{conv:{name}}}:chan")
    await broker.start()
    try:
        await broker.subscribe(it.chan, it.inbox.handler("x"))
        await looker.spublish(it.chan, b"one")
        await eventually(lambda: it.inbox.got == [("x", b"one")])
        assert relay.accepted == 1  # the pub/sub connection (scripts take one when called)
        yield it
    finally:
        await broker.stop()
        await client.aclose()
        await relay.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"?not resp at all\r\n",
        b"+OK\r\n",  # a reply nobody asked for
        b"*3\r\n$10\r\nssubscribe\r\n$5\r\nother\r\n:2\r\n",  # a subscription never asked
        b"*3\r\n$12\r\nsunsubscribe\r\n$20\r\nhuddle:{conv:g}:chan\r\n:0\r\n",  # one dropped
        b"*3\r\n$8\r\nsmessage\r\n$5\r\n\xff\xfe\xfd\xfc\xfb\r\n$1\r\nx\r\n",  # no UTF-8 name
    ],
    ids=["garbage", "unasked-reply", "unasked-subscribe", "unasked-drop", "bad-channel"],
)
async def test_a_stream_that_makes_no_sense_is_dropped_and_made_anew(
    tcp_redis: TcpRedis, looker: redis.Redis, garbage: bytes
) -> None:
    async with relayed(tcp_redis, looker, "g") as it:
        it.relay.inject(garbage)
        await it.made_anew(looker, timeout=10)
    await until_counted(looker, it.chan, 0)


@pytest.mark.parametrize("own_reader", [True, False], ids=["own", "redis-py"])
async def test_a_connection_cut_off_without_a_word_is_found_out_and_made_anew(
    tcp_redis: TcpRedis, looker: redis.Redis, monkeypatch: pytest.MonkeyPatch, own_reader: bool
) -> None:
    """A subscribed connection hears nothing when Redis is cut off without a FIN or an RST
    (its host gone, a network cut): the broker asks an idle connection a PING (the pipe, or
    redis-py's reader as on TLS), a healthy one answers and stays, and one that does not is
    dropped and made anew, every channel subscribed again. Without the PING the node would
    wait for ever for messages that no longer come, saying it is connected."""
    monkeypatch.setattr(pubsub_pipe, "IDLE_PING_S", 0.2)
    monkeypatch.setattr(pubsub_pipe, "REPLY_TIMEOUT_S", 0.5)
    # redis-py's reader looks at its connection each time a read times out.
    monkeypatch.setattr(broker_module, "READ_TIMEOUT_S", 0.1)
    async with relayed(tcp_redis, looker, "c", own_reader=own_reader) as it:
        # Idle and healthy: asked, it answers, and it stays.
        await asyncio.sleep(1.0)
        assert it.reconnected == [] and it.relay.accepted == 1
        commands = [entry["cmd"] for entry in await looker.client_list()]
        assert "ping" in commands, commands
        it.relay.cut()
        assert it.broker.connected
        await it.made_anew(looker, timeout=5)


async def test_a_redis_with_a_password_and_a_database(tmp_path: Path) -> None:
    """AUTH (user and password) and SELECT before the subscriptions; a wrong password stops
    the start with redis-py's error, as with redis-py's reader."""
    server = TcpRedis(tmp_path / "redis", "--requirepass", "s3cret")
    server.start()
    looker = redis.Redis(port=server.port, password="s3cret")
    try:
        for url in (
            f"redis://:s3cret@127.0.0.1:{server.port}/2",
            f"redis://default:s3cret@127.0.0.1:{server.port}/3",
        ):
            client = connect(url)
            assert plain_redis(client) is not None
            broker = Broker(client, "authed")
            got: list[bytes] = []
            await broker.start()
            try:
                await broker.subscribe("huddle:{conv:a}:chan", got.append)
                await looker.spublish("huddle:{conv:a}:chan", b"hi")
                await eventually(lambda: got == [b"hi"])  # noqa: B023 (awaited here)
                # The one pub/sub connection (the last broker's may still be closing).
                async with asyncio.timeout(5):
                    while len(clients := await looker.client_list(_type="pubsub")) != 1:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                assert int(clients[0]["db"]) == int(url[-1])
            finally:
                await broker.stop()
                await client.aclose()
        client = connect(f"redis://:wrong@127.0.0.1:{server.port}")
        broker = Broker(client, "refused")
        with pytest.raises(AuthenticationError):
            await broker.start()
        await broker.stop()
        await client.aclose()
    finally:
        await looker.aclose()
        server.kill()


def test_only_plain_connections_get_a_reader_of_their_own() -> None:
    assert plain_redis(connect("redis://127.0.0.1:1/4")) is not None
    assert plain_redis(connect("unix:///tmp/nowhere.sock?db=1")) is not None
    assert plain_redis(connect("rediss://127.0.0.1:1")) is None  # TLS: redis-py's reader
    assert plain_redis(connect("redis+cluster://127.0.0.1:1")) is None


async def test_the_node_s_pubsub_connection_is_its_own(redis_client: RedisClient) -> None:
    """On one Redis the pub/sub connection is the pipe's (it names no client library, as
    redis-py's connections do)."""
    if isinstance(redis_client, RedisCluster):
        pytest.skip("one Redis only")
    broker = Broker(redis_client, "own")
    await broker.start()
    try:
        clients = await redis_client.client_list(_type="pubsub")
        assert len(clients) == 1
        assert clients[0].get("lib-name", "") == ""
    finally:
        await broker.stop()


async def test_a_burst_of_messages_of_every_size_arrives_whole_and_in_order(
    redis_client: RedisClient,
) -> None:
    """Messages split across reads and many in one read, from a few bytes to 200 KB."""
    broker = Broker(redis_client, "burst")
    got: list[bytes] = []
    chan = "huddle:{conv:burst}:chan"
    sizes = [1, 7, 300, 4_000, 65_537, 200_000] * 20 + [50] * 2_000
    sent = [bytes([65 + n % 26]) * size + str(n).encode() for n, size in enumerate(sizes)]
    await broker.start()
    try:
        await broker.subscribe(chan, got.append)
        async with redis_client.pipeline(transaction=False) as pipe:
            for payload in sent:
                pipe.spublish(chan, payload)
            await pipe.execute()
        await eventually(lambda: len(got) >= len(sent), timeout=20)
        assert got == sent
    finally:
        await broker.stop()


@pytest.mark.redis_cluster
async def test_a_handler_that_fails_leaves_the_others_and_the_connection(
    redis_client: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(redis_client, "failing")
    got: list[bytes] = []
    chan = "huddle:{conv:failing}:chan"

    def broken(data: bytes) -> None:
        raise ValueError(f"cannot take {data!r}")

    await broker.start()
    try:
        await broker.subscribe(chan, broken)
        await broker.subscribe(chan, got.append)
        await until_counted(redis_client, chan, 1)
        for payload in (b"one", b"two"):
            await redis_client.spublish(chan, payload)
        await eventually(lambda: got == [b"one", b"two"])
        assert broker.connected and broker.reconnects == 0
        failures = [r for r in caplog.records if r.getMessage() == "pub/sub handler failed"]
        assert len(failures) == 2
    finally:
        await broker.stop()


async def test_script_calls_and_messages_share_one_connection_of_the_node(
    redis_client: RedisClient,
) -> None:
    """Once the broker started on one Redis, the client's script calls go through its pub/sub
    connection (RESP3): the node holds one connection of its own, and a burst of calls, each
    publishing on one of a few channels, with subscriptions made and given up in its midst,
    gets every reply right and every message, in order on each channel."""
    if isinstance(redis_client, RedisCluster):
        pytest.skip("one Redis only")
    broker = Broker(redis_client, "shared")
    script = redis_client.register_script(
        "redis.call('SPUBLISH', KEYS[1], ARGV[1]) return 'sent ' .. ARGV[1]"
    )
    chans = [f"huddle:{{conv:s{n}}}:chan" for n in range(4)]
    got: dict[str, list[bytes]] = {chan: [] for chan in chans}
    await broker.start()
    try:
        for chan in chans:
            await broker.subscribe(chan, got[chan].append)

        async def churn() -> None:
            for n in range(50):
                spare = f"huddle:{{conv:spare{n}}}:chan"
                await broker.subscribe(spare, lambda _: None)
                await broker.unsubscribe(spare, lambda _: None)

        sent = [(chans[n % 4], str(n)) for n in range(2_000)]
        replies, _ = await asyncio.gather(
            asyncio.gather(*(run_script(redis_client, script, [c], [p]) for c, p in sent)),
            churn(),
        )
        assert replies == [f"sent {p}".encode() for _, p in sent]
        for chan in chans:
            await eventually(lambda: len(got[chan]) >= 500)  # noqa: B023 (awaited here)
            assert got[chan] == [p.encode() for c, p in sent if c == chan]
        # Two connections in all: the one asking (redis-py's pool made one, every call of
        # this test on it being made in turn) and the node's own, in RESP3, subscribed.
        clients = await redis_client.client_list()
        others = [c for c in clients if c["cmd"] != "client|list"]
        assert len(clients) == 2
        assert [(c["resp"], int(c["flags"].count("P"))) for c in others] == [("3", 1)]
        assert await shard_subscribers(redis_client, *chans) == [1, 1, 1, 1]
        # Lua's booleans and nil reply as on RESP2 (scripts do not call redis.setresp).
        lua = redis_client.register_script("return {true, false, redis.call('GET', KEYS[1])}")
        assert await run_script(redis_client, lua, ["huddle:{conv:s0}:none"], []) == [1, None, None]
    finally:
        await broker.stop()
    # Stopped, the broker gives the calls back to the client's own script connection.
    assert await run_script(redis_client, script, [chans[0]], ["after"]) == b"sent after"


async def test_calls_waiting_when_the_shared_connection_is_killed_are_made_again(
    redis_client: RedisClient,
) -> None:
    """Killing the shared connection under a burst of calls fails them with redis-py's
    ConnectionError inside ``run_script``, which makes each again: every caller gets its
    reply, and the broker comes back with its channels."""
    if isinstance(redis_client, RedisCluster):
        pytest.skip("one Redis only")
    broker = Broker(redis_client, "killed")
    reconnected: list[int] = []
    broker.on_reconnect.append(lambda: reconnected.append(broker.reconnects))
    script = redis_client.register_script("return redis.call('INCR', KEYS[1])")
    key = "huddle:{conv:k}:n"
    await broker.start()
    try:
        own = await redis_client.client_list(_type="pubsub")
        assert len(own) == 1

        async def kill() -> None:
            await asyncio.sleep(0.005)
            await redis_client.client_kill_filter(_id=own[0]["id"])

        replies, _ = await asyncio.gather(
            asyncio.gather(*(run_script(redis_client, script, [key], []) for _ in range(3_000))),
            kill(),
        )
        # Every caller got a reply of its own (a call whose reply was lost with the
        # connection may have run before it was made again, as with the script pipe).
        assert len(set(replies)) == 3_000
        assert int(await redis_client.get(key) or 0) >= max(replies)
        await eventually(lambda: reconnected == [1], timeout=10)
        assert broker.connected
        chan = "huddle:{conv:k}:chan"
        got: list[bytes] = []
        await broker.subscribe(chan, got.append)
        await redis_client.spublish(chan, b"back")
        await eventually(lambda: got == [b"back"])
    finally:
        await broker.stop()
