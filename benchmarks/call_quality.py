"""Call quality on constrained links (issue 14): real headless Chromium participants, each in
its own network namespace with its own capped link to the SFU, measured from ``getStats()``
and the SFU's ``call.stats``.

    python -m benchmarks.call_quality                      # every scenario, ~15 min with Janus
    python -m benchmarks.call_quality --scenarios 1mbit,300kbit --json out.json
    python -m benchmarks.call_quality --quick --json out.json     # 2 participants, 1 Mbit/s

Each scenario gets a fresh network (benchmarks/call_net.py: the node's namespace, one
namespace per browser, a veth or a lossy relay per browser, ``tc tbf`` caps on both ends) and
a fresh ``huddle serve`` in the hub, bound to the hub's address only. The browsers
(benchmarks/call_page.py, the project's call page: three simulcast layers and Opus) launch
together, join one after the other (so each join after the first finds someone publishing),
run ``--warmup-s`` and then ``--measure-s``, between two snapshots of both peer
connections' ``getStats()`` and of the SFU's ``call.stats``. Where a scenario lifts its cap
at the end, the frames decoded each second show how soon video comes back. CPU is read per
namespace (each browser's processes, and the node's) so that a run where the browsers or the
machine are the limit is never read as the SFU's. Targets are printed, not asserted.

The baseline, in the same run (``--janus``, the default when Janus is installed, but for
``--quick``): every scenario again with Janus VideoRoom (benchmarks/sfu_janus.py) in the hub
instead of the node, and the same browsers, links and caps on benchmarks/call_janus.html, a
page that does over Janus's HTTP API what the project's call page does with the SDK.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import psutil

from benchmarks import sfu_report
from benchmarks.call_net import Network, Participant, network
from benchmarks.common import (
    SATURATED,
    Say,
    fmt,
    goal,
    goal_table,
    log_problems,
    pct,
    percentile,
    run_main,
    stderr_say,
    table,
    write_json,
)
from benchmarks.procs import (
    bounded,
    log_tail,
    machine_busy_seconds,
    node_env,
    start_logged,
    stop_process,
    wait_healthy,
)
from benchmarks.sfu_janus import JanusServer, Netns, janus_binary
from signaling.auth import Grants, mint_token

API_KEY: Final = "bench"
NODE_PORT: Final = 8080  # the hub namespace is the run's alone
ROOM: Final = "quality"
JANUS_PORT: Final = 8088
JANUS_ROOM: Final = 1414
JANUS_PAGE: Final = Path(__file__).with_name("call_janus.html")
LAUNCH_TIMEOUT_S: Final = 90.0
JOIN_TIMEOUT_S: Final = 45.0
STOP_TIMEOUT_S: Final = 30.0
# Video is back after a cap is lifted once every remote video decodes this many frames a second.
RECOVERED_FPS: Final = 10.0
# Targets of issue 14, 3-party call.
TARGET_FREEZE_RATIO: Final = 0.01
TARGET_CONCEALED: Final = 0.02
TARGET_RTX_RATIO: Final = 0.10
TARGET_FPS: Final = 15.0
TARGET_FIRST_FRAME_MS: Final = 1000.0
TARGET_RECOVERY_S: Final = 3.0


@dataclass(frozen=True)
class Scenario:
    name: str
    parties: int
    cap_kbit: int | None = None  # each capped participant's downlink and uplink
    loss: float = 0.0  # UDP datagrams dropped each way (the relay)
    jitter_ms: float = 0.0
    capped: str = "all"  # "all" or "first": only participant 1 is capped
    lift: bool = False  # lift the cap after the measurement, and time the recovery

    def is_capped(self, index: int) -> bool:
        return self.cap_kbit is not None and (self.capped == "all" or index == 1)

    def describe(self) -> str:
        parts = [f"{self.parties} parties"]
        if self.cap_kbit is not None:
            who = "each" if self.capped == "all" else "participant 1 only"
            parts.append(f"{self.cap_kbit} kbit/s {who}")
        if self.loss or self.jitter_ms:
            parts.append(f"{self.loss:.0%} loss, {self.jitter_ms:.0f} ms jitter")
        return ", ".join(parts)


SCENARIOS: Final = {
    s.name: s
    for s in (
        Scenario("none", 3),
        Scenario("2mbit", 3, cap_kbit=2000),
        Scenario("1mbit", 3, cap_kbit=1000),
        Scenario("500kbit", 3, cap_kbit=500),
        Scenario("300kbit", 3, cap_kbit=300, lift=True),
        Scenario("loss5", 3, loss=0.05, jitter_ms=20),
        Scenario("loss10", 3, loss=0.10, jitter_ms=20),
        Scenario("one_capped", 3, cap_kbit=300, capped="first"),
        Scenario("six", 6),
    )
}
QUICK: Final = Scenario("1mbit", 2, cap_kbit=1000)


# --- one scenario -----------------------------------------------------------------------


@dataclass
class Browser:
    participant: Participant
    proc: subprocess.Popen[bytes]
    steps: Path
    out: Path
    log: Path


def _touch_all(browsers: Sequence[Browser], name: str) -> None:
    for b in browsers:
        (b.steps / name).touch()


def _wait_files(browsers: Sequence[Browser], name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [b for b in browsers if not (b.steps / name).exists()]
        if not missing:
            return
        for b in missing:
            if b.proc.poll() is not None:
                raise RuntimeError(
                    f"participant {b.participant.index} exited before {name!r}:\n{_driver_error(b)}"
                )
        if time.monotonic() > deadline:
            who = [b.participant.index for b in missing]
            raise TimeoutError(f"participants {who} not {name!r} within {timeout_s:.0f} s")
        time.sleep(0.1)


def _driver_error(b: Browser) -> str:
    with contextlib.suppress(OSError, ValueError):
        result = json.loads(b.out.read_text())
        return f"{result.get('error')} {json.dumps(result.get('state'))[:2000]}"
    return log_tail(b.log)


def _cpu(pids: Sequence[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            seconds[pid] = float(t.user + t.system)
    return seconds


def _cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[pid] - before[pid] for pid in before if pid in after)


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@dataclass
class Server:
    """The SFU of one scenario's run: how a participant's page reaches it, and its log."""

    kind: str  # "huddle" or "janus"
    page_args: Callable[[int], list[str]]
    problems: Callable[[], dict[str, int]]


@contextlib.contextmanager
def _huddle(net: Network, work: Path) -> Iterator[Server]:
    secret = secrets.token_urlsafe(32)
    log = work / "node.log"
    cmd = net.hub_command(
        sys.executable, "-m", "huddle", "serve",
        "--host", net.hub_address, "--port", str(NODE_PORT),
        "--ice-addresses", net.hub_address,
        "--data-dir", str(work / "node"), "--log-level", "warning",
    )  # fmt: skip
    proc = start_logged(cmd, node_env(API_KEY, secret), log)
    url = f"http://{net.hub_address}:{NODE_PORT}"

    def page_args(i: int) -> list[str]:
        grants = Grants(rooms=[ROOM])
        identity = f"participant-{i}"
        token = mint_token(api_key=API_KEY, api_secret=secret, identity=identity, grants=grants)
        return ["--base-url", url, "--room", ROOM, "--token", token]

    try:
        wait_healthy(url, proc, log)
        yield Server("huddle", page_args, lambda: log_problems(log, most=10))
    finally:
        stop_process(proc)


def _janus_problems(log: Path) -> dict[str, int]:
    """Janus's warnings and errors, less its start-up notes on what the config turned off
    and its fallback local IP (the media address comes from the enforce list instead)."""
    return {
        text: n
        for text, n in sfu_report.log_problems(log).items()
        if "has been disabled, skipping" not in text and "Couldn't find any address" not in text
    }


@contextlib.contextmanager
def _janus(net: Network, work: Path, parties: int) -> Iterator[Server]:
    """Janus VideoRoom in the hub (sfu_janus.JanusServer), one room for the call."""
    # JanusServer runs in ``name`` and gathers on ``ns_addr``; ``host_addr`` is its HTTP
    # API's access list, a prefix here: the host and every participant of this run.
    hub = Netns(name=net.hub, host_if="", host_addr=f"10.214.{net.third}.", ns_addr=net.hub_address)
    server = JanusServer.start(work / "janus", hub, http_port=JANUS_PORT)
    origin = f"http://{net.hub_address}:{JANUS_PORT}"

    def page_args(i: int) -> list[str]:
        query = urlencode({"room": JANUS_ROOM, "display": f"participant-{i}"})
        return [
            "--base-url", origin,
            "--page-url", f"{origin}/bench/call.html?{query}", "--page-file", str(JANUS_PAGE),
        ]  # fmt: skip

    try:
        server.create_room(JANUS_ROOM, publishers=max(parties, 2))
        yield Server("janus", page_args, lambda: _janus_problems(server.log_path))
    finally:
        server.stop()


def run_scenario(
    scenario: Scenario, kind: str, args: argparse.Namespace, work: Path, say: Say
) -> dict[str, Any]:
    """One call in a fresh network and SFU (``kind``: huddle or janus); its raw results."""
    work.mkdir(parents=True)
    phases = args.warmup_s + args.measure_s + (args.recover_s if scenario.lift else 0)
    driver_timeout = LAUNCH_TIMEOUT_S + JOIN_TIMEOUT_S * scenario.parties + phases + 60
    raw: dict[str, Any] = {"scenario": asdict(scenario), "server": kind, "participants": []}
    with (
        network() as net,
        _huddle(net, work) if kind == "huddle" else _janus(net, work, scenario.parties) as server,
    ):
        browsers: list[Browser] = []
        try:
            for i in range(1, scenario.parties + 1):
                p = net.add_participant(
                    loss=scenario.loss,
                    jitter_ms=scenario.jitter_ms,
                    seed=args.seed,
                    max_s=driver_timeout + 30,
                    workdir=work,
                )
                if scenario.is_capped(i):
                    net.cap(p, scenario.cap_kbit, scenario.cap_kbit)
                steps = work / f"steps-{i}"
                steps.mkdir()
                out, log = work / f"participant-{i}.json", work / f"participant-{i}.log"
                command = p.command(
                    sys.executable, "-m", "benchmarks.call_page",
                    *server.page_args(i),
                    "--remotes", str(scenario.parties - 1), "--steps", str(steps),
                    "--profile-dir", str(work / f"profile-{i}"), "--out", str(out),
                    "--screenshot", str(work / f"participant-{i}.png"),
                    "--timeout-s", str(driver_timeout),
                )  # fmt: skip
                with log.open("wb") as sink:
                    proc = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                browsers.append(Browser(p, proc, steps, out, log))
            _wait_files(browsers, "launched", LAUNCH_TIMEOUT_S)
            for b in browsers:
                (b.steps / "turn").touch()
                _wait_files([b], "published", JOIN_TIMEOUT_S)
            _wait_files(browsers, "ready", JOIN_TIMEOUT_S)
            say(f"{scenario.name} ({kind}): all joined; {args.warmup_s:g} s warm-up")
            time.sleep(args.warmup_s)

            relays = {b.participant.relay.pid for b in browsers if b.participant.relay}
            pids = {n: [p for p in ps if p not in relays] for n, ps in net.namespace_pids().items()}
            cpu0 = {n: _cpu(ps) for n, ps in pids.items()}
            busy0 = machine_busy_seconds()
            t0 = time.monotonic()
            _touch_all(browsers, "go")
            time.sleep(args.measure_s)
            _touch_all(browsers, "end")
            window = time.monotonic() - t0
            cpu1 = {n: _cpu(ps) for n, ps in pids.items()}
            busy1 = machine_busy_seconds()
            lifted_at = None
            if scenario.lift:
                for b in browsers:
                    net.cap(b.participant, None, None)
                lifted_at = time.time() * 1000
                time.sleep(args.recover_s)
            _touch_all(browsers, "stop")
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for b in browsers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    b.proc.wait(max(0.1, deadline - time.monotonic()))
        except Exception as failure:
            # Each page then says what it saw before it stops (its state, log, connections).
            _touch_all(browsers, "abort")
            for b in browsers:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    b.proc.wait(STOP_TIMEOUT_S / 3)
            pages = "\n".join(
                f"participant {b.participant.index}: {_driver_error(b)}" for b in browsers
            )
            raise RuntimeError(f"{scenario.name} ({kind}): {failure}\n{pages}") from failure
        finally:
            for b in browsers:
                _stop(b.proc, 5)
            net.stop_relays()
        cores = os.cpu_count() or 1
        raw["window_s"] = round(window, 2)
        raw["machine_busy"] = (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1e-9)
        raw["node_cpu_cores"] = _cpu_used(cpu0[net.hub], cpu1[net.hub]) / window
        raw["lifted_at_wall_ms"] = lifted_at
        raw["load_average"] = os.getloadavg()
        raw["cores"] = cores
        for b in browsers:
            result = json.loads(b.out.read_text()) if b.out.exists() else {"ok": False}
            if not result.get("ok"):
                raise RuntimeError(
                    f"{scenario.name}: participant {b.participant.index}: {_driver_error(b)}"
                )
            ns = b.participant.netns
            result["browser_cpu_cores"] = _cpu_used(cpu0[ns], cpu1[ns]) / window
            result["index"] = b.participant.index
            result["capped"] = scenario.is_capped(b.participant.index)
            result["cap_kbit"] = scenario.cap_kbit if result["capped"] else None
            if b.participant.relay_stats is not None and b.participant.relay_stats.exists():
                result["relay"] = json.loads(b.participant.relay_stats.read_text())
            raw["participants"].append(result)
        raw["node_problems"] = server.problems()
    return raw


# --- figures ----------------------------------------------------------------------------


def _stats(snapshot: dict[str, Any], pc: str, kind: str) -> list[dict[str, Any]]:
    return [s for s in snapshot[pc] if s["type"] == kind]


def _by_mid(stats: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["mid"]: s for s in stats if "mid" in s}


def _delta(before: dict[str, Any] | None, after: dict[str, Any], key: str) -> float:
    return float(after.get(key, 0)) - float((before or {}).get(key, 0))


def _transport_bytes(snapshot: dict[str, Any], key: str) -> float:
    return sum(
        float(s.get(key, 0))
        for pc in ("publisher", "subscriber")
        for s in _stats(snapshot, pc, "transport")
    )


def _server_tracks(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    server = snapshot.get("server") or {}
    return {t["track"]: t for t in server.get("subscribed", [])}


def participant_figures(result: dict[str, Any], lifted_at: float | None) -> dict[str, Any]:
    """What one participant received and sent during the window."""
    a, b = result["snapshots"][0], result["snapshots"][1]
    dt = (b["t"] - a["t"]) / 1000
    owner = {t["mid"]: t["participant"] for t in b["tracks"]}
    me = b["participant"]
    video0 = _by_mid(_stats(a, "subscriber", "inbound-rtp"))
    videos: list[dict[str, Any]] = []
    audios: list[dict[str, Any]] = []
    for mid, s in _by_mid(_stats(b, "subscriber", "inbound-rtp")).items():
        s0 = video0.get(mid)
        if s.get("kind") == "video":
            videos.append(
                {
                    "mid": mid,
                    "from": owner.get(mid),
                    "fps": _delta(s0, s, "framesDecoded") / dt,
                    "width": s.get("frameWidth"),
                    "height": s.get("frameHeight"),
                    "freezes": _delta(s0, s, "freezeCount"),
                    "freeze_s": _delta(s0, s, "totalFreezesDuration"),
                    "nacks": _delta(s0, s, "nackCount"),
                    "packets": _delta(s0, s, "packetsReceived"),
                    "lost": _delta(s0, s, "packetsLost"),
                }
            )
        elif s.get("kind") == "audio":
            samples = _delta(s0, s, "totalSamplesReceived")
            audios.append(
                {
                    "mid": mid,
                    "from": owner.get(mid),
                    "concealed_samples": _delta(s0, s, "concealedSamples"),
                    "samples": samples,
                }
            )
    server0, server1 = _server_tracks(a), _server_tracks(b)
    forwarded = sum(_delta(server0.get(k), t, "packets") for k, t in server1.items())
    retransmitted = sum(_delta(server0.get(k), t, "retransmitted") for k, t in server1.items())
    marks = result.get("first_frames") or {}
    first = min(marks.get("first", {}).values(), default=None)
    join = marks.get("join")
    return {
        "index": result["index"],
        "participant": me,
        "capped": result["capped"],
        "cap_kbit": result["cap_kbit"],
        "videos": videos,
        "audios": audios,
        "fps_min": min((v["fps"] for v in videos), default=None),
        "height_min": min((v["height"] or 0 for v in videos), default=None),
        "freezes": sum(v["freezes"] for v in videos),
        "freeze_s": sum(v["freeze_s"] for v in videos),
        "concealed": _share(
            sum(x["concealed_samples"] for x in audios), sum(x["samples"] for x in audios)
        ),
        "sfu_forwarded": forwarded,
        "sfu_retransmitted": retransmitted,
        "sfu_estimate_bps": [t.get("estimate_bps") for t in server1.values()],
        "sfu_layers": [t.get("layer") for t in server1.values() if t.get("kind") == "video"],
        "down_kbps": (_transport_bytes(b, "bytesReceived") - _transport_bytes(a, "bytesReceived"))
        * 8 / dt / 1000,
        "up_kbps": (_transport_bytes(b, "bytesSent") - _transport_bytes(a, "bytesSent"))
        * 8 / dt / 1000,
        # The first to join found nobody publishing: its wait was for the others.
        "first_frame_ms": None
        if first is None or join is None or result["index"] == 1
        else first - join,
        "recovery_s": _recovery_s(result.get("samples", []), lifted_at),
        "browser_cpu_cores": result["browser_cpu_cores"],
        "relay": result.get("relay"),
        # What its own video senders were asked to repair (NACKs from the SFU) and re-sent.
        "publisher_nacks": _sent_total(a, b, "nackCount"),
        "publisher_retransmitted": _sent_total(a, b, "retransmittedPacketsSent"),
        # The publisher's own estimate of its uplink at the window's end (its browser's).
        "publisher_estimate_kbps": max(
            (float(s.get("availableOutgoingBitrate", 0)) / 1000
             for s in _stats(b, "publisher", "candidate-pair") if s.get("nominated")),
            default=None,
        ),
        "window_s": dt,
        "stats_error": b.get("error"),
    }  # fmt: skip


def _sent_total(a: dict[str, Any], b: dict[str, Any], key: str) -> float:
    before = _by_mid(_stats(a, "publisher", "outbound-rtp"))
    after = _stats(b, "publisher", "outbound-rtp")
    return sum(
        _delta(before.get(s.get("mid", "")), s, key) for s in after if s.get("kind") == "video"
    )


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _recovery_s(samples: list[dict[str, Any]], lifted_at: float | None) -> float | None:
    """Seconds from the cap's lifting to the end of the first second in which every remote
    video decoded at least ``RECOVERED_FPS`` (None: not lifted, or never back)."""
    if lifted_at is None:
        return None
    for before, after in itertools.pairwise(samples):
        if after["wall"] <= lifted_at:
            continue
        dt = (after["wall"] - before["wall"]) / 1000
        if dt <= 0 or not after["frames"]:
            continue
        rates = [(n - before["frames"].get(mid, 0)) / dt for mid, n in after["frames"].items()]
        if min(rates) >= RECOVERED_FPS:
            return max(0.0, (float(after["wall"]) - lifted_at) / 1000)
    return None


def scenario_figures(raw: dict[str, Any]) -> dict[str, Any]:
    people = [participant_figures(r, raw["lifted_at_wall_ms"]) for r in raw["participants"]]
    videos = [v for p in people for v in p["videos"]]
    window = statistics.mean(p["window_s"] for p in people)
    forwarded = sum(p["sfu_forwarded"] for p in people)
    first_frames = [p["first_frame_ms"] for p in people if p["first_frame_ms"] is not None]
    capped = {p["participant"] for p in people if p["capped"]}
    others = [v for p in people if not p["capped"] for v in p["videos"] if v["from"] not in capped]
    recoveries = [p["recovery_s"] for p in people]
    return {
        "participants": people,
        "fps_min": min((v["fps"] for v in videos), default=None),
        "fps_mean": statistics.mean(v["fps"] for v in videos) if videos else None,
        "height_min": min((v["height"] or 0 for v in videos), default=None),
        "height_mean": statistics.mean(v["height"] or 0 for v in videos) if videos else None,
        "freezes": sum(v["freezes"] for v in videos),
        "freeze_ratio": _share(sum(v["freeze_s"] for v in videos), len(videos) * window),
        "concealed": _share(
            sum(a["concealed_samples"] for p in people for a in p["audios"]),
            sum(a["samples"] for p in people for a in p["audios"]),
        ),
        "rtx_ratio": _share(sum(p["sfu_retransmitted"] for p in people), forwarded),
        "sfu_retransmitted": sum(p["sfu_retransmitted"] for p in people),
        "sfu_forwarded": forwarded,
        "down_kbps_max": max(p["down_kbps"] for p in people),
        "up_kbps_max": max(p["up_kbps"] for p in people),
        "first_frame_ms": first_frames,
        "uncapped_fps_min": min((v["fps"] for v in others), default=None) if capped else None,
        "uncapped_height_min": min((v["height"] or 0 for v in others), default=None)
        if capped
        else None,
        "recovery_s": None
        if raw["lifted_at_wall_ms"] is None or None in recoveries
        else max(r for r in recoveries if r is not None),
        "browsers_cpu_cores": sum(p["browser_cpu_cores"] for p in people),
        "browser_cpu_cores_max": max(p["browser_cpu_cores"] for p in people),
        "node_cpu_cores": raw["node_cpu_cores"],
        "machine_busy": raw["machine_busy"],
        "machine_bound": raw["machine_busy"] >= SATURATED,
        "load_average": raw["load_average"],
        "window_s": window,
        "node_problems": raw["node_problems"],
    }


def headline(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The summary's figures of one SFU's scenarios (None where a scenario was not run)."""

    def pick(name: str, key: str) -> Any:
        return results[name][key] if name in results else None

    first_frames = [ms for r in results.values() for ms in r["first_frame_ms"]]
    return {
        "freeze_ratio_1mbit": pick("1mbit", "freeze_ratio"),
        "audio_concealed_1mbit": pick("1mbit", "concealed"),
        "rtx_ratio_1mbit": pick("1mbit", "rtx_ratio"),
        "fps_min_1mbit": pick("1mbit", "fps_min"),
        "audio_concealed_300kbit": pick("300kbit", "concealed"),
        "recovery_s_300kbit": pick("300kbit", "recovery_s"),
        "fps_min_uncapped_none": pick("none", "fps_min"),
        "fps_min_uncapped_one_capped": pick("one_capped", "uncapped_fps_min"),
        "first_frame_ms_p50": percentile(first_frames, 50),
        "first_frame_ms_max": max(first_frames, default=None),
        "machine_bound_scenarios": [n for n, r in results.items() if r["machine_bound"]],
    }


