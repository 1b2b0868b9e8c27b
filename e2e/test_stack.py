"""The real containers, used as a user would: WebSockets from the host through the published
port, the caller's CLI through `compose exec`, and compose itself for restarts."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from tests.ws_frames import connect, mint

from .conftest import Stack, gateway_ready


def app_token(stack: Stack) -> str:
    """A token as a real app's backend signs it, with the deployment's generated secret."""
    return mint(secret=stack.jwt_secret, sub="e2e-user", actions=("*",))


@pytest.mark.parametrize(
    ("action", "data", "expected"),
    [
        ("echo", {"hello": "world"}, {"hello": "world"}),
        ("sum", [1, 2, 3.5], 6.5),
        ("slow", {"ms": 50}, {"sleptMs": 50}),
    ],
)
async def test_round_trip_over_the_published_gateway(stack: Stack, action: str, data: Any, expected: Any) -> None:
    async with aiohttp.ClientSession() as http, connect(http, stack.ws_url, app_token(stack)) as ws:
        frame = await ws.call(1, action, data)
    assert frame["type"] == "result" and frame["result"] == expected


async def test_configs_and_introspection(stack: Stack) -> None:
    """Browsers get the sample actions; introspection (`info`) stays for services only."""
    async with aiohttp.ClientSession() as http, connect(http, stack.ws_url, app_token(stack)) as ws:
        configs = await ws.call(1, "configs")
        actions = await ws.call(2, "actions")
        info = await ws.call(3, "info")
    assert configs["result"]["locale"] == "en"
    assert {a["name"] for a in actions["result"]} >= {"configs", "echo", "sum", "slow", "fail", "actions", "info"}
    assert info["type"] == "error" and info["code"] == "forbidden"
    by_cli = await asyncio.to_thread(stack.cli, "info")
    assert json.loads(by_cli.stdout)["name"] == "laravel_like_responder"


async def test_the_gateway_refuses_sockets_without_a_valid_token(stack: Stack) -> None:
    """What a copied deployment does with an anonymous or forged client (demo mode or not)."""
    async with aiohttp.ClientSession() as http:
        async with connect(http, stack.ws_url) as ws:
            anonymous = await ws.call(1, "echo", "x")
        async with connect(http, stack.ws_url, mint(secret="not-the-deployment-secret-0123456789abcdef", sub="mallory")) as ws:
            await ws.send({"type": "call", "id": 2, "action": "echo", "data": "x"})
            closed = await ws.ws.receive(timeout=10)
            while closed.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                closed = await ws.ws.receive(timeout=10)
    assert anonymous["type"] == "error" and anonymous["code"] == "unauthenticated"
    assert ws.ws.close_code == 4001


@pytest.mark.parametrize(
    ("action", "data", "timeout", "code"),
    [
        ("no_such_action", None, None, "forbidden"),  # not on the allow-list: never reaches Redis
        ("sum", "not a list", None, "invalid_request"),
        ("fail", None, None, "handler_error"),
        ("slow", {"ms": 3000}, 0.3, "timeout"),
    ],
)
async def test_errors_arrive_named(stack: Stack, action: str, data: Any, timeout: float | None, code: str) -> None:
    async with aiohttp.ClientSession() as http, connect(http, stack.ws_url, app_token(stack)) as ws:
        frame = await ws.call(1, action, data, timeout)
    assert frame["type"] == "error" and frame["code"] == code


async def test_a_service_calling_an_unknown_action_gets_unknown_action(stack: Stack) -> None:
    result = await asyncio.to_thread(stack.cli, "no_such_action")
    assert result.returncode != 0 and "unknown_action" in result.stdout + result.stderr


async def test_push_reaches_a_websocket_client(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http, connect(http, stack.ws_url, app_token(stack)) as ws:
        frame = await ws.next("event", timeout=10, action="configs", source="laravel")
    assert frame["data"]["locale"] == "en"


def test_cli_through_compose_exec(stack: Stack) -> None:
    ok = stack.cli("sum", "[1, 2, 3]")
    assert ok.returncode == 0 and json.loads(ok.stdout) == 6
    failed = stack.cli("fail")
    assert failed.returncode == 1 and "handler_error" in failed.stderr


SEED_CLIENT = """
import json, os, redis
# The caller's ACL user may do exactly what the seed's caller does: publish C_sender, read C.
password = open(os.environ["REDIS_PASSWORD_FILE"]).read().strip()
r = redis.Redis(host="redis", username=os.environ["REDIS_USERNAME"], password=password)
p = r.pubsub(ignore_subscribe_messages=True)
p.subscribe("laravel_database_general")
p.get_message(timeout=1)
r.publish("laravel_database_general_sender", json.dumps(
    {"action": "configs", "data": None, "requestId": "seed-e2e", "source": "nodejs"}))
while True:
    m = p.get_message(timeout=5)
    if m is None:
        raise SystemExit("no reply")
    reply = json.loads(m["data"])
    if reply.get("requestId") == "seed-e2e":
        print(json.dumps(reply))
        break
