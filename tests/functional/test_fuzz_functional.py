"""Random frames at a live node: every text frame gets exactly one answer, nothing crashes.

Hypothesis draws in a worker thread while the node and the sockets run in the test's event
loop, which stays free-running; each frame is checked by a coroutine handed to that loop.
After every frame a sentinel ``ping`` follows on the same socket: the replies that arrive
before the sentinel's are the frame's answers, so "no answer" and "two answers" both show.

Two sockets take every frame: one authenticated and one that never is. A frame that is a
well-formed ``hello`` legitimately closes the second (its token is random, or its protocol
unsupported); that close is expected and the socket is opened again.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import TEST_KEY, Node, make_token, node_samples

E = p.ErrorCode
EXAMPLES: Final = 200
REPLY_TIMEOUT_S: Final = 5.0
CLOSED_TYPES: Final = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)

# --- strategies ---------------------------------------------------------------------------

# UTF-8-encodable text only: a lone surrogate cannot go into a text frame at all.
text = st.text(st.characters(codec="utf-8"), max_size=300)
short_text = st.text(st.characters(codec="utf-8"), max_size=24)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | short_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
    max_leaves=12,
)
identities = st.from_regex(r"[A-Za-z0-9._@:+-]{1,16}", fullmatch=True)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_shaped(header: Any, payload: Any, signature: bytes) -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), b64(signature)]
    )


# Tokens that get past the JWT parser into the claims checks, with signatures that never
# match: whatever the header and claims say, the answer must be invalid_token.
jwt_tokens = st.builds(
    jwt_shaped,
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["HS256", "none", "RS256"]) | json_values},
        optional={"typ": json_values, "kid": json_values, "crit": json_values, "b64": json_values},
    )
    | json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "iss": st.just(TEST_KEY) | json_values,
            "sub": identities | json_values,
            "exp": st.integers() | json_values,
            "iat": json_values,
            "grants": json_values,
        },
    )
    | json_values,
    st.binary(max_size=40),
)
garbage_types = short_text | st.sampled_from(
    ["", "ok", "error", "presence.update", "PING", "ping ", "chat.send"]
)
request_ids = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
device_ids = st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True)
user_lists = st.lists(identities, min_size=1, max_size=5)
# Well-formed fields of each request type. Types added later fall back to ANY_FIELDS.
PLAUSIBLE: Final[dict[str, dict[str, st.SearchStrategy[Any]]]] = {
    "hello": {
        "token": jwt_tokens | short_text,
        "protocol": st.sampled_from([p.PROTOCOL_VERSION, p.PROTOCOL_VERSION, 0, 2]),
        "device": device_ids,
        "client": short_text,
        "status": st.sampled_from(["online", "away"]),
    },
    "ping": {},
    "auth.refresh": {"token": jwt_tokens | short_text},
    "presence.subscribe": {"users": user_lists},
    "presence.unsubscribe": {"users": user_lists},
    "presence.set": {"status": st.sampled_from(["online", "away"])},
}
ANY_FIELDS: Final[dict[str, st.SearchStrategy[Any]]] = {
    "token": jwt_tokens | short_text,
    "protocol": st.integers(),
    "device": device_ids,
    "status": st.sampled_from(["online", "away", "offline"]),
    "users": user_lists,
    "room": identities,
    "sdp": short_text,
}


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """A request of a real type, usually well-formed, then perhaps broken in one place: that
    reaches every handler as well as every validation error."""
    # `hello` weighs as much as a sixth of the draws whatever the number of request types, so
    # that the authentication paths (and the anonymous socket's closes) stay exercised.
    kinds = sorted(p.CLIENT_MESSAGES)
    kind = draw(st.sampled_from(kinds + ["hello"] * max(1, len(kinds) // 5)))
    message: dict[str, Any] = {"type": kind, "id": draw(request_ids)}
    for name, values in PLAUSIBLE.get(kind, ANY_FIELDS).items():
        if draw(st.sampled_from([True, True, True, False])):
            message[name] = draw(values)
    mutation = draw(st.sampled_from(["none", "none", "none", "garbage", "drop", "junk", "type"]))
    if mutation == "garbage":
        message[draw(st.sampled_from(sorted(message)))] = draw(json_values)
    elif mutation == "drop":
        del message[draw(st.sampled_from(sorted(message)))]
    elif mutation == "junk":
        message[draw(short_text)] = draw(json_values)
    elif mutation == "type":
        message["type"] = draw(garbage_types)
    return message


# Any keys at all, the protocol's own among them, with any values.
loose_messages = st.dictionaries(
    st.sampled_from(["type", "id", *ANY_FIELDS]) | short_text,
    st.sampled_from(sorted(p.CLIENT_MESSAGES)) | json_values,
    max_size=6,
)


def nested(depth: int, array: bool, inner: str, in_request: bool) -> str:
    opener, closer = ("[", "]") if array else ('{"a": ', "}")
    frame = opener * depth + inner + closer * depth
    return '{"id": "deep", "type": "ping", "x": ' + frame + "}" if in_request else frame


# Nesting well below or far above the decoder's limit (which depends on the interpreter's
# recursion limit and the stack at the call, so the oracle could not predict depths near it).
deep_frames = st.builds(
    nested,
    st.integers(1, 100) | st.integers(3_000, 8_000),
    st.booleans(),
    st.sampled_from(["1", "[]", "{}"]),
    st.booleans(),
)


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


frames: st.SearchStrategy[str | bytes] = st.one_of(
    text,
    st.builds(dumps, json_values, st.booleans()),
    st.builds(dumps, messages(), st.booleans()),
    st.builds(dumps, messages(), st.booleans()),
    st.builds(dumps, loose_messages, st.booleans()),
    deep_frames,
    st.binary(max_size=300),
)

# --- the oracle ---------------------------------------------------------------------------


ANY: Final = "ok or a refusal"
PARSE_ERRORS: Final = frozenset({E.BAD_JSON, E.BAD_MESSAGE, E.UNKNOWN_TYPE, E.INVALID_FIELD})


@dataclass(frozen=True)
class Expected:
    type: str  # "ok", "error" or ANY
    code: str | None
    re: str | None
    closes: int | None = None  # close code that must follow the answer


def expect(frame: str | bytes, authenticated: bool) -> Expected:
    """What the server must answer to ``frame``, from the protocol's own parser."""
    if isinstance(frame, bytes):
        return Expected("error", E.BINARY_NOT_SUPPORTED, None)
    try:
        request = p.decode_request(frame)
    except p.ProtocolError as exc:
        return Expected("error", exc.code, exc.re)
    except RecursionError:  # what the server must make of it, were its parser to let it out
        return Expected("error", E.BAD_JSON, None)
    kind = request.__struct_config__.tag
    rid = request.id
    if kind == "hello":
        assert isinstance(request, p.Hello)
        if authenticated:
            return Expected("error", E.ALREADY_AUTHENTICATED, rid)
        if request.protocol != p.PROTOCOL_VERSION:
            return Expected("error", E.UNSUPPORTED_PROTOCOL, rid, p.CloseCode.UNSUPPORTED_PROTOCOL)
        return Expected("error", E.INVALID_TOKEN, rid, p.CloseCode.AUTH_FAILED)  # random token
    if not authenticated:
        return Expected("error", E.NOT_AUTHENTICATED, rid)
    if kind == "auth.refresh":
        return Expected("error", E.INVALID_TOKEN, rid)
    if kind in ("ping", "presence.subscribe", "presence.unsubscribe", "presence.set"):
        return Expected("ok", None, rid)
    # A request type newer than this oracle: served or refused, but answered by its handler.
    return Expected(ANY, None, rid)


