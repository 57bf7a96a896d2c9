"""``--report DIR``: a load test's figures as a folder to open in a browser.

``DIR/index.html`` shows the run's settings, its goals and PNG plots drawn with matplotlib
(Agg: no display needed) beside ``DIR/result.json``, the same document ``--json`` writes.
What is drawn depends on the benchmark: for chat, the latency CDF of each phase, deliveries
and latency per second, server CPU per delivery against the baseline, lost deliveries
per second of sending and the losses per phase; for the SFU, CPU per forwarded packet,
loss and delay by scenario against the baselines; for signaling, the round-trip CDF,
requests/s, CPU per request and memory per connection against the bare server; for media,
MiB/s and server CPU per request by phase.
``python -m benchmarks.report RESULT.json DIR`` draws it again from a saved (or merged)
result.
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import matplotlib

# Before pyplot is imported: files only, no display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from benchmarks.common import run_main
from benchmarks.histogram import Histogram

SIZE: Final = (7.0, 4.0)
DPI: Final = 100

Plot = tuple[str, str]  # (PNG file name, caption)


def _save(fig: Figure, folder: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=DPI)
    plt.close(fig)
    return name


def _axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=SIZE)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


# --- chat -------------------------------------------------------------------------------


def _chat_phases(doc: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(target, phase kind, figures) of every measured phase (not the warm-up)."""
    return [
        (target, kind, phase)
        for target, result in doc.get("results", {}).items()
        for kind, phase in result.get("phases", {}).items()
        if kind != "warm-up"
    ]


def chat_plots(doc: Mapping[str, Any], folder: Path) -> list[Plot]:
    phases = _chat_phases(doc)
    plots: list[Plot] = []

    fig, ax = _axes("Delivery latency, CDF", "latency (ms, log scale)", "share of deliveries")
    for target, kind, phase in phases:
        if phase.get("latency_histogram"):
            points = Histogram.from_json(phase["latency_histogram"]).cdf()
            if points:
                ax.step(*zip(*points, strict=True), where="post", label=f"{target} {kind}")
    ax.set_xscale("log")
    ax.legend(fontsize="small")
    plots.append((_save(fig, folder, "latency_cdf.png"), "Latency CDF of each phase"))

    fig, ax = _axes("Deliveries per second", "seconds into the phase", "deliveries/s")
    for target, kind, phase in phases:
        rows = phase.get("timeline") or []
        if rows:
            ax.plot([r[0] for r in rows], [r[1] for r in rows], label=f"{target} {kind}")
    ax.legend(fontsize="small")
    plots.append((_save(fig, folder, "throughput.png"), "Throughput over time"))

    fig, ax = _axes("Latency per second", "seconds into the phase", "ms (log scale)")
    for target, kind, phase in phases:
        rows = phase.get("timeline") or []
        if rows:
            t = [r[0] for r in rows]
            (line,) = ax.plot(t, [r[3] for r in rows], label=f"{target} {kind} p99")
            ax.plot(t, [r[2] for r in rows], ls="--", color=line.get_color(), label="p50")
    ax.set_yscale("log")
    ax.legend(fontsize="x-small", ncol=2)
    plots.append((_save(fig, folder, "latency_over_time.png"), "Latency over time"))

    labels, values = [], []
    for target, kind, phase in phases:
        rate = phase.get("deliveries_per_server_cpu_s")
        if rate:
            labels.append(f"{target}\n{kind}")
            values.append(1e6 / rate)
    fig, ax = _axes(
        "Server CPU per delivery (Huddle against the bare relay)", "", "µs of server CPU"
    )
    ax.bar(labels, values)
    plots.append((_save(fig, folder, "cpu_per_delivery.png"), "Server CPU per delivery"))

    fig, ax = _axes(
        "Lost deliveries per second of sending", "seconds into the phase", "deliveries lost"
    )
    for target, kind, phase in phases:
        rows = phase.get("loss_timeline") or []
        if rows:
            # Each second's lost deliveries to others and senders' own copies together.
            lost = [r[4] + r[5] for r in rows]
            (line,) = ax.plot([r[0] for r in rows], lost, marker=".", label=f"{target} {kind}")
            share = sum(lost) / max(1, sum(r[2] for r in rows))
            line.set_label(f"{target} {kind} ({100 * share:.2g} % of deliveries)")
    # Whole seconds from the phase's start, and a scale on which no loss reads as none.
    ax.set_xlim(left=0, right=max([1.0] + [p["seconds"] for *_, p in phases if "seconds" in p]))
    ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))
    ax.legend(fontsize="small")
    plots.append((_save(fig, folder, "loss.png"), "Loss over time"))

    fig, ax = _axes("Lost, duplicated and out-of-order deliveries", "", "deliveries")
    names = [f"{target}\n{kind}" for target, kind, _ in phases]
    width = 0.27
    for i, field in enumerate(("lost", "duplicated", "out_of_order")):
        ax.bar(
            [n + (i - 1) * width for n in range(len(phases))],
            [
                p.get(field, 0) + (p.get("lost_echo", 0) if field == "lost" else 0)
                for *_, p in phases
            ],
            width,
            label=field.replace("_", " "),
        )
    ax.set_xticks(range(len(phases)), names)
    ax.legend(fontsize="small")
    plots.append((_save(fig, folder, "losses.png"), "Losses by phase, over the run"))
    return plots


