"""The node's own processes in /metrics: CPU seconds and resident memory, by role.

A load test run from another machine cannot clock the node's processes itself, so the node
says what they used: this process (``node``), the embedded Redis it supervises (``redis``,
when it runs one) and its other children, the SFU workers (``workers``). Read with psutil at
scrape time; nothing is counted on the hot path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import psutil
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

ROLES = ("node", "redis", "workers")


def _usage(proc: psutil.Process) -> tuple[float, float]:
    """(user + system CPU seconds, RSS bytes); zeros for a process that is gone."""
    try:
        with proc.oneshot():
            times = proc.cpu_times()
            return float(times.user + times.system), float(proc.memory_info().rss)
    except psutil.Error:
        return 0.0, 0.0


def process_collector(redis_pid: Callable[[], int | None]) -> Callable[[], Iterable[Metric]]:
    """A scrape-time collector; ``redis_pid`` names the embedded Redis (None: none runs)."""
    me = psutil.Process()

    def collect() -> Iterable[Metric]:
        cpu = dict.fromkeys(ROLES, 0.0)
        rss = dict.fromkeys(ROLES, 0.0)
        cpu["node"], rss["node"] = _usage(me)
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            children = me.children(recursive=True)
        embedded = redis_pid()
        for child in children:
            role = "redis" if child.pid == embedded else "workers"
            seconds, resident = _usage(child)
            cpu[role] += seconds
            rss[role] += resident
        cpu_family = CounterMetricFamily(
            "huddle_process_cpu_seconds",
            "User + system CPU seconds of the node's processes, by role",
            labels=["role"],
        )
        rss_family = GaugeMetricFamily(
            "huddle_process_resident_memory_bytes",
            "Resident memory of the node's processes, by role",
            labels=["role"],
        )
        for role in ROLES:
            cpu_family.add_metric([role], cpu[role])
            rss_family.add_metric([role], rss[role])
        yield cpu_family
        yield rss_family

    return collect
