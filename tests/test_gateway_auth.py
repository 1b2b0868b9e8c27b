"""Who may connect, call and listen: tokens, the allow-list, per-user pushes, demo mode.

A real gateway (aiohttp TestServer), the real responder, a real redis-server; tokens are
signed here as a real app's backend would (PyJWT, keys from `cryptography`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pubsub_rpc import Responder, Settings, protocol
from ws_gateway.app import create_app
from ws_gateway.auth import ConfigError

from .ws_frames import DEMO, TEST_SECRET, connect, counters, demo_token, gateway_settings, mint, running_gateway

ROOT = Path(__file__).resolve().parent.parent
TOKEN = mint(sub="alice")


@pytest.fixture
async def gateway(settings: Settings, responder: Responder) -> AsyncIterator[TestServer]:
    async with running_gateway(settings, gateway_auth_timeout=0.5) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def private_pem(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def public_pem(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


async def test_hello_says_auth_is_required_and_calls_wait_for_a_token(gateway: TestServer, http: aiohttp.ClientSession) -> None:
    async with connect(http, gateway.make_url("/ws")) as ws:
        hello = await ws.next("hello")
        assert hello["auth"] == "required" and hello["demo"] is False
        await ws.send({"type": "call", "id": 1, "action": "echo", "data": 1})
        error = await ws.next("error")
        assert error["id"] == 1 and error["code"] == "unauthenticated"
        assert await ws.closed() == 4001  # GATEWAY_AUTH_TIMEOUT passed without a token
    assert (await counters(http, gateway))["auth_timeout"] == 1


async def test_first_frame_auth_gives_ready_with_the_allowed_actions(gateway: TestServer, http: aiohttp.ClientSession) -> None:
    token = mint(sub="alice", actions=["echo", "sum", "info", "no_such"])
    async with connect(http, gateway.make_url("/ws"), token) as ws:
        ready = await ws.next("ready")
        assert ready["sub"] == "alice" and ready["actions"] == ["echo", "sum"]  # info: not on the allow-list
        assert ready["expiresAt"] > 0
        assert (await ws.call(1, "sum", [1, 2]))["result"] == 3
    async with connect(http, gateway.make_url("/ws"), mint(actions=["*"])) as ws:
        assert (await ws.next("ready"))["actions"] == sorted("configs,echo,sum,slow,fail,actions".split(","))


async def test_subprotocol_auth_never_echoes_the_token(gateway: TestServer, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(gateway.make_url("/ws"), protocols=("pubsub-rpc.v1", "bearer." + TOKEN)) as ws:
        assert ws.protocol == "pubsub-rpc.v1"
        while (frame := await ws.receive_json(timeout=5))["type"] != "ready":
            pass
        assert frame["sub"] == "alice"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(gateway.make_url("/ws"), protocols=("bearer." + TOKEN,))
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (mint(secret="another-secret-of-the-same-length-0123456789abcdef0123456789abc"), 4001),
        (mint(ttl=-10), 4002),
        (mint(algorithm="HS512"), 4001),  # right secret, algorithm not accepted
        ("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo0MTAyNDQ0ODAwLCJhY3Rpb25zIjpbIioiXX0.", 4001),
        ("not a token", 4001),
        (12345, 4001),
    ],
    ids=["forged", "expired", "wrong-alg", "alg-none", "garbage", "not-a-string"],
)
async def test_bad_tokens_close_the_socket(
    gateway: TestServer, http: aiohttp.ClientSession, token: Any, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(http, gateway.make_url("/ws")) as ws:
        await ws.send({"type": "auth", "token": token})
        assert await ws.closed() == code
    if isinstance(token, str) and len(token) > 20:
        assert token not in caplog.text  # tokens are never logged, not even refused ones


async def test_refresh_keeps_the_socket_and_expiry_closes_it(gateway: TestServer, http: aiohttp.ClientSession) -> None:
    async with connect(http, gateway.make_url("/ws"), mint(sub="alice", ttl=1)) as ws:
        first = await ws.next("ready")
        await ws.auth(mint(sub="alice", ttl=2, actions=["echo"]))
        second = await ws.next("ready")
        assert second["actions"] == ["echo"] and second["expiresAt"] > first["expiresAt"]
        assert (await ws.call(1, "echo", "refreshed"))["result"] == "refreshed"
        assert (await ws.call(2, "sum", [1]))["code"] == "forbidden"
        assert await ws.closed() == 4002  # at the refreshed token's exp
    async with connect(http, gateway.make_url("/ws"), mint(sub="alice")) as ws:
        await ws.next("ready")
        await ws.auth(mint(sub="mallory"))
        assert await ws.closed() == 4001


async def test_forbidden_and_unauthenticated_calls_never_reach_redis(
    gateway: TestServer, http: aiohttp.ClientSession, raw_redis: aioredis.Redis, settings: Settings
) -> None:
    async with raw_redis.monitor() as monitor:
        async with connect(http, gateway.make_url("/ws")) as anonymous:
            await anonymous.send({"type": "call", "id": 1, "action": "echo", "data": "anon"})
            assert (await anonymous.next("error"))["code"] == "unauthenticated"
        async with connect(http, gateway.make_url("/ws"), mint(actions=["echo"])) as ws:
            assert (await ws.call(2, "info"))["code"] == "forbidden"  # not on the allow-list
            assert (await ws.call(3, "sum", [1]))["code"] == "forbidden"  # not in the token
            assert (await ws.call(4, "echo", "the-marker"))["result"] == "the-marker"
        published: list[str] = []
        async with asyncio.timeout(10):
            while True:
                command = (await monitor.next_command())["command"]
                if command.startswith("PUBLISH") and settings.request_channel in command:
                    published.append(command)
                    if "the-marker" in command:
                        break
        assert len(published) == 1, published  # only the allowed call was ever published
    numbers = await counters(http, gateway)
    assert numbers["forbidden"] == 2 and numbers["unauthenticated"] == 1


async def test_events_claim_filters_public_pushes(gateway: TestServer, http: aiohttp.ClientSession, responder: Responder) -> None:
    async with (
        connect(http, gateway.make_url("/ws"), mint(sub="all")) as everything,
        connect(http, gateway.make_url("/ws"), mint(sub="ticks", events=["tick"])) as ticks_only,
    ):
        await everything.next("ready")
        await ticks_only.next("ready")
        await responder.push("configs", {"locale": "en"})
        await responder.push("tick", {"n": 1})
        assert (await everything.next("event"))["action"] == "configs"
        assert (await everything.next("event"))["action"] == "tick"
        assert (await ticks_only.next("event"))["action"] == "tick"


async def test_user_pushes_reach_only_that_users_sockets(
    gateway: TestServer, http: aiohttp.ClientSession, raw_redis: aioredis.Redis, settings: Settings, responder: Responder
) -> None:
    url = gateway.make_url("/ws")
    async with (
        connect(http, url, mint(sub="alice")) as alice1,
        connect(http, url, mint(sub="alice")) as alice2,
        connect(http, url, mint(sub="bob")) as bob,
    ):
        for ws in (alice1, alice2, bob):
            await ws.next("ready")
        envelope = protocol.encode_push("laravel", "invoice", {"for": "alice"})
        assert await raw_redis.publish(settings.user_prefix + "alice", envelope) == 1  # the gateway's PSUBSCRIBE
        for ws in (alice1, alice2):
            event = await ws.next("event")
            assert event == {"type": "event", "action": "invoice", "source": "laravel", "data": {"for": "alice"}, "private": True}
        # The library's way to say the same: Responder.push(..., user=sub).
        await responder.push("receipt", [1], user="alice")
        for ws in (alice1, alice2):
            assert (await ws.next("event")) == {
                "type": "event",
                "action": "receipt",
                "source": settings.source,
                "data": [1],
                "private": True,
            }
        await responder.push("marker", None)  # public: bob's next event must be this one
        assert (await bob.next("event"))["action"] == "marker"
    await raw_redis.publish(settings.user_prefix + "nobody", envelope)
    assert (await counters(http, gateway))["user_pushes"] == 2


async def test_rs256_and_es256_tokens_verify_with_a_public_key(
    settings: Settings, responder: Responder, http: aiohttp.ClientSession
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for key, algorithm in ((rsa_key, "RS256"), (ec_key, "ES256")):
        config = {
            "gateway_jwt_secret": "",
            "gateway_jwt_public_key": public_pem(key),
            "gateway_jwt_audience": "pubsub-rpc",
            "gateway_jwt_issuer": "https://id.example",
        }
        async with running_gateway(settings, **config) as server:
            good = mint(private_pem(key), "carol", algorithm=algorithm, aud="pubsub-rpc", iss="https://id.example")
            async with connect(http, server.make_url("/ws"), good) as ws:
                assert (await ws.next("ready"))["sub"] == "carol"
                assert (await ws.call(1, "echo", algorithm))["result"] == algorithm
            wrong_audience = mint(private_pem(key), "carol", algorithm=algorithm, aud="other", iss="https://id.example")
            no_issuer = mint(private_pem(key), "carol", algorithm=algorithm, aud="pubsub-rpc")
            # Algorithm confusion: an HS256 token "signed" with the public key text.
            confused = mint(TEST_SECRET, "carol", aud="pubsub-rpc", iss="https://id.example")
            for bad in (wrong_audience, no_issuer, confused):
                async with connect(http, server.make_url("/ws"), bad) as ws:
                    assert await ws.closed() == 4001


async def test_demo_mode_mints_tokens_and_says_so(
    settings: Settings, responder: Responder, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_gateway(settings) as server:
        async with http.get(server.make_url("/demo/token")) as response:
            assert response.status == 404
    with caplog.at_level(logging.WARNING, logger="ws_gateway.app"):
        async with running_gateway(settings, gateway_demo_mode=True, gateway_jwt_secret="") as server:
            assert "DEMO MODE" in caplog.text
            token = await demo_token(http, server.make_url("/"))
            async with connect(http, server.make_url("/ws"), token) as ws:
                assert (await ws.next("hello"))["demo"] is True
                ready = await ws.next("ready")
                assert ready["sub"].startswith("demo-") and "info" not in ready["actions"] and "echo" in ready["actions"]
                assert (await ws.call(1, "echo", "demo"))["result"] == "demo"
            async with connect(http, server.make_url("/ws"), mint()) as ws:  # not signed by the generated secret
                assert await ws.closed() == 4001
            # Renewal: with the current token, a new one for the same sub (the page's refresh).
            async with http.get(server.make_url("/demo/token"), headers={"Authorization": f"Bearer {token}"}) as response:
                renewed = await response.json()
            async with connect(http, server.make_url("/ws"), token) as ws:
                first = await ws.next("ready")
                await ws.auth(renewed["token"])
                assert (await ws.next("ready"))["sub"] == first["sub"] == renewed["sub"]
            async with connect(http, server.make_url("/ws"), DEMO) as ws:  # a fresh demo user
                assert (await ws.next("ready"))["sub"] != renewed["sub"]
                await ws.auth(renewed["token"])  # someone else's token: refused
                assert await ws.closed() == 4001
            async with http.get(server.make_url("/demo/token"), headers={"Authorization": "Bearer forged"}) as response:
                assert response.status == 401
    assert token not in caplog.text


def test_no_secret_and_no_demo_mode_refuses_to_start(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_JWT_SECRET.*GATEWAY_JWT_PUBLIC_KEY"):
        create_app(gateway_settings(settings, gateway_jwt_secret=""))
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        create_app(gateway_settings(settings, gateway_jwt_secret="short"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(PYTHONPATH=str(ROOT / "services"), REDIS_URL=settings.redis_url)
    done = subprocess.run([sys.executable, "-m", "ws_gateway"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "GATEWAY_JWT_SECRET" in done.stderr + done.stdout


async def test_host_and_origin_guards(gateway: TestServer, http: aiohttp.ClientSession) -> None:
    rebinding = {"Host": f"attacker.example:{gateway.port}"}
    for path in ("/", "/ws", "/demo/token"):
        async with http.get(gateway.make_url(path), headers=rebinding) as response:
            assert response.status == 403, path
    async with http.get(gateway.make_url("/healthz"), headers=rebinding) as response:
        assert response.status == 200  # probes may use any name
    async with http.get(gateway.make_url("/metrics"), headers=rebinding) as response:
        assert response.status == 200  # nor may Prometheus, which scrapes by container IP
    async with connect(http, gateway.make_url("/ws"), TOKEN, headers={"Host": f"localhost:{gateway.port}"}) as ws:
        assert (await ws.next("ready"))["sub"] == "alice"
    for origin in ("http://evil.example", "null", f"http://attacker.example:{gateway.port}"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(gateway.make_url("/ws"), origin=origin)
        assert info.value.status == 403, origin
    async with connect(http, gateway.make_url("/ws"), TOKEN, origin="http://localhost:5173") as ws:  # port ignored
        assert (await ws.next("ready"))["sub"] == "alice"
    numbers = await counters(http, gateway)
    assert numbers["refused_host"] == 3 and numbers["refused_origin"] == 3
