"""The aiohttp application: ``create_app(settings)`` builds it, ``run_app`` serves it.

The Caller (both Redis connections) is owned by a ``cleanup_ctx``, so it opens when the app
starts and closes after the last WebSocket is gone; nothing connects at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from pubsub_rpc import Caller, Event, RpcError, Settings

from . import frames
from .clients import Outbox, WsClient

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SETTINGS = web.AppKey("settings", Settings)
CALLER = web.AppKey("caller", Caller)
CLIENTS = web.AppKey("clients", weakref.WeakSet[WsClient])
OUTBOX = web.AppKey("outbox", Outbox)


async def caller_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    caller = Caller(settings, name="ws_gateway")
    # Start connecting but do not block start-up on Redis: /readyz says when we are ready,
    # and the links keep retrying however long Redis is away.
    start = asyncio.create_task(caller.start(connect_timeout=None))
    app[CALLER] = caller

    def fan_out(event: Event) -> None:
        frame = frames.event(event)  # encoded once for every client
        clients: weakref.WeakSet[WsClient] = app[CLIENTS]
        for client in list(clients):
            client.send(frame)

    caller.add_event_handler(fan_out)
    yield
    start.cancel()
    with contextlib.suppress(asyncio.CancelledError, RpcError):
        await start
    await caller.close()


async def close_websockets(app: web.Application) -> None:
    clients: weakref.WeakSet[WsClient] = app[CLIENTS]
    await asyncio.gather(*(client.shutdown() for client in list(clients)), return_exceptions=True)


def origin_allowed(request: web.Request, allowed: str) -> bool:
    """Browsers send Origin; refuse other sites' pages (cross-site WebSocket hijacking)."""
    origin = request.headers.get("Origin")
    if origin is None or allowed.strip() == "*":
        return True
    if urlsplit(origin).netloc == request.host:
        return True
    return origin in {o.strip() for o in allowed.split(",") if o.strip()}


async def websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    settings = app[SETTINGS]
    if not origin_allowed(request, settings.gateway_allowed_origins):
        raise web.HTTPForbidden(text="origin not allowed; set GATEWAY_ALLOWED_ORIGINS")
    # No compression: small JSON gains little, and frames are encoded once for all clients.
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=settings.max_message_bytes, compress=False)
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client went away during the handshake
        return ws
    client = WsClient(ws, transport, app[OUTBOX], settings.gateway_send_buffer, request.remote or "?")
    app[CLIENTS].add(client)
    client.send(frames.hello(settings.gateway_max_timeout, settings.gateway_max_calls_per_client))
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                handle_text(app, client, message.data)
            elif message.type is WSMsgType.BINARY:
                client.send(frames.error(None, "bad_frame", "binary frames are not supported; send JSON text"))
    finally:
        app[CLIENTS].discard(client)
        await client.shutdown()
    return ws


def handle_text(app: web.Application, client: WsClient, text: str) -> None:
    settings = app[SETTINGS]
    try:
        call = frames.parse_call(text, settings.gateway_max_timeout)
    except frames.BadFrame as exc:
        client.send(frames.error(exc.frame_id, "bad_frame", str(exc)))
        return
    if len(client.calls) >= settings.gateway_max_calls_per_client:
        client.send(
            frames.error(call.id, "overloaded", f"at most {settings.gateway_max_calls_per_client} calls in flight per connection")
        )
        return
    started = time.perf_counter()
    try:
        future = app[CALLER].start_call(call.action, call.data, timeout=call.timeout)
    except RpcError as exc:
        client.send(frames.error(call.id, exc.code, exc.message, 0.0))
        return
    # A callback, not a task per call: the reply is framed and queued from the read loop.
    client.calls.add(future)
    future.add_done_callback(lambda done: reply_to_client(client, call.id, started, done))


def reply_to_client(client: WsClient, call_id: str | int, started: float, done: asyncio.Future[Any]) -> None:
    client.calls.discard(done)
    if done.cancelled():
        return
    elapsed = (time.perf_counter() - started) * 1000
    exc = done.exception()
    if exc is None:
        client.send(frames.result(call_id, done.result(), elapsed))
    elif isinstance(exc, RpcError):
        client.send(frames.error(call_id, exc.code, exc.message, elapsed))
    else:
        log.error("call %s failed unexpectedly", call_id, exc_info=exc)
        client.send(frames.error(call_id, "internal_error", "the gateway failed to forward the call", elapsed))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    caller = request.app[CALLER]
    body = {"ok": caller.ready, "redis": "subscribed" if caller.ready else "not connected", "clients": len(request.app[CLIENTS])}
    return web.json_response(body, status=200 if caller.ready else 503)


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[CLIENTS] = weakref.WeakSet()
    app[OUTBOX] = Outbox()
    app.cleanup_ctx.append(caller_ctx)
    app.on_shutdown.append(close_websockets)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_static("/static/", STATIC)
    return app
