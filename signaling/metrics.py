"""Prometheus metrics of one node, in a registry of its own (several nodes may share a process
in tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class _Callback(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "huddle_ws_connections", "Open WebSocket connections", registry=self.registry
        )
        self.authenticated = Gauge(
            "huddle_ws_authenticated", "Authenticated devices on this node", registry=self.registry
        )
        self.messages_in = Counter(
            "huddle_ws_messages_in",
            "Frames received, by message type",
            ["type"],
            registry=self.registry,
        )
        self.messages_out = Counter(
            "huddle_ws_messages_out",
            "Frames sent, by kind (reply, error, event)",
            ["kind"],
            registry=self.registry,
        )
        self.errors = Counter(
            "huddle_ws_errors",
            "Error replies and frames, by code",
            ["code"],
            registry=self.registry,
        )
        self.closes = Counter(
            "huddle_ws_closes",
            "Connections closed by the server, by close code",
            ["code"],
            registry=self.registry,
        )
        self.redis_up = Gauge(
            "huddle_redis_up", "1 when Redis answers, else 0", registry=self.registry
        )
        self.redis_restarts = Gauge(
            "huddle_redis_restarts", "Restarts of the embedded Redis", registry=self.registry
        )
        self.uptime = Gauge("huddle_uptime_seconds", "Node uptime", registry=self.registry)

        # Label children looked up once: these counters move on every frame.
        self.out_reply = self.messages_out.labels("reply")
        self.out_error = self.messages_out.labels("error")
        self.out_event = self.messages_out.labels("event")
        self._in: dict[str, Any] = {}
        self._errors: dict[str, Any] = {}

    def count_in(self, kind: str) -> None:
        child = self._in.get(kind)
        if child is None:
            child = self._in[kind] = self.messages_in.labels(kind)
        child.inc()

    def count_error(self, code: str) -> None:
        child = self._errors.get(code)
        if child is None:
            child = self._errors[code] = self.errors.labels(code)
        child.inc()

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Families computed at scrape time (nothing is counted twice on the hot path)."""
        self.registry.register(_Callback(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)