# "No worse than Janus", figure by figure: Huddle's minus Janus's, within what one run's noise
# moves (a lower figure is better, but for fps).
VERSUS_JANUS: Final = (
    ("freeze_ratio_1mbit", "freeze ratio, 1 Mbit/s", 0.005, False),
    ("audio_concealed_1mbit", "audio concealed, 1 Mbit/s", 0.005, False),
    ("audio_concealed_300kbit", "audio concealed, 300 kbit/s", 0.005, False),
    ("fps_min_1mbit", "lowest remote fps, 1 Mbit/s", 1.0, True),
    ("first_frame_ms_p50", "join to first frame p50, ms", 100.0, False),
)


def _within(slack: float, higher_better: bool) -> Callable[[float], bool]:
    if higher_better:
        return lambda diff: diff >= -slack
    return lambda diff: diff <= slack


def summarize(
    results: dict[str, dict[str, Any]], janus: dict[str, dict[str, Any]] | None
) -> dict[str, Any]:
    summary = headline(results)
    summary["janus"] = None if janus is None else headline(janus)
    goals = {
        "freeze ratio, 1 Mbit/s": goal(
            summary["freeze_ratio_1mbit"],
            f"< {TARGET_FREEZE_RATIO}",
            lambda x: x < TARGET_FREEZE_RATIO,
        ),
        "audio concealed, 1 Mbit/s": goal(
            summary["audio_concealed_1mbit"], "< 0.02", lambda x: x < TARGET_CONCEALED
        ),
        "retransmitted / forwarded, 1 Mbit/s": goal(
            summary["rtx_ratio_1mbit"], "<= 0.10", lambda x: x <= TARGET_RTX_RATIO
        ),
        "lowest remote fps, 1 Mbit/s": goal(
            summary["fps_min_1mbit"], ">= 15", lambda x: x >= TARGET_FPS
        ),
        "audio concealed, 300 kbit/s": goal(
            summary["audio_concealed_300kbit"], "< 0.02", lambda x: x < TARGET_CONCEALED
        ),
        "video back after 300 kbit/s, s": goal(
            summary["recovery_s_300kbit"], "<= 3", lambda x: x <= TARGET_RECOVERY_S
        ),
        "join to first frame p50, ms": goal(
            summary["first_frame_ms_p50"], "< 1000", lambda x: x < TARGET_FIRST_FRAME_MS
        ),
    }
    none_fps, capped_fps = summary["fps_min_uncapped_none"], summary["fps_min_uncapped_one_capped"]
    goals["others' fps, one capped / none"] = goal(
        None if none_fps is None or capped_fps is None or none_fps == 0 else capped_fps / none_fps,
        ">= 0.9",
        lambda x: x >= 0.9,
    )
    for key, label, slack, higher_better in VERSUS_JANUS if janus is not None else ():
        ours, theirs = summary[key], summary["janus"][key]
        diff = None if ours is None or theirs is None else ours - theirs
        target = f">= -{slack:g}" if higher_better else f"<= {slack:g}"
        goals[f"{label}: Huddle - Janus"] = goal(diff, target, _within(slack, higher_better))
    summary["goals"] = goals
    return summary


