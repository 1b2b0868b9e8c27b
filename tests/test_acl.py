"""The least-privilege ACL recipe in docs/operations.md, against a real redis-server."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator

import pytest
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, ConnectionLost, Responder, Settings

from scripts.redis_process import RedisProcess

RESPONDER_ACL = "on >rpass resetchannels &*_sender &laravel_database_general* -@all +psubscribe +publish +ping +client|setname"
CALLER_ACL = "on >cpass resetchannels &laravel_database_general* -@all +subscribe +publish +ping +client|setname"


@pytest.fixture
def acl_redis() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        for user, rules in (("responder", RESPONDER_ACL), ("caller", CALLER_ACL), ("nochannels", "on >npass +@all")):
            command = ["redis-cli", "-p", str(server.port), "ACL", "SETUSER", user, *rules.split()]
            assert subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip() == "OK"
        yield server


def as_user(server: RedisProcess, user: str, password: str) -> Settings:
    return dataclasses.replace(Settings(), redis_url=f"redis://{user}:{password}@127.0.0.1:{server.port}/0", push_interval=0)


async def test_the_documented_acl_users_can_do_their_jobs(acl_redis: RedisProcess) -> None:
    responder = Responder(as_user(acl_redis, "responder", "rpass"))
    register(responder)
    async with responder, Caller(as_user(acl_redis, "caller", "cpass")) as caller:
        assert await caller.call("sum", [1, 2]) == 3
        async with caller.events() as events:
            await responder.push("configs", {"locale": "en"})
            assert (await anext(events)).data == {"locale": "en"}


async def test_a_user_without_channel_rights_is_not_ready_instead_of_deaf(acl_redis: RedisProcess) -> None:
    # Redis 7 users start with no channel rights: the subscription is refused, and the
    # caller says so at start-up rather than waiting forever for replies.
    caller = Caller(as_user(acl_redis, "nochannels", "npass"))
    with pytest.raises(ConnectionLost, match="subscription refused"):
        await caller.start(connect_timeout=1)
    assert not caller.ready  # and start() closed what it had opened
