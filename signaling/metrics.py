"""Prometheus metrics of one node, in a registry of its own (several nodes may share a process
in tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric
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
        # Frames sent, by kind: plain numbers on the hot path (one per event delivered),
        # read at scrape time.
        self.sent: dict[str, int] = {"reply": 0, "error": 0, "event": 0}
        # Writes to WebSocket connections: frames queued together go out in one.
        self.writes = 0
        self.add_collector(self._collect_sent)
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
        # On a Redis Cluster, as this node sees it (set when scraped).
        self.redis_cluster_ok = Gauge(
            "huddle_redis_cluster_ok",
            "1 when the cluster reports ok and every shard answers this node, else 0",
            registry=self.registry,
        )
        self.redis_cluster_shards = Gauge(
            "huddle_redis_cluster_shards",
            "Shards (masters) in the node's slot map",
            registry=self.registry,
        )
        self.redis_cluster_shards_up = Gauge(
            "huddle_redis_cluster_shards_up", "Shards answering this node", registry=self.registry
        )
        self.redis_cluster_replicas = Gauge(
            "huddle_redis_cluster_replicas",
            "Replicas in the node's slot map",
            registry=self.registry,
        )
        self.redis_cluster_replicas_up = Gauge(
            "huddle_redis_cluster_replicas_up",
            "Replicas answering this node",
            registry=self.registry,
        )
        self.redis_cluster_slots_ok = Gauge(
            "huddle_redis_cluster_slots_ok",
            "Hash slots served (16384 when the cluster is whole)",
            registry=self.registry,
        )
        self.pubsub_reconnects: Callable[[], int] = lambda: 0
        self.add_collector(self._collect_pubsub)

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

    def _collect_sent(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "huddle_ws_messages_out", "Frames sent, by kind (reply, error, event)", labels=["kind"]
        )
        for kind, count in self.sent.items():
            family.add_metric([kind], count)
        yield family
        writes = CounterMetricFamily(
            "huddle_ws_writes",
            "Writes to WebSocket connections (frames queued together go out in one)",
        )
        writes.add_metric([], self.writes)
        yield writes

    def _collect_pubsub(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "huddle_redis_pubsub_restored",
            "Times pub/sub came back or followed moved slots (then missed events are read back)",
        )
        family.add_metric([], self.pubsub_reconnects())
        yield family

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Families computed at scrape time (nothing is counted twice on the hot path)."""
        self.registry.register(_Callback(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)
