"""Bad input over the signaling socket: every bad frame gets a clear error with a code, the
offending connection stays usable where the protocol says so, and nobody else notices.

This file hand-rolls frames on purpose (the shared client only sends well-formed ones).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import jwt
import msgspec
import pytest

from chat import wire as w
from huddle.client import HuddleClient
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import TEST_KEY, TEST_SECRET, Node, make_token, node_samples

E = p.ErrorCode
WATCHED: Final = "carol"
# No error message should echo a whole frame back: a few hundred characters say enough.
MAX_ERROR_MESSAGE: Final = 400
CLOSED_TYPES: Final = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


def j(**fields: Any) -> str:
    """A JSON frame, non-ASCII characters kept as UTF-8 (not escaped)."""
    return json.dumps(fields, ensure_ascii=False)


class Raw:
    """A socket driven frame by frame."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, node: Node, http: aiohttp.ClientSession) -> Raw:
        return cls(await node.raw_ws(http))

    async def send(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def reply(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next reply (``ok`` or ``error``), skipping events; fails if the socket closes."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                assert msg.type is aiohttp.WSMsgType.TEXT, (
                    f"expected a reply, got {msg.type!r} (close code {self.ws.close_code})"
                )
                frame: dict[str, Any] = json.loads(msg.data)
                if frame["type"] in ("ok", "error"):
                    return frame
                assert frame["type"] in p.SERVER_EVENTS, frame

    async def error(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next reply, which must be a well-formed protocol error."""
        frame = await self.reply(timeout)
        assert frame["type"] == "error", frame
        error = msgspec.convert(frame, p.Error)
        assert error.code in p.ERROR_CODES
        assert 0 < len(error.message) <= MAX_ERROR_MESSAGE, error.message
        return frame

    async def hello(self, identity: str = "mallory", rid: str = "hello-1") -> None:
        await self.send(p.encode(p.Hello(id=rid, token=make_token(identity))).decode())
        reply = await self.reply()
        assert reply["type"] == "ok" and reply["re"] == rid, reply
        assert reply["identity"] == identity

    async def ping(self, rid: str = "ping-1") -> None:
        await self.send(j(id=rid, type="ping"))
        reply = await self.reply()
        assert reply["type"] == "ok" and reply["re"] == rid, reply
        assert reply["server_time_ms"] > 0

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes (text frames on the way are allowed); the close code."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type in CLOSED_TYPES:
                    return self.ws.close_code
                assert msg.type is aiohttp.WSMsgType.TEXT, msg


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def metric(http: aiohttp.ClientSession, node: Node, sample: str, **labels: str) -> float:
    """The value of one sample of the node's /metrics (0 when absent)."""
    return sum(s.value for s in await node_samples(node.url, sample, http, **labels))


async def errors_counted(http: aiohttp.ClientSession, node: Node, code: str) -> float:
    return await metric(http, node, "huddle_ws_errors_total", code=code)


def assert_no_crash(caplog: pytest.LogCaptureFixture) -> None:
    """No handler failed on the way (a crash would log at ERROR, whatever the client saw)."""
    crashes = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert crashes == []


async def watcher(node: Node) -> HuddleClient:
    """A bystander on the same node, watching WATCHED (offline for now)."""
    bystander = await node.client("bob", device="bystander")
    reply = await bystander.request(p.PresenceSubscribe(id="", users=[WATCHED]))
    assert [u.status for u in reply.presence] == ["offline"]
    return bystander


async def assert_unaffected(
    node: Node, http: aiohttp.ClientSession, bystander: HuddleClient, device: str = "tablet"
) -> None:
    """The bystander still gets replies and presence events, and the node is healthy."""
    pong = await bystander.request(p.Ping(id=""))
    assert pong.server_time_ms > 0
    await node.client(WATCHED, device=device)
    event = await bystander.next_event("presence.update", timeout=5)
    assert event.presence.user == WATCHED
    assert event.presence.status == "online"
    assert device in [d.device for d in event.presence.devices]
    assert not bystander.closed.is_set()
    assert bystander.unmatched_errors == []
    async with http.get(f"{node.url}/healthz") as resp:
        assert resp.status == 200


# --- frames answered with an error, the connection kept --------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    frame: str | bytes
    code: str
    re: str | None = None
    # A piece of text the error message must contain (checks what is echoed survives).
    says: str | None = None


LONG_ID: Final = "x" * 65
DEEP: Final = 20_000  # far deeper than any decoder recursion limit, well under max_frame_bytes

CASES: Final = [
    # malformed JSON
    Case("truncated_object", '{"id": "j1", "type": "ping"', E.BAD_JSON),
    Case("not_json_at_all", "hello there", E.BAD_JSON),
    Case("single_quotes", "{'id': 'j3', 'type': 'ping'}", E.BAD_JSON),
    Case("trailing_garbage", '{"id": "j4", "type": "ping"} x', E.BAD_JSON),
    Case("empty_frame", "", E.BAD_JSON),
    Case("whitespace_frame", " \n\t ", E.BAD_JSON),
    # valid JSON that is not an object
    Case("array", '[{"id": "a1", "type": "ping"}]', E.BAD_MESSAGE),
    Case("number", "42", E.BAD_MESSAGE),
    Case("string", '"ping"', E.BAD_MESSAGE),
    Case("null", "null", E.BAD_MESSAGE),
    Case("bool", "true", E.BAD_MESSAGE),
    # missing or non-string type (the id is still echoed when usable)
    Case("no_type", j(id="t1"), E.BAD_MESSAGE, re="t1"),
    Case("type_number", j(id="t2", type=5), E.BAD_MESSAGE, re="t2"),
    Case("type_null", j(id="t3", type=None), E.BAD_MESSAGE, re="t3"),
    Case("type_list", j(id="t4", type=["ping"]), E.BAD_MESSAGE, re="t4"),
    Case("empty_object", "{}", E.BAD_MESSAGE),
    # unknown type
    Case("unknown_type", j(id="u1", type="chat.nope"), E.UNKNOWN_TYPE, re="u1", says="chat.nope"),
    Case("unknown_type_no_id", j(type="chat.nope"), E.UNKNOWN_TYPE),
    Case("unknown_type_number_id", j(id=7, type="chat.nope"), E.UNKNOWN_TYPE),
    Case("unknown_type_empty_id", j(id="", type="chat.nope"), E.UNKNOWN_TYPE),
    Case("unknown_type_long_id", j(id=LONG_ID, type="chat.nope"), E.UNKNOWN_TYPE),
    Case("unknown_type_case", j(id="u6", type="PING"), E.UNKNOWN_TYPE, re="u6"),
    Case("unknown_type_huge", j(id="u7", type="z" * 20_000), E.UNKNOWN_TYPE, re="u7"),
    Case("reply_type_from_client", j(id="u8", type="ok", re="x"), E.UNKNOWN_TYPE, re="u8"),
    # wrong field types and values
    Case(
        "subscribe_users_number",
        j(id="w1", type="presence.subscribe", users=5),
        E.INVALID_FIELD,
        re="w1",
        says="users",
    ),
    Case(
        "subscribe_users_string",
        j(id="w2", type="presence.subscribe", users=WATCHED),
        E.INVALID_FIELD,
        re="w2",
    ),
    Case(
        "subscribe_user_with_space",
        j(id="w3", type="presence.subscribe", users=["car ol"]),
        E.INVALID_FIELD,
        re="w3",
    ),
    Case(
        "subscribe_no_users",
        j(id="w4", type="presence.subscribe", users=[]),
        E.INVALID_FIELD,
        re="w4",
    ),
    Case(
        "subscribe_too_many_users",
        j(id="w5", type="presence.subscribe", users=[f"u{i}" for i in range(501)]),
        E.INVALID_FIELD,
        re="w5",
    ),
    Case(
        "subscribe_missing_users", j(id="w6", type="presence.subscribe"), E.INVALID_FIELD, re="w6"
    ),
    Case(
        "hello_protocol_string",
        j(id="w7", type="hello", token="t", protocol="1"),
        E.INVALID_FIELD,
        re="w7",
        says="protocol",
    ),
    Case(
        "hello_protocol_float",
        j(id="w8", type="hello", token="t", protocol=1.5),
        E.INVALID_FIELD,
        re="w8",
    ),
    Case("hello_token_number", j(id="w9", type="hello", token=5), E.INVALID_FIELD, re="w9"),
    Case(
        "hello_bad_device",
        j(id="w10", type="hello", token="t", device="my phone!"),
        E.INVALID_FIELD,
        re="w10",
    ),
    Case(
        "hello_bad_status",
        j(id="w11", type="hello", token="t", status="busy"),
        E.INVALID_FIELD,
        re="w11",
    ),
    Case(
        "presence_set_bad_status",
        j(id="w12", type="presence.set", status="busy"),
        E.INVALID_FIELD,
        re="w12",
    ),
    Case(
        "refresh_empty_token", j(id="w13", type="auth.refresh", token=""), E.INVALID_FIELD, re="w13"
    ),
    # ids that are not usable: the error cannot name its request
    Case("ping_long_id", j(id=LONG_ID, type="ping"), E.INVALID_FIELD),
    Case("ping_huge_id", j(id="x" * 30_000, type="ping"), E.INVALID_FIELD),
    Case("ping_empty_id", j(id="", type="ping"), E.INVALID_FIELD),
    Case("ping_number_id", j(id=1, type="ping"), E.INVALID_FIELD),
    Case("ping_no_id", j(type="ping"), E.INVALID_FIELD),
    # huge numbers
    Case("float_out_of_range", '{"id": "n1", "type": "ping", "x": 1e400}', E.BAD_JSON),
    Case("negative_float_out_of_range", '{"id": "n2", "type": "ping", "x": -1e400}', E.BAD_JSON),
    Case(
        "integer_5000_digits", '{"id": "n3", "type": "ping", "x": ' + "9" * 5000 + "}", E.BAD_JSON
    ),
    Case("integer_id", '{"id": 123456789012345678901234567890, "type": "ping"}', E.INVALID_FIELD),
    Case(
        "status_huge_float", j(id="n5", type="presence.set", status=1e308), E.INVALID_FIELD, re="n5"
    ),
    Case("nan_literal", '{"id": "n6", "type": "ping", "x": NaN}', E.BAD_JSON),
    # deeply nested JSON
    Case("deep_array", "[" * DEEP + "]" * DEEP, E.BAD_JSON),
    Case("deep_object", '{"a":' * (DEEP // 2) + "1" + "}" * (DEEP // 2), E.BAD_JSON),
    Case(
        "deep_in_ignored_field",
        '{"id": "d3", "type": "ping", "x": ' + "[" * DEEP + "]" * DEEP + "}",
        E.BAD_JSON,
    ),
    Case("unterminated_deep", "[" * (3 * DEEP), E.BAD_JSON),
    # unicode and surrogates
    Case(
        "unicode_unknown_type",
        j(id="ü-1", type="nöpe.😀"),
        E.UNKNOWN_TYPE,
        re="ü-1",
        says="nöpe.😀",
    ),
    Case(
        "unicode_user",
        j(id="s2", type="presence.subscribe", users=["ålice"]),
        E.INVALID_FIELD,
        re="s2",
    ),
    Case(
        "nul_in_user",
        j(id="s3", type="presence.subscribe", users=["a\u0000b"]),
        E.INVALID_FIELD,
        re="s3",
    ),
    Case("lone_high_surrogate_id", '{"id": "\\ud800", "type": "ping"}', E.BAD_JSON),
    Case("lone_low_surrogate_field", '{"id": "s5", "type": "ping", "x": "\\udc00"}', E.BAD_JSON),
    Case("reversed_surrogate_pair", '{"id": "\\ude00\\ud83d", "type": "ping"}', E.BAD_JSON),
    Case("bad_escape", '{"id": "s7", "type": "p\\xing"}', E.BAD_JSON),
    Case("bom_prefix", "\ufeff" + j(id="s8", type="ping"), E.BAD_JSON),
    # binary frames
    Case("binary_garbage", b"\x00\xff\xfe", E.BINARY_NOT_SUPPORTED),
    Case("binary_json", j(id="b2", type="ping").encode(), E.BINARY_NOT_SUPPORTED),
    Case("binary_empty", b"", E.BINARY_NOT_SUPPORTED),
]


@pytest.mark.parametrize("authenticated", [False, True], ids=["before_hello", "after_hello"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_frame_gets_error_and_harms_nobody(
    node: Node,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    case: Case,
    authenticated: bool,
) -> None:
    bystander = await watcher(node)
    conn = await Raw.open(node, http)
    if authenticated:
        await conn.hello()

    await conn.send(case.frame)
    error = await conn.error()
    assert (error["code"], error["re"]) == (case.code, case.re), error
    if case.says is not None:
        assert case.says in error["message"]

    # The offending connection goes on as if nothing happened.
    if authenticated:
        await conn.ping()
    else:
        await conn.send(j(id="early", type="ping"))
        assert (await conn.error())["code"] == E.NOT_AUTHENTICATED
        await conn.hello()
        await conn.ping()
    assert await errors_counted(http, node, case.code) == 1
    await assert_unaffected(node, http, bystander)
    assert_no_crash(caplog)


async def test_errors_keep_request_order_and_count(node: Node, http: aiohttp.ClientSession) -> None:
    """Bad frames between good ones: one answer each, in order, each counted."""
    conn = await Raw.open(node, http)
    await conn.hello()
    frames = [c.frame for c in CASES] + [j(id=f"ok-{i}", type="ping") for i in range(3)]
    for frame in frames:
        await conn.send(frame)
    answers = [await conn.reply() for _ in frames]
    expected = [(c.code, c.re) for c in CASES] + [("ok", f"ok-{i}") for i in range(3)]
    assert [(a.get("code", a["type"]), a["re"]) for a in answers] == expected
    for code in {c.code for c in CASES}:
        assert await errors_counted(http, node, code) == sum(c.code == code for c in CASES)
    # Every text case fails to parse (binary frames are not parsed at all).
    bad_text = sum(isinstance(c.frame, str) for c in CASES)
    assert await metric(http, node, "huddle_ws_messages_in_total", type="invalid") == bad_text


# --- odd frames that are nonetheless valid --------------------------------------------

ODD_BUT_VALID: Final = [
    ("emoji_id", j(id="😀-1", type="ping"), "😀-1"),
    ("escaped_surrogate_pair_id", '{"id": "\\ud83d\\ude00", "type": "ping"}', "😀"),
    ("nul_id", '{"id": "\\u0000", "type": "ping"}', "\x00"),
    ("id_of_64", j(id="i" * 64, type="ping"), "i" * 64),
    ("id_of_64_non_ascii", j(id="é" * 64, type="ping"), "é" * 64),
    ("unknown_fields_ignored", j(id="f1", type="ping", extra={"a": [1, 2]}, more=None), "f1"),
    ("big_but_decodable_int", '{"id": "f2", "type": "ping", "x": ' + "9" * 300 + "}", "f2"),
    ("tiny_float", '{"id": "f3", "type": "ping", "x": 1e-400}', "f3"),
    ("moderate_nesting", '{"id": "f4", "type": "ping", "x": ' + "[" * 50 + "]" * 50 + "}", "f4"),
    ("duplicate_keys_last_wins", '{"id": "f5", "type": "nope", "type": "ping"}', "f5"),
    ("whitespace_around", "\n  " + j(id="f6", type="ping") + "  \n", "f6"),
]


@pytest.mark.parametrize(
    ("frame", "rid"), [c[1:] for c in ODD_BUT_VALID], ids=[c[0] for c in ODD_BUT_VALID]
)
async def test_odd_but_valid_frames_are_served(
    node: Node, http: aiohttp.ClientSession, frame: str, rid: str
) -> None:
    conn = await Raw.open(node, http)
    await conn.hello()
    await conn.send(frame)
    reply = await conn.reply()
    assert reply["type"] == "ok" and reply["re"] == rid, reply
    assert reply["server_time_ms"] > 0
    assert await metric(http, node, "huddle_ws_errors_total") == 0


# --- frames after which the connection is legitimately closed -------------------------


@pytest.mark.parametrize("authenticated", [False, True], ids=["before_hello", "after_hello"])
async def test_oversize_frame_closes_with_1009(
    node: Node, http: aiohttp.ClientSession, authenticated: bool
) -> None:
    limit = node.settings.max_frame_bytes
    bystander = await watcher(node)
    conn = await Raw.open(node, http)
    if authenticated:
        await conn.hello()
    # Just under the limit is served like any frame.
    under = j(id="big-ok", type="ping", pad="")
    await conn.send(under[:-2] + "x" * (limit - 1 - len(under.encode())) + '"}')
    if authenticated:
        assert (await conn.reply())["re"] == "big-ok"
    else:
        assert (await conn.error())["code"] == E.NOT_AUTHENTICATED
    # Over it, the frame is refused unread and the connection closed.
    over = j(id="big", type="ping", pad="x" * limit)
    assert len(over.encode()) > limit
    await conn.send(over)
    assert await conn.close_code() == p.CloseCode.MESSAGE_TOO_BIG
    await assert_unaffected(node, http, bystander)
    # The same client may come back.
    again = await Raw.open(node, http)
    await again.hello()
    await again.ping()


async def test_oversize_close_is_counted(node: Node, http: aiohttp.ClientSession) -> None:
    conn = await Raw.open(node, http)
    await conn.send("x" * (node.settings.max_frame_bytes + 1))
    assert await conn.close_code() == p.CloseCode.MESSAGE_TOO_BIG
    for _ in range(50):  # the server counts it when its handler ends, just after the close
        if await metric(http, node, "huddle_ws_closes_total", code="1009") > 0:
            break
        await asyncio.sleep(0.02)
    assert await metric(http, node, "huddle_ws_closes_total", code="1009") == 1


async def test_invalid_utf8_text_frame_closes_with_1007(
    node: Node, http: aiohttp.ClientSession
) -> None:
    """A text frame must be UTF-8 (RFC 6455); lone surrogates cannot even be encoded."""
    bystander = await watcher(node)
    conn = await Raw.open(node, http)
    await conn.hello()
    await conn.ws.send_frame(b'{"id": "x", "type": "\xed\xa0\x80"}', aiohttp.WSMsgType.TEXT)
    assert await conn.close_code() == p.CloseCode.INVALID_TEXT
    await assert_unaffected(node, http, bystander)


async def test_hello_with_huge_protocol_number_is_refused_and_closed(
    node: Node, http: aiohttp.ClientSession
) -> None:
    bystander = await watcher(node)
    conn = await Raw.open(node, http)
    await conn.send(
        '{"id": "h", "type": "hello", "protocol": '
        + "9" * 100
        + f', "token": "{make_token("x")}"}}'
    )
    error = await conn.error()
    assert (error["code"], error["re"]) == (E.UNSUPPORTED_PROTOCOL, "h")
    assert await conn.close_code() == p.CloseCode.UNSUPPORTED_PROTOCOL
    assert await errors_counted(http, node, E.UNSUPPORTED_PROTOCOL) == 1
    await assert_unaffected(node, http, bystander)


# --- tokens signed with the right secret but malformed claims ------------------------


def signed(alg: str = "HS256", **claims: Any) -> str:
    payload = {"iss": TEST_KEY, "sub": "mallory", "exp": int(time.time()) + 3600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, TEST_SECRET if alg != "none" else "", algorithm=alg)


MALFORMED_TOKENS: Final = [
    pytest.param(signed(sub=5), id="subject_number"),
    pytest.param(signed(sub="mal lory"), id="subject_with_space"),
    pytest.param(signed(exp="soon"), id="expiry_string"),
    pytest.param(signed(exp=None), id="no_expiry"),
    pytest.param(signed(grants="all"), id="grants_string"),
    pytest.param(signed(grants={"rooms": 5}), id="grants_rooms_number"),
    pytest.param(signed("none"), id="unsigned"),
    pytest.param(signed(iat="yesterday"), id="issued_at_string"),
    pytest.param(signed(iat=[1]), id="issued_at_list"),
]


@pytest.mark.parametrize("token", MALFORMED_TOKENS)
async def test_signed_token_with_malformed_claims_is_refused(
    node: Node, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    # At hello: refused with a code, and closed as every failed hello is.
    conn = await Raw.open(node, http)
    await conn.send(p.encode(p.Hello(id="h", token=token)).decode())
    error = await conn.error()
    assert (error["code"], error["re"]) == (E.INVALID_TOKEN, "h"), error
    assert await conn.close_code() == p.CloseCode.AUTH_FAILED
    # As a refresh: refused, and the connection keeps its current token.
    conn = await Raw.open(node, http)
    await conn.hello()
    await conn.send(p.encode(p.AuthRefresh(id="r", token=token)).decode())
    error = await conn.error()
    assert (error["code"], error["re"]) == (E.INVALID_TOKEN, "r"), error
    await conn.ping()
    assert await errors_counted(http, node, E.INVALID_TOKEN) == 2
    assert_no_crash(caplog)


# --- rate limits ----------------------------------------------------------------------


async def test_burst_over_rate_gets_rate_limited_then_recovers(
    start_node: StartNode, http: aiohttp.ClientSession
) -> None:
    node = await start_node(rate_per_s=20, rate_burst=4, flood_strikes=50)
    bystander = await watcher(node)
    conn = await Raw.open(node, http)
    await conn.hello()
    ids = [f"b{i}" for i in range(12)]
    for rid in ids:
        await conn.send(j(id=rid, type="ping"))
    answers = [await conn.reply() for _ in ids]
    # Every request is answered, in order; those over the bucket are refused, not dropped.
    assert [a["re"] for a in answers] == ids
    limited = [a for a in answers if a["type"] == "error"]
    assert limited, answers
    assert {a["code"] for a in limited} == {E.RATE_LIMITED}
    assert answers[0]["type"] == "ok"
    assert await errors_counted(http, node, E.RATE_LIMITED) == len(limited)
    # The bucket refills: the same connection is served again.
    await asyncio.sleep(0.3)
    await conn.ping("after-wait")
    await assert_unaffected(node, http, bystander)


@pytest.mark.parametrize("authenticated", [False, True], ids=["before_hello", "after_hello"])
async def test_flood_gets_rate_limited_then_closed_with_4008(
    start_node: StartNode, http: aiohttp.ClientSession, authenticated: bool
) -> None:
    # Tokens come back at 0.1/s and strikes at 0.01/s: nothing refills during the test.
    burst, strikes = 4, 3
    node = await start_node(rate_per_s=0.1, rate_burst=burst, flood_strikes=strikes)
    bystander = await watcher(node)  # hello + subscribe: 2 of its own 4 tokens
    conn = await Raw.open(node, http)
    left = burst
    if authenticated:
        await conn.hello()
        left -= 1
    for i in range(3 * burst + strikes):
        await conn.send(j(id=f"f{i}", type="ping"))
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while True:
            msg = await conn.ws.receive()
            if msg.type in CLOSED_TYPES:
                break
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            frames.append(json.loads(msg.data))
    assert conn.ws.close_code == p.CloseCode.FLOOD
    served = "ok" if authenticated else E.NOT_AUTHENTICATED
    codes = [f.get("code", f["type"]) for f in frames]
    assert codes == [served] * left + [E.RATE_LIMITED] * strikes
    assert [f["re"] for f in frames] == [f"f{i}" for i in range(left + strikes)]
    assert await errors_counted(http, node, E.RATE_LIMITED) == strikes
    assert await metric(http, node, "huddle_ws_closes_total", code="4008") == 1
    await assert_unaffected(node, http, bystander)


# --- integers past what a client can hold ----------------------------------------------

# Where JSON numbers stop being exact in JavaScript (Number.MAX_SAFE_INTEGER): the protocol's
# integers stay within it.
SAFE: Final = 2**53 - 1
PAST_SAFE: Final = [SAFE + 1, 2**63, 2**64, -(2**63) - 1, -SAFE - 1]


def int_fields(conv: str) -> list[tuple[str, dict[str, Any], str]]:
    """Every integer a chat request takes, in a request that is otherwise fine: (type, its
    fields, the path of the integer in it, JSONPath as errors name it)."""
    return [
        ("chat.send", {"conv": conv, "client_id": "c", "text": "x", "reply_to": 0}, "reply_to"),
        ("chat.edit", {"conv": conv, "seq": 0, "text": "x"}, "seq"),
        ("chat.recall", {"conv": conv, "seq": 0}, "seq"),
        ("chat.react", {"conv": conv, "seq": 0, "emoji": "+1"}, "seq"),
        ("chat.read", {"conv": conv, "seq": 0}, "seq"),
        ("chat.edits", {"conv": conv, "seq": 0}, "seq"),
        ("chat.report", {"conv": conv, "seq": 0, "reason": "r"}, "seq"),
        ("chat.history", {"conv": conv, "before": 0}, "before"),
        ("chat.history", {"conv": conv, "after": 0}, "after"),
        ("chat.history", {"conv": conv, "around": 0}, "around"),
        ("chat.thread", {"conv": conv, "root": 0}, "root"),
        ("chat.thread", {"conv": conv, "root": 1, "after": 0}, "after"),
        ("chat.list", {"before_ts": 0}, "before_ts"),
        ("chat.sync", {"feed": 0}, "feed"),
        ("chat.sync", {"cursors": {conv: 0}}, f"cursors.{conv}"),
        ("chat.search", {"query": "hello", "after_ts": 0}, "after_ts"),
        ("chat.search", {"query": "hello", "before_ts": 0}, "before_ts"),
    ]


def _with(fields: dict[str, Any], path: str, value: int) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(fields))
    *parents, last = path.split(".")
    inner = out
    for key in parents:
        inner = inner[key]
    inner[last] = value
    return out


async def test_integers_past_the_safe_range_get_invalid_field_and_the_largest_safe_ones_work(
    start_node: StartNode, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Each of them past 2^53 - 1 either way gets ``invalid_field`` naming it (a timestamp
    past SQLite's 64 bits was an internal error, found by search), and at the limits
    themselves the request is served or refused for what it asks, never with ``internal``
    (the conversation has messages, in Redis and in the history store)."""
    node = await start_node(rate_burst=1000)  # some 140 requests in a row
    bystander = await watcher(node)
    alice = await node.client("alice")
    conv = (await alice.request(w.ChatCreate(id="", kind="group", name="g"))).conv.conv
    for i in range(3):
        await alice.request(w.ChatSend(id="", conv=conv, client_id=f"m{i}", text="hello"))
    conn = await Raw.open(node, http)
    await conn.hello("alice")
    n = 0
    for kind, fields, path in int_fields(conv):
        for value in PAST_SAFE:
            n += 1
            await conn.send(j(id=f"r{n}", type=kind, **_with(fields, path, value)))
            error = await conn.error()
            assert (error["code"], error["re"]) == (E.INVALID_FIELD, f"r{n}"), (kind, value, error)
            assert path.split(".")[0] in error["message"], error
        for value in (SAFE, -SAFE, 0):
            n += 1
            await conn.send(j(id=f"r{n}", type=kind, **_with(fields, path, value)))
            reply = await conn.reply()
            assert reply["re"] == f"r{n}"
            assert reply.get("code") != E.INTERNAL, (kind, path, value, reply)
    await conn.ping()
    assert_no_crash(caplog)
    await assert_unaffected(node, http, bystander)