"""


def test_seed_wire_format_inside_the_network(stack: Stack) -> None:
    """A raw Redis client in the compose network, speaking exactly what the seed speaks."""
    result = stack.python("node_like_caller", SEED_CLIENT)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["source"] == "laravel" and reply["action"] == "configs"
    assert reply["locale"] == "en"  # merged at the top level, as Laravel's reply is


def test_redis_refuses_unauthenticated_clients(stack: Stack) -> None:
    """The `default` user is off: no password, no Redis, inside the container or across the network."""
    local = stack.compose("exec", "-T", "redis", "redis-cli", "ping", check=False)
    assert "NOAUTH" in local.stdout + local.stderr and "PONG" not in local.stdout
    remote = stack.python(
        "node_like_caller",
        "import redis\n"
        "try:\n    redis.Redis(host='redis', protocol=2, retry=None).ping()\n"
        "except redis.AuthenticationError as exc:\n    print('refused:', exc)",
    )
    assert remote.returncode == 0 and remote.stdout.startswith("refused: Authentication required"), remote


AS_THE_CALLER = """
import os, redis
password = open(os.environ["REDIS_PASSWORD_FILE"]).read().strip()
r = redis.Redis(host="redis", username=os.environ["REDIS_USERNAME"], password=password, protocol=2, retry=None)
def attempt(what, *command):
    p = r.pubsub()
    try:
        getattr(p, what)(*command)
        print(what, command, p.get_message(timeout=5)["type"])
    except redis.exceptions.NoPermissionError as exc:
        print(what, command, "NOPERM")
    finally:
        p.close()
attempt("subscribe", "laravel_database_general")
attempt("psubscribe", "*")
attempt("subscribe", "laravel_database_general.reply.ws_gateway.0123abcd")
try:
    r.publish("laravel_database_general", "fake push")
except redis.exceptions.NoPermissionError:
    print("publish push NOPERM")
"""


def test_the_callers_credential_is_confined_to_its_channels(stack: Stack) -> None:
    """With the caller's real password, inside the network: its own channels yes, `*` no."""
    result = stack.python("node_like_caller", AS_THE_CALLER)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "subscribe ('laravel_database_general',) subscribe",
        "psubscribe ('*',) NOPERM",
        "subscribe ('laravel_database_general.reply.ws_gateway.0123abcd',) NOPERM",
        "publish push NOPERM",
    ]


def test_responder_restart_fails_fast_then_recovers(stack: Stack) -> None:
    stack.compose("stop", "laravel_like_responder")
    started = time.monotonic()
    during = stack.cli("echo", '"hi"')
    assert during.returncode == 1 and "no_responder" in during.stderr
    assert time.monotonic() - started < 10  # includes `compose exec` start-up; the call itself fails at once

    stack.compose("start", "laravel_like_responder")
    stack.wait(lambda: stack.health("laravel_like_responder") == "healthy", what="the responder to be healthy")
    after = stack.cli("echo", '"hi"')
    assert after.returncode == 0 and json.loads(after.stdout) == "hi"


# docs/operations.md promises this: reconnect backoff is capped at 2 s (+-20 % jitter), so a
# round trip works again a few seconds after Redis is back, however long it was away.
RECOVERY_BOUND_S = 5.0


async def test_redis_restart_every_service_reconnects(stack: Stack) -> None:
    started = time.monotonic()
    await asyncio.to_thread(stack.compose, "restart", "redis")
    back = time.monotonic()  # Redis answers again: from here on the services' backoff decides

    async def round_trip() -> bool:
        if not await asyncio.to_thread(gateway_ready, stack.gateway):
            return False
        try:
            # A short call timeout: right after a restart a responder may take a request before
            # its publisher is back, and that reply is lost (the window issue 9 closes); with
            # the 5 s default this would measure that timeout, not the recovery.
            async with aiohttp.ClientSession() as http, connect(http, stack.ws_url, app_token(stack)) as ws:
                return (await ws.call(1, "echo", "back", 1.0))["type"] == "result"
        except (aiohttp.ClientError, TimeoutError):
            return False

    deadline = back + 60  # a bound on the wait only; the claim is asserted below
    while not await round_trip():
        assert time.monotonic() < deadline, "no round trip within 60 s of restarting Redis"
        await asyncio.sleep(0.1)
    recovery = time.monotonic() - back
    print(f"\nRedis restart took {back - started:.2f}s; Redis back -> first browser round trip: {recovery:.2f}s")
    assert recovery < RECOVERY_BOUND_S, f"round trips resumed {recovery:.2f}s after Redis was back (docs: under 5 s)"
    await asyncio.to_thread(stack.wait, stack.all_healthy, what="every container healthy again")
    assert (await asyncio.to_thread(stack.cli, "sum", "[2, 2]")).stdout.strip() == "4"


async def test_compose_stop_is_graceful(stack: Stack) -> None:
    """An in-flight call is answered during the responder's drain; every service exits 0."""
    async with aiohttp.ClientSession() as http, connect(http, stack.ws_url, app_token(stack)) as ws:
        await ws.send({"type": "call", "id": 7, "action": "slow", "data": {"ms": 1500}, "timeout": 10})
        async with asyncio.timeout(10):  # the responder has taken the call: now stop it
            while json.loads((await asyncio.to_thread(stack.cli, "info")).stdout)["inFlight"] < 1:
                pass
        stopping = asyncio.create_task(asyncio.to_thread(stack.compose, "stop", "laravel_like_responder"))
        frame = await ws.next("result", timeout=15, id=7)
        await stopping
    assert frame["type"] == "result" and frame["result"] == {"sleptMs": 1500}
    await asyncio.to_thread(stack.compose, "stop")
    for service in ("laravel_like_responder", "node_like_caller", "ws_gateway", "redis"):
        assert await asyncio.to_thread(stack.exit_code, service) == "exited 0", service
