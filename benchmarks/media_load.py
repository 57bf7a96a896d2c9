"""Media store load: upload/download throughput, server memory during a large upload,
thumbnail rate; beside a plain file copy and aiohttp's own static file serving.

    python -m benchmarks.media_load                         # 1 and 200 MiB, 1 and 32 clients
    python -m benchmarks.media_load --quick --json results/media.json
    python -m benchmarks.media_load --sizes-mib 1,50 --clients 1,8 --rss-upload-mib 512
    python -m benchmarks.media_load --url http://a:8080,http://b:8080 --api-key K --api-secret S

It starts ``huddle serve`` (embedded Redis, a throwaway data folder on the disk of
``--work-dir``) and an aiohttp static file server (the baseline), both on 127.0.0.1. For
each file size and client count it uploads unique files (``POST /v1/media``, generated
chunks, nothing read from disk by the driver) and downloads one stored file from Huddle
and the same file from the static server. Then one large upload with the server's RSS
sampled every 20 ms, and a burst of JPEG uploads whose thumbnails the worker pool makes.
The driver is this one process (asyncio); its CPU share is reported beside each phase so
that a driver-bound figure is not read as the server's limit. Every phase is bounded.

With ``--url`` it loads a running deployment instead (benchmarks/target.py): no server and
no baseline started; client i talks to node i mod N (each node downloads the files it
stored), and the server's CPU and memory come from the nodes' /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import psutil
from aiohttp import web
from PIL import Image

from benchmarks.common import json_document, run_main, write_json
from benchmarks.procs import (
    bounded,
    free_port,
    huddle_command,
    serve_until_signal,
    start_logged,
    stop_process,
    wait_healthy,
)
from benchmarks.progress import phase_bar
from benchmarks.target import (
    Deployment,
    NodeClock,
    StartMissed,
    add_deployment_args,
    add_start_at_arg,
    deployment,
    sample_node,
    shard_of,
    start_instant,
)
from signaling.auth import mint_token

MIB: Final = 1024 * 1024
CHUNK: Final = MIB
PHASE_TIMEOUT_S: Final = 600.0
RSS_SAMPLE_S: Final = 0.02
# --url: a node's memory comes from its /metrics, a request each time.
REMOTE_RSS_SAMPLE_S: Final = 0.1
MAX_ROUNDS: Final = 512
API_KEY: Final = "bench"
TARGET_DOWNLOAD_VS_STATIC: Final = 0.7
TARGET_RSS_GROWTH_MIB: Final = 50.0
THUMB_EDGE: Final = (1600, 1200)


@dataclass
class Phase:
    name: str
    size_mib: float
    clients: int
    seconds: float
    mib_per_s: float
    driver_cpu: float  # share of one core the driver used
    server_cpu: float
    errors: int = 0
    # Server CPU per request (its process, all threads; not Redis), milliseconds.
    server_ms_per_request: float = 0.0
    # What moved: the counts benchmarks.merge adds across shards.
    bytes: int = 0
    requests: int = 0

    @classmethod
    def measured(
        cls, name: str, size_mib: float, clients: int, meter: Meter, total: int, errors: int
    ) -> Phase:
        """The phase ``meter`` timed, in which ``total`` bytes moved."""
        return cls(
            name,
            size_mib,
            clients,
            meter.seconds,
            total / MIB / meter.seconds,
            meter.driver,
            meter.server_cpu,
            errors,
            bytes=total,
            requests=round(total / (size_mib * MIB)),
        )

    def __post_init__(self) -> None:
        requests = self.mib_per_s * self.seconds / self.size_mib
        self.server_ms_per_request = self.server_cpu * self.seconds / max(requests, 1) * 1e3


class Meter:
    """CPU of the driver and the server over one phase: the server's process, or with
    ``urls`` the nodes of a deployment from their /metrics (every node together)."""

    def __init__(self, server_pid: int | None = None, urls: tuple[str, ...] = ()) -> None:
        self.server = psutil.Process(server_pid) if server_pid is not None else None
        self.urls = urls
        self.me = psutil.Process()

    def __enter__(self) -> Meter:
        self.nodes = NodeClock(self.urls) if self.server is None else None
        self.t0 = time.monotonic()
        self.c0 = self._cpu(self.me)
        self.s0 = self._cpu(self.server) if self.server is not None else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.t0
        self.driver = (self._cpu(self.me) - self.c0) / max(self.seconds, 1e-9)
        if self.server is not None:
            server_s = self._cpu(self.server) - self.s0
        else:
            assert self.nodes is not None
            server_s = sum(self.nodes.stop().node_s)
        self.server_cpu = server_s / max(self.seconds, 1e-9)

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        t = proc.cpu_times()
        return float(t.user + t.system + t.children_user + t.children_system)


# Bytes sent and received by every client so far: what the progress bars read.
moved = [0]


def moved_mib() -> float:
    return moved[0] / MIB


async def generated(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes, unique per call (a random first block), made on the fly."""
    block = bytearray(secrets.token_bytes(CHUNK))
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        block[:8] = sent.to_bytes(8, "little")
        yield bytes(block[:n])
        sent += n
        moved[0] += n


