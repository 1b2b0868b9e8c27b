"""Sentinel mode against a real topology (tests/sentinel_topology.py: a master, a replica,
three sentinels on loopback, down-after 1 s): a round trip; a SIGKILLed master under load
(time to the first good call through the new master, every call answered or failed with a
named error, none hung); a link sent to a replica refuses it (ROLE) and retries; and the
watcher follows +switch-master off a frozen master long before liveness would notice."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, Responder, RpcError, Settings
from pubsub_rpc.link import Publisher, Subscriber, link_options
from pubsub_rpc.sentinel import SentinelGroup, resolver_for

from .conftest import eventually
from .sentinel_topology import CLIENT_PASSWORD, MASTER_NAME, SentinelTopology

FAILOVER_BOUND = 10.0  # seconds to the first good call through the new master (issue 11)
CALL_TIMEOUT = 1.0
HUNG = CALL_TIMEOUT + 3.0  # a call still unsettled this long after it started is hung


@pytest.fixture
def topology() -> Iterator[SentinelTopology]:
    topology = SentinelTopology()
    try:
        yield topology.start()
    finally:
        topology.close()


@pytest.fixture
def protected_topology() -> Iterator[SentinelTopology]:
    """Sentinels with the ha profile's own users (deploy/ha/sentinel.sh), `default` off."""
    topology = SentinelTopology(protected_sentinels=True)
    try:
        yield topology.start()
    finally:
        topology.close()


@pytest.fixture
def ha_settings(topology: SentinelTopology, settings: Settings) -> Settings:
    # REDIS_URL's host is never resolved in Sentinel mode: only its credentials, db, options.
    return dataclasses.replace(
        settings,
        redis_url="redis://not-used.invalid:6379/0",
        sentinels=topology.sentinel_list,
        sentinel_master=MASTER_NAME,
        call_timeout=CALL_TIMEOUT,
    )


def ports(*links: Any) -> set[int]:
    group = links[0]._resolver
    return {address[1] for link, address in group._links.items() if link in links and address is not None}


