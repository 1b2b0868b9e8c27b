"""The aiohttp application: ``create_app(settings)`` builds it, ``run_app`` serves it.

The Redis connections (the Caller, and the per-user push subscriber) are owned by a
``cleanup_ctx``, so they open when the app starts and close after the last WebSocket is
gone; nothing connects at import time. ``create_app`` raises ``auth.ConfigError`` when
browser tokens cannot be verified (no secret or key outside demo mode).

Modules, one job each: guards (Host, Origin, subprotocol), auth (tokens), limits (slots,
rate, counters), session (one WebSocket), users (per-user pushes), clients (writing
frames), frames (the JSON frames), and for the page's live view: livestats (the last
minute of calls), presence (the services alive) and live (the feed to watching sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pubsub_rpc import RpcError, Settings
from pubsub_rpc.presence import beacon_for

from . import session
from .auth import AuthFailed, split_list
from .observability import install as install_metrics
from .state import Gateway

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
GATEWAY = web.AppKey("gateway", Gateway)
DESCRIPTIONS_REFRESH = 60.0  # seconds between fetches of the `actions` descriptions
# Probes and Prometheus may use any Host (pod IP, service name); nothing there can call actions.
UNGUARDED = frozenset({"/healthz", "/readyz", "/metrics"})


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    caller = gateway.caller
    # Start connecting but do not block start-up on Redis: /readyz says when we are ready,
    # and the links keep retrying however long Redis is away.
    start = asyncio.create_task(caller.start(connect_timeout=None), name="caller-start")
    start.add_done_callback(_start_ended)
    gateway.users.subscriber.start()
    gateway.presence.subscriber.start()
    caller.add_event_handler(gateway.fan_out)
    describe = asyncio.create_task(fetch_descriptions(gateway), name="fetch-descriptions")
    beacon = asyncio.create_task(beacon_for(caller, "gateway", ready=lambda: gateway.ready).run(), name="presence-beacon")
    yield
    await gateway.live.close()
    for task in (beacon, describe, start):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RpcError):
            await task
    await gateway.users.subscriber.close()
    await gateway.presence.subscriber.close()
    await caller.close()


def _start_ended(task: asyncio.Task[None]) -> None:
    """The caller's start waits for Redis as long as it takes; it may only end by success
    or cancellation (shutdown). Anything else is a bug: said loudly, with readiness false."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the gateway's Redis caller failed to start; /readyz stays 503", exc_info=task.exception())


async def fetch_descriptions(gateway: Gateway) -> None:
    """The allowed actions' descriptions, from the responder's `actions` action, for the
    `ready` frame. The gateway asks itself; browsers need not be allowed `actions`.
    Retries with backoff until it has them, then refreshes every DESCRIPTIONS_REFRESH."""
    allowed = gateway.verifier.allowed_actions
    delay = 0.5
    while True:
        if gateway.caller.ready and allowed:
            try:
                listed = await gateway.caller.call("actions", None, timeout=2.0)
            except RpcError as exc:
                log.debug("cannot list the actions' descriptions yet: %s", exc)
            except Exception:  # a bug here must not end the refresh loop
                log.exception("listing the actions' descriptions failed")
            else:
                if isinstance(listed, list):
                    gateway.descriptions = {
                        item["name"]: str(item.get("description", ""))
                        for item in listed
                        if isinstance(item, dict) and item.get("name") in allowed
                    }
        delay = DESCRIPTIONS_REFRESH if gateway.descriptions else min(delay * 2, DESCRIPTIONS_REFRESH)
        await asyncio.sleep(delay)


async def close_websockets(app: web.Application) -> None:
    clients = list(app[GATEWAY].clients)
    await asyncio.gather(*(client.shutdown() for client in clients), return_exceptions=True)


@web.middleware
async def host_guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """DNS-rebinding guard: answer only to the names in GATEWAY_ALLOWED_HOSTS."""
    gateway = request.app[GATEWAY]
    if request.path not in UNGUARDED and not gateway.guard.host_allowed(request.headers.get("Host")):
        gateway.counters.refused_host += 1
        raise web.HTTPForbidden(text="unknown Host; see GATEWAY_ALLOWED_HOSTS")
    return await handler(request)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    return await session.websocket(request, request.app[GATEWAY])


async def demo_token(request: web.Request) -> web.Response:
    """Demo mode only (404 otherwise): a short-lived token for the page. With a valid token
    in ``Authorization: Bearer``, a renewal for the same sub (how the page refreshes)."""
    gateway = request.app[GATEWAY]
    settings = gateway.settings
    if not settings.gateway_demo_mode:
        raise web.HTTPNotFound()
    sub = "demo-" + secrets.token_hex(6)
    scheme, _, current = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and current:
        try:
            sub = gateway.verifier.verify(current.strip()).sub
        except AuthFailed as exc:
            raise web.HTTPUnauthorized(text=f"cannot renew: {exc}") from None
    token, expires_at = gateway.verifier.mint(sub, sorted(gateway.verifier.allowed_actions), settings.gateway_demo_token_ttl)
    body = {"token": token, "sub": sub, "expiresAt": expires_at, "ttl": settings.gateway_demo_token_ttl, "demo": True}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    ready = gateway.ready
    body: dict[str, Any] = {
        "ok": ready,
        "redis": "subscribed" if ready else "not connected",
        "clients": len(gateway.clients),
        "demo": gateway.settings.gateway_demo_mode,
        "counters": gateway.counters.as_dict(),
        "time": time.time(),
    }
    return web.json_response(body, status=200 if ready else 503)


def create_app(settings: Settings) -> web.Application:
    gateway = Gateway.from_settings(settings)
    if settings.gateway_demo_mode:
        log.warning(
            "DEMO MODE: /demo/token hands a token for %s to anyone who can reach this gateway%s. "
            "Never run it like this in production: set GATEWAY_DEMO_MODE=false and GATEWAY_JWT_SECRET "
            "(or GATEWAY_JWT_PUBLIC_KEY); see docs/gateway-auth.md",
            ",".join(sorted(gateway.verifier.allowed_actions)) or "no actions",
            "" if settings.gateway_jwt_secret or settings.gateway_jwt_public_key else " (signing secret generated at start)",
        )
    if not split_list(settings.gateway_allowed_actions):
        log.warning("GATEWAY_ALLOWED_ACTIONS is empty: browsers can call no action at all")
    app = web.Application(middlewares=[host_guard])
    app[GATEWAY] = gateway
    install_metrics(
        app, caller=lambda: gateway.caller, counters=gateway.counters.as_dict, connections=lambda: len(gateway.clients)
    )
    app.cleanup_ctx.append(redis_ctx)
    app.on_shutdown.append(close_websockets)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/demo/token", demo_token)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_static("/static/", STATIC)
    return app
