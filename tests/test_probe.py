"""Data-path readiness: a link that is connected but deaf turns the service unready within
the probe interval, is dropped, resubscribes and becomes ready again; against a real Redis."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, Responder, Settings
from pubsub_rpc.link import command

from .conftest import eventually

INTERVAL = 0.4


@pytest.fixture
def probing(settings: Settings) -> Settings:
    return dataclasses.replace(settings, probe_interval=INTERVAL)


@pytest.fixture
async def pair(probing: Settings) -> AsyncIterator[tuple[Caller, Responder]]:
    responder = Responder(probing, name="probe-responder")
    register(responder)
    async with responder, Caller(probing, name="probe-caller") as caller:
        yield caller, responder


async def test_probes_come_back_and_keep_both_sides_ready(pair: tuple[Caller, Responder]) -> None:
    caller, responder = pair
    await eventually(lambda: caller.probe.received >= 4 and responder.probe.received >= 4, 10, "probes back")
    assert caller.ready and responder.ready
    assert caller.probe.channel.startswith(f"{caller.settings.channel}.probe.{caller.settings.service}.")
    assert caller.probe.channel != responder.probe.channel


def watch_drops(service: Caller | Responder) -> list[tuple[float, bool]]:
    """(time, readiness) each time the subscriber's connection goes: a deaf link is unready
    only for the moment it takes to reconnect on loopback, too short to catch by polling."""
    drops: list[tuple[float, bool]] = []
    service._subscriber.on_disconnect(lambda: drops.append((time.monotonic(), service.ready)))
    return drops


@pytest.mark.parametrize("side", ["caller", "responder"])
async def test_a_deaf_subscription_turns_readiness_false_within_the_interval_and_recovers(
    pair: tuple[Caller, Responder], side: str
) -> None:
    caller, responder = pair
    service: Caller | Responder = caller if side == "caller" else responder
    subscriber = service._subscriber
    connects = subscriber.connects
    drops = watch_drops(service)
    # Deaf but connected: unsubscribe everything on the link's own connection. Nothing closes,
    # PINGs would still be answered; only the probe can tell.
    subscriber._write(command(b"UNSUBSCRIBE") + command(b"PUNSUBSCRIBE"))
    deaf_at = time.monotonic()
    await eventually(lambda: bool(drops), 5 * INTERVAL + 5, "the deaf link to be dropped")
    dropped_at, ready_then = drops[0]
    assert not ready_then
    # Readiness is "a nonce came back within the interval"; the drop follows at the next
    # tick (a quarter interval), plus scheduling slack on a shared machine.
    assert dropped_at - deaf_at <= INTERVAL * 1.5 + 0.5
    await eventually(lambda: service.ready, 10, "readiness to come back")
    assert subscriber.liveness_failures["probe"] == 1
    assert subscriber.connects == connects + 1  # dropped and reconnected
    assert await caller.call("sum", [1, 2]) == 3  # resubscribed: the data path works again


async def test_a_killed_subscriber_connection_turns_readiness_false_and_recovers(
    pair: tuple[Caller, Responder], raw_redis: aioredis.Redis
) -> None:
    caller, _ = pair
    connects = caller._subscriber.connects
    clients = await raw_redis.client_list()
    (victim,) = [c["id"] for c in clients if c["name"] == "probe-caller-sub"]
    drops = watch_drops(caller)
    assert await raw_redis.execute_command("CLIENT", "KILL", "ID", victim) == 1
    await eventually(lambda: bool(drops), 5, "the link to notice")
    assert not drops[0][1]
    await eventually(lambda: caller.ready, 10, "readiness to come back")
    assert caller._subscriber.liveness_failures["probe"] == 0  # a closed socket needs no probe
    assert caller._subscriber.connects == connects + 1
    assert await caller.call("sum", [2, 2]) == 4


async def test_a_refused_probe_publish_makes_the_link_unready(probing: Settings, raw_redis: aioredis.Redis) -> None:
    """Probes published where nobody hears them (as with an ACL that lets the publish through
    but not the subscription's messages) never come back: unready, counted, retried."""
    async with Caller(probing, name="probe-misrouted") as caller:
        caller.probe.channel = caller.probe.channel + ".elsewhere"  # our nonces go nowhere we listen
        drops = watch_drops(caller)
        await eventually(lambda: caller._subscriber.liveness_failures["probe"] >= 2, 10 * INTERVAL + 5, "two drops")
        assert drops and not drops[0][1]
        # Deaf for good: resubscribing alone does not make it ready; it stays unready.
        assert not caller.ready and caller.probe.deaf
        caller.probe.channel = caller.probe.channel.removesuffix(".elsewhere")  # the path heals
        await eventually(lambda: caller.ready, 5 * INTERVAL + 5, "readiness once a nonce comes back")