# --- report -----------------------------------------------------------------------------


def _rtx(retransmitted: float, forwarded: float) -> str:
    """The SFU's counters; Janus has no ``call.stats``: nothing counted, nothing shown."""
    return f"{retransmitted:,.0f} / {forwarded:,.0f}" if forwarded else "-"


def _kbit(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def report(
    scenarios: dict[str, Scenario],
    results: dict[str, dict[str, Any]],
    janus: dict[str, dict[str, Any]] | None,
    summary: dict[str, Any],
) -> None:
    rows = []
    runs = [
        (name, kind, by_name[name])
        for name in scenarios
        for kind, by_name in (("huddle", results), ("janus", janus or {}))
        if name in by_name
    ]
    for name, kind, r in runs:
        s = scenarios[name]
        rows.append(
            (
                name,
                kind,
                str(s.parties),
                _kbit(s.cap_kbit) + ("" if s.capped == "all" else " (p1)"),
                pct(s.loss),
                fmt(r["fps_min"]),
                fmt(r["fps_mean"]),
                fmt(r["height_min"], 0),
                f"{r['freezes']:.0f}",
                pct(r["freeze_ratio"], 1),
                pct(r["concealed"], 1),
                _rtx(r["sfu_retransmitted"], r["sfu_forwarded"]),
                fmt(r["down_kbps_max"], 0),
                fmt(r["up_kbps_max"], 0),
                fmt(percentile(r["first_frame_ms"], 50), 0),
                fmt(r["recovery_s"]),
                f"{r['browsers_cpu_cores']:.2f}",
                f"{r['node_cpu_cores']:.2f}",
                pct(r["machine_busy"]) + (" !" if r["machine_bound"] else ""),
            )
        )
    header = (
        "scenario", "SFU", "n", "cap kbit/s", "loss", "fps min", "fps mean", "height min",
        "freezes", "frozen", "audio concealed", "SFU rtx / fwd", "down kbps max", "up kbps max",
        "1st frame ms p50", "back s", "browsers CPU", "SFU CPU", "machine busy",
    )  # fmt: skip
    print("call_quality: headless Chromium participants (CPU in cores)")
    print("\n".join(table(rows, header)))
    people = []
    for name, kind, r in runs:
        for p in r["participants"]:
            people.append(
                (
                    f"{name} {kind} p{p['index']}" + (" capped" if p["capped"] else ""),
                    fmt(p["fps_min"]),
                    fmt(p["height_min"], 0),
                    f"{p['freezes']:.0f}",
                    pct(p["concealed"], 1),
                    _rtx(p["sfu_retransmitted"], p["sfu_forwarded"]),
                    fmt(p["down_kbps"], 0),
                    fmt(p["up_kbps"], 0),
                    fmt(p["first_frame_ms"], 0),
                    f"{p['browser_cpu_cores']:.2f}",
                )
            )
    people_header = (
        "participant", "fps min", "height min", "freezes", "audio concealed",
        "SFU rtx / fwd", "down kbps", "up kbps", "1st frame ms", "browser CPU",
    )  # fmt: skip
    print()
    print("\n".join(table(people, people_header)))
    for line in goal_table(summary["goals"], 3):
        print(line)
    if summary["machine_bound_scenarios"]:
        print(
            "machine busy above "
            f"{SATURATED:.0%} in {', '.join(summary['machine_bound_scenarios'])}: those figures"
            " are the machine's (browsers' CPU), not the SFU's"
        )
    if janus is None:
        print("Janus VideoRoom baseline: not run")
    for name, kind, r in runs:
        if r["node_problems"]:
            print(f"{name} ({kind}): server problems: {r['node_problems']}")


# --- command line -----------------------------------------------------------------------


def _scenario_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.call_quality", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--scenarios",
        type=_scenario_names,
        default=list(SCENARIOS),
        help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 participants at 1 Mbit/s each, short phases",
    )
    parser.add_argument("--warmup-s", type=bounded(float, 0, 120), default=None)
    parser.add_argument("--measure-s", type=bounded(float, 2, 600), default=None)
    parser.add_argument("--recover-s", type=bounded(float, 1, 60), default=6.0)
    parser.add_argument("--seed", type=int, default=1, help="the relays' loss pattern")
    parser.add_argument(
        "--janus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run each scenario against Janus VideoRoom (default: when janus is"
        " installed, except with --quick)",
    )
    parser.add_argument("--keep", type=Path, help="keep logs, results and screenshots here")
    parser.add_argument("--json", type=Path, help="write every figure here, with a summary")
    args = parser.parse_args(argv)
    if args.quick:
        scenarios = {QUICK.name: QUICK}
        args.warmup_s = 2.0 if args.warmup_s is None else args.warmup_s
        args.measure_s = 4.0 if args.measure_s is None else args.measure_s
    else:
        scenarios = {name: SCENARIOS[name] for name in args.scenarios}
        args.warmup_s = 5.0 if args.warmup_s is None else args.warmup_s
        args.measure_s = 20.0 if args.measure_s is None else args.measure_s
    if args.janus is None:
        args.janus = janus_binary() is not None and not args.quick
    elif args.janus and janus_binary() is None:
        parser.error("--janus: janus is not installed (scripts/setup.sh --bench)")
    say = stderr_say(time.monotonic())
    load_start = os.getloadavg()
    say(f"load average {load_start[0]:.2f} on {os.cpu_count()} cores")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="call-quality-", dir=args.keep))
    results: dict[str, dict[str, Any]] = {}
    janus: dict[str, dict[str, Any]] | None = {} if args.janus else None
    failures: dict[str, str] = {}
    try:
        for name, scenario in scenarios.items():
            say(f"{name}: {scenario.describe()}")
            for kind, into in (("huddle", results), ("janus", janus)):
                if into is None:
                    continue
                try:
                    raw = run_scenario(scenario, kind, args, work / name / kind, say)
                except Exception as exc:  # the other scenarios still run; the exit status says
                    failures[f"{name} ({kind})"] = str(exc)
                    say(f"{name} ({kind}) FAILED: {str(exc)[:4000]}")
                    continue
                r = into[name] = scenario_figures(raw)
                say(
                    f"{name} ({kind}): fps min {fmt(r['fps_min'])}, audio concealed "
                    f"{pct(r['concealed'], 1)}, frozen {pct(r['freeze_ratio'], 1)}"
                )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"logs and screenshots kept in {work}")
    summary = summarize(results, janus)
    summary["failed"] = sorted(failures)
    report(scenarios, results, janus, summary)
    for what in failures:
        print(f"{what}: FAILED (see the JSON's failures or the log above)")
    if args.json:
        config = {
            "scenarios": {n: asdict(s) for n, s in scenarios.items()},
            "warmup_s": args.warmup_s,
            "measure_s": args.measure_s,
            "recover_s": args.recover_s,
            "quick": args.quick,
            "janus": args.janus,
        }
        write_json(
            args.json,
            "call_quality",
            {
                "config": config,
                "scenarios": results,
                "janus": janus,
                "failures": failures,
                "summary": summary,
            },
            machine_extra={"load_average_start": load_start, "load_average_end": os.getloadavg()},
            say=say,
        )
    return 1 if failures else 0


if __name__ == "__main__":
    run_main(main)