async def upload(http: aiohttp.ClientSession, url: str, token: str, size: int) -> dict[str, Any]:
    async with http.post(
        f"{url}/v1/media",
        data=generated(size),
        headers={"Authorization": f"Bearer {token}", "Content-Length": str(size)},
        params={"name": "bench.bin"},
    ) as resp:
        body: dict[str, Any] = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"upload refused: {resp.status} {body}")
        return body


async def largest_upload(
    http: aiohttp.ClientSession, url: str, auth: dict[str, str], wanted: int
) -> int:
    """``wanted`` bytes, or less where the node's upload limit or what is left of the
    user's quota is below it (``GET /v1/media/usage``): a deployment's defaults (100 MiB a
    file) are below the 1 GiB that the memory measurement uploads on a node of its own."""
    async with http.get(f"{url}/v1/media/usage", headers=auth) as resp:
        usage: dict[str, Any] = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"usage refused: {resp.status} {usage}")
    room = [wanted, int(usage["max_upload"])]
    if usage.get("quota") is not None:
        room.append(int(usage["quota"]) - int(usage["total"]))
    return max(1, min(room))


async def download(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    got = 0
    async with http.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"download refused: {resp.status}")
        async for chunk in resp.content.iter_chunked(CHUNK):
            got += len(chunk)
            moved[0] += len(chunk)
    return got


async def run_clients(
    clients: int, job: Callable[[int], Awaitable[int]], what: str = "", mib: float | None = None
) -> tuple[int, int]:
    """``job`` for each client at once; ``what`` and ``mib`` (the MiB the phase moves) are
    its progress bar's."""
    start = moved_mib()
    with phase_bar(
        what,
        total=mib,
        done=(lambda: moved_mib() - start) if mib else None,
        count=moved_mib if mib else None,
        unit="MiB/s",
    ):
        results = await asyncio.wait_for(
            asyncio.gather(*(job(i) for i in range(clients)), return_exceptions=True),
            PHASE_TIMEOUT_S,
        )
    ok = sum(r for r in results if isinstance(r, int))
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]!r}", file=sys.stderr)
    return ok, len(errors)


async def rss_peak(pid: int, stop: asyncio.Event) -> int:
    proc = psutil.Process(pid)
    peak = 0
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            peak = max(peak, proc.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_S)
    return peak


def repeats(phase_mib: float, size_mib: float, clients: int) -> int:
    """Requests per client so that a phase moves at least ``phase_mib`` (short phases
    measure connection set-up and timer resolution, not throughput)."""
    return max(1, min(MAX_ROUNDS, math.ceil(phase_mib / (size_mib * clients))))


