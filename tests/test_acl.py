"""The compose stack's Redis ACL (deploy/redis/users.acl.template, rendered by
scripts/make_secrets.py) against a real redis-server started with that very file: every
allowance a service needs works, and each refusal that keeps one party out of another's
channels holds, with real clients."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, ConnectionLost, Responder, Settings
from pubsub_rpc.presence import beacon_for
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.retry import Retry

from scripts.make_secrets import INFRA_USERS, USERS, password_hash, render_acl
from scripts.redis_process import RedisProcess

from .conftest import ACL_CHANNEL as C
from .conftest import ACL_PASSWORDS as PASSWORDS
from .conftest import ACL_PHP_CHANNEL as PHP
from .conftest import eventually

# RESP2 and AUTH, as the library connects; no retries (a refusal is the answer).
CLIENT_OPTIONS: dict[str, Any] = {"protocol": 2, "socket_timeout": 5, "socket_connect_timeout": 5, "retry": Retry(NoBackoff(), 0)}


def run(server: RedisProcess, user: str | None, *command: str) -> object:
    """One command on a fresh real connection as ``user`` (None: unauthenticated)."""
    password = PASSWORDS[user] if user else None
    client = redis.Redis(port=server.port, username=user, password=password, **CLIENT_OPTIONS)
    try:
        if command[0] not in ("SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE"):
            return client.execute_command(*command)
        with client.pubsub() as pubsub:  # a subscription's answer comes as a pub/sub message
            subscribe = {"SUBSCRIBE": pubsub.subscribe, "PSUBSCRIBE": pubsub.psubscribe, "SSUBSCRIBE": pubsub.ssubscribe}[
                command[0]
            ]
            subscribe(*command[1:])
            confirmation = pubsub.get_message(timeout=5)  # raises on a refusal
            assert confirmation is not None and confirmation["type"] == command[0].lower(), confirmation
            return confirmation
    finally:
        client.close()


# The users whose services run the library, each with its data-path probe channels.
PROBERS = [("responder", "laravel_like_responder"), ("caller", "node_like_caller"), ("gateway", "ws_gateway")]

# What each service does, and each must keep working (reply channels: <C>.reply.<service>.<random>).
ALLOWED = [
    ("responder", ("PSUBSCRIBE", f"{C}_sender")),
    ("responder", ("PUBLISH", C, "push or seed-era reply")),
    ("responder", ("PUBLISH", f"{C}.reply.node_like_caller.0123abcd", "reply")),
    ("responder", ("PUBLISH", f"{C}.reply.ws_gateway.0123abcd", "reply")),
    ("responder", ("PUBLISH", f"{C}.user.alice", "user push")),
    ("caller", ("SUBSCRIBE", C, f"{C}.reply.node_like_caller.0123abcd")),
    ("caller", ("PUBLISH", f"{C}_sender", "request")),
    # node_like_caller also calls the PHP peer of the `peers` profile (RPC_PEER_CHANNEL).
    ("caller", ("SUBSCRIBE", PHP, f"{PHP}.reply.node_like_caller.0123abcd")),
    ("caller", ("PUBLISH", f"{PHP}_sender", "request to the PHP peer")),
    ("gateway", ("SUBSCRIBE", C, f"{C}.reply.ws_gateway.0123abcd")),
    ("gateway", ("PSUBSCRIBE", f"{C}.user.*")),
    ("gateway", ("PUBLISH", f"{C}_sender", "request")),
    *[
        (user, (command, f"{C}.probe.{service}.0123abcd", *(["nonce"] if command == "PUBLISH" else [])))
        for user, service in PROBERS
        for command in ("SUBSCRIBE", "PUBLISH")
    ],
    # Presence heartbeats (pubsub_rpc.presence): every service announces, the gateway listens.
    *[(user, ("PUBLISH", f"{C}.presence", "heartbeat")) for user in ("responder", "caller", "gateway")],
    ("gateway", ("SUBSCRIBE", f"{C}.presence")),
    ("seed_caller", ("SUBSCRIBE", C)),
    ("seed_caller", ("PUBLISH", f"{C}_sender", "request")),
    ("seed_responder", ("PSUBSCRIBE", f"{PHP}_sender")),
    ("seed_responder", ("PUBLISH", PHP, "seed reply")),
    # Demo announcements the page shows (seed-style pushes); a real seed app's users lack them.
    ("seed_caller", ("PUBLISH", C, "peer announcement")),
    ("seed_responder", ("PUBLISH", C, "peer announcement")),
    *[(user, ("CLIENT", "SETNAME", f"{user}-sub")) for user in USERS if user not in ("healthcheck", "cluster_admin")],
    # Cluster mode (sharded pub/sub); CLUSTER SLOTS is refused by this standalone server
    # with an error that is not NOPERM, so the right itself is checked in test_cluster_acl.
    ("responder", ("SSUBSCRIBE", f"{{{C}_sender}}.requests")),
    ("responder", ("SPUBLISH", f"{C}.reply.node_like_caller.{{0123abcd}}", "reply")),
    ("responder", ("SPUBLISH", f"{C}.reply.ws_gateway.{{0123abcd}}", "reply")),
    ("caller", ("SPUBLISH", f"{{{C}_sender}}.requests", "request")),
    ("caller", ("SSUBSCRIBE", f"{C}.reply.node_like_caller.{{0123abcd}}")),
    ("gateway", ("SPUBLISH", f"{{{C}_sender}}.requests", "request")),
    ("gateway", ("SSUBSCRIBE", f"{C}.reply.ws_gateway.{{0123abcd}}")),
    *[(user, ("PING",)) for user in USERS + INFRA_USERS],
    # Sentinel mode: a link checks ROLE after connecting (a replica or demoted master is refused).
    *[(user, ("ROLE",)) for user, _ in PROBERS],
    # The `ha` profile's Redis users: a replica's sync handshake, and what Sentinel sends.
    ("replication", ("REPLCONF", "listening-port", "6380")),
    ("sentinel", ("INFO", "replication")),
    ("sentinel", ("ROLE",)),
    ("sentinel", ("SUBSCRIBE", "__sentinel__:hello")),
    ("sentinel", ("PUBLISH", "__sentinel__:hello", "hello")),
    ("sentinel", ("CLIENT", "SETNAME", "sentinel-x")),
    ("sentinel", ("CLIENT", "KILL", "TYPE", "pubsub")),
]

# Each refusal, with why it matters.
REFUSED = [
    # Another service's probe channel (its readiness could be faked), or a probe pattern.
    *[
        (user, (command, f"{C}.probe.{other}.0123abcd", *(["nonce"] if command == "PUBLISH" else [])))
        for user, _ in PROBERS
        for _, other in PROBERS
        if other != dict(PROBERS)[user]
        for command in ("SUBSCRIBE", "PUBLISH")
    ],
    *[(user, ("PSUBSCRIBE", f"{C}.probe.*")) for user, _ in PROBERS],
    ("seed_caller", ("SUBSCRIBE", f"{C}.probe.node_like_caller.0123abcd")),
    ("caller", ("SUBSCRIBE", f"{C}.reply.ws_gateway.0123abcd")),  # another service's replies
    ("caller", ("SUBSCRIBE", f"{C}.user.alice")),  # a user's private pushes
    ("caller", ("PSUBSCRIBE", "*")),  # everything
    ("caller", ("PSUBSCRIBE", f"{C}.reply.*")),  # every reply
    ("caller", ("SUBSCRIBE", f"{C}_sender")),  # other callers' requests
    ("caller", ("PUBLISH", C, "fake push")),
    ("caller", ("PUBLISH", f"{C}.reply.ws_gateway.0123abcd", "fake reply")),
    ("caller", ("PUBLISH", f"{C}.reply.node_like_caller.0123abcd", "fake reply")),
    ("caller", ("PUBLISH", f"{C}.user.alice", "fake user push")),
    ("gateway", ("PUBLISH", C, "fake push")),
    ("gateway", ("PUBLISH", f"{C}.reply.node_like_caller.0123abcd", "fake reply")),
    ("gateway", ("PUBLISH", f"{C}.user.alice", "fake user push")),
    ("gateway", ("SUBSCRIBE", f"{C}.reply.node_like_caller.0123abcd")),
    ("gateway", ("SUBSCRIBE", f"{C}.user.alice")),  # only the one pattern, by PSUBSCRIBE
    ("gateway", ("PSUBSCRIBE", "*")),
    ("gateway", ("PSUBSCRIBE", f"{C}.reply.*")),
    ("responder", ("SUBSCRIBE", f"{C}.reply.node_like_caller.0123abcd")),  # it writes replies, never reads them
    ("responder", ("PSUBSCRIBE", f"{C}.reply.*")),
    ("responder", ("PSUBSCRIBE", "*")),
    ("responder", ("PSUBSCRIBE", "*_sender")),  # the seed's pattern would hear the PHP peer's requests
    ("responder", ("SUBSCRIBE", C)),
    ("responder", ("PUBLISH", f"{C}_sender", "a request to itself: the self-feeding storm")),
    ("responder", ("PUBLISH", f"{PHP}_sender", "request")),
    ("seed_caller", ("SUBSCRIBE", f"{C}.reply.node_like_caller.0123abcd")),
    ("seed_caller", ("PUBLISH", f"{C}.reply.node_like_caller.0123abcd", "fake reply")),
    ("seed_caller", ("PSUBSCRIBE", "*")),
    ("seed_responder", ("PSUBSCRIBE", "*_sender")),
    ("seed_responder", ("PSUBSCRIBE", f"{C}_sender")),
    ("seed_responder", ("PUBLISH", f"{C}.user.alice", "fake user push")),
    ("seed_responder", ("PUBLISH", f"{PHP}_sender", "a request to itself")),
    # Only gateways read heartbeats; seed peers cannot fake one.
    ("responder", ("SUBSCRIBE", f"{C}.presence")),
    ("caller", ("SUBSCRIBE", f"{C}.presence")),
    ("seed_caller", ("SUBSCRIBE", f"{C}.presence")),
    ("seed_caller", ("PUBLISH", f"{C}.presence", "fake heartbeat")),
    ("seed_responder", ("PUBLISH", f"{C}.presence", "fake heartbeat")),
    # The `ha` profile's Redis users do their job only: no data, no channels of the services.
    *[
        (user, command)
        for user in INFRA_USERS
        for command in (
            ("GET", "k"),
            ("SET", "k", "v"),
            ("KEYS", "*"),
            ("EVAL", "return 1", "0"),
            ("FLUSHALL",),
            ("ACL", "LIST"),
            ("CONFIG", "GET", "*"),
            ("SUBSCRIBE", C),
            ("PUBLISH", f"{C}_sender", "request"),
            ("PSUBSCRIBE", "*"),
        )
    ],
    ("replication", ("INFO",)),
    ("replication", ("REPLICAOF", "NO", "ONE")),
    ("replication", ("CLIENT", "KILL", "TYPE", "pubsub")),
    ("healthcheck", ("CLIENT", "SETNAME", "x")),
    # Cluster mode: the same walls on sharded channels.
    ("caller", ("SSUBSCRIBE", f"{C}.reply.ws_gateway.{{0123abcd}}")),  # another service's replies
    ("caller", ("SSUBSCRIBE", f"{{{C}_sender}}.requests")),  # other callers' requests
    ("caller", ("SPUBLISH", f"{C}.reply.node_like_caller.{{0123abcd}}", "fake reply")),
    ("gateway", ("SPUBLISH", f"{C}.reply.node_like_caller.{{0123abcd}}", "fake reply")),
    ("responder", ("SPUBLISH", f"{{{C}_sender}}.requests", "a request to itself")),
    ("responder", ("SSUBSCRIBE", f"{C}.reply.node_like_caller.{{0123abcd}}")),
    ("seed_caller", ("SPUBLISH", f"{{{C}_sender}}.requests", "request")),
    *[(user, ("CLUSTER", "SLOTS")) for user in ("seed_caller", "seed_responder", "healthcheck")],
    # The cluster profile's admin joins nodes and moves slots: no channel, no key.
    ("cluster_admin", ("SUBSCRIBE", C)),
    ("cluster_admin", ("PUBLISH", f"{C}_sender", "request")),
    ("cluster_admin", ("SPUBLISH", f"{{{C}_sender}}.requests", "request")),
    ("cluster_admin", ("CLIENT", "SETNAME", "x")),
    ("healthcheck", ("ROLE",)),
    ("healthcheck", ("SUBSCRIBE", C)),
    ("healthcheck", ("PUBLISH", C, "x")),
]

# Nobody gets introspection, keys, configuration or administration.
NOBODY = [
    ("PUBSUB", "CHANNELS"),
    ("PUBSUB", "NUMSUB", C),
    ("KEYS", "*"),
    ("GET", "k"),
    ("SET", "k", "v"),
    ("CONFIG", "GET", "*"),
    ("INFO",),
    ("MONITOR",),
    ("CLIENT", "LIST"),
    ("CLIENT", "KILL", "TYPE", "pubsub"),
    ("ACL", "LIST"),
    ("ACL", "WHOAMI"),
    ("SELECT", "1"),
    ("FLUSHALL",),
    ("EVAL", "return 1", "0"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "LIST"),
    ("ACL", "SETUSER", "mallory", "on", ">pw", "+@all", "allchannels"),
    ("SAVE",),
    ("REPLICAOF", "NO", "ONE"),
]


@pytest.mark.parametrize(("user", "command"), ALLOWED, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x)
def test_each_user_may_do_its_job(acl_redis: RedisProcess, user: str, command: tuple[str, ...]) -> None:
    run(acl_redis, user, *command)  # raises on a refusal


@pytest.mark.parametrize(("user", "command"), REFUSED, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x)
def test_each_user_is_refused_what_is_not_its_job(acl_redis: RedisProcess, user: str, command: tuple[str, ...]) -> None:
    with pytest.raises(NoPermissionError):
        run(acl_redis, user, *command)


@pytest.mark.parametrize("command", NOBODY, ids=" ".join)
@pytest.mark.parametrize("user", USERS)
def test_no_user_may_inspect_or_administer(acl_redis: RedisProcess, user: str, command: tuple[str, ...]) -> None:
    if user == "cluster_admin" and command == ("INFO",):
        pytest.skip("redis-cli --cluster create reads INFO (its CLUSTER rights: tests/test_cluster.py)")
    with pytest.raises(NoPermissionError):
        run(acl_redis, user, *command)


def test_sentinel_may_rewrite_the_config_after_a_failover(acl_redis: RedisProcess) -> None:
    # Allowed: the test server merely has no config file to rewrite (NoPermissionError otherwise).
    with pytest.raises(redis.ResponseError, match="without a config file"):
        run(acl_redis, "sentinel", "CONFIG", "REWRITE")


def test_the_default_user_is_off(acl_redis: RedisProcess) -> None:
    with pytest.raises(AuthenticationError, match="Authentication required"):
        run(acl_redis, None, "PING")
    with pytest.raises(AuthenticationError, match="user is disabled"):
        run(acl_redis, None, "AUTH", "default", "")
    wrong = redis.Redis(port=acl_redis.port, username="caller", password="not-the-password", **CLIENT_OPTIONS)
    with pytest.raises(AuthenticationError, match="invalid username-password pair"), wrong:
        wrong.ping()


def test_the_acl_file_holds_hashes_not_passwords() -> None:
    rendered = render_acl(PASSWORDS, C, PHP)
    for user, password in PASSWORDS.items():
        assert password not in rendered
        assert f"user {user} on #{password_hash(password)} " in rendered
    assert rendered.splitlines()[0] == "user default off resetchannels -@all"
    with pytest.raises(ValueError, match="ACL glob"):
        render_acl(PASSWORDS, "evil * channel", PHP)


def as_user(server: RedisProcess, user: str, service: str) -> Settings:
    return dataclasses.replace(
        Settings(),
        redis_url=server.url,
        redis_username=user,
        redis_password=PASSWORDS[user],
        channel=C,
        responder_pattern=f"{C}_sender",  # as compose sets it: exactly its own request channel
        service=service,
        push_interval=0,
        probe_interval=0.2,
    )


@pytest.mark.parametrize(("user", "service"), [("caller", "node_like_caller"), ("gateway", "ws_gateway")])
async def test_a_round_trip_with_the_real_users(acl_redis: RedisProcess, user: str, service: str) -> None:
    responder = Responder(as_user(acl_redis, "responder", "laravel_like_responder"))
    register(responder)
    async with responder, Caller(as_user(acl_redis, user, service), name=service) as caller:
        assert caller.reply_channel.startswith(f"{C}.reply.{service}.")
        assert await caller.call("sum", [1, 2], timeout=5) == 3
        async with caller.events() as events:
            await responder.push("configs", {"locale": "en"})
            async with asyncio.timeout(5):
                assert (await anext(events)).data == {"locale": "en"}
        # Both data-path probes go round under these users' rights: ready for several intervals.
        await eventually(lambda: caller.probe.received >= 3 and responder.probe.received >= 3, 10, "probes back")
        assert caller.ready and responder.ready
        assert caller._subscriber.liveness_failures["probe"] == 0 == responder._subscriber.liveness_failures["probe"]


async def test_a_user_push_reaches_the_gateway_user(acl_redis: RedisProcess) -> None:
    """The per-user push path: the responder publishes on <C>.user.<sub>, the gateway's pattern hears it."""
    gateway = aioredis.Redis(port=acl_redis.port, username="gateway", password=PASSWORDS["gateway"], protocol=2, socket_timeout=5)
    responder = Responder(as_user(acl_redis, "responder", "laravel_like_responder"))
    try:
        async with gateway.pubsub() as pubsub, responder:
            await pubsub.psubscribe(f"{C}.user.*")
            confirmation = await pubsub.get_message(timeout=5)
            assert confirmation is not None and confirmation["type"] == "psubscribe"
            assert await responder.push("notice", {"n": 1}, channel=f"{C}.user.alice") == 1
            message = await pubsub.get_message(timeout=5)
            assert message is not None and message["channel"] == f"{C}.user.alice".encode()
    finally:
        await gateway.aclose()


