"""Container health checks: ``python -m pubsub_rpc.health FILE_OR_URL`` exits 0 or 1.

Processes that serve no HTTP touch a heartbeat file every few seconds while their Redis
links are up; the check fails when the file is older than ``max_age``. That proves the
event loop runs and the subscriptions are live, which ``true`` does not. For the gateway
the argument is its ``/readyz`` URL (slim images have no curl).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


async def beat(path: str, is_healthy: Callable[[], bool], interval: float = 2.0) -> None:
    file = Path(path)
    while True:
        if is_healthy():
            file.touch()  # noqa: ASYNC240 - a local tmpfs write, microseconds every few seconds
        await asyncio.sleep(interval)


def check(path: str, max_age: float = 10.0) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime <= max_age
    except FileNotFoundError:
        return False


def check_url(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:  # includes HTTPError for 503
        return False


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HEARTBEAT_FILE", "")
    healthy = check_url(target) if target.startswith(("http://", "https://")) else bool(target) and check(target)
    sys.exit(0 if healthy else 1)