def copy_baseline(work: Path, size: int) -> float:
    """MiB/s of copying a file on the same disk (write it, drop nothing, copy, fsync)."""
    src = work / "copy-src.bin"
    dst = work / "copy-dst.bin"
    with src.open("wb") as f:
        block = secrets.token_bytes(CHUNK)
        for _ in range(size // CHUNK):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    start = time.monotonic()
    shutil.copyfile(src, dst)
    with dst.open("rb+") as f:
        os.fsync(f.fileno())
    seconds = time.monotonic() - start
    src.unlink()
    dst.unlink()
    return size / MIB / seconds


def jpeg_bytes(seed: int) -> bytes:
    """A photo-like JPEG (smooth gradients, some grain), different for each seed."""
    grad = Image.linear_gradient("L").resize(THUMB_EDGE)
    grain = Image.effect_noise(THUMB_EDGE, 15 + seed % 10)
    im = Image.merge("RGB", (grad, grad.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grain))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="media-bench-", dir=args.work_dir))
    secret = secrets.token_urlsafe(32)
    token = mint_token(api_key=API_KEY, api_secret=secret, identity="bench", ttl_s=3600)
    port, static_port = free_port(), free_port()
    static_root = work / "static"
    static_root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_") and k != "REDIS_URL"}
    env.update(
        HUDDLE_API_KEY=API_KEY,
        HUDDLE_API_SECRET=secret,
        HUDDLE_MEDIA_MAX_UPLOAD_BYTES=str(4096 * MIB),
        HUDDLE_MEDIA_QUOTA_BYTES="0",
        HUDDLE_SFU_WORKERS="0",
    )
    node_log = work / "node.log"
    node = start_logged(
        huddle_command(port, work / "node", "--log-level", "warning"), env, node_log
    )
    # The baseline runs on the node's event loop (uvloop, which has no sendfile: aiohttp
    # then reads the file in chunks, as Huddle does); a second one on asyncio's default loop
    # (kernel sendfile) is shown for reference.
    static = start_logged(
        [
            sys.executable,
            "-m",
            "benchmarks.media_load",
            "--static-server",
            str(static_port),
            "--static-root",
            str(static_root),
            "--static-loop",
            "uvloop",
        ],
        env,
        work / "static.log",
    )
    sendfile_port = free_port()
    sendfile = start_logged(
        [
            sys.executable,
            "-m",
            "benchmarks.media_load",
            "--static-server",
            str(sendfile_port),
            "--static-root",
            str(static_root),
            "--static-loop",
            "asyncio",
        ],
        env,
        work / "sendfile.log",
    )
    url = f"http://127.0.0.1:{port}"
    static_url = f"http://127.0.0.1:{static_port}"
    sendfile_url = f"http://127.0.0.1:{sendfile_port}"
    phases: list[Phase] = []
    results: dict[str, Any] = {"phases": phases}
    try:
        await asyncio.to_thread(wait_healthy, url, node, node_log)
        await asyncio.to_thread(wait_healthy, static_url, static, work / "static.log")
        await asyncio.to_thread(wait_healthy, sendfile_url, sendfile, work / "sendfile.log")
        auth = {"Authorization": f"Bearer {token}"}
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=PHASE_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            for size_mib in args.sizes_mib:
                size = int(size_mib * MIB)
                stored: list[dict[str, Any]] = []
                for clients in args.clients:
                    rounds = repeats(args.phase_mib, size_mib, clients)

                    async def up(
                        i: int,
                        size: int = size,
                        stored: list[dict[str, Any]] = stored,
                        rounds: int = rounds,
                    ) -> int:
                        for _ in range(rounds):
                            stored.append(await upload(http, url, token, size))
                        return size * rounds

                    with Meter(node.pid) as m:
                        total, errors = await run_clients(
                            clients,
                            up,
                            f"upload {size_mib:g} MiB x{clients}",
                            size_mib * rounds * clients,
                        )
                    phases.append(Phase.measured("upload", size_mib, clients, m, total, errors))
                    # Keep the disk bounded: the files are not needed any more.
                    for meta in stored[1:]:
                        async with http.delete(f"{url}/v1/media/{meta['id']}", headers=auth):
                            pass
                    del stored[1:]
                media_id = stored[0]["id"]
                static_file = static_root / f"f{size_mib}.bin"
                async with http.get(f"{url}/v1/media/{media_id}", headers=auth) as resp:
                    with static_file.open("wb") as f:
                        async for chunk in resp.content.iter_chunked(CHUNK):
                            f.write(chunk)
                for clients in args.clients:
                    for name, target, headers in (
                        ("download", f"{url}/v1/media/{media_id}", auth),
                        ("static", f"{static_url}/static/{static_file.name}", {}),
                        ("sendfile", f"{sendfile_url}/static/{static_file.name}", {}),
                    ):

                        async def down(
                            i: int,
                            target: str = target,
                            h: dict[str, str] = headers,
                            rounds: int = repeats(args.phase_mib, size_mib, clients),
                        ) -> int:
                            return sum([await download(http, target, h) for _ in range(rounds)])

                        await download(http, target, headers)  # warm the page cache
                        server = {"download": node, "static": static, "sendfile": sendfile}[name]
                        with Meter(server.pid) as m:
                            total, errors = await run_clients(
                                clients,
                                down,
                                f"{name} {size_mib:g} MiB x{clients}",
                                size_mib * repeats(args.phase_mib, size_mib, clients) * clients,
                            )
                        phases.append(Phase.measured(name, size_mib, clients, m, total, errors))
                static_file.unlink()
                async with http.delete(f"{url}/v1/media/{media_id}", headers=auth):
                    pass

            # Memory during one large upload.
            await asyncio.sleep(0.5)
            base_rss = psutil.Process(node.pid).memory_info().rss
            stop = asyncio.Event()
            sampler = asyncio.create_task(rss_peak(node.pid, stop))
            with Meter(node.pid) as m:
                big = await upload(http, url, token, int(args.rss_upload_mib * MIB))
            stop.set()
            peak = await sampler
            results["rss"] = {
                "upload_mib": args.rss_upload_mib,
                "base_mib": base_rss / MIB,
                "peak_mib": peak / MIB,
                "growth_mib": (peak - base_rss) / MIB,
                "upload_mib_per_s": args.rss_upload_mib / m.seconds,
            }
            async with http.delete(f"{url}/v1/media/{big['id']}", headers=auth):
                pass

            # Thumbnails: JPEG uploads, each one decoded and thumbnailed in the worker pool.
            pictures = [jpeg_bytes(i) for i in range(args.thumbs)]
            sem = asyncio.Semaphore(4)

            async def picture(i: int) -> int:
                async with (
                    sem,
                    http.post(
                        f"{url}/v1/media", data=pictures[i], headers=auth, params={"name": "p.jpg"}
                    ) as resp,
                ):
                    body = await resp.json()
                    if resp.status != 201 or body.get("thumbnails") != ["small", "large"]:
                        raise RuntimeError(f"picture refused: {resp.status} {body}")
                    return 1

            with Meter(node.pid) as m:
                done, errors = await run_clients(args.thumbs, picture, "thumbnails")
            results["thumbnails"] = {
                "images": done,
                "size": list(THUMB_EDGE),
                "per_s": done / m.seconds,
                "errors": errors,
                "server_cpu": m.server_cpu,
            }
        results["copy_baseline_mib_per_s"] = await asyncio.to_thread(
            copy_baseline, work, int(max(args.sizes_mib) * MIB)
        )
    finally:
        stop_process(node)
        stop_process(static)
        stop_process(sendfile)
        shutil.rmtree(work, ignore_errors=True)
    return results


