"""Peers in other languages, written to the seed's protocol, against our services."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pubsub_rpc import Caller, NoResponder, Responder, Settings

from scripts.redis_process import RedisProcess

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
    environ = {**os.environ, "REDIS_URL": settings.redis_url, "PEER_PATTERN": settings.responder_pattern}
    process = await asyncio.create_subprocess_exec(
        php, str(INTEROP / "php" / "seed_peer.php"), env=environ, stdout=asyncio.subprocess.DEVNULL
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


def add_acl_user(server: RedisProcess, rules: str) -> tuple[str, str]:
    """A user of the test's own with exactly ``rules`` (besides its password)."""
    user, password = f"peer_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    command = ["redis-cli", "-p", str(server.port), "ACL", "SETUSER", user, "on", f">{password}", *rules.split()]
    assert subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip() == "OK"
    return user, password


async def test_node_peer_calls_our_responder_as_a_least_privilege_user(
    node: str, responder: Responder, settings: Settings, redis_server: RedisProcess, tmp_path: Path
) -> None:
    """The peers profile's Node.js container, as the `seed_caller` ACL user would run it."""
    channel = settings.channel
    user, password = add_acl_user(redis_server, f"resetchannels &{channel}_sender &{channel} -@all +subscribe +publish")
    (tmp_path / "password").write_text(password + "\n")
    status = tmp_path / "status.json"
    environ = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "REDIS_USERNAME": user,
        "REDIS_PASSWORD_FILE": str(tmp_path / "password"),
        "RPC_CHANNEL": channel,
        "PEER_INTERVAL": "0.1",
        "PEER_STATUS_FILE": str(status),
    }
    async with Caller(settings) as listener, listener.events() as events:
        with (tmp_path / "peer.log").open("w") as log:
            process = await asyncio.create_subprocess_exec(
                node, str(INTEROP / "node" / "seed_peer.js"), env=environ, stdout=log, stderr=log
            )
            try:
                await eventually(
                    lambda: status.exists() and json.loads(status.read_text())["ok"] >= 4, what="two rounds answered"
                )
                async with asyncio.timeout(10):
                    push = await anext(event async for event in events if event.action == "node_peer")
            finally:
                process.terminate()
                await asyncio.wait_for(process.wait(), 10)
    counters = json.loads(status.read_text())
    assert counters["failed"] == 0, (tmp_path / "peer.log").read_text()
    assert push.source == "nodejs" and push.data["calls"] >= 2
    assert process.returncode == 0  # SIGTERM: a clean exit


async def test_php_peer_answers_and_pushes_as_a_least_privilege_user(
    settings: Settings, redis_server: RedisProcess, tmp_path: Path
) -> None:
    """The peers profile's PHP container, as the `seed_responder` ACL user would run it: its
    own base channel, and its pushes on the shared one."""
    php = shutil.which("php")
    if php is None:
        pytest.fail("PHP interop needs php-cli and php-redis (make test installs them as root)")
    base = f"php_{uuid.uuid4().hex[:8]}"
    rules = f"resetchannels &{base}_sender &{base} &{settings.channel} -@all +psubscribe +publish"
    user, password = add_acl_user(redis_server, rules)
    (tmp_path / "password").write_text(password)
    environ = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "REDIS_USERNAME": user,
        "REDIS_PASSWORD_FILE": str(tmp_path / "password"),
        "PEER_PATTERN": f"{base}_sender",
        "PEER_ANNOUNCE_CHANNEL": settings.channel,
    }
    with (tmp_path / "peer.log").open("w") as log:
        process = await asyncio.create_subprocess_exec(
            php, str(INTEROP / "php" / "seed_peer.php"), env=environ, stdout=log, stderr=log
        )
    try:
        async with (
            Caller(dataclasses.replace(settings, channel=base)) as caller,
            Caller(settings) as listener,
            listener.events() as events,
        ):

            async def php_listening() -> bool:
                try:
                    await caller.call("sum", [1, 2], timeout=2)
                    return True
                except NoResponder:
                    return False

            await eventually(php_listening, timeout=15, what="the PHP peer to subscribe")
            assert await caller.call("sum", [1, 2, 3]) == {"total": 6}
            # A seed-era peer ignores the envelope's trace-context headers.
            traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            assert await caller.call("sum", [1, 2], headers={"traceparent": traceparent, "tracestate": "a=b"}) == {"total": 3}
            async with asyncio.timeout(10):
                push = await anext(event async for event in events if event.action == "php_peer")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
    assert push.source == "laravel" and push.data["answered"] == "sum", (tmp_path / "peer.log").read_text()
