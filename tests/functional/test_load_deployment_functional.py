"""Load generators pointed at running nodes (``--url``): nothing started, figures from the
nodes' /metrics, checked against what the nodes counted."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.chat_servers import Server, start_servers, stop_servers, wait_servers
from benchmarks.procs import free_port, huddle_command, node_env, start_logged

KEY = "loadkey"
ROOT = str(Path(__file__).resolve().parents[2])
# Long enough for a shard to start and set up on a busy machine, before its --start-at.
SHARD_SETUP_S = 15.0
# A node's default limit on one file (below media_load's default large upload, 1 GiB).
MAX_UPLOAD_MIB = 100


@pytest.fixture(scope="module")
def secret() -> str:
    return secrets.token_urlsafe(32)


def _two_nodes(redis_url: str, folder: Path, secret: str) -> Iterator[list[Server]]:
    servers = start_servers(folder, redis_url, KEY, secret, 2, bare=False)
    try:
        wait_servers(servers)
        yield servers
    finally:
        stop_servers(servers)


@pytest.fixture(scope="module")
def two_nodes(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, secret: str
) -> Iterator[list[Server]]:
    """Two `huddle serve` processes on the test Redis, started apart from the generator and
    shared by the module's runs: each run's figures are the nodes' counts over its own phases
    (deltas of /metrics), and starting two nodes per test cost seconds each."""
    yield from _two_nodes(redis_url, tmp_path_factory.mktemp("nodes"), secret)


@pytest.fixture
def fresh_nodes(redis_url: str, tmp_path: Path, secret: str) -> Iterator[list[Server]]:
    """Two nodes of the test's own, for a run judged by counters since the nodes started."""
    yield from _two_nodes(redis_url, tmp_path / "nodes", secret)


# The SFU bots' runs check the generator (bots, shards, their merge), run once: a room
# across nodes on a cluster is tested in test_call_relay_functional.py.
SFU_ON_ONE_REDIS = "the SFU bots' runs check the generator, not the nodes' Redis"
# A run split into shards checks the generator's schedule and the merge of its shards, not
# the nodes' Redis: on one Redis (a generator on a cluster: the *_drives_running_nodes runs).
SHARDS_ON_ONE_REDIS = "a sharded run checks the generator's schedule and merge, not the Redis"


@pytest.fixture(scope="module")
def sfu_nodes(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, secret: str
) -> Iterator[list[Server]]:
    """Two nodes with their SFU announcing loopback, on the test Redis (shared as above)."""
    tmp_path = tmp_path_factory.mktemp("sfu")
    env = node_env(KEY, secret, REDIS_URL=redis_url, HUDDLE_LOG_LEVEL="warning")
    servers: list[Server] = []
    try:
        for i in range(2):
            port = free_port()
            folder = tmp_path / f"sfu{i}"
            cmd = huddle_command(port, folder, "--ice-addresses", "127.0.0.1")
            log = tmp_path / f"sfu{i}.log"
            proc = start_logged(cmd, env, log)
            servers.append(Server(f"sfu{i}", f"http://127.0.0.1:{port}", proc, log))
        wait_servers(servers)
        yield servers
    finally:
        stop_servers(servers)


CHAT_PLOTS = {
    "latency_cdf",
    "throughput",
    "latency_over_time",
    "cpu_per_delivery",
    "loss",
    "losses",
}
SFU_PLOTS = {"cpu_per_packet", "loss", "delay_p99", "rate"}


def _check_report(folder: Path, plots: set[str]) -> None:
    """index.html shows every plot, each a real PNG, beside the run's JSON."""
    page = (folder / "index.html").read_text()
    assert json.loads((folder / "result.json").read_text())["summary"]
    for name in plots:
        png = folder / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert png.stat().st_size > 5000, name  # axes, lines and labels, not a blank
        assert f'src="{name}.png"' in page, name


