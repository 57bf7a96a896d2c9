"""Merge the JSON of the shards of one load test into one document.

    python -m benchmarks.merge A.json B.json ... --json ALL.json [--report DIR]

Each machine ran the same generator with ``--url ... --shard I/N`` against the same
deployment with the same settings. chat_load: the same groups and schedule, each shard
driving its own groups (their members all on that machine, so every message a shard sends
is delivered to clients of the same shard and checked there: a message lost or repeated on
the way counts once, in the shard of its group). signaling_load: each shard its share of the
``--n`` clients, the same phases. sfu_load: each shard its share of the ``--rooms`` copies of
every scenario's room. media_load: each shard its share of every phase's clients (each
doing the whole phase's rounds) and of the thumbnails. Here counts and rates are added;
latency percentiles are read again from the shards' merged histograms
(benchmarks/histogram.py), never averaged; losses are added (chat's per second too). The
nodes' CPU is the nodes', which every shard read over its own window of the same phase: the
merged figure is the largest of those readings, so CPU per delivery or request uses every
shard's work against the nodes' whole CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks.chat_report import TARGET_P99_MS, targets
from benchmarks.common import run_main, write_json
from benchmarks.histogram import Histogram
from benchmarks.media_load import MIB, TARGET_RSS_GROWTH_MIB
from benchmarks.sfu_load import LATE_S
from benchmarks.sfu_report import ScenarioResult, add_loss_counts
from benchmarks.sfu_report import summary as sfu_summary
from benchmarks.sfu_report import targets as sfu_targets

# Added up across shards.
SUMMED: Final = (
    "messages",
    "messages_per_s",
    "expected",
    "deliveries",
    "deliveries_per_s",
    "lost",
    "lost_echo",
    "duplicated",
    "out_of_order",
    "extra",
    "stale",
    "send_errors",
)
# The run's settings every shard must share.
SAME: Final = ("clients", "rate", "duration", "seed", "senders_per_group", "url", "start_at")


LATE_MS: Final = 1000 * LATE_S


class MergeError(ValueError):
    pass


def _check(
    docs: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    benchmark: str = "chat_load",
    same: Sequence[str] = SAME,
) -> int:
    """The shard count, after checking that the documents are the shards of one run."""
    for doc, name in zip(docs, names, strict=True):
        if doc.get("benchmark") != benchmark or not doc.get("config", {}).get("url"):
            raise MergeError(f"{name}: not a {benchmark} --url result")
    shards = [tuple(doc["config"].get("shard") or (1, 1)) for doc in docs]
    count = shards[0][1]
    if any(n != count for _, n in shards):
        raise MergeError(f"the shards disagree on N: {[f'{i}/{n}' for i, n in shards]}")
    numbers = sorted(i for i, _ in shards)
    if len(set(numbers)) != len(numbers):
        raise MergeError(f"a shard is given twice: {numbers}")
    first = docs[0]["config"]
    for doc, name in zip(docs[1:], names[1:], strict=True):
        differ = [k for k in same if doc["config"].get(k) != first.get(k)]
        if differ:
            raise MergeError(f"{name}: not the same run as {names[0]} ({', '.join(differ)})")
    return int(count)


def _late_share(h: Histogram) -> float | None:
    total = h.count
    if not total:
        return None
    late = sum(n for b, n in h.counts.items() if Histogram.upper(b) > TARGET_P99_MS)
    return late / total


def _timeline(phases: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """Deliveries per second added up; p50 the deliveries-weighted mean and p99 the worst
    of the shards' (a second's latencies are not kept, only the phase's histogram)."""
    slots: dict[float, list[list[float]]] = {}
    for phase in phases:
        for row in phase.get("timeline", []):
            slots.setdefault(row[0], []).append(row)
    merged: list[list[float]] = []
    for t in sorted(slots):
        rows = slots[t]
        count = sum(r[1] for r in rows)
        p50 = sum(r[1] * r[2] for r in rows) / count if count else 0.0
        merged.append([t, count, p50, max(r[3] for r in rows)])
    return merged


