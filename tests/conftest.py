from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis
import uvloop
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, Responder, Settings

from scripts.make_secrets import INFRA_USERS, USERS, render_acl
from scripts.redis_process import RedisProcess


def pytest_asyncio_loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on both loops: the services run on uvloop, whose transports
    (TCP, TLS) are its own implementation, and users may run on either."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture
def settings(redis_server: RedisProcess) -> Settings:
    """A channel of the test's own, so no test can see another's traffic."""
    channel = f"test_{uuid.uuid4().hex[:10]}_general"
    return Settings(
        redis_url=redis_server.url,
        channel=channel,
        responder_pattern=f"{channel}*_sender",
        call_timeout=5.0,
        drain_timeout=2.0,
    )


@pytest.fixture
async def responder(settings: Settings) -> AsyncIterator[Responder]:
    responder = Responder(settings, name="test-responder")
    register(responder)
    async with responder:
        yield responder


@pytest.fixture
async def caller(settings: Settings) -> AsyncIterator[Caller]:
    async with Caller(settings, name="test-caller") as caller:
        yield caller


@pytest.fixture
async def raw_redis(redis_server: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` until true or fail after ``timeout``: the alternative to sleeping."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


# The compose stack's ACL (deploy/redis/users.acl.template) rendered for these channels and
# passwords: tests/test_acl.py checks each right, tests/test_streams.py that Streams mode
# needs no more.
ACL_CHANNEL = "laravel_database_general"
ACL_PHP_CHANNEL = "laravel_database_php"
ACL_PASSWORDS = {user: f"{user}-test-password" for user in USERS + INFRA_USERS}


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A redis-server started with the generated ACL file itself."""
    acl_file = tmp_path_factory.mktemp("acl") / "redis-users.acl"
    acl_file.write_text(render_acl(ACL_PASSWORDS, ACL_CHANNEL, ACL_PHP_CHANNEL))
    with RedisProcess(extra_args=["--aclfile", str(acl_file)]) as server:
        yield server