def _run(module: str, args: list[str], secret: str, out: Path) -> dict[str, Any]:
    # The secret through the environment, as an operator would keep it out of `ps`.
    env = {**os.environ, "HUDDLE_API_KEY": KEY, "HUDDLE_API_SECRET": secret}
    run = subprocess.run(
        [sys.executable, "-m", module, *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [1, 2])
def test_chat_load_drives_running_nodes(
    two_nodes: list[Server], secret: str, tmp_path: Path, nodes: int
) -> None:
    urls = ",".join(s.url for s in two_nodes[:nodes])
    args = ["--url", urls, "--clients", "20", "--duration", "1", "--rate", "300", "--drivers", "2"]
    args += ["--report", str(tmp_path / "report")]
    doc = _run("benchmarks.chat_load", args, secret, tmp_path / "chat.json")
    _check_report(tmp_path / "report", CHAT_PLOTS)

    assert doc["config"]["url"] == urls.split(",")
    assert set(doc["results"]) == {"deployment"}  # no baseline, no second target
    result = doc["results"]["deployment"]
    assert result["connected"] == 20 and result["setup_errors"] == 0, result["first_errors"]
    assert result["nodes"] == nodes
    summary = doc["summary"]
    assert summary["lost"] == summary["duplicated"] == summary["out_of_order"] == 0
    for kind in ("paced", "saturated"):
        phase = result["phases"][kind]
        assert phase["deliveries"] == phase["expected"] > 0, kind
        assert phase["send_errors"] == 0, phase["first_errors"]
        # Server CPU from the nodes' /metrics, one figure per node.
        assert len(phase["cpu"]["servers_core"]) == nodes
        assert phase["cpu"]["servers_s"] > 0
        assert phase["deliveries_per_server_cpu_s"] > 0
        # What the generator counted is what the nodes counted: every accepted message one
        # chat.send, every delivery and every sender's own copy one event.
        counts = phase["nodes"]["counts"]
        assert phase["nodes"]["missing"] == []
        assert counts['huddle_ws_messages_in_total{type="chat.send"}'] == phase["messages"]
        events = counts['huddle_ws_messages_out_total{kind="event"}']
        assert events == phase["deliveries"] + phase["messages"], kind
        # Loss second by second: [t, sent, owed, delivered, lost, own copies lost].
        rows = phase["loss_timeline"]
        assert [r[0] for r in rows] == sorted({r[0] for r in rows}) and rows[0][0] >= 0
        assert sum(r[1] for r in rows) == phase["messages"], kind
        assert sum(r[2] for r in rows) == sum(r[3] for r in rows) == phase["expected"], kind
        assert all(r[4] == r[5] == 0 for r in rows), rows


def test_url_without_key_is_refused_with_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_API_")}
    for args, message in [
        (["--url", "http://127.0.0.1:9"], "--api-key and --api-secret"),
        (["--url", "ftp://127.0.0.1:9", "--api-key", "k", "--api-secret", "s"], "base URL"),
        (["--url", "http://127.0.0.1:9/v1", "--api-key", "k", "--api-secret", "s"], "no path"),
        (["--api-key", "k"], "go with --url"),
    ]:
        run = subprocess.run(
            [sys.executable, "-m", "benchmarks.chat_load", *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr, (args, run.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [1, 2])
def test_media_load_drives_running_nodes(
    two_nodes: list[Server], secret: str, tmp_path: Path, nodes: int
) -> None:
    urls = ",".join(s.url for s in two_nodes[:nodes])
    args = ["--url", urls, "--sizes-mib", "1", "--clients", "1,2", "--phase-mib", "32"]
    # More than the nodes take in one file: the large upload is sized to their limit.
    args += ["--rss-upload-mib", str(MAX_UPLOAD_MIB + 20), "--thumbs", "2"]
    args += ["--report", str(tmp_path / "report")]
    doc = _run("benchmarks.media_load", args, secret, tmp_path / "media.json")
    _check_report(tmp_path / "report", {"throughput", "cpu_per_request"})

    assert doc["url"] == urls.split(",")
    assert doc["copy_baseline_mib_per_s"] is None  # no baseline in this mode
    assert doc["summary"]["errors"] == 0
    phases = doc["phases"]
    assert [(p["name"], p["clients"]) for p in phases] == [
        ("upload", 1),
        ("download", 1),
        ("upload", 2),
        ("download", 2),
    ]
    for phase in phases:
        assert phase["errors"] == 0 and phase["mib_per_s"] > 0, phase
        # The nodes' CPU from their /metrics (32 MiB a phase: well above its 10 ms tick).
        assert phase["server_cpu"] > 0 and phase["server_ms_per_request"] > 0, phase
    assert doc["rss"]["base_mib"] > 10  # every role of the first node, from its /metrics
    assert doc["rss"]["upload_mib"] == MAX_UPLOAD_MIB
    assert doc["thumbnails"]["images"] == 2


@pytest.mark.serial  # media bots: loss and timing, alone on the machine
@pytest.mark.slow
@pytest.mark.redis_any(SFU_ON_ONE_REDIS)
@pytest.mark.parametrize("nodes", [1, 2])
def test_sfu_load_drives_running_nodes(
    sfu_nodes: list[Server], secret: str, tmp_path: Path, nodes: int
) -> None:
    urls = ",".join(s.url for s in sfu_nodes[:nodes])
    # Two bot processes: with two nodes the publisher signals through one and the
    # subscriber through the other.
    args = ["--url", urls, "--scenarios", "1x1", "--duration", "2", "--bot-procs", "2"]
    args += ["--report", str(tmp_path / "report")]
    doc = _run("benchmarks.sfu_load", args, secret, tmp_path / "sfu.json")
    _check_report(tmp_path / "report", SFU_PLOTS)

    assert doc["config"]["url"] == urls.split(",")
    assert set(doc["results"]) == {"huddle"}  # no baseline
    result = doc["results"]["huddle"]["1x1"]
    assert result["failed"] is None, result
    assert result["streams_flowing"] == 2  # audio and video
    assert result["loss"] == 0
    assert result["packets"] > 0
    # CPU per packet from the nodes' /metrics.
    assert result["server_cpu_s"] > 0 and result["cpu_us_per_packet"] > 0
    assert doc["server_idle_cores"]["huddle"] >= 0
    # What the bots received is what the node says it forwarded in the room, but for the
    # packets in flight at either edge of the window.
    forwarded = result["node_packets_forwarded"]
    assert forwarded == pytest.approx(result["packets"], rel=0.1), (forwarded, result["packets"])


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [1, 2])
def test_signaling_load_drives_running_nodes(
    fresh_nodes: list[Server], secret: str, tmp_path: Path, nodes: int
) -> None:
    # Fresh nodes: the refusal and hello counters below are the nodes' totals.
    urls = ",".join(s.url for s in fresh_nodes[:nodes])
    args = ["--url", urls, "--n", "20", "--procs", "2", "--duration", "0.5"]
    args += ["--paced-duration", "1", "--ping-interval", "0.2", "--report", str(tmp_path / "r")]
    doc = _run("benchmarks.signaling_load", args, secret, tmp_path / "signaling.json")
    _check_report(tmp_path / "r", {"rtt_cdf", "rate", "cpu_per_request", "memory_per_connection"})

    assert doc["config"]["url"] == urls.split(",")
    assert doc["bare"] is None  # no baseline in this mode
    huddle = doc["huddle"]
    assert huddle["connected"] == 20 and huddle["connect_errors"] == 0, huddle["first_errors"]
    assert huddle["close_errors"] == 0
    # CPU and memory from the nodes' /metrics.
    assert huddle["connect_cpu"]["server_s"] > 0
    assert huddle["saturation"]["cpu"]["server_s"] > 0
    assert huddle["rss_idle_kib"] > 10_000
    assert huddle["kib_per_idle_connection"] is not None
    # Every client authenticated on one of the nodes, and none was refused.
    counters = huddle["server_counters"]
    assert counters["huddle_ws_authenticated"] == 20
    assert not any(k.startswith("huddle_ws_errors_total") for k in counters), counters


@pytest.mark.slow
@pytest.mark.redis_any(SHARDS_ON_ONE_REDIS)
def test_two_shards_merged_give_the_totals_of_one_run(
    two_nodes: list[Server], secret: str, tmp_path: Path
) -> None:
    """The paced phase follows one schedule: its shards together send what one run sends."""
    urls = ",".join(s.url for s in two_nodes)
    common = ["--url", urls, "--clients", "40", "--duration", "1", "--rate", "300"]
    common += ["--drivers", "1"]
    whole = _run("benchmarks.chat_load", common, secret, tmp_path / "whole.json")
    env = {**os.environ, "HUDDLE_API_KEY": KEY, "HUDDLE_API_SECRET": secret}
    # Both shards, as two machines would run them: started apart, measuring together.
    start_at = time.time() + SHARD_SETUP_S
    procs: list[subprocess.Popen[bytes]] = []
    for i in (1, 2):
        if procs:
            time.sleep(1.5)
        args = [*common, "--shard", f"{i}/2", "--start-at", f"{start_at:.3f}"]
        to = ["--json", str(tmp_path / f"shard{i}.json")]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.chat_load", *args, *to],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err[-3000:]
    shards = [json.loads((tmp_path / f"shard{i}.json").read_text()) for i in (1, 2)]
    for shard in shards:
        warm_up = shard["results"]["deployment"]["phases"]["warm-up"]
        assert warm_up["started_at"] == pytest.approx(round(start_at, 3), abs=0.01)
    # Distinct users and groups per shard.
    assert shards[0]["config"]["users"] != shards[1]["config"]["users"]
    connected = [s["results"]["deployment"]["connected"] for s in shards]
    assert sum(connected) == 40 and all(connected), connected

    out = tmp_path / "all.json"
    merge = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.merge",
            *(str(tmp_path / f"shard{i}.json") for i in (1, 2)),
            "--json",
            str(out),
            "--report",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert merge.returncode == 0, merge.stderr
    merged = json.loads(out.read_text())
    assert merged["missing_shards"] == []
    _check_report(tmp_path / "report", CHAT_PLOTS)
    one = whole["results"]["deployment"]["phases"]["paced"]
    both = merged["results"]["deployment"]["phases"]["paced"]
    for name in ("messages", "expected", "deliveries"):
        assert both[name] == one[name] > 0, name
    assert both["lost"] == both["duplicated"] == both["out_of_order"] == 0
    assert merged["summary"]["lost"] == merged["summary"]["duplicated"] == 0
    # Percentiles read from the merged histogram, which holds every delivery.
    assert sum(both["latency_histogram"]["counts"].values()) == both["deliveries"]
    # Loss per second: each second's counts are the shards' added up.
    per_shard = [
        {r[0]: r[1:] for r in s["results"]["deployment"]["phases"]["paced"]["loss_timeline"]}
        for s in shards
    ]
    for t, *counts in both["loss_timeline"]:
        rows = [p.get(t, [0] * 5) for p in per_shard]
        assert counts == [sum(x) for x in zip(*rows, strict=True)], t
    assert sum(r[1] for r in both["loss_timeline"]) == both["messages"]
    assert sum(r[3] for r in both["loss_timeline"]) == both["expected"]
    assert 0 < both["p50_ms"] <= both["p99_ms"] <= both["max_ms"]
    assert both["deliveries_per_server_cpu_s"] > 0

    # A shard given twice, or a file that is not a shard, is refused with a reason.
    shard1 = str(tmp_path / "shard1.json")
    again = subprocess.run(
        [sys.executable, "-m", "benchmarks.merge", shard1, shard1, "--json", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 1 and "given twice" in again.stderr


@pytest.mark.slow
def test_huddle_load_command_runs_the_readme_example(
    two_nodes: list[Server], secret: str, tmp_path: Path
) -> None:
    """benchmarks/README.md's two-node example, at a tiny load, through the console script."""
    command = Path(sys.executable).parent / "huddle-load"
    # This checkout's benchmarks, whichever one the installed script was made from.
    env = {**os.environ, "HUDDLE_API_KEY": KEY, "HUDDLE_API_SECRET": secret, "PYTHONPATH": ROOT}
    listing = subprocess.run(
        [command, "--help"], capture_output=True, text=True, timeout=30, env=env
    )
    assert listing.returncode == 0
    assert all(name in listing.stdout for name in ("chat", "sfu", "media", "signaling", "merge"))
    assert "--shard 1/2 --start-at" in listing.stdout and "huddle-load merge" in listing.stdout
    unknown = subprocess.run(
        [command, "chats"], capture_output=True, text=True, timeout=30, env=env
    )
    assert unknown.returncode == 2 and "unknown command 'chats'" in unknown.stderr

    urls = ",".join(s.url for s in two_nodes)
    run = subprocess.run(
        [
            command,
            "chat",
            "--url",
            urls,
            "--clients",
            "20",
            "--duration",
            "1",
            "--rate",
            "300",
            "--json",
            str(tmp_path / "chat.json"),
            "--report",
            str(tmp_path / "chat"),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads((tmp_path / "chat.json").read_text())
    assert doc["summary"]["lost"] == doc["summary"]["duplicated"] == 0
    assert doc["results"]["deployment"]["nodes"] == 2
    _check_report(tmp_path / "chat", CHAT_PLOTS)


@pytest.mark.slow
@pytest.mark.redis_any(SHARDS_ON_ONE_REDIS)
def test_signaling_shards_merge_into_one_run(
    two_nodes: list[Server], secret: str, tmp_path: Path
) -> None:
    urls = ",".join(s.url for s in two_nodes)
    common = ["--url", urls, "--n", "41", "--procs", "1", "--duration", "0.5"]
    common += ["--paced-duration", "1", "--ping-interval", "0.2"]
    env = {**os.environ, "HUDDLE_API_KEY": KEY, "HUDDLE_API_SECRET": secret}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.signaling_load",
                *common,
                "--shard",
                f"{i}/2",
                "--json",
                str(tmp_path / f"s{i}.json"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        for i in (1, 2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err[-3000:]
    shards = [json.loads((tmp_path / f"s{i}.json").read_text()) for i in (1, 2)]
    assert [s["huddle"]["connected"] for s in shards] == [21, 20]  # 41 shared out

    files = [str(tmp_path / f"s{i}.json") for i in (1, 2)]
    out, report = tmp_path / "all.json", tmp_path / "report"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.merge",
            *files,
            "--json",
            str(out),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    merged = json.loads(out.read_text())
    huddle = merged["huddle"]
    assert huddle["connected"] == 41 and merged["summary"]["errors"] == 0
    for phase in ("latency", "saturation"):
        figures = huddle[phase]
        assert figures["requests"] == sum(s["huddle"][phase]["requests"] for s in shards) > 0
        assert sum(figures["rtt_histogram"]["counts"].values()) == figures["requests"]
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    _check_report(report, {"rtt_cdf", "rate", "cpu_per_request"})

    # Shards of different runs do not merge.
    other = json.loads((tmp_path / "s2.json").read_text())
    other["config"]["total_n"] = 99
    (tmp_path / "other.json").write_text(json.dumps(other))
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.merge",
            files[0],
            str(tmp_path / "other.json"),
            "--json",
            str(tmp_path / "bad.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "not the same run" in bad.stderr


def _run_shards(
    module: str, args: list[str], secret: str, folder: Path, shards: int = 2
) -> list[Path]:
    """``shards`` shards of one run at once, as that many machines would run them."""
    env = {**os.environ, "HUDDLE_API_KEY": KEY, "HUDDLE_API_SECRET": secret}
    outs = [folder / f"{module.rsplit('.', 1)[-1]}-shard{i}.json" for i in range(1, shards + 1)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", module, *args, "--shard", f"{i}/{shards}", "--json", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        for i, out in enumerate(outs, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=150)
        assert proc.returncode == 0, err[-3000:]
    return outs


def _merge(files: list[Path], out: Path, *extra: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.merge", *map(str, files), "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    assert doc["missing_shards"] == []
    return doc


@pytest.mark.serial  # media bots: loss and timing, alone on the machine
@pytest.mark.slow
@pytest.mark.redis_any(SFU_ON_ONE_REDIS)
def test_sfu_shards_merge_into_one_run(
    sfu_nodes: list[Server], secret: str, tmp_path: Path
) -> None:
    """Two rooms of 1x1: one run holds both, each of two shards one; merged, the same."""
    urls = ",".join(s.url for s in sfu_nodes)
    common = ["--url", urls, "--scenarios", "1x1", "--rooms", "2", "--duration", "2"]
    common += ["--bot-procs", "1"]
    whole = _run("benchmarks.sfu_load", common, secret, tmp_path / "whole.json")
    files = _run_shards("benchmarks.sfu_load", common, secret, tmp_path)
    shards = [json.loads(f.read_text())["results"]["huddle"]["1x1"] for f in files]
    assert [(s["rooms"], s["bots"], s["streams_flowing"]) for s in shards] == [(1, 2, 2)] * 2
    merged = _merge(files, tmp_path / "all.json", "--report", str(tmp_path / "report"))
    _check_report(tmp_path / "report", SFU_PLOTS)

    one = whole["results"]["huddle"]["1x1"]
    both = merged["results"]["huddle"]["1x1"]
    assert one["failed"] is None and both["failed"] is None, (one, both)
    for name in ("rooms", "bots", "streams_expected", "streams_flowing"):
        assert both[name] == one[name], name
    assert (both["rooms"], both["bots"], both["streams_flowing"]) == (2, 4, 4)
    assert both["packets"] == sum(s["packets"] for s in shards) > 0
    assert both["loss"] == one["loss"] == 0
    assert both["loss_counts"]["video"][1] == sum(s["loss_counts"]["video"][1] for s in shards)
    # The delay percentiles come from every shard's delays, merged.
    assert sum(both["delay_histogram"]["counts"].values()) == both["delay_matched"] > 0
    assert 0 < both["delay_p50_ms"] <= both["delay_p99_ms"] <= both["delay_max_ms"]
    assert both["server_cpu_s"] > 0 and both["cpu_us_per_packet"] > 0
    # Each shard's rooms are its own: the nodes' count over them adds up to the bots'.
    forwarded = both["node_packets_forwarded"]
    assert forwarded == pytest.approx(both["packets"], rel=0.1), (forwarded, both["packets"])


@pytest.mark.slow
@pytest.mark.redis_any(SHARDS_ON_ONE_REDIS)
def test_media_shards_merge_into_one_run(
    two_nodes: list[Server], secret: str, tmp_path: Path
) -> None:
    urls = ",".join(s.url for s in two_nodes)
    common = ["--url", urls, "--sizes-mib", "1", "--clients", "2,4", "--phase-mib", "8"]
    common += ["--rss-upload-mib", "4", "--thumbs", "3"]
    whole = _run("benchmarks.media_load", common, secret, tmp_path / "whole.json")
    start_at = time.time() + SHARD_SETUP_S
    shard_args = [*common, "--start-at", str(start_at)]
    files = _run_shards("benchmarks.media_load", shard_args, secret, tmp_path)
    shards = [json.loads(f.read_text()) for f in files]
    for shard in shards:
        # Neither began before the shared start, nor long after it.
        assert start_at <= shard["started_at"] < start_at + 1.0, shard["started_at"] - start_at
    assert shards[0]["config"]["users"] != shards[1]["config"]["users"]
    assert [s["thumbnails"]["images"] for s in shards] == [2, 1]  # 3 shared out
    merged = _merge(files, tmp_path / "all.json", "--report", str(tmp_path / "report"))
    _check_report(tmp_path / "report", {"throughput", "cpu_per_request"})

    assert merged["summary"]["errors"] == whole["summary"]["errors"] == 0
    key = ("name", "size_mib", "clients", "bytes", "requests")
    assert [[p[k] for k in key] for p in merged["phases"]] == [
        [p[k] for k in key] for p in whole["phases"]
    ]
    # 8 MiB a phase: 4 rounds of 2 clients, or 2 rounds of 4.
    assert [p["bytes"] for p in merged["phases"]] == [8 * 1024 * 1024] * 4
    assert merged["summary"]["bytes"] == whole["summary"]["bytes"]
    assert merged["thumbnails"]["images"] == whole["thumbnails"]["images"] == 3
    for phase in merged["phases"]:
        assert phase["mib_per_s"] > 0 and phase["server_ms_per_request"] > 0, phase


def test_shard_options_are_refused_with_a_clear_error() -> None:
    env = {**os.environ, "HUDDLE_API_KEY": KEY, "HUDDLE_API_SECRET": "s"}
    url = "http://127.0.0.1:9"
    for module, args, message in [
        ("benchmarks.sfu_load", ["--rooms", "2"], "go with --url"),
        ("benchmarks.sfu_load", ["--url", url, "--shard", "3/3", "--rooms", "2"], "no room"),
        ("benchmarks.sfu_load", ["--url", url, "--shard", "2/1"], "1 <= I <= N"),
        ("benchmarks.media_load", ["--shard", "1/2"], "goes with --url"),
        ("benchmarks.media_load", ["--url", url, "--shard", "1/2", "--clients", "1"], "at least"),
    ]:
        run = subprocess.run(
            [sys.executable, "-m", module, *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr, (args, run.stderr)


@pytest.mark.serial  # media bots: loss and timing, alone on the machine
@pytest.mark.slow
@pytest.mark.redis_any(SFU_ON_ONE_REDIS)
def test_a_shard_not_ready_by_its_start_at_refuses(
    sfu_nodes: list[Server], secret: str, tmp_path: Path
) -> None:
    """The SFU bots need more than a few seconds to publish and flow: the shard stops with a
    reason instead of measuring late."""
    env = {**os.environ, "HUDDLE_API_KEY": KEY, "HUDDLE_API_SECRET": secret}
    args = ["--url", sfu_nodes[0].url, "--scenarios", "1x1", "--duration", "1"]
    args += ["--start-at", str(time.time() + 6), "--json", str(tmp_path / "late.json")]
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.sfu_load", *args],
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert run.returncode == 1, run.stderr[-3000:]
    assert "not ready by --start-at" in run.stderr, run.stderr[-3000:]
    assert not (tmp_path / "late.json").exists()
