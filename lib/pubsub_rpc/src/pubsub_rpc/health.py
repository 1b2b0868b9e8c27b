"""A heartbeat file for container health checks of processes that serve no HTTP.

The service touches the file every few seconds while its Redis links are up; the check
(``python -m pubsub_rpc.health FILE``) fails when the file is older than ``max_age``. That
proves the event loop runs and the subscriptions are live, which ``true`` does not.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path


async def beat(path: str, is_healthy: Callable[[], bool], interval: float = 2.0) -> None:
    file = Path(path)
    while True:
        if is_healthy():
            file.touch()
        await asyncio.sleep(interval)


def check(path: str, max_age: float = 10.0) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime <= max_age
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HEARTBEAT_FILE", "")
    sys.exit(0 if target and check(target) else 1)