def _loss_timeline(phases: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """Sent, owed, delivered and lost per second, added up: every shard sent by the same
    schedule from the same start (--start-at), so its seconds are the others'."""
    rows: dict[float, list[float]] = {}
    for phase in phases:
        for t, *counts in phase.get("loss_timeline", []):
            row = rows.setdefault(t, [0] * len(counts))
            for i, n in enumerate(counts):
                row[i] += n
    return [[t, *rows[t]] for t in sorted(rows)]


def merge_phase(phases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"kind": phases[0]["kind"], "seconds": phases[0]["seconds"]}
    merged["offered_per_s"] = phases[0].get("offered_per_s")
    for name in SUMMED:
        merged[name] = sum(p[name] for p in phases)
    histogram = Histogram()
    for phase in phases:
        if phase.get("latency_histogram") is None:
            raise MergeError("a shard's phase has no latency histogram (an older result)")
        histogram = histogram.add(Histogram.from_json(phase["latency_histogram"]))
    merged["latency_histogram"] = histogram.to_json()
    merged["p50_ms"] = histogram.percentile(50)
    merged["p99_ms"] = histogram.percentile(99)
    merged["max_ms"] = histogram.max()
    merged["late_share"] = _late_share(histogram)
    closed: Counter[str] = Counter()
    for phase in phases:
        closed.update(phase.get("closed", {}))
    merged["closed"] = dict(closed)
    merged["first_errors"] = sorted({e for p in phases for e in p.get("first_errors", [])})
    merged["waited_s"] = max(p["waited_s"] for p in phases)
    in_window = merged["deliveries_per_s"] * merged["seconds"]
    servers_s = max(p["cpu"]["servers_s"] for p in phases)
    drivers_s = sum(p["cpu"]["drivers_s"] for p in phases)
    merged["cpu"] = {
        "servers_s": servers_s,
        "drivers_s": drivers_s,
        "servers_core": [
            max(c) for c in zip(*(p["cpu"]["servers_core"] for p in phases), strict=True)
        ],
        "redis_core": max(p["cpu"]["redis_core"] for p in phases),
    }
    merged["deliveries_per_server_cpu_s"] = in_window / servers_s if servers_s > 0 else None
    merged["deliveries_per_driver_cpu_s"] = in_window / drivers_s if drivers_s > 0 else None
    merged["timeline"] = _timeline(phases)
    merged["loss_timeline"] = _loss_timeline(phases)
    starts = [p["started_at"] for p in phases if p.get("started_at") is not None]
    merged["started_at"] = min(starts) if starts else None
    return merged


def merge_chat(docs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """One chat_load document from its shards' (MergeError when they do not fit)."""
    count = _check(docs, names)
    results = [doc["results"]["deployment"] for doc in docs]
    kinds = list(results[0]["phases"])
    if any(list(r["phases"]) != kinds for r in results):
        raise MergeError("the shards ran different phases")
    phases = {k: merge_phase([r["phases"][k] for r in results]) for k in kinds}
    deployment = {
        "name": "deployment",
        "kind": "huddle",
        "nodes": results[0]["nodes"],
        "clients": results[0]["clients"],
        "connected": sum(r["connected"] for r in results),
        "setup_errors": sum(r["setup_errors"] for r in results),
        "setup_s": max(r["setup_s"] for r in results),
        "phases": phases,
        "first_errors": sorted({e for r in results for e in r["first_errors"]}),
    }

    def total(name: str) -> int:
        return int(sum(p[name] for p in phases.values()))

    paced, saturated = phases.get("paced", {}), phases.get("saturated", {})
    summary: dict[str, float | int | None] = {
        "p99_ms": paced.get("p99_ms"),
        "deliveries_per_s": saturated.get("deliveries_per_s"),
        "deliveries_vs_bare": None,
        "deliveries_per_cpu_vs_bare": None,
        "lost": total("lost") + total("lost_echo"),
        "duplicated": total("duplicated"),
        "out_of_order": total("out_of_order"),
        "deliveries_per_s_two_nodes": None,
        "bare_deliveries_per_s": None,
    }
    config = {**docs[0]["config"], "shard": None, "shards": count, "users": None}
    return {
        "config": config,
        "groups": docs[0]["groups"],
        "merged_from": [
            {"file": n, "shard": d["config"].get("shard"), "users": d["config"].get("users")}
            for d, n in zip(docs, names, strict=True)
        ],
        "missing_shards": sorted(
            set(range(1, count + 1)) - {d["config"]["shard"][0] for d in docs}
        ),
        "summary": summary,
        "targets": targets(summary, docs[0]["config"]["rate"]),
        "results": {"deployment": deployment},
    }


# signaling_load: the settings every shard shares, and its two timed phases.
SIGNALING_SAME: Final = (
    "total_n",
    "duration",
    "paced_duration",
    "ping_interval",
    "url",
    "start_at",
)


def _merge_load(phases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """signaling_load's paced or saturated figures of every shard as one."""
    histogram = Histogram()
    for phase in phases:
        if phase.get("rtt_histogram") is None:
            raise MergeError("a shard's phase has no round-trip histogram (an older result)")
        histogram = histogram.add(Histogram.from_json(phase["rtt_histogram"]))
    requests = sum(p["requests"] for p in phases)
    servers_s = max(p["cpu"]["server_s"] or 0.0 for p in phases)
    return {
        "requests": requests,
        "errors": sum(p["errors"] for p in phases),
        "seconds": max(p["seconds"] for p in phases),
        "rate_per_s": sum(p["rate_per_s"] for p in phases),
        "p50_ms": histogram.percentile(50),
        "p99_ms": histogram.percentile(99),
        "max_ms": histogram.max(),
        "per_server_cpu_s": requests / servers_s if servers_s > 0 else None,
        "cpu": {
            "server_s": servers_s,
            "drivers_s": [d for p in phases for d in p["cpu"]["drivers_s"]],
        },
        "rtt_histogram": histogram.to_json(),
    }


def merge_signaling(docs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """One signaling_load document from its shards': connections and requests added, round
    trips from the merged histograms; memory per connection is left out (each shard read the
    nodes' memory at its own moments, while the others' clients came and went)."""
    count = _check(docs, names, "signaling_load", SIGNALING_SAME)
    results = [doc["huddle"] for doc in docs]
    connected = sum(r["connected"] for r in results)
    huddle = {
        "kind": "huddle",
        "connected": connected,
        "connect_errors": sum(r["connect_errors"] for r in results),
        "connect_rate_per_s": sum(r["connect_rate_per_s"] for r in results),
        "close_errors": sum(r["close_errors"] for r in results),
        "kib_per_idle_connection": None,
        "latency": _merge_load([r["latency"] for r in results]),
        "saturation": _merge_load([r["saturation"] for r in results]),
        "first_errors": sorted({e for r in results for e in r["first_errors"]}),
    }
    summary = {
        "connected": connected,
        "connect_rate_per_s": huddle["connect_rate_per_s"],
        "paced_p99_ms": huddle["latency"]["p99_ms"],
        "requests_per_s": huddle["saturation"]["rate_per_s"],
        "requests_per_server_cpu_s": huddle["saturation"]["per_server_cpu_s"],
        "errors": huddle["connect_errors"]
        + huddle["close_errors"]
        + huddle["latency"]["errors"]
        + huddle["saturation"]["errors"],
    }
    return {
        "config": {**docs[0]["config"], "shard": None, "shards": count},
        "n": connected,
        "merged_from": [
            {"file": n, "shard": d["config"].get("shard")} for d, n in zip(docs, names, strict=True)
        ],
        "missing_shards": sorted(
            set(range(1, count + 1)) - {d["config"]["shard"][0] for d in docs}
        ),
        "summary": summary,
        "huddle": huddle,
        "bare": None,
    }


# sfu_load: the settings every shard shares.
SFU_SAME: Final = (
    "scenarios",
    "duration_s",
    "bot_procs",
    "rounds",
    "rooms",
    "fixture",
    "url",
    "start_at",
)


def _worst(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def merge_scenario(rows: Sequence[Mapping[str, Any]], idle_cores: float | None) -> dict[str, Any]:
    """One sfu_load scenario of every shard as one: rooms, bots, streams and packets added,
    loss from the lost and expected packets added up, the delay percentiles from the merged
    histogram, the nodes' CPU the largest reading (every shard read it over the same window)."""
    failed = next((r["failed"] for r in rows if r.get("failed")), None)
    histogram = Histogram()
    for row in rows:
        if row.get("delay_histogram") is None and row.get("delay_matched") and not failed:
            raise MergeError("a shard's scenario has no delay histogram (an older result)")
        if row.get("delay_histogram") is not None:
            histogram = histogram.add(Histogram.from_json(row["delay_histogram"]))
    counts = add_loss_counts([r.get("loss_counts", {}) for r in rows])

    def loss(kinds: Sequence[str]) -> float | None:
        expected = sum(counts[k][1] for k in kinds if k in counts)
        return sum(counts[k][0] for k in kinds if k in counts) / expected if expected else None

    def total(name: str) -> Any:
        return sum(r[name] for r in rows)

    packets = int(total("packets"))
    window = max(r["window_s"] for r in rows)
    server_cpu = max(r["server_cpu_s"] for r in rows)
    delays = histogram.count
    late = sum(n for b, n in histogram.counts.items() if Histogram.upper(b) > LATE_MS)
    forwarded = [r.get("node_packets_forwarded") for r in rows]
    merged = dict(rows[0])
    merged.update(
        rooms=total("rooms"),
        bots=total("bots"),
        streams_expected=total("streams_expected"),
        streams_flowing=total("streams_flowing"),
        window_s=window,
        packets=packets,
        packets_expected=total("packets_expected"),
        packets_per_s=total("packets_per_s"),
        mbit_per_s=total("mbit_per_s"),
        loss_counts=counts,
        loss=loss(list(counts)),
        loss_audio=loss(["audio"]),
        loss_video=loss(["video"]),
        delay_histogram=histogram.to_json() if delays else None,
        delay_p50_ms=histogram.percentile(50),
        delay_p99_ms=histogram.percentile(99),
        delay_max_ms=histogram.max(),
        delay_over_30ms=late / delays if delays else None,
        delay_stalls=[s for r in rows for s in r["delay_stalls"]],
        delay_matched=total("delay_matched"),
        delay_unmatched=total("delay_unmatched"),
        delay_unstamped=total("delay_unstamped"),
        # A bot's stack time is not kept as a histogram: the worst shard's.
        app_delay_p50_ms=_worst([r["app_delay_p50_ms"] for r in rows]),
        app_delay_p99_ms=_worst([r["app_delay_p99_ms"] for r in rows]),
        server_cpu_s=server_cpu,
        server_cores=server_cpu / window if window else 0.0,
        cpu_us_per_packet=server_cpu / packets * 1e6 if packets else None,
        marginal_us_per_packet=(
            max(0.0, server_cpu - idle_cores * window) / packets * 1e6
            if packets and idle_cores is not None
            else None
        ),
        bot_cpu_s=[c for r in rows for c in r["bot_cpu_s"]],
        bot_cores=[c for r in rows for c in r["bot_cores"]],
        machine_busy=max(r["machine_busy"] for r in rows),
        others_busy=max(r["others_busy"] for r in rows),
        bot_loop_lag_p99_ms=_worst([r["bot_loop_lag_p99_ms"] for r in rows]),
        bot_loop_lag_max_ms=_worst([r["bot_loop_lag_max_ms"] for r in rows]),
        publisher_max_late_ms=max(r["publisher_max_late_ms"] for r in rows),
        publisher_resyncs=total("publisher_resyncs"),
        rtx_packets=total("rtx_packets"),
        setup_s=max(r["setup_s"] for r in rows),
        failed=failed,
        errors=[e for r in rows for e in r["errors"]],
        profile=None,
        node_packets_forwarded=(
            sum(f for f in forwarded if f is not None) if None not in forwarded else None
        ),
    )
    return merged


def _shards_of(docs: Sequence[Mapping[str, Any]], names: Sequence[str], count: int) -> Any:
    return {
        "merged_from": [
            {"file": n, "shard": d["config"].get("shard"), "users": d["config"].get("users")}
            for d, n in zip(docs, names, strict=True)
        ],
        "missing_shards": sorted(
            set(range(1, count + 1)) - {d["config"]["shard"][0] for d in docs}
        ),
    }


def merge_sfu(docs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """One sfu_load document from its shards' (each ran its share of the rooms)."""
    count = _check(docs, names, "sfu_load", SFU_SAME)
    results = [doc["results"].get("huddle", {}) for doc in docs]
    scenarios = list(docs[0]["config"]["scenarios"])
    if any(list(r) != list(results[0]) for r in results):
        raise MergeError("the shards ran different scenarios")
    idle = _worst([d.get("server_idle_cores", {}).get("huddle") for d in docs])
    merged = {s: merge_scenario([r[s] for r in results], idle) for s in results[0]}
    pooled = {"huddle": {s: ScenarioResult(**row) for s, row in merged.items()}}
    figures = sfu_summary(pooled)
    return {
        "config": {**docs[0]["config"], "shard": None, "shards": count, "users": None},
        **_shards_of(docs, names, count),
        "versions": docs[0].get("versions", {}),
        "server_idle_cores": {"huddle": idle} if idle is not None else {},
        "missing": docs[0].get("missing", {}),
        "summary": figures,
        "targets": sfu_targets(figures),
        "compared_scenarios": {},
        "results": {"huddle": {s: merged[s] for s in scenarios if s in merged}},
        "rounds": {},
        "server_logs": {},
    }


# media_load: the settings every shard shares.
MEDIA_SAME: Final = (
    "sizes_mib",
    "clients",
    "phase_mib",
    "rss_upload_mib",
    "thumbs",
    "url",
    "start_at",
)


def _merge_media_phase(phases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One media phase of every shard: bytes, requests, clients and errors added; the rate over
    the longest shard's time; the nodes' CPU the largest reading, per request of every shard."""
    seconds = max(p["seconds"] for p in phases)
    moved = sum(p["bytes"] for p in phases)
    requests = sum(p["requests"] for p in phases)
    server_s = max(p["server_cpu"] * p["seconds"] for p in phases)
    return {
        **phases[0],
        "clients": sum(p["clients"] for p in phases),
        "seconds": seconds,
        "bytes": moved,
        "requests": requests,
        "mib_per_s": moved / MIB / seconds if seconds else 0.0,
        "driver_cpu": sum(p["driver_cpu"] for p in phases),
        "server_cpu": server_s / seconds if seconds else 0.0,
        "errors": sum(p["errors"] for p in phases),
        "server_ms_per_request": server_s / max(requests, 1) * 1e3,
    }


def merge_media(docs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """One media_load document from its shards' (each ran its share of every phase's clients
    and of the thumbnails; each did its own large upload: the node's largest growth seen)."""
    count = _check(docs, names, "media_load", MEDIA_SAME)
    shapes = [[(p["name"], p["size_mib"]) for p in d["phases"]] for d in docs]
    if any(s != shapes[0] for s in shapes):
        raise MergeError("the shards ran different phases")
    if any("bytes" not in p for d in docs for p in d["phases"]):
        raise MergeError("a shard's phase has no byte count (an older result)")
    phases = [_merge_media_phase(list(ps)) for ps in zip(*(d["phases"] for d in docs), strict=True)]
    thumbs = [d["thumbnails"] for d in docs]
    thumb_s = max(t["images"] / t["per_s"] if t["per_s"] else 0.0 for t in thumbs)
    images = sum(t["images"] for t in thumbs)
    rss = max((d["rss"] for d in docs), key=lambda r: r["growth_mib"])
    results: dict[str, Any] = {
        "phases": phases,
        "url": docs[0]["url"],
        "users": None,
        "rss": rss,
        "thumbnails": {
            **thumbs[0],
            "images": images,
            "per_s": images / thumb_s if thumb_s else 0.0,
            "errors": sum(t["errors"] for t in thumbs),
            "server_cpu": max(t["server_cpu"] for t in thumbs),
        },
        "copy_baseline_mib_per_s": None,
    }
    largest = max(p["size_mib"] for p in phases)
    growth = rss["growth_mib"]
    summary = {
        "server_ms_per_request": {
            f"{p['size_mib']:g}MiB x{p['clients']} {p['name']}": p["server_ms_per_request"]
            for p in phases
        },
        "upload_rss_growth_mib": growth,
        "upload_mib_per_s_largest": {
            str(p["clients"]): p["mib_per_s"]
            for p in phases
            if p["name"] == "upload" and p["size_mib"] == largest
        },
        "thumbnails_per_s": results["thumbnails"]["per_s"],
        "errors": sum(p["errors"] for p in phases) + results["thumbnails"]["errors"],
        "bytes": sum(p["bytes"] for p in phases),
        "targets": {"upload_rss_growth_mib": TARGET_RSS_GROWTH_MIB},
        "met": growth < TARGET_RSS_GROWTH_MIB,
    }
    return {
        "config": {**docs[0]["config"], "shard": None, "shards": count, "users": None},
        **_shards_of(docs, names, count),
        **results,
        "summary": summary,
    }


MERGERS: Final = {
    "chat_load": merge_chat,
    "signaling_load": merge_signaling,
    "sfu_load": merge_sfu,
    "media_load": merge_media,
}


def merge(docs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The shards' documents as one (MergeError when they do not fit)."""
    if not docs:
        raise MergeError("nothing to merge")
    benchmark = docs[0].get("benchmark")
    merger = MERGERS.get(str(benchmark))
    if merger is None:
        raise MergeError(f"{names[0]}: cannot merge {benchmark!r} (only {', '.join(MERGERS)})")
    return merger(docs, names)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.merge",
        description="Merge the JSON results of the shards (--shard I/N) of one load test.",
    )
    ap.add_argument("inputs", nargs="+", type=Path, help="each shard's --json file")
    ap.add_argument("--json", type=Path, required=True, help="write the merged result here")
    ap.add_argument("--report", type=Path, metavar="DIR", help="write DIR/index.html with plots")
    args = ap.parse_args(argv)
    docs: list[dict[str, Any]] = []
    for path in args.inputs:
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            ap.error(f"{path}: {exc}")
    try:
        merged = merge(docs, [str(p) for p in args.inputs])
    except (MergeError, KeyError, TypeError) as exc:
        print(f"merge: {exc}", file=sys.stderr)
        return 1
    if merged["missing_shards"]:
        print(f"merge: WARNING shards missing: {merged['missing_shards']}", file=sys.stderr)
    doc = write_json(args.json, str(docs[0]["benchmark"]), merged)
    if args.report:
        from benchmarks.report import write_report  # matplotlib: only when asked

        print(f"report written to {write_report(doc, args.report)}", file=sys.stderr)
    print(f"merged {len(docs)} shard(s): {json.dumps(merged['summary'])}")
    return 0


if __name__ == "__main__":
    run_main(main)