# --- SFU --------------------------------------------------------------------------------


def sfu_plots(doc: Mapping[str, Any], folder: Path) -> list[Plot]:
    results: Mapping[str, Mapping[str, Mapping[str, Any]]] = doc.get("results", {})
    scenarios = list(doc.get("config", {}).get("scenarios", []))
    plots: list[Plot] = []

    def bars(field: str, title: str, ylabel: str, name: str, scale: float = 1.0) -> None:
        fig, ax = _axes(title, "scenario (publishers x subscribers)", ylabel)
        width = 0.8 / max(1, len(results))
        for i, (target, by) in enumerate(results.items()):
            values = [(by.get(s, {}).get(field) or 0.0) * scale for s in scenarios]
            ax.bar([n + i * width for n in range(len(scenarios))], values, width, label=target)
        ax.set_xticks([n + width * (len(results) - 1) / 2 for n in range(len(scenarios))])
        ax.set_xticklabels(scenarios)
        ax.legend(fontsize="small")
        plots.append((_save(fig, folder, name), title))

    bars("cpu_us_per_packet", "Server CPU per forwarded packet", "µs", "cpu_per_packet.png")
    bars("loss", "Packet loss", "% of packets", "loss.png", 100.0)
    bars("delay_p99_ms", "One-way delay p99 through the server", "ms", "delay_p99.png")
    bars("packets_per_s", "Packets per second at the subscribers", "packets/s", "rate.png")
    return plots


# --- signaling and media ----------------------------------------------------------------


def _bars(
    folder: Path, name: str, title: str, ylabel: str, labels: list[str], values: list[float]
) -> Plot:
    fig, ax = _axes(title, "", ylabel)
    ax.bar(labels, values)
    ax.tick_params(axis="x", labelsize="small")
    return _save(fig, folder, name), title


