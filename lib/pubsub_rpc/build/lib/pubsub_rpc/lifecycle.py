"""Process plumbing every service shares: settings, logging, the event loop, and SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

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


__all__ = ["configure_logging", "load_settings", "run", "stop_event_on_signals"]


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so ``main()`` can drain instead of dying mid-reply."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run(main: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    """``asyncio.run`` on uvloop when it is installed (about 20 % more calls/s)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main()) or 0
