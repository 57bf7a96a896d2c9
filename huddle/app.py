"""Compose a node: Redis (embedded or external), broker, hub and the HTTP routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from chat.history import retention
from chat.history.archiver import Archiver
from chat.history.open import open_history
from chat.history.store import HistoryStore
from huddle import collector
from huddle.compose import calls_config, chat_config, history_config, media_config
from huddle.config import Settings
from huddle.http_guard import HTTP_GUARD, HttpGuard, NodeRunner
from huddle.process_metrics import process_collector
from huddle.redis_server import EmbeddedRedis
from media_store import routes as media_routes
from signaling.broker import Broker
from signaling.http_common import REDIS_CLIENT
from signaling.hub import Hub
from signaling.metrics import Metrics
from signaling.redis_client import CLUSTER_SCHEME, connect
from signaling.server import HISTORY_INFO, HUB, REDIS_INFO, SETTINGS, add_routes, json_errors
from signaling.tasks import cancel_and_wait

log = logging.getLogger("huddle.app")

EMBEDDED_REDIS = web.AppKey("embedded_redis", EmbeddedRedis)
HISTORY = web.AppKey("history", HistoryStore)
ARCHIVER = web.AppKey("archiver", Archiver)


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.data_dir, settings.redis_server, settings.redis_fsync)
        url = await embedded.start()
        app[EMBEDDED_REDIS] = embedded

    def info() -> dict[str, Any]:
        if embedded is None:
            return {"mode": "cluster" if url.startswith(f"{CLUSTER_SCHEME}://") else "external"}
        return {"mode": "embedded", "pid": embedded.pid, "restarts": embedded.restarts}

    app[REDIS_INFO] = info
    client = connect(url)
    app[REDIS_CLIENT] = client
    try:
        yield
    finally:
        await client.aclose()
        if embedded is not None:
            await embedded.stop()


async def _history_ctx(app: web.Application) -> AsyncIterator[None]:
    """The chat history store on disk, open for the node's life (see chat.history)."""
    config = history_config(app[SETTINGS])
    store = await open_history(config)
    app[HISTORY] = store
    tasks: list[asyncio.Task[None]] = []
    if config.history_retention_days > 0:
        tasks.append(
            asyncio.create_task(retention.retention_loop(store, config.history_retention_days))
        )
    try:
        yield
    finally:
        await cancel_and_wait(tasks, "history retention")
        await store.close()


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = app[REDIS_CLIENT]
    broker = Broker(client, settings.node_id)
    await broker.start()
    metrics = Metrics()
    metrics.pubsub_reconnects = lambda: broker.reconnects
    metrics.add_collector(app[HTTP_GUARD].collect)
    embedded = app.get(EMBEDDED_REDIS)
    metrics.add_collector(process_collector(lambda: embedded.pid if embedded else None))
    hub = Hub(
        settings,
        client,
        broker,
        metrics,
        {settings.api_key: settings.secret()},
        chat=chat_config(settings),
        calls=calls_config(settings),
    )
    app[HUB] = hub
    await broker.subscribe(broker.node_channel, hub.relay.on_message)
    await hub.calls.start()
    hub.start()
    try:
        yield
    finally:
        await broker.stop()


async def _archive_ctx(app: web.Application) -> AsyncIterator[None]:
    """Copy the conversations' logs into the history store (chat.history.archiver)."""
    service = app[HUB].chat
    chat_store = service.store
    settings = app[SETTINGS]
    archiver = Archiver(
        chat_store, app[HISTORY], settings.chat_window_events, settings.chat_window_days
    )
    app[ARCHIVER] = archiver
    chat_store.on_logged = archiver.note
    service.history_store = app[HISTORY]
    service.archiver = archiver
    task = asyncio.create_task(archiver.run())
    task.add_done_callback(_archiver_ended)

    def collect() -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "huddle_chat_archiver_up", "1 while the history archiver runs", 0 if task.done() else 1
        )
        yield GaugeMetricFamily(
            "huddle_chat_archive_failures",
            "Archiving passes or sweeps failed in a row (the history store or Redis away)",
            archiver.failures,
        )
        yield GaugeMetricFamily(
            "huddle_chat_archive_stuck",
            "Conversations whose log the history store cannot take (reported in the log)",
            len(archiver.stuck),
        )
        yield CounterMetricFamily(
            "huddle_chat_archiver_restarts",
            "Times the archiver began again after an error nothing expected",
            archiver.restarts,
        )
        cpu = CounterMetricFamily(
            "huddle_chat_archive_cpu_seconds",
            "CPU seconds of archiving: the archiver's task on the event loop's thread (loop),"
            " the history store's own threads (store: SQLite's, its reads too)",
            labels=["thread"],
        )
        cpu.add_metric(["loop"], archiver.cpu.seconds)
        store_s = archiver.history.thread_cpu_seconds()
        if store_s is not None:
            cpu.add_metric(["store"], store_s)
        yield cpu

    app[HUB].metrics.add_collector(collect)

    def info() -> dict[str, Any]:
        return {
            "store": settings.history_store,
            "archiver": "stopped" if task.done() else "running",
            "failures": archiver.failures,
            "stuck": len(archiver.stuck),
            "restarts": archiver.restarts,
        }

    app[HISTORY_INFO] = info
    try:
        yield
    finally:
        chat_store.on_logged = None
        service.history_store = None
        service.archiver = None
        await cancel_and_wait([task], "history archiver")


def _archiver_ended(task: asyncio.Task[None]) -> None:
    # Archiver.run ends only when cancelled (the node stopping): anything else is a bug,
    # said here at once rather than when the task is collected.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("history archiver ended", exc_info=exc)


async def _close_sessions(app: web.Application) -> None:
    await app[HUB].stop()


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_web_root() / "index.html")


def _web_root() -> Path:
    return Path(str(resources.files("huddle") / "web"))


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[SETTINGS] = settings
    app[HTTP_GUARD] = HttpGuard(settings.http_header_timeout_s, settings.http_body_idle_s)
    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_history_ctx)
    app.cleanup_ctx.append(_hub_ctx)
    app.cleanup_ctx.append(_archive_ctx)
    app.on_shutdown.append(_close_sessions)
    add_routes(app)
    media_routes.add_routes(app, media_config(settings))
    app.router.add_get("/", _index)
    app.router.add_static("/web/", _web_root())
    return app


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run a node until SIGINT or SIGTERM."""
    app = create_app(settings)
    runner = NodeRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    addresses = [f"{a[0]}:{a[1]}" for a in runner.addresses]
    log.info("listening", extra={"addresses": addresses, "node": settings.node_id})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    collector.settle()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        with contextlib.suppress(Exception):
            await runner.cleanup()