def signaling_plots(doc: Mapping[str, Any], folder: Path) -> list[Plot]:
    targets = {k: doc[k] for k in ("huddle", "bare") if doc.get(k)}
    fig, ax = _axes("Round-trip time, CDF", "RTT (ms, log scale)", "share of requests")
    for target, result in targets.items():
        for phase in ("latency", "saturation"):
            figures = result.get(phase) or {}
            if figures.get("rtt_histogram"):
                points = Histogram.from_json(figures["rtt_histogram"]).cdf()
                if points:
                    ax.step(*zip(*points, strict=True), where="post", label=f"{target} {phase}")
    ax.set_xscale("log")
    ax.legend(fontsize="small")
    plots = [(_save(fig, folder, "rtt_cdf.png"), "Round-trip time CDF (paced and saturated)")]
    names = list(targets)
    plots.append(
        _bars(
            folder,
            "rate.png",
            "Requests per second, saturated",
            "requests/s",
            names,
            [(targets[t].get("saturation") or {}).get("rate_per_s") or 0.0 for t in names],
        )
    )
    plots.append(
        _bars(
            folder,
            "cpu_per_request.png",
            "Server CPU per request, saturated",
            "µs",
            names,
            [
                1e6 / rate
                if (rate := (targets[t].get("saturation") or {}).get("per_server_cpu_s"))
                else 0.0
                for t in names
            ],
        )
    )
    plots.append(
        _bars(
            folder,
            "memory_per_connection.png",
            "Server memory per idle connection",
            "KiB",
            names,
            [targets[t].get("kib_per_idle_connection") or 0.0 for t in names],
        )
    )
    return plots


def media_plots(doc: Mapping[str, Any], folder: Path) -> list[Plot]:
    phases = doc.get("phases", [])
    labels = [f"{p['name']}\n{p['size_mib']:g} MiB x{p['clients']}" for p in phases]
    return [
        _bars(
            folder,
            "throughput.png",
            "Throughput by phase",
            "MiB/s",
            labels,
            [p["mib_per_s"] for p in phases],
        ),
        _bars(
            folder,
            "cpu_per_request.png",
            "Server CPU per request",
            "ms",
            labels,
            [p["server_ms_per_request"] for p in phases],
        ),
    ]


CHARTS: Final[dict[str, Callable[[Mapping[str, Any], Path], list[Plot]]]] = {
    "chat_load": chat_plots,
    "sfu_load": sfu_plots,
    "signaling_load": signaling_plots,
    "media_load": media_plots,
}


# --- the page ---------------------------------------------------------------------------


def _rows(mapping: Mapping[str, Any]) -> str:
    return "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in mapping.items()
    )


def write_report(doc: Mapping[str, Any], folder: Path) -> Path:
    """``folder/index.html``, its PNGs and ``folder/result.json``; returns the page's path."""
    benchmark = str(doc.get("benchmark"))
    draw = CHARTS.get(benchmark)
    if draw is None:
        raise ValueError(f"no report for {benchmark!r} (reports: {', '.join(CHARTS)})")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(doc, indent=2) + "\n")
    plots = draw(doc, folder)
    goals = {
        name: f"{g.get('value')} (goal {g.get('target')}, met: {g.get('met')})"
        for name, g in doc.get("targets", {}).items()
        if isinstance(g, Mapping)
    }
    config = {k: v for k, v in doc.get("config", {}).items() if k != "api_secret"}
    images = "".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in plots
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(benchmark)} report</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:auto;padding:1rem}}
th{{text-align:left;padding-right:1rem}}img{{max-width:100%}}figure{{margin:1rem 0}}</style>
</head><body>
<h1>{html.escape(benchmark)}</h1>
<p>{html.escape(str(doc.get("date", "")))}; figures in <a href="result.json">result.json</a></p>
<h2>Summary</h2><table>{_rows(doc.get("summary", {}))}</table>
<h2>Goals</h2><table>{_rows(goals)}</table>
<h2>Plots</h2>{images}
<h2>Settings</h2><table>{_rows(config)}</table>
</body></html>
"""
    index = folder / "index.html"
    index.write_text(page)
    return index


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Draw a load test's report (index.html and PNG plots) from its JSON.",
    )
    ap.add_argument("result", type=Path, help="a --json result (or benchmarks.merge output)")
    ap.add_argument("folder", type=Path, help="where index.html and the plots go")
    args = ap.parse_args(argv)
    try:
        doc = json.loads(args.result.read_text())
        index = write_report(doc, args.folder)
    except (OSError, ValueError) as exc:
        ap.error(str(exc))
    print(index)
    return 0


if __name__ == "__main__":
    run_main(main)
