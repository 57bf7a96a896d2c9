"""The load generators (huddle-load) tell a failed run from a healthy one: clients that did
not connect, nodes gone mid-run, streams that stopped, the same node named twice, counters
of earlier runs, clients spread over every node."""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from benchmarks.chat_driver import DeliveryResult, PhaseSpec, SendResult, StepResult, TargetSpec
from benchmarks.chat_load import connect_failure, missing_nodes
from benchmarks.chat_report import phase_figures
from benchmarks.chat_servers import CpuUse
from benchmarks.procs import free_port
from benchmarks.sfu_bots import BotMeasurement, StreamFigures
from benchmarks.sfu_load import STALLED_S, NodesCpuClock, _figures, _server_figures, failed
from benchmarks.sfu_report import ScenarioResult, clip_failure, failure_line
from benchmarks.signaling_load import _specs
from benchmarks.signaling_load import failed as signaling_failed
from benchmarks.signaling_report import Options, TargetResult
from benchmarks.target import NodeUse, counter_changes, node_id, same_nodes
from tests.http_stub import http_stub

# --- chat: clients that did not connect, nodes whose /metrics went missing (B1, B7) -------


def test_chat_stops_when_some_clients_did_not_connect_with_the_connect_error() -> None:
    target = TargetSpec("huddle", "deployment", ("http://a", "http://b"), (10, 10))
    dead = "ClientConnectorError: Cannot connect to host 127.0.0.1:9"
    steps = [StepResult(ok=5, errors=5, first_error=dead), StepResult(ok=5, errors=5)]
    assert (
        connect_failure(target, steps) == f"deployment: 10 of 20 clients could not connect: {dead}"
    )
    assert connect_failure(target, [StepResult(ok=10), StepResult(ok=10)]) is None
    # A shard's share: only its own groups' clients are owed.
    shard = TargetSpec("huddle", "deployment", ("http://a",), (10, 4), shard=1, shards=2)
    assert connect_failure(shard, [StepResult(ok=4)]) is None
    assert connect_failure(shard, [StepResult(ok=3, errors=1, first_error="x")]) == (
        "deployment: 1 of 4 clients could not connect: x"
    )


def _cpu() -> CpuUse:
    return CpuUse(1.0, [0.0], 0.0, [0.0], 0.0, 0.0, 0.0, 0.0, 0.0)


def _nodes(missing: list[str]) -> NodeUse:
    return NodeUse(1.0, [0.0], 0.0, [0.0], {}, missing)


def test_chat_names_the_nodes_whose_metrics_went_missing_by_phase() -> None:
    phase = PhaseSpec("paced", "t0p1.", time.monotonic(), 1.0, 10.0, 1, 1)
    healthy = phase_figures(phase, [SendResult()], [DeliveryResult()], _cpu())
    healthy.nodes = _nodes([])
    gone = phase_figures(phase, [SendResult()], [DeliveryResult()], _cpu())
    gone.nodes = _nodes(["http://127.0.0.1:9"])
    assert missing_nodes({"paced": healthy, "saturated": gone}) == {
        "saturated": ["http://127.0.0.1:9"]
    }
    assert missing_nodes({"paced": healthy}) == {}


# --- sfu: streams that stopped, a node's CPU missing, the failure's cause (B2, B3) --------


def _bot(*streams: StreamFigures) -> BotMeasurement:
    return BotMeasurement(
        streams=list(streams),
        expected_streams=len(streams),
        send_keys=array("Q"),
        send_times=array("d"),
        recv_keys=array("Q"),
        recv_times=array("d"),
        recv_stamps=array("d"),
        unstamped=0,
        loop_lags_ms=[],
        max_late_ms=0.0,
        resyncs=0,
        rtx_packets=0,
        unrouted=0,
        unknown_payload_type=0,
    )


def _scenario() -> ScenarioResult:
    return ScenarioResult("huddle", "1x1", 1, 1, streams_expected=2)


def test_sfu_streams_that_stopped_before_the_window_end_fail_the_scenario() -> None:
    start, wall = 100.0, 8.0
    end = start + wall
    # The node killed 3 s into an 8 s window: every packet up to then arrived, so the
    # sequence numbers alone show no loss.
    killed = [
        StreamFigures("audio", 150, 15_000, 150, start + 3),
        StreamFigures("video", 90, 90_000, 90, start + 3),
    ]
    result = _scenario()
    _figures(result, [_bot(*killed)], wall, start)
    assert result.loss == 0  # what the sequence numbers say
    assert result.streams_stalled == 2
    assert result.failed is not None and "2 of 2 streams stalled" in result.failed
    assert failed({"huddle": {"1x1": result}})

    flowing = [
        StreamFigures("audio", 400, 40_000, 400, end - 0.02),
        StreamFigures("video", 240, 240_000, 240, end - STALLED_S / 2),
    ]
    healthy = _scenario()
    _figures(healthy, [_bot(*flowing)], wall, start)
    assert healthy.failed is None and healthy.streams_stalled == 0
    assert not failed({"huddle": {"1x1": healthy}})


def test_sfu_cpu_of_a_node_whose_metrics_went_missing_is_missing_not_zero() -> None:
    result = _scenario()
    result.packets = 1000
    _server_figures(result, 0.0, 8.0, 0.01, ["http://127.0.0.1:9"])
    assert result.nodes_missing == ["http://127.0.0.1:9"]
    assert result.cpu_us_per_packet is None and result.marginal_us_per_packet is None
    assert result.failed is not None and "CPU is missing" in result.failed
    ok = _scenario()
    ok.packets = 1000
    _server_figures(ok, 0.5, 8.0, 0.01)
    assert ok.failed is None and ok.server_cores == pytest.approx(0.5 / 8)
    assert ok.cpu_us_per_packet == pytest.approx(500.0)


