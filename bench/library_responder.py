"""The library's Responder serving `echo`, until SIGTERM. python -m bench.library_responder URL CHANNEL"""

from __future__ import annotations

import sys
from typing import Any

from pubsub_rpc import Responder, Settings
from pubsub_rpc.lifecycle import run, stop_event_on_signals


async def main() -> None:
    url, channel = sys.argv[1], sys.argv[2]
    settings = Settings(redis_url=url, channel=channel, responder_pattern=channel + "_sender", push_interval=0)
    responder = Responder(settings, name="bench-responder")

    @responder.action("echo")
    def echo(data: Any) -> Any:
        return data

    stop = stop_event_on_signals()
    async with responder:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await stop.wait()


if __name__ == "__main__":
    run(main)
