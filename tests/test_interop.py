"""Peers in other languages, written to the seed's protocol, against our services."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pubsub_rpc import Caller, NoResponder, Responder, Settings

from .conftest import eventually

pytestmark = pytest.mark.interop
INTEROP = Path(__file__).resolve().parent.parent / "interop"


async def run(*argv: str, timeout: float = 30) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:  # timed out or cancelled: never leave the peer running
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
    return process.returncode or 0, stdout.decode(), stderr.decode()


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None or not (INTEROP / "node" / "node_modules" / "ioredis").exists():
        pytest.fail("Node.js interop needs `node` and `npm ci` in interop/node (make test does both)")
    return binary


async def test_node_seed_caller_gets_seed_shaped_replies_from_our_responder(
    node: str, responder: Responder, settings: Settings
) -> None:
    code, out, err = await run(
        node, str(INTEROP / "node" / "seed_protocol_caller.js"), settings.redis_url, settings.channel, "configs"
    )
    assert code == 0, err
    reply = json.loads(out)
    # What the seed's parseResponse relies on: requestId echoed, source not "nodejs",
    # configs keys at the top level.
    assert reply["source"] != "nodejs" and reply["action"] == "configs"
    assert reply["locale"] == "en" and reply["appName"]


async def test_node_seed_caller_many_concurrent_calls(node: str, responder: Responder, settings: Settings) -> None:
    code, out, err = await run(
        node, str(INTEROP / "node" / "seed_protocol_caller.js"), settings.redis_url, settings.channel, "sum", "[1,2,3]", "200"
    )
    assert code == 0, err
    replies = [json.loads(line) for line in out.splitlines()]
    assert len(replies) == 200 and len({r["requestId"] for r in replies}) == 200
    assert all(r["ok"] is True and r["result"] == 6 for r in replies)


async def test_node_seed_caller_gets_an_error_reply_not_a_timeout(node: str, responder: Responder, settings: Settings) -> None:
    code, out, err = await run(
        node, str(INTEROP / "node" / "seed_protocol_caller.js"), settings.redis_url, settings.channel, "nope"
    )
    assert code == 0, err
    reply = json.loads(out)
    assert reply["ok"] is False and reply["error"]["code"] == "unknown_action"


@pytest.fixture
async def php_responder(settings: Settings) -> AsyncIterator[None]:
    php = shutil.which("php")
    if php is None:
        pytest.fail("PHP interop needs php-cli and php-redis (make test installs them as root)")
    url = urlsplit(settings.redis_url)
    process = await asyncio.create_subprocess_exec(
        php,
        str(INTEROP / "php" / "seed_protocol_responder.php"),
        url.hostname or "127.0.0.1",
        str(url.port),
        settings.responder_pattern,
    )
    yield
    process.kill()
    await asyncio.wait_for(process.wait(), 10)


async def test_our_caller_against_a_seed_style_php_responder(php_responder: None, settings: Settings) -> None:
    async with Caller(settings) as caller:

        async def php_listening() -> bool:
            try:
                await caller.call("configs", timeout=2)
                return True
            except NoResponder:
                return False

        await eventually(php_listening, timeout=15, what="the PHP responder to subscribe")
        # The PHP responder ignores replyTo and answers on the shared channel, merged.
        assert await caller.call("configs") == {"appName": "php responder", "locale": "fa", "currency": "IRR"}
        assert await caller.call("sum", [1, 2, 3]) == {"total": 6}
        # A seed-era peer ignores the envelope's trace-context headers.
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert await caller.call("sum", [1, 2], headers={"traceparent": traceparent, "tracestate": "a=b"}) == {"total": 3}
