"""Process plumbing every service shares: settings, logging, the event loop, and SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol

from .logs import configure_logging
from .settings import Settings


def load_settings(program: str, **defaults: Any) -> Settings:
    """``Settings.from_env(**defaults)``, or exit 2 with one line on stderr naming the bad
    variable and its allowed range: a misconfigured container stops at once, readably."""
    try:
        return Settings.from_env(**defaults)
    except ValueError as exc:  # SettingsError, and a *_FILE that cannot be read
        sys.stderr.write(f"{program}: configuration error: {exc}\n")
        raise SystemExit(2) from None


__all__ = ["configure_logging", "load_settings", "run", "started", "stop_event_on_signals"]

log = logging.getLogger(__name__)
WAITING_LOG_INTERVAL = 30.0  # seconds between "still waiting for Redis" lines


class Runner(Protocol):
    """A Caller or a Responder."""

    name: str

    async def start(self, connect_timeout: float | None = ...) -> None: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


@contextlib.asynccontextmanager
async def started(runner: Runner, stop: asyncio.Event) -> AsyncIterator[bool]:
    """``async with started(responder, stop) as up:`` start ``runner`` however long Redis
    takes to be reachable (and to accept our subscriptions): a service must not die, nor
    hang unkillable, because Redis is late. Its links retry with backoff and say why;
    readiness is false meanwhile. ``up`` is False when ``stop`` came first (SIGTERM while
    waiting). On exit the runner is stopped (a Responder drains) or closed."""
    starting = asyncio.create_task(runner.start(connect_timeout=None), name=f"start:{runner.name}")
    stopping = asyncio.create_task(stop.wait(), name=f"stop:{runner.name}")
    try:
        while not (starting.done() or stopping.done()):
            await asyncio.wait({starting, stopping}, timeout=WAITING_LOG_INTERVAL, return_when=asyncio.FIRST_COMPLETED)
            if not (starting.done() or stopping.done()):
                log.warning("%s: still waiting for Redis (the links keep retrying; see their lines above)", runner.name)
    finally:
        stopping.cancel()
        if not starting.done():
            starting.cancel()  # start() closes its links when cancelled
            await asyncio.wait({starting})
    if starting.cancelled():
        yield False
        return
    starting.result()
    try:
        yield True
    finally:
        await runner.__aexit__(None, None, None)


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so ``main()`` can drain instead of dying mid-reply."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


# Young objects between collections (CPython's default is 700): every call allocates a few
# dozen short-lived objects, so at 700 the collector ran about once per 150 calls.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Keep the cyclic collector off the hot path of a service process (call once, after
    imports). ``gc.freeze`` moves the tens of thousands of objects that imports leave
    behind (they live as long as the process) out of the collector's reach, so a full
    collection no longer walks them (30-60 ms pauses that set the gateway's p99), and a
    larger first threshold makes young collections rare. Cycles are still collected."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    """``asyncio.run`` on uvloop when it is installed (about 20 % more calls/s), with the
    collector tuned for a service (``tune_gc``)."""
    tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main()) or 0
