"""The `peers` profile: real Node.js (ioredis) and PHP (phpredis) containers speaking the
seed's protocol with our services, both ways, and their pushes reaching a browser's socket."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from tests.ws_frames import FrameClient

from .conftest import Stack

PHP_CHANNEL = "laravel_database_php"


def node_peer_status(stack: Stack) -> dict[str, Any] | None:
    result = stack.compose("exec", "-T", "node_peer", "cat", "/tmp/peer-status.json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else None


def php_call(stack: Stack, action: str, data: str = "null", timeout: str = "5") -> tuple[int, str, str]:
    """Our caller's CLI, pointed at the PHP peer's base channel."""
    result = stack.compose(
        "exec", "-T", "-e", f"RPC_CHANNEL={PHP_CHANNEL}", "node_like_caller",
        "python", "-m", "node_like_caller", "call", action, data, "--timeout", timeout,
        check=False,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


@asynccontextmanager
async def gateway_socket(http: aiohttp.ClientSession, stack: Stack) -> AsyncIterator[FrameClient]:
    """A browser's socket: with a demo token as first frame where the gateway mints them."""
    async with http.get(stack.gateway + "/demo/token") as response:
        token = (await response.json()).get("token") if response.status == 200 else None
    async with http.ws_connect(stack.ws_url) as ws:
        if token:
            await ws.send_json({"type": "auth", "token": token})
        yield FrameClient(ws)


def test_node_peer_calls_our_responder(stack: Stack) -> None:
    stack.wait(lambda: (node_peer_status(stack) or {}).get("ok", 0) > 0, timeout=60, what="the Node.js peer's first reply")
    before = node_peer_status(stack)
    assert before is not None
    # Two more rounds (sum + configs each), every reply checked by the peer itself.
    stack.wait(lambda: (node_peer_status(stack) or {}).get("ok", 0) >= before["ok"] + 4, timeout=30, what="two more rounds")
    after = node_peer_status(stack)
    assert after is not None and after["failed"] == before["failed"], after
    logs = stack.compose("logs", "--no-color", "--tail=20", "node_peer").stdout
    lines = [json.loads(found) for found in re.findall(r'^.*?\| (\{"peer".*\})$', logs, flags=re.MULTILINE)]
    # The two rounds waited for above: older lines may be from a test that stopped the responder.
    sums = [line for line in lines if line.get("action") == "sum"][-2:]
    assert sums and all(line["ok"] is True and line["requestId"] for line in sums), lines
    configs = [line for line in lines if line.get("action") == "configs"]
    assert configs and configs[-1]["result"]["locale"] == "en"  # our responder's configs, seed-shaped


def test_our_caller_calls_the_php_peer(stack: Stack) -> None:
    deadline = time.monotonic() + 60
    while (call := php_call(stack, "sum", "[1, 2, 3]"))[0] != 0:
        assert time.monotonic() < deadline, f"the PHP peer never answered: {call}"
        time.sleep(0.5)
    assert json.loads(call[1]) == {"total": 6}
    code, out, err = php_call(stack, "configs")
    assert code == 0, err
    assert json.loads(out) == {"appName": "php responder", "locale": "fa", "currency": "IRR"}
    # Like the seed's Laravel command, an unknown action gets no reply at all.
    code, out, err = php_call(stack, "no_such_action", timeout="0.5")
    assert code == 1 and "timeout" in err
    # And the caller service calls it on its own, now and then (RPC_PEER_CHANNEL).
    stack.wait(
        lambda: f"peer peer:{PHP_CHANNEL}: sum" in stack.compose("logs", "--no-color", "--tail=50", "node_like_caller").stdout,
        timeout=30,
        what="node_like_caller's periodic call to the PHP peer",
    )


async def test_peer_pushes_reach_a_websocket_client(stack: Stack) -> None:
    """The PHP peer announces each answer, the Node.js peer each round, seed-style on the shared
    channel (requestId null); the gateway forwards both as events."""
    async with aiohttp.ClientSession() as http, gateway_socket(http, stack) as ws:
        php = await ws.next("event", timeout=30, action="php_peer")
        node = await ws.next("event", timeout=30, action="node_peer")
    assert php["source"] == "laravel" and php["data"]["answered"] == "sum" and php["data"]["count"] >= 1
    assert node["source"] == "nodejs" and node["data"]["calls"] >= 1 and node["data"]["results"]
