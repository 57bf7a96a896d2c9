"""benchmarks.merge on shards' documents: SFU rooms and media phases added up, losses across
shards, chat's loss per second; and shards of different runs refused."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from benchmarks.histogram import Histogram
from benchmarks.merge import MergeError, _loss_timeline, merge
from benchmarks.sfu_report import ScenarioResult


def _sfu_doc(shard: int, packets: int, lost_video: int, delays: list[float]) -> dict[str, Any]:
    row = ScenarioResult(
        target="huddle",
        scenario="1x1",
        publishers=1,
        subscribers=1,
        streams_expected=2,
        streams_flowing=2,
        window_s=2.0,
        packets=packets,
        packets_expected=packets + lost_video,
        packets_per_s=packets / 2,
        rooms=1,
        bots=2,
        loss_counts={"audio": [0, 100], "video": [lost_video, packets - 100 + lost_video]},
        delay_histogram=Histogram.of(delays).to_json(),
        delay_matched=len(delays),
        server_cpu_s=0.4 + shard / 10,
        node_packets_forwarded=float(packets),
    )
    config = {"scenarios": ["1x1"], "duration_s": 2.0, "bot_procs": 1, "rounds": 1, "rooms": 2}
    config |= {"fixture": "clip", "url": ["http://n:1"], "start_at": None}
    return {
        "benchmark": "sfu_load",
        "config": {**config, "shard": [shard, 2], "users": f"u{shard}"},
        "server_idle_cores": {"huddle": 0.01},
        "results": {"huddle": {"1x1": dataclasses.asdict(row)}},
    }


def test_sfu_shards_add_rooms_packets_and_losses() -> None:
    a = _sfu_doc(1, 500, 0, [1.0] * 99 + [50.0])
    b = _sfu_doc(2, 300, 4, [2.0] * 100)
    merged = merge([a, b], ["a", "b"])
    row = merged["results"]["huddle"]["1x1"]
    assert (row["rooms"], row["bots"], row["streams_flowing"]) == (2, 4, 4)
    assert row["packets"] == 800 and row["node_packets_forwarded"] == 800
    assert row["loss_counts"] == {"audio": [0, 200], "video": [4, 604]}
    assert row["loss"] == pytest.approx(4 / 804)
    assert row["loss_video"] == pytest.approx(4 / 604) and row["loss_audio"] == 0
    # Percentiles of all 200 delays: neither shard's p99 (50 ms, 2 ms) nor their mean.
    assert row["delay_p99_ms"] == pytest.approx(2.0, rel=0.011)
    assert row["delay_max_ms"] == pytest.approx(50.0, rel=0.011)
    assert row["delay_over_30ms"] == pytest.approx(1 / 200)
    # The nodes' CPU is read by both shards over the same window: the larger reading.
    assert row["server_cpu_s"] == pytest.approx(0.6)
    assert row["cpu_us_per_packet"] == pytest.approx(0.6 / 800 * 1e6)
    assert merged["missing_shards"] == [] and merged["config"]["shards"] == 2

    other = copy.deepcopy(b)
    other["config"]["rooms"] = 4
    with pytest.raises(MergeError, match="not the same run"):
        merge([a, other], ["a", "other"])
    older = copy.deepcopy(b)
    older["results"]["huddle"]["1x1"]["delay_histogram"] = None
    with pytest.raises(MergeError, match="no delay histogram"):
        merge([a, older], ["a", "older"])


def _media_doc(shard: int, clients: int, seconds: float) -> dict[str, Any]:
    mib = 1024 * 1024
    phase = {"name": "upload", "size_mib": 1.0, "clients": clients, "seconds": seconds}
    phase |= {"mib_per_s": 4 * clients / seconds, "driver_cpu": 0.1, "server_cpu": 0.5}
    phase |= {"errors": 0, "server_ms_per_request": 1.0}
    phase |= {"bytes": 4 * clients * mib, "requests": 4 * clients}
    config = {"sizes_mib": [1.0], "clients": [3], "phase_mib": 8.0, "rss_upload_mib": 4.0}
    config |= {"thumbs": 3, "url": ["http://n:1"], "start_at": None}
    return {
        "benchmark": "media_load",
        "config": {**config, "shard": [shard, 2], "users": f"u{shard}"},
        "url": ["http://n:1"],
        "phases": [phase],
        "rss": {"growth_mib": 3.0 * shard},
        "thumbnails": {"images": 3 - shard, "per_s": 2.0, "errors": 0, "server_cpu": 0.2},
    }


def test_media_shards_add_bytes_requests_and_clients() -> None:
    merged = merge([_media_doc(1, 2, 2.0), _media_doc(2, 1, 1.0)], ["a", "b"])
    (phase,) = merged["phases"]
    assert (phase["clients"], phase["requests"], phase["bytes"]) == (3, 12, 12 * 1024 * 1024)
    assert phase["mib_per_s"] == pytest.approx(12 / 2.0)  # over the longer shard's time
    assert phase["server_ms_per_request"] == pytest.approx(0.5 * 2.0 / 12 * 1e3)
    assert merged["thumbnails"]["images"] == 3
    assert merged["rss"]["growth_mib"] == 6.0  # the node's largest growth a shard saw
    assert merged["summary"]["errors"] == 0 and merged["summary"]["bytes"] == 12 * 1024 * 1024


def test_chat_loss_per_second_is_added_second_by_second() -> None:
    a = {"loss_timeline": [[0.0, 10, 90, 90, 0, 0], [1.0, 10, 90, 85, 5, 1]]}
    b = {"loss_timeline": [[1.0, 8, 72, 72, 0, 0], [2.0, 3, 27, 20, 7, 0]]}
    assert _loss_timeline([a, b]) == [
        [0.0, 10, 90, 90, 0, 0],
        [1.0, 18, 162, 157, 5, 1],
        [2.0, 3, 27, 20, 7, 0],
    ]
