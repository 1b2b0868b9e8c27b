"""Cluster mode (REDIS_CLUSTER=true) on a real three-master Redis Cluster of redis-server
processes: v1 traffic on sharded pub/sub, seed-era traffic on classic pub/sub, and slot
moves under load with no hung call and no lost subscription."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, ConnectionLost, Event, NoResponder, Responder, RpcError, Settings
from pubsub_rpc.cluster import shard_request_channel
from pubsub_rpc.topology import Topology, parse_redirect

from scripts.make_secrets import INFRA_USERS, USERS, render_acl
from scripts.redis_cluster import ClusterProcesses
from scripts.redis_process import RedisProcess

from .conftest import eventually

CALL_TIMEOUT = 2.0
ACL_CHANNEL = "laravel_database_general"
HUNG_MARGIN = 1.0  # a call must end within its timeout plus this, whatever happens


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterProcesses]:
    with ClusterProcesses() as processes:
        yield processes


def cluster_settings(cluster: ClusterProcesses, channel: str, seed: int = 0) -> Settings:
    return Settings(
        redis_url=cluster.nodes[seed].url,
        redis_cluster=True,
        channel=channel,
        responder_pattern=f"{channel}*_sender",
        call_timeout=CALL_TIMEOUT,
        drain_timeout=1.0,
    )


@pytest.fixture
def channel() -> str:
    return f"test_{uuid.uuid4().hex[:10]}_general"


@pytest.fixture
async def responder(cluster: ClusterProcesses, channel: str) -> AsyncIterator[Responder]:
    responder = Responder(cluster_settings(cluster, channel, seed=0), name="cluster-responder")
    register(responder)
    async with responder:
        yield responder


@pytest.fixture
async def caller(cluster: ClusterProcesses, channel: str) -> AsyncIterator[Caller]:
    # Seeded at another node than the responder: classic traffic must cross the cluster bus.
    async with Caller(cluster_settings(cluster, channel, seed=2), name="cluster-caller") as caller:
        yield caller


async def shard_subscribers(node: RedisProcess, channel: str) -> int:
    client = aioredis.Redis.from_url(node.url)
    try:
        reply = await client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        return int(reply[1])
    finally:
        await client.aclose()


def other_node(cluster: ClusterProcesses, slot: int) -> RedisProcess:
    owner = cluster.owner(slot)
    return cluster.nodes[(cluster.nodes.index(owner) + 1) % len(cluster.nodes)]


# -- round trip, push, seed-era traffic -----------------------------------------------


async def test_round_trip_goes_over_sharded_channels_on_the_slots_owner(
    cluster: ClusterProcesses, responder: Responder, caller: Caller
) -> None:
    assert await caller.call("sum", [1, 2, 3]) == 6
    assert await caller.call("echo", {"hello": "cluster"}) == {"hello": "cluster"}
    results = await asyncio.gather(*(caller.call("echo", {"n": n}) for n in range(500)))
    assert results == [{"n": n} for n in range(500)]
    # The request channel and the reply channel are shard channels, each subscribed on
    # the master that owns its slot (and on no other node).
    requests = shard_request_channel(responder.settings)
    for name in (requests, caller.reply_channel):
        owner = cluster.owner(cluster.slot_of(name))
        assert await shard_subscribers(owner, name) == 1
        for node in cluster.nodes:
            if node is not owner:
                assert await shard_subscribers(node, name) == 0
    assert caller.reply_channel.startswith(responder.settings.reply_prefix) and caller.reply_channel.endswith("}")
    assert caller.ready and responder.ready


async def test_a_push_reaches_a_caller_on_another_node(responder: Responder, caller: Caller) -> None:
    """Pushes stay classic PUBLISH (seed-era subscribers hear them too): the cluster
    broadcasts them from the responder's node to the caller's."""
    events: list[Event] = []
    caller.add_event_handler(events.append)
    await responder.push("news", {"n": 1})  # its count is the responder's node's subscribers only: 0
    await eventually(lambda: bool(events), what="the push")
    assert events[0].action == "news" and events[0].data == {"n": 1}


async def test_seed_era_classic_traffic_still_works_in_cluster_mode(
    cluster: ClusterProcesses, responder: Responder, channel: str
) -> None:
    """A seed-era caller (no v, no replyTo) PUBLISHes on one node and SUBSCRIBEs on
    another: the responder, in cluster mode, hears it by pattern and answers classic."""
    listener = aioredis.Redis.from_url(cluster.nodes[1].url)
    publisher = aioredis.Redis.from_url(cluster.nodes[2].url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        request = {"action": "sum", "data": [2, 3], "requestId": "seed-1", "source": "seed"}
        await publisher.publish(f"{channel}_sender", orjson.dumps(request))  # counted on node 2 only: 0
        deadline = time.monotonic() + 5
        reply = None
        while reply is None and time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                decoded = orjson.loads(message["data"])
                if decoded.get("requestId") == "seed-1":
                    reply = decoded
        assert reply is not None, "no seed-era reply"
        assert reply["result"] == 5
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await publisher.aclose()


async def test_no_responder_fails_fast_in_cluster_mode(cluster: ClusterProcesses, caller: Caller) -> None:
    """SPUBLISH counts subscribers on the owner only; every responder of ours subscribes
    there, so 0 means nobody: the call fails at once, not at its timeout."""
    started = time.monotonic()
    with pytest.raises(NoResponder):
        await caller.call("sum", [1], timeout=30)
    assert time.monotonic() - started < 5  # far below the timeout


# -- slot moves -----------------------------------------------------------------------


async def _load(caller: Caller, outcomes: Counter[str], stop: asyncio.Event, slowest: list[float]) -> None:
    """Calls back to back until ``stop``; each outcome counted by code."""
    n = 0
    while not stop.is_set():
        n += 1
        started = time.monotonic()
        try:
            await caller.call("echo", {"n": n}, timeout=CALL_TIMEOUT)
            outcomes["ok"] += 1
        except RpcError as exc:
            outcomes[exc.code] += 1
            if isinstance(exc, ConnectionLost | NoResponder):
                await asyncio.sleep(0.005)  # a failed call is not a reason to spin
        slowest[0] = max(slowest[0], time.monotonic() - started)


async def _calls_flowing(outcomes: Counter[str], calls: int) -> None:
    before = sum(outcomes.values())
    await eventually(lambda: sum(outcomes.values()) >= before + calls, what="calls flowing before the move")


async def _moves_under_load(cluster: ClusterProcesses, caller: Caller, name: str, moves: int) -> tuple[Counter[str], float]:
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    slowest = [0.0]
    workers = [asyncio.create_task(_load(caller, outcomes, stop, slowest)) for _ in range(8)]
    slot = cluster.slot_of(name)
    try:
        for _ in range(moves):
            await _calls_flowing(outcomes, 50)
            await asyncio.to_thread(cluster.move_slot, slot, other_node(cluster, slot))
    finally:
        stop.set()
        async with asyncio.timeout(CALL_TIMEOUT + HUNG_MARGIN):  # no call hangs
            await asyncio.gather(*workers)
    return outcomes, slowest[0]


async def test_request_channel_slot_moves_under_load_no_hung_call_no_lost_subscription(
    cluster: ClusterProcesses, responder: Responder, caller: Caller
) -> None:
    requests = shard_request_channel(responder.settings)
    moves = 4
    outcomes, slowest = await _moves_under_load(cluster, caller, requests, moves)
    print(f"\nrequest-channel slot moved {moves}x under load: {dict(outcomes)}, slowest call {slowest:.3f}s")
    assert outcomes["ok"] > 0
    assert set(outcomes) <= {"ok", "no_responder", "connection_lost"}, outcomes  # every failure named
    assert slowest <= CALL_TIMEOUT + HUNG_MARGIN
    # No lost subscription: the responder followed the slot to its new owner every time.
    assert responder._shards is not None and responder._shards.resubscribed >= moves
    await eventually(lambda: responder.ready, what="the responder subscribed on the new owner")
    owner = cluster.owner(cluster.slot_of(requests))
    assert await shard_subscribers(owner, requests) == 1
    results = await asyncio.gather(*(caller.call("echo", {"n": n}) for n in range(200)))
    assert results == [{"n": n} for n in range(200)]


async def test_reply_channel_slot_moves_under_load(cluster: ClusterProcesses, responder: Responder, caller: Caller) -> None:
    """The caller's own reply channel moves: its pending calls fail with connection_lost
    (replies sent meanwhile are gone), it resubscribes on the new owner, calls go on."""
    moves = 2
    outcomes, slowest = await _moves_under_load(cluster, caller, caller.reply_channel, moves)
    print(f"\nreply-channel slot moved {moves}x under load: {dict(outcomes)}, slowest call {slowest:.3f}s")
    assert outcomes["ok"] > 0
    assert set(outcomes) <= {"ok", "no_responder", "connection_lost"}, outcomes
    assert slowest <= CALL_TIMEOUT + HUNG_MARGIN
    await eventually(lambda: caller.ready, what="the caller resubscribed")
    owner = cluster.owner(cluster.slot_of(caller.reply_channel))
    assert await shard_subscribers(owner, caller.reply_channel) == 1
    assert await caller.call("sum", [4, 5]) == 9


async def test_spublish_answered_moved_is_sent_again_to_the_new_owner(
    cluster: ClusterProcesses, responder: Responder, caller: Caller
) -> None:
    requests = shard_request_channel(responder.settings)
    assert await caller.call("sum", [1]) == 1  # the caller now knows the channel's owner
    slot = cluster.slot_of(requests)
    await asyncio.to_thread(cluster.move_slot, slot, other_node(cluster, slot))
    await eventually(lambda: responder.ready, what="the responder resubscribed")
    assert caller._shards is not None
    resent = caller._shards.resent
    assert await caller.call("sum", [2, 3]) == 5  # sent to the old owner, MOVED, sent again
    assert caller._shards.resent == resent + 1


async def _execute(shards: Any, key: str, *parts: bytes) -> Any:
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    shards.execute(key, lambda future, reply: future.set_result(reply), done, *parts)
    async with asyncio.timeout(5):
        return await done


async def test_a_claim_whose_slot_moves_follows_ask_then_moved(cluster: ClusterProcesses, responder: Responder) -> None:
    """Claim keys fall in every slot, so a slot move always meets some: a claim sent while
    its slot migrates is answered ASK (the key is not on the source), one sent after the
    move with the old map is answered MOVED. Both must reach the slot's new owner, or the
    request is dropped and its caller waits out its timeout."""
    await _claims_across_a_slot_move(cluster, responder)


async def _claims_across_a_slot_move(cluster: ClusterProcesses, responder: Responder) -> None:
    shards = responder._shards
    assert shards is not None
    while True:  # a slot that holds no keys (earlier tests' claims live on): it can move at once
        tag = uuid.uuid4().hex
        migrating, moved = f"{responder.settings.claim_prefix}{{{tag}}}a", f"{responder.settings.claim_prefix}{{{tag}}}b"
        slot = cluster.slot_of(migrating)
        source, target = cluster.owner(slot), other_node(cluster, slot)
        with cluster.client(source) as client:
            if client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0:
                break
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    before = shards.redirected
    with cluster.client(target) as t, cluster.client(source) as s:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        assert await _execute(shards, migrating, b"SET", migrating.encode(), b"r1", b"NX", b"PX", b"60000") == b"OK"
        assert shards.redirected == before + 1  # ASK, then ASKING + SET on the target
        for node in (target, source, *(n for n in cluster.nodes if n not in (source, target))):
            with cluster.client(node) as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        assert await _execute(shards, moved, b"SET", moved.encode(), b"r1", b"NX", b"PX", b"60000") == b"OK"
        assert shards.redirected == before + 2  # MOVED, then SET on the new owner
    # Both claims hold on the slot's owner now: a second claim of either loses.
    for key in (migrating, moved):
        assert await _execute(shards, key, b"SET", key.encode(), b"r2", b"NX", b"PX", b"60000") is None


# -- the compose ACL in cluster mode ---------------------------------------------------


async def test_the_compose_acl_users_work_in_cluster_mode(tmp_path: Path) -> None:
    """deploy/redis/users.acl.template on every node: cluster_admin forms the cluster and
    moves a slot; responder and caller read the slot map and use their shard channels."""
    passwords = {user: f"{user}-pw" for user in USERS + INFRA_USERS}
    acl = tmp_path / "users.acl"
    acl.write_text(render_acl(passwords, ACL_CHANNEL, "laravel_database_php"))
    admin = ("cluster_admin", passwords["cluster_admin"])
    with ClusterProcesses(extra_args=["--aclfile", str(acl)], admin=admin) as cluster:

        def as_user(user: str, service: str) -> Settings:
            return dataclasses.replace(
                cluster_settings(cluster, ACL_CHANNEL),
                redis_username=user,
                redis_password=passwords[user],
                responder_pattern=f"{ACL_CHANNEL}_sender",
                service=service,
            )

        responder = Responder(as_user("responder", "laravel_like_responder"), name="acl-responder")
        register(responder)
        async with responder, Caller(as_user("caller", "node_like_caller"), name="acl-caller") as caller:
            assert await caller.call("sum", [1, 2]) == 3
            requests = shard_request_channel(responder.settings)
            slot = cluster.slot_of(requests)
            await asyncio.to_thread(cluster.move_slot, slot, other_node(cluster, slot))
            await eventually(lambda: responder.ready, what="the responder resubscribed")
            assert await caller.call("sum", [3, 4]) == 7
            # The responder's user follows ASK too (it needs +asking): a claim met by a move.
            await _claims_across_a_slot_move(cluster, responder)


# -- start-up ---------------------------------------------------------------------------


async def test_services_started_before_the_cluster_is_formed_wait_for_it(channel: str) -> None:
    """As in compose: the nodes are up, the slots not assigned yet. start(None) retries
    (logging why) until the slot map covers the channels, then serves."""
    processes = ClusterProcesses()
    try:
        await asyncio.to_thread(processes.start_nodes)
        responder = Responder(cluster_settings(processes, channel), name="early-responder")
        register(responder)
        starting = asyncio.create_task(responder.start(None))
        await eventually(lambda: responder.publisher.ready.is_set(), what="the classic links up")
        assert not starting.done()  # no slots yet: still waiting for the slot map
        await asyncio.to_thread(processes.create)
        async with asyncio.timeout(20):
            await starting
        try:
            async with Caller(cluster_settings(processes, channel, seed=1), name="early-caller") as caller:
                assert await caller.call("sum", [2, 2]) == 4
        finally:
            await responder.stop()
    finally:
        await asyncio.to_thread(processes.stop)


# -- small parts ----------------------------------------------------------------------


def test_redirects_are_parsed_and_node_urls_keep_credentials() -> None:
    assert parse_redirect("MOVED 3999 10.0.0.2:6381") == (3999, "10.0.0.2:6381")
    assert parse_redirect("ASK 1 h:1") == (1, "h:1")
    assert parse_redirect("NOPERM no rights") is None
    topology = Topology("rediss://user:p%40ss@seed:7000/0?ssl_cert_reqs=none", 1.0)
    assert topology.url_for("10.0.0.2:7001") == "rediss://user:p%40ss@10.0.0.2:7001/0?ssl_cert_reqs=none"
    assert topology.url_for("::1:7001") == "rediss://user:p%40ss@[::1]:7001/0?ssl_cert_reqs=none"


async def test_three_replicas_in_cluster_mode_run_each_call_once(cluster: ClusterProcesses, channel: str) -> None:
    """Requests come on shard connections there, so replicas always claim, through the
    claim key's own master (a claim sent to the REDIS_URL node would be answered MOVED)."""
    runs: Counter[str] = Counter()
    replicas = []
    for seed in range(3):
        replica = Responder(cluster_settings(cluster, channel, seed=seed), name=f"replica-{seed}")

        @replica.action("count")
        def count(data: str) -> str:
            runs[data] += 1
            return data

        replicas.append(replica)
    for replica in replicas:
        await replica.start()
    try:
        async with Caller(cluster_settings(cluster, channel, seed=1), name="cluster-caller") as caller:
            for batch in range(10):
                tags = [f"{batch}-{i}" for i in range(30)]
                assert await asyncio.gather(*(caller.call("count", tag) for tag in tags)) == tags
        twice = [tag for tag, n in runs.items() if n > 1]
        won = [replica.stats.claims_won for replica in replicas]
        print(f"300 calls over 3 cluster-mode replicas: claims won {won}, run twice {len(twice)}")
        assert len(runs) == 300
        assert twice == []
        assert sum(won) == 300
        assert all(replica.stats.lost_claims == 0 for replica in replicas)
    finally:
        for replica in replicas:
            await replica.stop()
