"""Deadlines for slow HTTP clients: a request's headers must be complete in time, and a
request body that stalls while its handler reads it ends the request.

aiohttp closes idle keep-alive connections but has no deadline for the headers of a
request (a connection sending one header byte every few seconds stays open forever) nor
for a body that stops arriving. Both are enforced here, in a subclass of aiohttp's
``RequestHandler`` (the protocol of one connection). Every touch of aiohttp's internals
(the handler's request queue and waiter, a body stream's waiter, the runner's server
construction) is in this module; it is written for aiohttp 3.14 and tested by
``tests/functional/test_slow_clients_functional.py``.

- Header deadline: from the connection's opening, or from the end of the previous
  response on a keep-alive connection, until the next request's headers are complete.
  It is a total: bytes trickling in do not extend it. Past it the connection is closed
  without an answer (there is no request to answer).
- Body idle timeout: while a handler waits for body bytes, none arrived for that long.
  The handler's read raises ``web.HTTPRequestTimeout``, which becomes a 408 JSON error
  (``request_timeout``), and the connection is closed after that answer.
- A WebSocket, once upgraded, has neither (its heartbeat covers it), and a slow download
  (the server writing) is no body read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client.metrics_core import CounterMetricFamily, Metric

# How often, as a fraction of the body idle timeout, a request with a body is checked: a
# stall is noticed between 1x and 1.25x the timeout.
_BODY_CHECKS_PER_TIMEOUT: Final = 4


@dataclass
class HttpGuard:
    """The limits of a node's HTTP connections, and how often each one struck."""

    header_timeout_s: float
    body_idle_s: float
    timeouts: dict[str, int] = field(default_factory=lambda: {"header": 0, "body": 0})

    def collect(self) -> Iterable[Metric]:
        """The counts as a Prometheus family, read at scrape time."""
        family = CounterMetricFamily(
            "huddle_http_timeouts",
            "HTTP connections closed for slow headers (header) or a stalled body (body)",
            labels=["kind"],
        )
        for kind, count in self.timeouts.items():
            family.add_metric([kind], count)
        yield family


HTTP_GUARD = web.AppKey("http_guard", HttpGuard)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with a header deadline and a body idle timeout."""

    def __init__(self, manager: web.Server, *, guard: HttpGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._body_progress = 0.0
        self._timed_out = False

    # --- header deadline ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = None
        if self._messages or self._upgraded or self.transport is None:
            return  # the next request's headers are already complete
        self._header_timer = self._loop.call_later(
            self._guard.header_timeout_s, self._header_deadline
        )

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self._messages or self._request_in_progress or self._upgraded:
            return
        self._guard.timeouts["header"] += 1
        self.force_close()

    def data_received(self, data: bytes) -> None:
        if self._timed_out:
            return  # the request was answered with 408; the rest of its body is dropped
        super().data_received(data)
        if self._header_timer is not None and (self._messages or self._upgraded):
            self._header_timer.cancel()
            self._header_timer = None
        if self._body is not None:
            self._body_progress = self._loop.time()

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        self._body = None
        super().connection_lost(exc)

    # --- body idle timeout --------------------------------------------------------------

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        payload = request.content
        if not payload.is_eof():
            self._body = payload
            self._body_progress = self._loop.time()
            self._schedule_body_check()
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._body = None
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            self._arm_header_deadline()

    def _schedule_body_check(self) -> None:
        self._body_timer = self._loop.call_later(
            self._guard.body_idle_s / _BODY_CHECKS_PER_TIMEOUT, self._check_body
        )

    def _check_body(self) -> None:
        self._body_timer = None
        payload = self._body
        if payload is None or payload.is_eof() or self._upgraded:
            return
        now = self._loop.time()
        if payload._waiter is None:
            # The handler is not reading: a client held back by flow control is not idle.
            self._body_progress = now
        elif now - self._body_progress >= self._guard.body_idle_s:
            self._body_stalled(payload)
            return
        self._schedule_body_check()

    def _body_stalled(self, payload: StreamReader) -> None:
        self._guard.timeouts["body"] += 1
        self._timed_out = True
        self._body = None
        # No request after this one on the connection: the rest of its body never comes.
        self.close()
        payload.set_exception(
            web.HTTPRequestTimeout(text=f"no request body bytes for {self._guard.body_idle_s:g} s")
        )
        # Marked ended so that aiohttp does not try to drain the rest after the answer.
        payload.feed_eof()
        # A handler that swallows the error and never answers still loses the connection.
        self._body_timer = self._loop.call_later(self._guard.body_idle_s, self.force_close)


class GuardedServer(web.Server):
    """aiohttp's low-level server, making ``GuardedRequestHandler`` connections."""

    def __init__(self, *args: Any, guard: HttpGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


class NodeRunner(web.AppRunner):
    """``web.AppRunner`` for an app composed with an ``HTTP_GUARD``: its connections have
    the guard's header deadline and body idle timeout."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            guard=self.app[HTTP_GUARD],
            **plain._kwargs,
        )