async def remote_rss_peak(url: str, stop: asyncio.Event) -> int:
    """The largest resident memory of a node's processes (/metrics, every role) until ``stop``."""
    peak = 0
    while not stop.is_set():
        sample = await asyncio.to_thread(sample_node, url)
        peak = max(peak, int(sum(sample.rss.values())))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REMOTE_RSS_SAMPLE_S)
    return peak


def share(total: int, shard: tuple[int, int]) -> int:
    """Shard I's share of ``total`` (of N): total // N, the first total % N one more."""
    i, n = shard
    return total // n + (1 if i <= total % n else 0)


async def bench_deployment(args: argparse.Namespace, target: Deployment) -> dict[str, Any]:
    """--url: uploads, downloads, one large upload and thumbnails against running nodes;
    with --shard I/N, this shard's share of each phase's clients (each doing the rounds of
    the whole phase) and of the thumbnails, and its own large upload."""
    shard = args.shard
    # The shards' clients and large uploads start on different nodes.
    urls = target.urls[shard[0] - 1 :] + target.urls[: shard[0] - 1]
    token = mint_token(
        api_key=target.api_key,
        api_secret=target.api_secret,
        identity=f"{target.users}-media",
        ttl_s=3600,
    )
    auth = {"Authorization": f"Bearer {token}"}
    phases: list[Phase] = []
    results: dict[str, Any] = {"phases": phases, "url": list(target.urls), "users": target.users}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=PHASE_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def delete(url: str, media_id: str) -> None:
            async with http.delete(f"{url}/v1/media/{media_id}", headers=auth):
                pass

        for size_mib in args.sizes_mib:
            size = int(size_mib * MIB)
            # One kept file per node: downloads go to the node that stored it.
            kept = {u: (await upload(http, u, token, size))["id"] for u in urls}
            for all_clients in args.clients:
                rounds = repeats(args.phase_mib, size_mib, all_clients)
                clients = share(all_clients, shard)

                async def up(i: int, size: int = size, rounds: int = rounds) -> int:
                    url = urls[i % len(urls)]
                    for _ in range(rounds):
                        await delete(url, (await upload(http, url, token, size))["id"])
                    return size * rounds

                async def down(
                    i: int, size: int = size, rounds: int = rounds, kept: dict[str, str] = kept
                ) -> int:
                    url = urls[i % len(urls)]
                    got = 0
                    for _ in range(rounds):
                        n = await download(http, f"{url}/v1/media/{kept[url]}", auth)
                        if n != size:
                            raise RuntimeError(f"download of {size} bytes gave {n}")
                        got += n
                    return got

                for name, job in (("upload", up), ("download", down)):
                    if "started_at" not in results:
                        # --start-at: the first phase then, the others as soon as ready.
                        first = start_instant(args.start_at)
                        if first is not None:
                            await asyncio.sleep(max(0.0, first - time.monotonic()))
                        results["started_at"] = time.time()
                    with Meter(urls=urls) as m:
                        total, errors = await run_clients(
                            clients,
                            job,
                            f"{name} {size_mib:g} MiB x{clients}",
                            size_mib * rounds * clients,
                        )
                    phases.append(Phase.measured(name, size_mib, clients, m, total, errors))
            for url, media_id in kept.items():
                await delete(url, media_id)

        # Memory of the first node during one large upload, within what the deployment
        # takes (its upload limit and what is left of this user's quota).
        big_size = await largest_upload(http, urls[0], auth, int(args.rss_upload_mib * MIB))
        base = int(sum(sample_node(urls[0]).rss.values()))
        stop = asyncio.Event()
        sampler = asyncio.create_task(remote_rss_peak(urls[0], stop))
        with Meter(urls=urls[:1]) as m:
            big = await upload(http, urls[0], token, big_size)
        stop.set()
        peak = max(await sampler, base)
        results["rss"] = {
            "upload_mib": big_size / MIB,
            "base_mib": base / MIB,
            "peak_mib": peak / MIB,
            "growth_mib": (peak - base) / MIB,
            "upload_mib_per_s": big_size / MIB / m.seconds,
        }
        await delete(urls[0], big["id"])

        pictures = [jpeg_bytes(i) for i in range(share(args.thumbs, shard))]
        sem = asyncio.Semaphore(4)
        stored: list[tuple[str, str]] = []

        async def picture(i: int) -> int:
            url = urls[i % len(urls)]
            async with (
                sem,
                http.post(
                    f"{url}/v1/media", data=pictures[i], headers=auth, params={"name": "p.jpg"}
                ) as resp,
            ):
                body = await resp.json()
                if resp.status != 201 or body.get("thumbnails") != ["small", "large"]:
                    raise RuntimeError(f"picture refused: {resp.status} {body}")
                stored.append((url, body["id"]))
                return 1

        with Meter(urls=urls) as m:
            done, errors = await run_clients(len(pictures), picture, "thumbnails")
        for url, media_id in stored:
            await delete(url, media_id)
        results["thumbnails"] = {
            "images": done,
            "size": list(THUMB_EDGE),
            "per_s": done / m.seconds,
            "errors": errors,
            "server_cpu": m.server_cpu,
        }
    results["copy_baseline_mib_per_s"] = None
    return results