class _NoBots:
    def cpu_seconds(self) -> list[float]:
        return []


def test_sfu_nodes_clock_names_a_node_that_does_not_answer() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    clock = NodesCpuClock([dead], _NoBots(), "room")  # type: ignore[arg-type]
    clock.stop()
    assert clock.missing == [dead]


BOT_FAILURE = (
    "RuntimeError: bot 0 failed in 'publish':\n"
    "Traceback (most recent call last):\n"
    '  File "/x/aiohttp/connector.py", line 1322, in _wrap_create_connection\n'
    "    sock = await aiohappyeyeballs.start_connection(\n"
    "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 18299)\n"
    "\n"
    "The above exception was the direct cause of the following exception:\n"
    "\n"
    "Traceback (most recent call last):\n"
    '  File "/x/huddle/client.py", line 110, in connect\n'
    "    self._ws = await self._http.ws_connect(self.ws_url, autoping=self._autoping)\n"
    "               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    + '  File "/x/y.py", line 1, in f\n    pass\n'
    * 40
    + "aiohttp.client_exceptions.ClientConnectorError: Cannot connect to host "
    "127.0.0.1:18299 ssl:default [Connect call failed ('127.0.0.1', 18299)]\n"
)


def test_sfu_failure_line_gives_the_cause_of_a_bot_traceback() -> None:
    kept = clip_failure(BOT_FAILURE)
    assert len(kept) <= 2000 and len(BOT_FAILURE) > 2000
    line = failure_line(kept)
    assert line.startswith("RuntimeError: bot 0 failed in 'publish':")
    assert line.endswith(
        "ClientConnectorError: Cannot connect to host 127.0.0.1:18299 "
        "ssl:default [Connect call failed ('127.0.0.1', 18299)]"
    )
    assert failure_line("one line") == "one line"


# --- signaling: nothing connected, clients spread per client (B3, B4) ----------------


def _signaling_result(connected: int, first_errors: list[str]) -> TargetResult:
    return TargetResult(
        kind="huddle",
        connected=connected,
        connect_errors=20 - connected,
        connect_s=0.1,
        connect_rate_per_s=0.0,
        connect_cpu=None,  # type: ignore[arg-type]
        rss_baseline_kib=None,
        rss_idle_kib=None,
        rss_after_close_kib=None,
        kib_per_idle_connection=None,
        helpers_kib_per_idle_connection=None,
        latency=None,  # type: ignore[arg-type]
        saturation=None,  # type: ignore[arg-type]
        close_errors=0,
        first_errors=first_errors,
        server_counters={},
        server_log={},
    )


def test_signaling_fails_when_no_client_connected() -> None:
    refused = "ClientConnectorError: Cannot connect to host 127.0.0.1:9"
    assert signaling_failed(_signaling_result(0, [refused]), None) == [
        f"huddle: no client connected: {refused}"
    ]
    assert signaling_failed(_signaling_result(20, []), None) == []


def _options(n: int, procs: int) -> Options:
    return Options(
        n=n,
        procs=procs,
        duration=1.0,
        paced_duration=1.0,
        ping_interval=1.0,
        connect_concurrency=64,
        api_key="k",
        api_secret="s",
    )


def test_signaling_spreads_clients_not_drivers_over_the_nodes() -> None:
    urls = ("http://a", "http://b", "http://c")
    specs = _specs("huddle", urls, _options(30, 2), "load")
    assert len(specs) == 2
    placed = [spec.url(spec.first + i) for spec in specs for i in range(spec.count)]
    # Client i on node i mod N, whichever driver holds it: every node gets its third.
    assert placed == [urls[i % 3] for i in range(30)]


# --- every generator: the same node twice, this run's counters (B5, B6) ---------------


def test_the_same_node_under_two_names_is_refused() -> None:
    urls = ["http://127.0.0.1:8080", "http://localhost:8080", "http://127.0.0.1:8081"]
    ids = {urls[0]: "host-1-ab", urls[1]: "host-1-ab", urls[2]: "host-2-cd"}
    error = same_nodes(urls, ids)
    assert error is not None
    assert "http://127.0.0.1:8080 and http://localhost:8080 are the same node" in error
    assert same_nodes(urls[::2], ids) is None
    # A node that does not answer is not taken for another.
    assert same_nodes(urls, {urls[0]: None, urls[1]: None, urls[2]: "x"}) is None


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "degraded", "node": "node-7"}'
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_url() -> Iterator[str]:
    with http_stub(_Health) as url:
        yield url


def test_node_id_from_healthz(health_url: str) -> None:
    assert node_id(health_url) == "node-7"
    assert node_id(f"http://127.0.0.1:{free_port()}") is None


def test_counters_are_the_runs_own_not_the_nodes_since_start() -> None:
    before = {'huddle_ws_errors_total{code="invalid_token"}': 82.0, "huddle_ws_authenticated": 3.0}
    after = {
        'huddle_ws_errors_total{code="invalid_token"}': 82.0,
        'huddle_ws_errors_total{code="rate_limited"}': 2.0,
        "huddle_ws_authenticated": 23.0,
    }
    assert counter_changes(before, after) == {
        'huddle_ws_errors_total{code="rate_limited"}': 2.0,
        "huddle_ws_authenticated": 20.0,
    }
