"""Every private aiohttp name that ``huddle.http_guard`` touches, checked against the installed
aiohttp: an upgrade that renames or drops one fails here, in one place, instead of quietly
turning the header deadline or the body idle timeout off."""

from __future__ import annotations

import asyncio
import inspect

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from huddle.http_guard import GuardedRequestHandler, GuardedServer, HttpGuard

# Attributes of a live connection handler that the guard reads.
HANDLER_ATTRIBUTES = ("_messages", "_upgraded", "_request_in_progress", "_loop", "transport")
# Methods of RequestHandler that the guard overrides or calls, with their parameters.
HANDLER_METHODS = {
    "connection_made": ["transport"],
    "data_received": ["data"],
    "connection_lost": ["exc"],
    "_handle_request": ["request", "start_time", "request_handler"],
    "force_close": [],
    "close": [],
}
# Attributes of aiohttp's low-level server that GuardedServer and NodeRunner pass on.
SERVER_ATTRIBUTES = ("_loop", "_kwargs", "request_handler", "request_factory")
# The guard's own attributes: none may already mean something to aiohttp.
OWN_ATTRIBUTES = ("_guard", "_header_timer", "_body_timer", "_body", "_body_progress", "_timed_out")


async def _handler(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


async def test_connection_handler_has_what_the_guard_uses() -> None:
    server = web.Server(_handler)
    plain = server()
    assert type(plain) is RequestHandler
    for name in HANDLER_ATTRIBUTES:
        assert hasattr(plain, name), f"RequestHandler has no {name}"
    for name, params in HANDLER_METHODS.items():
        method = getattr(RequestHandler, name, None)
        assert callable(method), f"RequestHandler has no method {name}"
        assert list(inspect.signature(method).parameters)[1:] == params, name
    assert inspect.iscoroutinefunction(RequestHandler._handle_request)
    for name in OWN_ATTRIBUTES:
        assert not hasattr(plain, name), f"aiohttp's RequestHandler now has {name} of its own"
    assert hasattr(server, "handler_cancellation")
    for name in SERVER_ATTRIBUTES:
        assert hasattr(server, name), f"web.Server has no {name}"


class _Connected:
    """What a body stream asks of its connection: that it is connected, and flow control."""

    connected = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_body_stream_has_a_waiter_while_read() -> None:
    stream = StreamReader(_Connected(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    assert stream._waiter is None
    reading = asyncio.ensure_future(stream.read(1))
    await asyncio.sleep(0)
    assert stream._waiter is not None  # what tells the guard a handler waits for body bytes
    stream.feed_data(b"x")
    assert await reading == b"x"
    assert stream._waiter is None


async def test_guarded_server_makes_guarded_connections() -> None:
    guard = HttpGuard(1.0, 2.0)
    guarded = GuardedServer(_handler, guard=guard)()
    assert isinstance(guarded, GuardedRequestHandler)
    assert guarded._guard is guard


def test_runner_builds_its_server_where_the_guard_hooks_in() -> None:
    assert inspect.iscoroutinefunction(web.AppRunner._make_server)
    assert list(inspect.signature(web.AppRunner._make_server).parameters) == ["self"]