def summarize_deployment(results: dict[str, Any]) -> dict[str, Any]:
    """--url: no baseline to compare with; the figures and the errors."""
    phases: list[Phase] = results["phases"]
    largest = max(p.size_mib for p in phases)
    growth = results["rss"]["growth_mib"]
    return {
        "server_ms_per_request": {
            f"{p.size_mib:g}MiB x{p.clients} {p.name}": p.server_ms_per_request for p in phases
        },
        "upload_rss_growth_mib": growth,
        "upload_mib_per_s_largest": {
            str(p.clients): p.mib_per_s
            for p in phases
            if p.name == "upload" and p.size_mib == largest
        },
        "thumbnails_per_s": results["thumbnails"]["per_s"],
        "errors": sum(p.errors for p in phases) + results["thumbnails"]["errors"],
        "bytes": sum(p.bytes for p in phases),
        "targets": {"upload_rss_growth_mib": TARGET_RSS_GROWTH_MIB},
        "met": growth < TARGET_RSS_GROWTH_MIB,
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    phases: list[Phase] = results["phases"]

    def rate(name: str, size: float, clients: int) -> float:
        return next(
            p.mib_per_s for p in phases if (p.name, p.size_mib, p.clients) == (name, size, clients)
        )

    reference = [
        p.mib_per_s / rate("sendfile", p.size_mib, p.clients)
        for p in phases
        if p.name == "download"
    ]
    ratios = [
        p.mib_per_s / rate("static", p.size_mib, p.clients) for p in phases if p.name == "download"
    ]
    largest = max(p.size_mib for p in phases)
    growth = results["rss"]["growth_mib"]
    return {
        "download_vs_aiohttp_static": min(ratios),
        "download_vs_aiohttp_static_each": ratios,
        "download_vs_aiohttp_static_sendfile_each": reference,
        "server_ms_per_request": {
            f"{p.size_mib:g}MiB x{p.clients}": {
                q.name: q.server_ms_per_request
                for q in phases
                if q.name != "upload" and (q.size_mib, q.clients) == (p.size_mib, p.clients)
            }
            for p in phases
            if p.name == "download"
        },
        "upload_rss_growth_mib": growth,
        "upload_mib_per_s_largest": {
            str(p.clients): p.mib_per_s
            for p in phases
            if p.name == "upload" and p.size_mib == largest
        },
        "copy_baseline_mib_per_s": results["copy_baseline_mib_per_s"],
        "thumbnails_per_s": results["thumbnails"]["per_s"],
        "targets": {
            "download_vs_aiohttp_static": TARGET_DOWNLOAD_VS_STATIC,
            "upload_rss_growth_mib": TARGET_RSS_GROWTH_MIB,
        },
        "met": min(ratios) >= TARGET_DOWNLOAD_VS_STATIC and growth < TARGET_RSS_GROWTH_MIB,
    }


def print_table(results: dict[str, Any], summary: dict[str, Any]) -> None:
    head = ("phase", "MiB", "clients", "MiB/s", "s", "server cpu", "ms/req", "driver cpu")
    print("{:<9} {:>7} {:>7} {:>9} {:>7} {:>10} {:>8} {:>10}".format(*head))
    for p in results["phases"]:
        errors = f"  errors={p.errors}" if p.errors else ""
        print(
            f"{p.name:<9} {p.size_mib:>7g} {p.clients:>7} {p.mib_per_s:>9.1f} {p.seconds:>7.2f}"
            f" {p.server_cpu:>10.2f} {p.server_ms_per_request:>8.3f}"
            f" {p.driver_cpu:>10.2f}{errors}"
        )
    rss = results["rss"]
    print(
        f"large upload: {rss['upload_mib']:g} MiB at {rss['upload_mib_per_s']:.1f} MiB/s, "
        f"server RSS {rss['base_mib']:.1f} -> peak {rss['peak_mib']:.1f} MiB "
        f"(growth {rss['growth_mib']:.1f} MiB, target < {TARGET_RSS_GROWTH_MIB:g})"
    )
    th = results["thumbnails"]
    print(
        f"thumbnails: {th['images']} JPEGs {th['size'][0]}x{th['size'][1]} at {th['per_s']:.1f}/s"
    )
    if results["copy_baseline_mib_per_s"] is None:
        print(f"against {', '.join(results['url'])}: no baseline (server CPU from /metrics)")
        return
    print(f"plain file copy (same disk): {results['copy_baseline_mib_per_s']:.1f} MiB/s")
    print(
        f"download vs aiohttp static (worst case): {summary['download_vs_aiohttp_static']:.2f}"
        f" (target >= {TARGET_DOWNLOAD_VS_STATIC})"
    )


def parse_list(kind: type[int] | type[float]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(x) for x in text.split(",") if x.strip()]

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.media_load", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--sizes-mib", type=parse_list(float), default=[1.0, 200.0])
    parser.add_argument("--clients", type=parse_list(int), default=[1, 32])
    parser.add_argument("--rss-upload-mib", type=bounded(float, 1, 8192), default=1024.0)
    parser.add_argument("--thumbs", type=bounded(int, 1, 1000), default=40)
    parser.add_argument(
        "--phase-mib",
        type=bounded(float, 1, 65536),
        default=512.0,
        help="each phase repeats requests until it moved at least this much",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of seconds")
    parser.add_argument(
        "--work-dir", default=None, help="folder on the disk to measure (default: temp)"
    )
    parser.add_argument("--json", type=Path, help="write every figure here, with a summary")
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write DIR/index.html with plots"
    )
    add_deployment_args(parser)
    parser.add_argument(
        "--shard",
        type=shard_of,
        default=(1, 1),
        metavar="I/N",
        help="with --url: run shard I of N on this machine (its share of every phase's clients "
        "and of the thumbnails, a user of its own, the same phases); benchmarks.merge adds "
        "the shards' JSON up",
    )
    add_start_at_arg(parser, "the first upload phase")
    parser.add_argument("--static-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--static-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--static-loop", default="uvloop", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.static_server:
        return _static_server(args.static_server, args.static_root, args.static_loop)
    if args.quick:
        args.sizes_mib, args.clients, args.rss_upload_mib = [1.0, 8.0], [1, 4], 64.0
        args.thumbs, args.phase_mib = 6, 32.0
    if any(not 0 < s <= 2048 for s in args.sizes_mib) or any(
        not 1 <= c <= 64 for c in args.clients
    ):
        parser.error("sizes must be in (0, 2048] MiB and clients in [1, 64]")
    target = deployment(parser, args)
    shard, shards = args.shard
    if shards > 1:
        if target is None:
            parser.error("--shard goes with --url: the shards load one deployment together")
        if min(args.clients) < shards or args.thumbs < shards:
            parser.error(
                f"--clients {','.join(map(str, args.clients))} and --thumbs {args.thumbs} "
                f"must each be at least the {shards} shards (every shard a client in each)"
            )
        target = dataclasses.replace(target, users=f"{target.users}s{shard}")
    if target is not None:
        try:
            results = asyncio.run(bench_deployment(args, target))
        except StartMissed as exc:
            print(f"media_load: {exc}", file=sys.stderr)
            return 1
        summary = summarize_deployment(results)
    else:
        results = asyncio.run(bench(args))
        summary = summarize(results)
    print_table(results, summary)
    config = {
        "sizes_mib": args.sizes_mib,
        "clients": args.clients,
        "phase_mib": args.phase_mib,
        "rss_upload_mib": args.rss_upload_mib,
        "thumbs": args.thumbs,
        "url": list(target.urls) if target is not None else None,
        "shard": [shard, shards],
        "users": target.users if target is not None else None,
        "start_at": args.start_at,
    }
    body = {
        "config": config,
        **results,
        "phases": [vars(p) for p in results["phases"]],
        "summary": summary,
    }
    if args.json:
        write_json(args.json, "media_load", body)
    if args.report:
        from benchmarks.report import write_report  # matplotlib: only when asked

        print(f"report: {write_report(json_document('media_load', body), args.report)}")
    return 0


def _static_server(port: int, root: Path, loop: str) -> int:
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", root)
    if loop == "uvloop":
        import uvloop

        uvloop.run(serve_until_signal(app, port))
    else:
        asyncio.run(serve_until_signal(app, port))
    return 0


if __name__ == "__main__":
    run_main(main)
