"""The caller's one-shot CLI, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from pubsub_rpc import Responder, Settings


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "REDIS_URL": settings.redis_url, "RPC_CHANNEL": settings.channel, "PYTHONPATH": "services"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node_like_caller",
        "call",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:  # timed out: never leave the CLI running
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
    return process.returncode or 0, stdout.decode(), stderr.decode()


async def test_cli_prints_the_result_as_json(responder: Responder, settings: Settings) -> None:
    code, out, _ = await cli(settings, "sum", "[1, 2, 3]")
    assert code == 0 and json.loads(out) == 6


async def test_cli_exits_non_zero_with_the_error_code(responder: Responder, settings: Settings) -> None:
    code, out, err = await cli(settings, "fail")
    assert code == 1 and out == "" and "handler_error" in err
    code, _, err = await cli(settings, "slow", '{"ms": 3000}', "--timeout", "0.2")
    assert code == 1 and "timeout" in err


async def test_cli_rejects_bad_json_and_reports_no_responder(settings: Settings) -> None:
    code, _, err = await cli(settings, "echo", "{not json")
    assert code == 2 and "not valid JSON" in err
    code, _, err = await cli(settings, "echo")
    assert code == 1 and "no_responder" in err
