"""The last minute of browser calls, second by second, for the page's live charts.

Every call the gateway answers (result or error, measured where it replies) adds one to a
per-second slot of a 60-slot ring: a count, an error count and a log-scale latency
histogram (4 buckets per doubling, 0.05 ms to about 50 s, so a percentile read from it is
within about 9 % of the exact value). Recording is a few list operations; percentiles are
computed once a second, when the `stats` frame is built, not per call.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

WINDOW = 60  # seconds kept
BASE_MS = 0.05  # upper bound of bucket 0
STEPS_PER_DOUBLING = 4
BUCKETS = 84  # the last bucket also holds everything slower (about 50 s and up)


# Upper bounds of buckets 0 .. BUCKETS-2: a binary search (C) per call, not a logarithm.
_BOUNDS = [BASE_MS * 2 ** (i / STEPS_PER_DOUBLING) for i in range(BUCKETS - 1)]


def bucket_of(ms: float) -> int:
    """Bucket i > 0 holds (BASE_MS * 2**((i-1)/4), BASE_MS * 2**(i/4)] milliseconds."""
    return bisect_left(_BOUNDS, ms)


def bucket_value(index: int) -> float:
    """A bucket's representative latency: its geometric middle (bucket 0: BASE_MS)."""
    if index == 0:
        return BASE_MS
    return BASE_MS * 2 ** ((index - 0.5) / STEPS_PER_DOUBLING)


def quantile(histogram: list[int], q: float) -> float | None:
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return round(bucket_value(index), 3)
    return round(bucket_value(len(histogram) - 1), 3)  # pragma: no cover - rank <= total


class LiveStats:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._second = [-1] * WINDOW  # the epoch second each slot holds
        self._calls = [0] * WINDOW
        self._errors = [0] * WINDOW
        self._histograms = [[0] * BUCKETS for _ in range(WINDOW)]

    def record(self, elapsed_ms: float, error: bool) -> None:
        now = int(self._clock())
        slot = now % WINDOW
        if self._second[slot] != now:
            self._second[slot] = now
            self._calls[slot] = self._errors[slot] = 0
            self._histograms[slot] = [0] * BUCKETS
        self._calls[slot] += 1
        if error:
            self._errors[slot] += 1
        self._histograms[slot][bisect_left(_BOUNDS, elapsed_ms)] += 1  # bucket_of, inlined

    def snapshot(self) -> dict[str, Any]:
        """The last WINDOW whole seconds, oldest first (the running second is not complete yet)."""
        end = int(self._clock()) - 1
        calls: list[int] = []
        errors: list[int] = []
        p50: list[float | None] = []
        p99: list[float | None] = []
        minute = [0] * BUCKETS
        for second in range(end - WINDOW + 1, end + 1):
            slot = second % WINDOW
            if self._second[slot] != second:
                calls.append(0)
                errors.append(0)
                p50.append(None)
                p99.append(None)
                continue
            histogram = self._histograms[slot]
            calls.append(self._calls[slot])
            errors.append(self._errors[slot])
            p50.append(quantile(histogram, 0.50))
            p99.append(quantile(histogram, 0.99))
            for index, count in enumerate(histogram):
                if count:
                    minute[index] += count
        return {
            "type": "stats",
            "t": end,
            "window": WINDOW,
            "calls": calls,
            "errors": errors,
            "p50": p50,
            "p99": p99,
            "minute": {"calls": sum(calls), "errors": sum(errors), "p50": quantile(minute, 0.50), "p99": quantile(minute, 0.99)},
        }