def usable_id(frame: str | bytes) -> str | None:
    """The frame's ``id`` when it can name a reply (checked without the server's parser)."""
    if isinstance(frame, bytes):
        return None
    try:
        raw = json.loads(frame)
    except ValueError:
        return None
    rid = raw.get("id") if isinstance(raw, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 64 else None


# --- the target ---------------------------------------------------------------------------


@dataclass
class Socket:
    ws: aiohttp.ClientWebSocketResponse
    authenticated: bool


@dataclass
class Target:
    node: Node
    http: aiohttp.ClientSession
    authed: Socket | None = None
    anonymous: Socket | None = None
    sentinels: int = 0
    frames_sent: int = 0
    oks: int = 0
    errors_seen: collections.Counter[str] = field(default_factory=collections.Counter)
    reopened: collections.Counter[str] = field(default_factory=collections.Counter)

    async def open(self, authenticated: bool) -> Socket:
        sock = Socket(await self.node.raw_ws(self.http), authenticated)
        if authenticated:
            hello = p.Hello(id="hello", token=make_token("fuzzer"), device="fuzz")
            await sock.ws.send_str(p.encode(hello).decode())
            answer = await self.answers(sock, "hello")
            assert [a["type"] for a in answer] == ["ok"], answer
        return sock

    async def ready(self) -> tuple[Socket, Socket]:
        # A socket left closed by an earlier failing example is replaced, so that one
        # failure does not cascade into every later example while Hypothesis shrinks.
        if self.authed is None or self.authed.ws.closed:
            self.reopened["authed"] += self.authed is not None
            self.authed = await self.open(authenticated=True)
        if self.anonymous is None or self.anonymous.ws.closed:
            self.reopened["anonymous"] += self.anonymous is not None
            self.anonymous = await self.open(authenticated=False)
        return self.authed, self.anonymous

    async def answers(self, sock: Socket, until: str) -> list[dict[str, Any]]:
        """Replies up to and including the one whose ``re`` is ``until``; events skipped."""
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while True:
                msg = await sock.ws.receive()
                assert msg.type is aiohttp.WSMsgType.TEXT, (
                    f"socket closed ({sock.ws.close_code}) after {got}"
                )
                frame: dict[str, Any] = json.loads(msg.data)
                if frame["type"] in p.SERVER_EVENTS:
                    msgspec.convert(frame, p.SERVER_EVENTS[frame["type"]])
                    continue
                assert frame["type"] in ("ok", "error"), frame
                if frame["type"] == "error":
                    error = msgspec.convert(frame, p.Error)
                    assert error.code in p.ERROR_CODES and error.code != E.INTERNAL, frame
                    assert error.message, frame
                    self.errors_seen[error.code] += 1
                got.append(frame)
                if frame["re"] == until:
                    return got

    async def check(self, frame: str | bytes) -> None:
        for sock in await self.ready():
            await self.check_on(sock, frame)

    async def check_on(self, sock: Socket, frame: str | bytes) -> None:
        want = expect(frame, sock.authenticated)
        if isinstance(frame, bytes):
            await sock.ws.send_bytes(frame)
        else:
            await sock.ws.send_str(frame)
        self.frames_sent += 1
        if want.closes is not None:
            await self.check_close(sock, want)
            return
        self.sentinels += 1
        sentinel = f"sentinel-{self.sentinels}-\N{SNOWMAN}"
        await sock.ws.send_str(msgspec.json.encode({"id": sentinel, "type": "ping"}).decode())
        *answers, last = await self.answers(sock, sentinel)
        assert len(answers) == 1, f"{len(answers)} answers to {frame!r}: {answers}"
        assert_answer(answers[0], want, frame)
        self.oks += answers[0]["type"] == "ok"
        assert last["type"] == ("ok" if sock.authenticated else "error"), last
        assert not sock.ws.closed

    async def check_close(self, sock: Socket, want: Expected) -> None:
        answer: list[dict[str, Any]] = []
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            while True:
                msg = await sock.ws.receive()
                if msg.type in CLOSED_TYPES:
                    break
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                answer.append(json.loads(msg.data))
        assert sock.ws.close_code == want.closes
        assert len(answer) == 1, answer
        assert_answer(answer[0], want, None)
        self.errors_seen[answer[0]["code"]] += 1

    async def close(self) -> None:
        for sock in (self.authed, self.anonymous):
            if sock is not None:
                await sock.ws.close()


def assert_answer(answer: dict[str, Any], want: Expected, frame: str | bytes | None) -> None:
    if want.type == ANY:
        assert answer.get("code") not in PARSE_ERRORS, (frame, answer)
    else:
        assert answer["type"] == want.type, (frame, answer, want)
        assert answer.get("code") == want.code, (frame, answer, want)
    assert answer["re"] == want.re, (frame, answer, want)
    if frame is not None and want.code not in (E.BAD_JSON,):
        # Independently of the server's parser: a usable id is always echoed.
        assert answer["re"] == usable_id(frame), (frame, answer)


@pytest.fixture
async def target(start_node: StartNode) -> AsyncIterator[Target]:
    # No rate limiting and no hello deadline: neither may close the sockets mid-run.
    node = await start_node(rate_per_s=100_000, rate_burst=100_000, hello_timeout_s=600)
    async with aiohttp.ClientSession() as http:
        t = Target(node, http)
        await t.ready()
        try:
            yield t
        finally:
            await t.close()


async def metric_samples(http: aiohttp.ClientSession, node: Node, sample: str) -> dict[str, float]:
    """The samples of one metric, by their first label's value."""
    samples = await node_samples(node.url, sample, http)
    return {next(iter(s.labels.values()), ""): s.value for s in samples}


@pytest.mark.slow
async def test_random_frames_get_exactly_one_answer(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()

    def run(job: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(job, loop).result(timeout=30)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(frames, min_size=1, max_size=6))
    # Always one well-formed hello with a forged token: the anonymous socket's close path.
    @example([json.dumps({"id": "h1", "type": "hello", "token": "e30.e30.c2ln"})])
    def fuzz(batch: list[str | bytes]) -> None:
        for frame in batch:
            run(target.check(frame))

    with caplog.at_level(logging.WARNING):
        await asyncio.to_thread(fuzz)

    # Many frames went through, and the authenticated socket never had to be reopened.
    assert target.frames_sent >= 2 * EXAMPLES
    assert target.reopened["authed"] == 0
    # The run reached the handlers, not only the parser: valid requests were served, tokens
    # checked, and malformed hellos closed the anonymous socket.
    handled = target.oks + sum(
        n for code, n in target.errors_seen.items() if code not in PARSE_ERRORS
    )
    assert target.oks >= EXAMPLES // 20
    assert handled >= EXAMPLES // 2, (target.oks, target.errors_seen)
    assert target.errors_seen[E.INVALID_TOKEN] >= 5
    assert target.errors_seen[E.INVALID_FIELD] >= 5
    assert target.reopened["anonymous"] >= 1
    # Every error sent was counted, by code, and none was internal.
    counted = await metric_samples(target.http, target.node, "huddle_ws_errors_total")
    assert {k: v for k, v in counted.items() if v} == dict(target.errors_seen)
    assert E.INTERNAL not in counted
    # Only the closes the oracle expected (malformed-hello closes of the anonymous socket).
    closes = await metric_samples(target.http, target.node, "huddle_ws_closes_total")
    assert set(closes) <= {str(p.CloseCode.AUTH_FAILED), str(p.CloseCode.UNSUPPORTED_PROTOCOL)}
    left_closed = target.anonymous is not None and target.anonymous.ws.closed
    assert sum(closes.values()) == target.reopened["anonymous"] + left_closed
    # No handler crashed on the way.
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert crashes == [], [r.getMessage() for r in crashes]
    # And the node still serves a newcomer.
    newcomer = await target.node.client("newcomer")
    assert newcomer.hello_reply is not None and newcomer.hello_reply.identity == "newcomer"
    pong = await newcomer.request(p.Ping(id=""))
    assert pong.server_time_ms > 0
    async with target.http.get(f"{target.node.url}/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "ok"
