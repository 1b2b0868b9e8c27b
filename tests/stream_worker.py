"""A streams-mode responder in a process of its own, for tests that SIGKILL or SIGSTOP it.

``python -m tests.stream_worker`` with the usual environment (REDIS_URL, RPC_CHANNEL,
RPC_TRANSPORT=streams, ...) plus STARTS_FILE and DONE_FILE: the ``work`` action appends
its requestId to STARTS_FILE when it starts and to DONE_FILE when it completes (its side
effect), so a test counts executions per requestId across processes. ``crash`` kills the
process, as a handler with a fatal bug would.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pubsub_rpc import Responder, current_request
from pubsub_rpc.lifecycle import configure_logging, load_settings, run, stop_event_on_signals


def _append(path: Path, line: str) -> None:
    # One small O_APPEND write per line: lines of concurrent processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def register_work(responder: Responder, starts: Path, done: Path) -> None:
    @responder.action("work", "sleep data.ms, recording the start and the completion")
    async def work(data: Any) -> Any:
        request = current_request()
        request_id = request.request_id if request is not None else None
        _append(starts, f"{request_id} {os.getpid()}")
        await asyncio.sleep(data["ms"] / 1000)
        _append(done, f"{request_id} {os.getpid()}")
        return request_id

    @responder.action("crash", "die at once, like a handler with a fatal bug")
    def crash(data: Any) -> Any:
        os._exit(3)


def executions(path: Path) -> dict[str, int]:
    """requestId -> how many lines ``path`` has for it."""
    counts: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                request_id = line.split()[0]
                counts[request_id] = counts.get(request_id, 0) + 1
    return counts


async def main() -> int:
    settings = load_settings("stream_worker")
    configure_logging(settings.log_level, settings.log_format)
    responder = Responder(settings, name=f"worker-{os.getpid()}")
    register_work(responder, Path(os.environ["STARTS_FILE"]), Path(os.environ["DONE_FILE"]))
    stop = stop_event_on_signals()
    async with responder:
        assert responder.streams is not None
        _append(Path(os.environ["STARTS_FILE"] + ".ready"), responder.streams.consumer)
        await stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
