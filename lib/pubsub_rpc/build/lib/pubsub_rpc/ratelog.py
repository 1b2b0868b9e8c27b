"""Warnings about bad input, at most one line per reason per interval.

Anyone who can publish on a request channel can send a million bad messages; a log line
(and worse, a traceback) per message would turn that into a disk-filling and CPU-eating
attack of its own. Each reason (a constant chosen by our code, never taken from input)
logs its first occurrence, then stays quiet for ``interval`` seconds and says how many it
suppressed when it next speaks. Counters in the stats keep the exact numbers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

MAX_REASONS = 64  # reasons are code constants; the cap only guards against misuse


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        # reason -> [time of the last line, lines suppressed since]
        self._state: dict[str, list[float]] = {}

    def warning(self, reason: str, message: str, *args: object, extra: dict[str, object] | None = None) -> None:
        self.log(logging.WARNING, reason, message, *args, extra=extra)

    def log(self, level: int, reason: str, message: str, *args: object, extra: dict[str, object] | None = None) -> None:
        """``extra`` (``logs.call_fields(...)``) goes on the line when it is written: the
        fields of the first call of a burst, as an example of the rest."""
        if not self._logger.isEnabledFor(level):
            return
        now = self._clock()
        state = self._state.get(reason)
        if state is not None and now - state[0] < self._interval:
            state[1] += 1
            return
        suppressed = int(state[1]) if state is not None else 0
        if state is None and len(self._state) >= MAX_REASONS:
            self._state.clear()
        self._state[reason] = [now, 0]
        if suppressed:
            message += " (and %d more like it in the last %.0fs)"
            args = (*args, suppressed, now - (state[0] if state is not None else now))
        self._logger.log(level, message, *args, extra=extra)

    def suppressed(self, reason: str) -> int:
        """Lines held back for ``reason`` since it last logged (for tests and debugging)."""
        state = self._state.get(reason)
        return int(state[1]) if state is not None else 0
