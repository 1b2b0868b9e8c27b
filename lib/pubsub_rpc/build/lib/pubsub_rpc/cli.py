"""``python -m pubsub_rpc call ACTION [JSON] [--timeout S]``: one call, configured by the
environment like any service (REDIS_URL, RPC_CHANNEL, ...). Every image that carries the
library can so call any responder: exit 0 with the result as JSON on stdout, or 1 with
``error: <code>: <message>`` on stderr (2: bad arguments)."""

from __future__ import annotations

import argparse
import sys

import orjson

from . import Caller, RpcError, Settings
from .lifecycle import configure_logging, load_settings, run


async def call(settings: Settings, action: str, data: object, timeout: float | None, name: str = "pubsub_rpc-cli") -> int:
    """One call; its result as JSON on stdout (0), or its error code on stderr (1)."""
    try:
        async with Caller(settings, name=name) as caller:
            result = await caller.call(action, data, timeout=timeout)
    except RpcError as exc:
        sys.stderr.write(f"error: {exc.code}: {exc.message}\n")
        return 1
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pubsub_rpc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("call", help="make one call and print its result as JSON")
    one.add_argument("action")
    one.add_argument("data", nargs="?", default="null", help="JSON for `data` (default null)")
    one.add_argument("--timeout", type=float, default=None, help="seconds (default RPC_CALL_TIMEOUT)")
    args = parser.parse_args(argv)
    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as exc:
        sys.stderr.write(f"error: DATA is not valid JSON: {exc}\n")
        return 2
    configure_logging("WARNING")
    settings = load_settings("python -m pubsub_rpc", source="cli", service="cli")
    return run(lambda: call(settings, args.action, data, args.timeout))