class Load:
    """Bounded calls from a few workers; each outcome counted by code, hung ones too."""

    def __init__(self, caller: Caller, workers: int = 4) -> None:
        self.caller = caller
        self.outcomes: Counter[str] = Counter()
        self.good_at: list[float] = []  # perf_counter() when each good call started
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._work(n)) for n in range(workers)]

    async def _work(self, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(HUNG):
                    await self.caller.call("echo", [worker, n], timeout=CALL_TIMEOUT)
                self.outcomes["ok"] += 1
                self.good_at.append(started)
            except RpcError as exc:
                self.outcomes[exc.code] += 1
                await asyncio.sleep(0.02)  # pacing while the master is away, not synchronisation
            except TimeoutError:
                self.outcomes["hung"] += 1

    def first_good_after(self, moment: float) -> float | None:
        return next((t for t in self.good_at if t >= moment), None)

    async def stop(self) -> None:
        self._stop.set()
        done, pending = await asyncio.wait(self._tasks, timeout=HUNG + 2)
        assert not pending, "a load worker hung"


async def test_a_round_trip_through_sentinel_mode(topology: SentinelTopology, ha_settings: Settings) -> None:
    responder = Responder(ha_settings, name="ha-responder")
    register(responder)
    async with responder, Caller(ha_settings, name="ha-caller") as caller:
        assert await caller.call("sum", [1, 2, 3]) == 6
        links = (caller._publisher, caller._subscriber, responder._publisher, responder._subscriber)
        assert ports(*links) == {topology.master.port}
        group = resolver_for(ha_settings)
        assert all(link._resolver is group for link in links)  # one group, one watcher per process
        assert group.watcher is not None
        await eventually(group.watcher.ready.is_set, what="the watcher subscribed to +switch-master")
    assert group.watcher is None  # the last link closed stops it


@pytest.mark.parametrize("transport", ["pubsub", "streams"])
async def test_a_killed_master_fails_over_under_load_within_the_bound(
    topology: SentinelTopology, ha_settings: Settings, transport: str
) -> None:
    """In Streams mode a `timeout` is a call whose entry (or its reply) the failover lost:
    Redis replicates asynchronously (docs/operations.md, "Streams mode over Sentinel")."""
    ha_settings = dataclasses.replace(ha_settings, transport=transport)
    responder = Responder(ha_settings, name="ha-responder")
    register(responder)
    async with responder, Caller(ha_settings, name="ha-caller") as caller:
        load = Load(caller)
        try:
            await eventually(lambda: load.outcomes["ok"] >= 20, what="load flowing")
            killed = time.perf_counter()
            await topology.master.stop_async()  # SIGKILL
            await eventually(lambda: load.first_good_after(killed) is not None, timeout=FAILOVER_BOUND + 5, what="a good call")
            first_good = load.first_good_after(killed)
            assert first_good is not None
            # A little more load through the new master, so its steady state is counted too.
            ok_then = load.outcomes["ok"]
            await eventually(lambda: load.outcomes["ok"] >= ok_then + 20, what="load flowing again")
        finally:
            await load.stop()
        recovery = first_good - killed
        links = (caller._publisher, caller._subscriber, responder._publisher, responder._subscriber)
        print(
            f"\nSentinel failover ({transport}, SIGKILL master, down-after 1 s): first good call through the new master "
            f"{recovery:.2f} s after the kill; calls by outcome: {dict(load.outcomes)}; "
            f"links not-master refusals: {resolver_for(ha_settings).not_master}"
        )
        assert topology.master_port() == topology.replica.port
        assert ports(*links) == {topology.replica.port}
        assert recovery < FAILOVER_BOUND
        assert load.outcomes["hung"] == 0
        assert set(load.outcomes) <= {"ok", "connection_lost", "timeout", "no_responder"}, load.outcomes
        assert caller.pending_count == 0


class _ReplicaFirst(SentinelGroup):
    """Sends the first connects to the replica, as a sentinel that has not yet seen a
    failover would (the replica is a real redis-server answering ROLE)."""

    def __init__(self, replica_port: int, wrong: int, **options: Any) -> None:
        super().__init__(**options)
        self.replica_port, self.wrong = replica_port, wrong

    async def master_address(self) -> tuple[str, int]:
        if self.wrong > 0:
            self.wrong -= 1
            return "127.0.0.1", self.replica_port
        return await super().master_address()


async def test_a_link_sent_to_a_replica_refuses_it_and_retries(topology: SentinelTopology, ha_settings: Settings) -> None:
    options = link_options(ha_settings)
    group = _ReplicaFirst(
        topology.replica.port,
        wrong=2,
        sentinels=options["resolver"].sentinels,
        master=MASTER_NAME,
        connect_timeout=ha_settings.connect_timeout,
    )
    options["resolver"] = group
    got: list[bytes] = []
    subscriber = Subscriber(ha_settings.redis_dsn, "ha-sub", lambda channel, data: got.append(data), channels=["ha.t"], **options)
    publisher = Publisher(ha_settings.redis_dsn, "ha-pub", **options)
    subscriber.start()
    publisher.start()
    try:
        await publisher.wait_ready(10)
        await subscriber.wait_ready(10)
        assert group.not_master == 2  # both first connects landed on the replica and were refused
        assert ports(subscriber, publisher) == {topology.master.port}
        assert await publisher.publish("ha.t", b"through the master") == 1
        await eventually(lambda: got == [b"through the master"], what="the message")
    finally:
        await subscriber.close()
        await publisher.close()


async def test_the_watcher_follows_switch_master_off_a_frozen_master(topology: SentinelTopology, ha_settings: Settings) -> None:
    # Liveness far beyond the bound: only the watcher can move the links in time.
    settings = dataclasses.replace(ha_settings, liveness_timeout=60.0)
    responder = Responder(settings, name="ha-responder")
    register(responder)
    async with responder, Caller(settings, name="ha-caller") as caller:
        group = resolver_for(settings)
        assert group.watcher is not None
        await eventually(group.watcher.ready.is_set, what="the watcher subscribed")
        assert await caller.call("echo", 1) == 1
        in_flight = caller.start_call("slow", {"ms": 3000}, timeout=30.0)  # on the master when it freezes
        frozen = time.perf_counter()
        topology.master.freeze()  # SIGSTOP: connections stay open, nothing answers
        with pytest.raises(RpcError) as lost:
            async with asyncio.timeout(FAILOVER_BOUND + 5):
                await in_flight
        assert lost.value.code == "connection_lost"

        await good_call_through_the_new_master(caller)
        recovery = time.perf_counter() - frozen
        print(
            f"\nfrozen master: +switch-master seen {group.switches}x, links dropped {group.dropped}; "
            f"good call after {recovery:.2f} s"
        )
        assert group.switches >= 1 and group.dropped >= 4
        assert recovery < FAILOVER_BOUND
        links = (caller._publisher, caller._subscriber, responder._publisher, responder._subscriber)
        assert ports(*links) == {topology.replica.port}


async def test_no_sentinel_knowing_a_master_is_a_connect_failure_retried(ha_settings: Settings) -> None:
    await assert_connects_fail_and_retry(dataclasses.replace(ha_settings, sentinel_master="nobody"))


async def good_call_through_the_new_master(caller: Caller) -> None:
    """Wait (bounded) until a call succeeds again after the master changed."""

    async def good() -> bool:
        try:
            return bool(await caller.call("echo", 2, timeout=CALL_TIMEOUT) == 2)
        except RpcError:
            return False

    await eventually(good, timeout=FAILOVER_BOUND + 5, what="a good call through the new master")


async def assert_connects_fail_and_retry(settings: Settings) -> None:
    """A link that cannot reach a master counts each failed connect and tries again."""
    publisher = Publisher(settings.redis_dsn, "ha-pub", **link_options(settings))
    publisher.start()
    try:
        await eventually(lambda: publisher.connect_failures >= 2, what="retries")
        assert not publisher.ready.is_set()
    finally:
        await publisher.close()


async def test_protected_sentinels_with_the_profiles_users(
    protected_topology: SentinelTopology, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The services' sentinel user finds the master and hears +switch-master with nothing
    more; a wrong password is retried and never logged."""
    ha = dataclasses.replace(
        settings,
        redis_url="redis://not-used.invalid:6379/0",
        sentinels=protected_topology.sentinel_list,
        sentinel_master=MASTER_NAME,
        sentinel_username="sentinel_client",
        sentinel_password=CLIENT_PASSWORD,
        call_timeout=CALL_TIMEOUT,
    )
    responder = Responder(ha, name="ha-responder")
    register(responder)
    async with responder, Caller(ha, name="ha-caller") as caller:
        assert await caller.call("echo", 1) == 1
        group = resolver_for(ha)
        assert group.watcher is not None
        await eventually(group.watcher.ready.is_set, what="the watcher subscribed to +switch-master")
        killed = time.perf_counter()
        await protected_topology.master.stop_async()

        await good_call_through_the_new_master(caller)
        assert time.perf_counter() - killed < FAILOVER_BOUND
        assert group.switches == 1
    await assert_connects_fail_and_retry(dataclasses.replace(ha, sentinel_password="not-the-password-xyz"))
    assert "not-the-password-xyz" not in caplog.text and CLIENT_PASSWORD not in caplog.text
