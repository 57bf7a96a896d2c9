"""Prometheus families for the SFU of this node: rooms, tracks, workers, read at scrape
time from the rooms' host (the node's own process, or the workers' last reports)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from sfu.host import LocalHost, TrackRow
from sfu.pool import WorkerPool


def _snapshots(
    local: LocalHost | None, pool: WorkerPool | None
) -> tuple[dict[str, dict[str, int]], list[TrackRow], int]:
    if local is not None:
        rooms, tracks = local.snapshot()
        return rooms, tracks, local.decoders_created
    rooms, tracks, decoders = {}, [], 0
    assert pool is not None
    for worker in pool.workers:
        if worker is not None and worker.metrics is not None:
            rooms.update(worker.metrics.rooms)
            tracks += [tuple(t) for t in worker.metrics.tracks]  # type: ignore[misc]
            decoders += worker.metrics.decoders_created
    return rooms, tracks, decoders


def collect(open_rooms: int, local: LocalHost | None, pool: WorkerPool | None) -> Iterator[Metric]:
    rooms, tracks, decoders = _snapshots(local, pool)
    gauge = GaugeMetricFamily("huddle_sfu_rooms", "Call rooms open on this node")
    gauge.add_metric([], open_rooms)
    yield gauge
    gauge = GaugeMetricFamily(
        "huddle_sfu_decoders_created", "Media decoders created by the SFU (must stay 0)"
    )
    gauge.add_metric([], decoders)
    yield gauge
    if pool is not None:
        workers = GaugeMetricFamily(
            "huddle_sfu_worker_participants",
            "Participants per SFU worker",
            labels=["worker", "pid"],
        )
        for worker in pool.workers:
            if worker is not None:
                workers.add_metric([str(worker.index), str(worker.pid)], worker.participants)
        yield workers
        restarts = CounterMetricFamily("huddle_sfu_worker_restarts", "SFU workers restarted")
        restarts.add_metric([], pool.restarts)
        yield restarts
    counters = (
        "packets_in",
        "bytes_in",
        "duplicates_in",
        "packets_forwarded",
        "bytes_forwarded",
        "retransmitted",
        "retransmit_suppressed",
        "retransmit_too_old",
        "retransmit_over_budget",
        "keyframe_requests",
        "packets_lost",
    )
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        name: CounterMetricFamily(f"huddle_sfu_room_{name}", f"Room: {name}", labels=["room"])
        for name in counters
    }
    for name in ("participants", "tracks", "outputs"):
        families[name] = GaugeMetricFamily(
            f"huddle_sfu_room_{name}", f"Room: {name}", labels=["room"]
        )
    for room_name, totals in rooms.items():
        for name, value in totals.items():
            families[name].add_metric([room_name], value)
    yield from families.values()
    labels = ["room", "participant", "identity", "track", "kind"]
    track_in = CounterMetricFamily(
        "huddle_sfu_track_packets_in", "Packets received per published track", labels=labels
    )
    track_out = CounterMetricFamily(
        "huddle_sfu_track_packets_forwarded",
        "Packets forwarded per published track",
        labels=labels,
    )
    for room_name, participant, identity, key, kind, packets_in, forwarded in tracks:
        track_in.add_metric([room_name, participant, identity, key, kind], packets_in)
        track_out.add_metric([room_name, participant, identity, key, kind], forwarded)
    yield track_in
    yield track_out
