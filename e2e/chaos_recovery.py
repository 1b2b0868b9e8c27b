"""Timings around a Redis fault, from the outside: when a gateway says it is not ready, and
when the first good call goes through again (host caller, and a browser through each gateway).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from pubsub_rpc import Caller, RpcError

from tests.ws_frames import connect, mint

PROBE_PERIOD = 0.05  # seconds between attempts
ATTEMPT_TIMEOUT = 1.0  # per call: a reply lost in a reconnect window must not count as recovery time


async def _paced(began: float) -> None:
    await asyncio.sleep(max(0.0, began + PROBE_PERIOD - time.monotonic()))


async def first_good_host_call(caller: Caller, since: float, timeout: float = 30) -> float:
    """Seconds from ``since`` (monotonic) to the end of the first successful `echo`."""
    while True:
        began = time.monotonic()
        try:
            if await caller.call("echo", "back", timeout=ATTEMPT_TIMEOUT) == "back":
                return time.monotonic() - since
        except RpcError:
            pass
        if began - since > timeout:
            raise AssertionError(f"no good host call within {timeout}s")
        await _paced(began)


async def first_good_browser_call(gateway: str, jwt_secret: str, since: float, timeout: float = 30) -> float:
    """The same through ``gateway`` (http://host:port): a new socket per attempt, as a page
    that reconnects would."""
    ws_url = gateway.replace("http", "ws", 1) + "/ws"
    async with aiohttp.ClientSession() as http:
        while True:
            began = time.monotonic()
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT + 2), connect(http, ws_url, mint(secret=jwt_secret)) as ws:
                    if (await ws.call(1, "echo", "back", ATTEMPT_TIMEOUT)).get("result") == "back":
                        return time.monotonic() - since
            except (aiohttp.ClientError, OSError, TimeoutError, TypeError, ValueError):
                pass
            if began - since > timeout:
                raise AssertionError(f"no good call through {gateway} within {timeout}s")
            await _paced(began)


async def unready_after(gateway: str, since: float, until: float) -> float | None:
    """Seconds from ``since`` until ``gateway``'s /readyz first answers not-ready; None if it
    stayed ready until ``until`` (monotonic)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while time.monotonic() < until:
            began = time.monotonic()
            try:
                async with http.get(gateway + "/readyz") as response:
                    if response.status != 200:
                        return time.monotonic() - since
            except (aiohttp.ClientError, TimeoutError):
                pass  # unreachable says nothing about readiness
            await _paced(began)
    return None
