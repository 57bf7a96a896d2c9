"""HTTP side of a node: the WebSocket endpoint, health, metrics, schema and dev login."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import WSMsgType, web

from huddle.config import Settings
from signaling import protocol as p
from signaling.auth import mint_token, slug_identity
from signaling.http_common import json_error
from signaling.hub import Hub
from signaling.redis_client import RETRY_LATER_ERRORS
from signaling.session import Session

log = logging.getLogger("huddle.server")

SETTINGS = web.AppKey("settings", Settings)
HUB = web.AppKey("hub", Hub)
# Facts /healthz shows from the components that own them.
HealthInfo = Callable[[], dict[str, Any]]
# From the component that owns Redis (embedded supervisor or none).
REDIS_INFO: web.AppKey[HealthInfo] = web.AppKey("redis_info")
# The chat history's archiver (set while it runs).
HISTORY_INFO: web.AppKey[HealthInfo] = web.AppKey("history_info")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RETRY_AFTER_S: Final = 5


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every HTTP error is a JSON body with a code, never an HTML page or a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return json_error(exc.status, code, exc.text or exc.reason)
    except RETRY_LATER_ERRORS as exc:
        # Redis (or every node of the cluster) unreachable: the node's own fault for now, and
        # a client may retry, as WebSocket requests get ``unavailable`` meanwhile.
        log.warning("HTTP request while Redis is unreachable", extra={"path": request.path})
        response = json_error(503, "unavailable", f"storage unreachable: {type(exc).__name__}")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response
    except Exception:
        log.exception("HTTP handler failed", extra={"path": request.path})
        return json_error(500, "internal", "internal error")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[HUB]
    settings = hub.settings
    # aiohttp refuses a frame of exactly max_msg_size; max_frame_bytes is the largest accepted.
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_s, max_msg_size=settings.max_frame_bytes + 1
    )
    await ws.prepare(request)
    try:
        session = Session(hub, ws, request.remote, request.transport)
    except Exception:
        # Never let the HTTP error middleware write into an upgraded connection.
        log.exception("connection setup failed")
        await ws.close(code=p.CloseCode.INTERNAL_ERROR, message=b"internal error")
        return ws
    hub.connected(session)

    def hello_deadline() -> None:
        if session.claims is None:
            session.close_soon(p.CloseCode.HELLO_TIMEOUT, "no hello in time")

    timer = asyncio.get_running_loop().call_later(settings.hello_timeout_s, hello_deadline)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await session.on_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await session.on_binary()
            else:
                if msg.type is WSMsgType.ERROR:
                    code = getattr(msg.data, "code", None)
                    if code is not None:
                        hub.metrics.closes.labels(str(int(code))).inc()
                break
    except Exception:
        log.exception("connection handler failed", extra={"session": session.id})
        await session.close(p.CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        timer.cancel()
        await hub.disconnected(session)
    return ws


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    reachable = await hub.redis_ok()
    cluster = await hub.cluster_view()
    # Degraded until both commands and pub/sub work again: events need the latter. On a
    # cluster, also while a shard is down or the cluster says it is not ok: some
    # conversations, users and calls are out of reach then.
    ok = reachable and hub.broker.connected and (cluster is None or _cluster_ok(cluster))
    uptime = time.monotonic() - hub.started
    hub.metrics.redis_up.set(1 if ok else 0)
    if cluster is not None:
        _set_cluster_metrics(hub, cluster)
    body: dict[str, Any] = {
        "status": "ok" if ok else "degraded",
        "node": hub.settings.node_id,
        "uptime_s": round(uptime, 3),
        "redis": {
            "reachable": reachable,
            "pubsub": hub.broker.connected,
            **request.app[REDIS_INFO](),
            **({"cluster": cluster} if cluster is not None else {}),
        },
        "connections": len(hub.sessions),
    }
    history = request.app.get(HISTORY_INFO)
    if history is not None:
        # Not in the status: a node whose store is away still serves chat from Redis's
        # window (and every node would be taken out of service together with a shared
        # store); the archiver catches up once the store is back.
        body["history"] = history()
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    hub.metrics.uptime.set(time.monotonic() - hub.started)
    hub.metrics.redis_up.set(1 if await hub.redis_ok() else 0)
    restarts = request.app[REDIS_INFO]().get("restarts")
    if isinstance(restarts, int):
        hub.metrics.redis_restarts.set(restarts)
    cluster = await hub.cluster_view()
    if cluster is not None:
        _set_cluster_metrics(hub, cluster)
    return web.Response(
        body=hub.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
    )


def _cluster_ok(cluster: dict[str, Any]) -> bool:
    return bool(cluster["state"] == "ok" and cluster["shards_up"] == cluster["shards"])


def _set_cluster_metrics(hub: Hub, cluster: dict[str, Any]) -> None:
    m = hub.metrics
    m.redis_cluster_ok.set(1 if _cluster_ok(cluster) else 0)
    m.redis_cluster_shards.set(cluster["shards"])
    m.redis_cluster_shards_up.set(cluster["shards_up"])
    m.redis_cluster_replicas.set(cluster["replicas"])
    m.redis_cluster_replicas_up.set(cluster["replicas_up"])
    m.redis_cluster_slots_ok.set(cluster["slots_ok"])


async def schema(request: web.Request) -> web.Response:
    return web.json_response(p.json_schema())


class DevLoginRequest(msgspec.Struct, kw_only=True):
    name: str
    identity: str | None = None


async def dev_login(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if not settings.dev_login_enabled:
        return json_error(404, "not_found", "dev login is disabled")
    try:
        body = msgspec.json.decode(await request.read(), type=DevLoginRequest)
    except msgspec.ValidationError as exc:
        return json_error(400, "invalid_field", str(exc))
    except msgspec.DecodeError:
        return json_error(400, "bad_json", "body must be a JSON object with a `name`")
    name = body.name.strip()
    if not 1 <= len(name) <= 64:
        return json_error(400, "invalid_field", "name must be 1 to 64 characters")
    identity = body.identity or slug_identity(name)
    if not identity:
        return json_error(400, "invalid_field", "name has no usable characters for an identity")
    now = int(time.time())
    try:
        token = mint_token(
            api_key=settings.api_key,
            api_secret=settings.secret(),
            identity=identity,
            name=name,
            ttl_s=settings.token_ttl_s,
            now=now,
        )
    except ValueError as exc:
        return json_error(400, "invalid_field", str(exc))
    return web.json_response(
        {
            "token": token,
            "identity": identity,
            "name": name,
            "expires_at": now + settings.token_ttl_s,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/schema", schema)
    app.router.add_post("/v1/dev/login", dev_login)
