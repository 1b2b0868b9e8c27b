"""One WebSocket from upgrade to close: checks, authentication, calls, limits.

Order of checks for each text frame, cheapest first: the rate bucket, the JSON shape,
authentication, the action allow-list, calls in flight. Nothing reaches Redis before all
of them passed. Every refusal is an error frame or a documented close code, and a counter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from aiohttp import WebSocketError, WSMsgType, web
from pubsub_rpc import InvalidRequest, RpcError

from . import frames
from .auth import CLOSE_EXPIRED, CLOSE_UNAUTHENTICATED, AuthFailed
from .clients import CLOSE_TIMEOUT, WsClient
from .guards import PROTOCOL, bearer_from_protocols
from .limits import ABUSE_STRIKES, CLOSE_ABUSE, CLOSE_TRY_AGAIN_LATER, TokenBucket
from .observability import trace_headers
from .state import Gateway

log = logging.getLogger(__name__)
TEXT = WSMsgType.TEXT
# What ends aiohttp's `async for msg in ws` (WebSocketResponse.__anext__), and so ours.
ENDED = frozenset((WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED))


async def websocket(request: web.Request, gateway: Gateway) -> web.WebSocketResponse:
    settings = gateway.settings
    counters = gateway.counters
    if not gateway.guard.origin_allowed(request.headers.get("Origin")):
        counters.refused_origin += 1
        raise web.HTTPForbidden(text="origin not allowed; see GATEWAY_ALLOWED_ORIGINS and GATEWAY_ALLOWED_HOSTS")
    bearer, protocols_ok = bearer_from_protocols(request.headers.get("Sec-WebSocket-Protocol"))
    if not protocols_ok:
        counters.refused_protocol += 1
        raise web.HTTPBadRequest(text=f"offer the subprotocol {PROTOCOL} (and at most one bearer.<token>)")
    ws = web.WebSocketResponse(
        protocols=(PROTOCOL,),
        # aiohttp pings after this much silence and drops a peer whose pong does not come
        # within half of it: a dead or never-reading client is gone after idle_timeout.
        heartbeat=settings.gateway_idle_timeout * 2 / 3,
        max_msg_size=settings.gateway_max_frame_bytes,
        compress=False,  # small JSON gains little, and frames are encoded once for all clients
    )
    await ws.prepare(request)
    address = request.remote or "?"
    refused = gateway.slots.acquire(address)
    if refused is not None:
        if refused == "total":
            counters.refused_total += 1
        else:
            counters.refused_per_ip += 1
        try:  # bounded: refused sockets must not pile up waiting for a close reply
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"too many connections; try again later")
        except TimeoutError:
            if request.transport is not None:
                request.transport.abort()
        return ws
    try:
        transport = request.transport
        if transport is not None:  # None: the client went away during the handshake
            await serve(gateway, ws, transport, address, bearer)
    finally:
        gateway.slots.release(address)
    return ws


async def serve(
    gateway: Gateway, ws: web.WebSocketResponse, transport: asyncio.Transport, address: str, bearer: str | None
) -> None:
    settings = gateway.settings
    counters = gateway.counters
    counters.connections += 1
    bucket = TokenBucket(settings.gateway_rate_limit, settings.gateway_rate_burst)
    client = WsClient(ws, transport, gateway.outbox, settings.gateway_send_buffer, address, bucket, counters)
    gateway.clients.add(client)
    client.send(
        frames.hello(
            settings.gateway_max_timeout,
            settings.gateway_max_calls_per_client,
            settings.gateway_demo_mode,
            settings.gateway_auth_timeout,
        )
    )
    if bearer is not None:
        authenticate(gateway, client, bearer)
    else:
        client.set_timer(settings.gateway_auth_timeout, lambda: auth_deadline(gateway, client))
    receive = ws.receive  # not `async for`: its __anext__ is one more coroutine per frame
    try:
        while True:
            message = await receive()
            kind = message.type
            if kind in ENDED:
                break
            counters.frames_in += 1
            if client.closing:
                continue  # a close is under way: drain the socket, answer nothing
            if kind is TEXT:
                handle_text(gateway, client, message.data)
            elif kind is WSMsgType.BINARY:
                if admit(gateway, client, None):
                    counters.bad_frames += 1
                    client.send(frames.error(None, "bad_frame", "binary frames are not supported; send JSON text"))
            elif kind is WSMsgType.ERROR and isinstance(message.data, WebSocketError):
                counters.protocol_closed += 1  # aiohttp closed it: 1009, 1007 or 1002
    finally:
        # aiohttp's heartbeat found no pong in time (the handler may be cancelled then).
        if isinstance(ws.exception(), TimeoutError):
            counters.idle_closed += 1
        gateway.clients.discard(client)
        gateway.live.forget(client)
        if client.identity is not None:
            gateway.users.remove(client.identity.sub, client)
        await client.shutdown()


def admit(gateway: Gateway, client: WsClient, text: str | bytes | None) -> bool:
    """The rate bucket: every frame costs a token. Ignoring `rate_limited` costs the socket."""
    if client.bucket.take():
        return True
    refuse(gateway, client, text)
    return False


def refuse(gateway: Gateway, client: WsClient, text: str | bytes | None) -> None:
    """A frame over the rate: answered `rate_limited`, or the socket closed (4008)."""
    counters = gateway.counters
    if client.bucket.strikes > ABUSE_STRIKES:
        counters.abuse_closed += 1
        client.close_soon(CLOSE_ABUSE, "rate limit exceeded repeatedly")
        return
    counters.rate_limited += 1
    frame_id = None
    if text is not None:  # the call's id, so the client can tell which call was refused
        try:
            parsed = frames.parse(text, gateway.settings.gateway_max_timeout)
            frame_id = parsed.id if isinstance(parsed, frames.CallFrame) else None
        except frames.BadFrame as exc:
            frame_id = exc.frame_id
    client.send(frames.error(frame_id, "rate_limited", f"over {gateway.settings.gateway_rate_limit:g} frames/s; slow down"))


def handle_text(gateway: Gateway, client: WsClient, text: str) -> None:
    if not client.bucket.take():  # admit(), inlined: this runs for every call
        refuse(gateway, client, text)
        return
    settings = gateway.settings
    counters = gateway.counters
    try:
        frame = frames.parse(text, settings.gateway_max_timeout)
    except frames.BadFrame as exc:
        counters.bad_frames += 1
        client.send(frames.error(exc.frame_id, "bad_frame", str(exc)))
        return
    if isinstance(frame, frames.AuthFrame):
        authenticate(gateway, client, frame.token)
        return
    identity = client.identity
    if identity is None:
        counters.unauthenticated += 1
        client.send(frames.error(frame.id, "unauthenticated", 'send {"type": "auth", "token": "..."} first'))
        return
    if isinstance(frame, frames.WatchFrame):
        if not settings.gateway_live_view:
            counters.forbidden += 1
            client.send(frames.error(None, "forbidden", "the live view is off on this gateway (GATEWAY_LIVE_VIEW)"))
        else:
            gateway.live.watch(client, frame.stats, frame.presence)
        return
    if frame.action not in identity.actions:
        counters.forbidden += 1
        client.send(frames.error(frame.id, "forbidden", f"this connection may not call {frame.action[:64]!r}"))
        return
    if len(client.calls) >= settings.gateway_max_calls_per_client:
        counters.overloaded += 1
        limit = settings.gateway_max_calls_per_client
        client.send(frames.error(frame.id, "overloaded", f"at most {limit} calls in flight per connection"))
        return
    start_call(gateway, client, frame)


def authenticate(gateway: Gateway, client: WsClient, token: Any) -> None:
    """First auth or refresh: verify, then (re)arm the expiry and send `ready`."""
    counters = gateway.counters
    try:
        identity = gateway.verifier.verify(token)
        if client.identity is not None and identity.sub != client.identity.sub:
            raise AuthFailed("a refresh must keep the same `sub`")
    except AuthFailed as exc:
        if exc.close_code == CLOSE_EXPIRED:
            counters.auth_expired += 1
        else:
            counters.auth_failed += 1
        log.info("%s: authentication refused: %s", client.peer, exc)
        client.close_soon(exc.close_code, str(exc))
        return
    counters.authenticated += 1
    if client.identity is None:
        gateway.users.add(identity.sub, client)
    client.identity = identity
    client.set_timer(identity.expires_at - time.time(), lambda: token_expired(gateway, client))
    allowed = sorted(identity.actions)
    descriptions = {name: gateway.descriptions[name] for name in allowed if name in gateway.descriptions}
    client.send(frames.ready(identity.sub, allowed, descriptions, identity.expires_at))


def auth_deadline(gateway: Gateway, client: WsClient) -> None:
    if client.identity is None and not client.closing:
        gateway.counters.auth_timeout += 1
        client.close_soon(CLOSE_UNAUTHENTICATED, "no token within the auth timeout")


def token_expired(gateway: Gateway, client: WsClient) -> None:
    if not client.closing:
        gateway.counters.auth_expired += 1
        client.close_soon(CLOSE_EXPIRED, "token expired")


def start_call(gateway: Gateway, client: WsClient, call: frames.CallFrame) -> None:
    started = time.perf_counter()
    try:
        headers = trace_headers(call.headers) if call.headers is not None else None
        future = gateway.caller.start_call(call.action, call.data, timeout=call.timeout, headers=headers)
    except InvalidRequest:  # raised before sending: `data` JSON cannot re-encode (too deep)
        gateway.counters.bad_frames += 1
        client.send(frames.error(call.id, "bad_frame", "`data` cannot be sent as JSON (nested deeper than 254 levels?)"))
        return
    except RpcError as exc:
        client.send(frames.error(call.id, exc.code, exc.message, 0.0))
        return
    gateway.counters.calls += 1
    # A callback, not a task per call: the reply is framed and queued from the read loop
    # (a partial: called from C, one Python frame fewer per call than a lambda).
    client.calls.add(future)
    future.add_done_callback(partial(reply, gateway, client, call.id, started))


def reply(gateway: Gateway, client: WsClient, call_id: str | int, started: float, done: asyncio.Future[Any]) -> None:
    client.calls.discard(done)
    if done.cancelled():
        return
    elapsed = (time.perf_counter() - started) * 1000
    exc = done.exception()
    gateway.live.stats.record(elapsed, exc is not None)
    if exc is None:
        frame = frames.result(call_id, done.result(), elapsed)
        if frame is None:
            gateway.counters.events_unencodable += 1
            frame = frames.error(call_id, "bad_reply", "the result is nested too deeply to send as JSON", elapsed)
        client.send(frame)
    elif isinstance(exc, RpcError):
        client.send(frames.error(call_id, exc.code, exc.message, elapsed))
    else:
        log.error("call %s failed unexpectedly", call_id, exc_info=exc)
        client.send(frames.error(call_id, "internal_error", "the gateway failed to forward the call", elapsed))