async def test_heartbeats_of_the_real_users_reach_the_gateway_user(acl_redis: RedisProcess) -> None:
    """Each service's presence beacon, on its own publisher under its own user, reaches a
    subscriber logged in as the gateway user."""
    gateway = aioredis.Redis(port=acl_redis.port, username="gateway", password=PASSWORDS["gateway"], protocol=2, socket_timeout=5)
    responder = Responder(as_user(acl_redis, "responder", "laravel_like_responder"))
    register(responder)
    try:
        async with gateway.pubsub() as pubsub, responder, Caller(as_user(acl_redis, "caller", "node_like_caller")) as caller:
            await pubsub.subscribe(f"{C}.presence")
            confirmation = await pubsub.get_message(timeout=5)
            assert confirmation is not None and confirmation["type"] == "subscribe"
            async with asyncio.TaskGroup() as beacons:
                tasks = [
                    beacons.create_task(beacon_for(caller, "caller").run()),
                    beacons.create_task(beacon_for(responder, "responder").run()),
                ]
                heard: dict[str, Any] = {}
                async with asyncio.timeout(10):
                    while len(heard) < 2:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                        if message is not None:
                            body = orjson.loads(message["data"])
                            heard[body["kind"]] = body
                for task in tasks:
                    task.cancel()
            assert heard["responder"]["service"] == "laravel_like_responder" and "sum" in heard["responder"]["actions"]
            assert heard["caller"]["service"] == "node_like_caller" and heard["caller"]["ready"] is True
    finally:
        await gateway.aclose()


async def test_a_service_with_the_wrong_name_is_not_ready_instead_of_deaf(acl_redis: RedisProcess) -> None:
    # The caller's credential used under another service name: its reply channel is outside
    # what the user may read, so the subscription is refused and start-up says so.
    caller = Caller(as_user(acl_redis, "caller", "ws_gateway"))
    with pytest.raises(ConnectionLost, match="subscription refused"):
        await caller.start(connect_timeout=2)
    assert not caller.ready  # and start() closed what it had opened
