"""Percentiles and the JSON line every load process prints as its result."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def summarise(latencies_ns: list[int], errors: int, seconds: float, count: int | None = None) -> dict[str, Any]:
    ms = sorted(v / 1e6 for v in latencies_ns)
    count = len(ms) if count is None else count
    return {
        "count": count,
        "errors": errors,
        "seconds": seconds,
        "rate": count / seconds if seconds else 0.0,
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
        "max": ms[-1] if ms else float("nan"),
    }


def cpu_seconds(pid: int | None = None) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    with open(f"/proc/{pid or os.getpid()}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int | None = None) -> float:
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def mark(phase: str) -> None:
    """``measuring`` / ``measured``: the bench reads the other processes' CPU (responder,
    gateway, Redis) at these lines, so warm-up is not charged to the measured calls."""
    sys.stdout.write(phase + "\n")
    sys.stdout.flush()


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
