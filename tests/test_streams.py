"""Streams mode (RPC_TRANSPORT=streams): at least once, idempotent by requestId, bounded.

Real redis-server; the consumers that die or freeze are real processes
(``tests.stream_worker``) killed with SIGKILL or stopped with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from laravel_like_responder.actions import register
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pubsub_rpc import Caller, ConnectionLost, Responder, Settings, UnknownAction
from pubsub_rpc.errors import DeadLettered
from pubsub_rpc.metrics import Exporter

from scripts.redis_process import RedisProcess

from .conftest import ACL_PASSWORDS, eventually
from .stream_worker import executions, register_work
from .test_acl import as_user

ROOT = Path(__file__).resolve().parent.parent
VISIBILITY = 1.0


@pytest.fixture
def streams(settings: Settings) -> Settings:
    return dataclasses.replace(settings, transport="streams", stream_visibility=VISIBILITY, call_timeout=20.0)


@contextlib.asynccontextmanager
async def streams_responder(settings: Settings, **changes: Any) -> AsyncIterator[Responder]:
    responder = Responder(dataclasses.replace(settings, **changes), name="stream-responder")
    register(responder)
    async with responder:
        yield responder


async def pending_count(raw: aioredis.Redis, settings: Settings) -> int:
    summary = await raw.xpending(settings.stream_key, settings.stream_group)
    return int(summary["pending"])


async def test_round_trip_acks_and_stores_the_reply(streams: Settings, raw_redis: aioredis.Redis) -> None:
    async with streams_responder(streams) as responder, Caller(streams) as caller:
        assert await caller.call("echo", {"x": 1}) == {"x": 1}
        assert await caller.call("sum", [1, 2, 3]) == 6
        assert await raw_redis.xlen(streams.stream_key) == 2  # they went through the stream
        await eventually(lambda: responder.streams is not None and responder.streams.stats.acked == 2, what="both acked")
        assert await pending_count(raw_redis, streams) == 0
        stored = [key async for key in raw_redis.scan_iter(match=streams.stored_reply_prefix + "*")]
        assert len(stored) == 2
        ttl = await raw_redis.pttl(stored[0])
        assert 0 < ttl <= streams.idempotency_ttl * 1000
        assert responder.stats.received == 2 and responder.stats.replied == 2
        assert caller.ready and responder.ready
        exporter = Exporter()
        exporter.add(responder.metric_families)
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(generate_latest(exporter.registry).decode())
            for sample in family.samples
        }
        assert samples[("rpc_server_stream_entries_total", (("event", "acked"),))] == 2
        assert samples[("rpc_server_stream_entries_total", (("event", "read"),))] == 2
        assert samples[("rpc_server_stream_pending", ())] == 0
        assert samples[("rpc_redis_link_up", (("link", "stream-responder-stream"),))] == 1


async def test_pub_sub_and_seed_requests_are_still_served_next_to_the_stream(
    streams: Settings, raw_redis: aioredis.Redis
) -> None:
    pubsub_settings = dataclasses.replace(streams, transport="pubsub")
    async with streams_responder(streams) as responder, Caller(streams) as stream_caller, Caller(pubsub_settings) as caller:
        assert await caller.call("echo", "via pub/sub") == "via pub/sub"
        assert await stream_caller.call("echo", "via the stream") == "via the stream"
        # A seed-era request: no `v`, no replyTo; the reply comes on the shared channel.
        listener = raw_redis.pubsub()
        await listener.subscribe(streams.channel)
        await listener.get_message(timeout=1)  # the subscribe confirmation
        seed = orjson.dumps({"action": "echo", "data": {"k": "v"}, "requestId": "seed-1", "source": "laravel"})
        assert await raw_redis.publish(streams.request_channel, seed) >= 1
        reply = None
        deadline = time.monotonic() + 5
        while reply is None and time.monotonic() < deadline:
            message = await listener.get_message(timeout=1)
            if message and message["type"] == "message":
                candidate = orjson.loads(message["data"])
                if candidate.get("requestId") == "seed-1":
                    reply = candidate
        await listener.aclose()
        assert reply is not None and reply["k"] == "v"  # merged, the seed's way
        assert await raw_redis.xlen(streams.stream_key) == 1  # only the stream caller's call
        assert responder.stats.replied == 3


async def test_an_xadd_refused_by_redis_fails_the_call_at_once(streams: Settings, raw_redis: aioredis.Redis) -> None:
    await raw_redis.set(streams.stream_key, "not a stream")  # XADD answers WRONGTYPE
    async with Caller(streams) as caller:
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="XADD"):
            await caller.call("echo", 1, timeout=30)
        assert time.monotonic() - started < 5  # failed on the error reply, not at the 30 s timeout
        assert caller.pending_count == 0


async def test_bad_entries_are_acked_and_counted_and_never_stop_the_consumer(
    streams: Settings, raw_redis: aioredis.Redis
) -> None:
    async with streams_responder(streams) as responder, Caller(streams) as caller:
        bad = [
            {"r": b"{not json"},
            {"r": b"[1, 2]"},
            {"other": b"field"},
            {"r": orjson.dumps({"action": "", "requestId": None, "v": 1})},
            {"r": orjson.dumps({"action": "echo", "requestId": 5, "v": 1})},
            {"r": b"x" * (streams.max_message_bytes + 1)},
        ]
        for fields in bad:
            await raw_redis.xadd(streams.stream_key, fields)  # type: ignore[arg-type]
        # An invalid envelope with a requestId and a good reply channel is answered.
        listener = raw_redis.pubsub()
        await listener.subscribe(caller.reply_channel + "x")
        await listener.get_message(timeout=1)
        invalid = {"action": 7, "requestId": "r-1", "replyTo": caller.reply_channel + "x", "v": 1}
        await raw_redis.xadd(streams.stream_key, {"r": orjson.dumps(invalid)})
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            candidate = await listener.get_message(timeout=1)
            if candidate and candidate["type"] == "message":
                message = orjson.loads(candidate["data"])
        await listener.aclose()
        assert message is not None and message["error"]["code"] == "invalid_request"
        assert await caller.call("echo", "still serving") == "still serving"
        await eventually(lambda: responder.stats.malformed == len(bad) + 1, what="every bad entry counted")
        stats = responder.stats
        assert stats.received == stats.replied + stats.errors + stats.notifications + stats.expired + stats.dropped
        assert await pending_count(raw_redis, streams) == 0  # all acked: bad input never comes back


async def test_the_stream_length_stays_bounded(streams: Settings, raw_redis: aioredis.Redis) -> None:
    bounded = dataclasses.replace(streams, stream_maxlen=100)
    async with streams_responder(bounded), Caller(bounded) as caller:
        for _ in range(10):
            await asyncio.gather(*(caller.call("echo", i) for i in range(100)))
        length = await raw_redis.xlen(bounded.stream_key)
        # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default): about the bound.
        print(f"1,000 calls with RPC_STREAM_MAXLEN=100: stream length {length}")
        assert length <= 100 + 100


async def ghost_reads(raw: aioredis.Redis, settings: Settings, count: int = 1) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """A consumer that reads entries and then never answers (as if it died at once)."""
    reply: Any = await raw.xreadgroup(settings.stream_group, "ghost", {settings.stream_key: ">"}, count=count)
    return [(entry_id, fields) for _stream, entries in reply for entry_id, fields in entries]


async def dead_letters(raw: aioredis.Redis, settings: Settings) -> list[dict[bytes, bytes]]:
    entries: Any = await raw.xrange(settings.dead_letter_key)
    return [fields for _id, fields in entries]


async def stream_has_entries(raw: aioredis.Redis, settings: Settings) -> bool:
    return bool(await raw.xlen(settings.stream_key))


async def create_group(raw: aioredis.Redis, settings: Settings) -> None:
    await raw.xgroup_create(settings.stream_key, settings.stream_group, id="0", mkstream=True)


async def test_a_redelivered_entry_whose_reply_was_stored_is_answered_from_the_store(
    streams: Settings, raw_redis: aioredis.Redis
) -> None:
    await create_group(raw_redis, streams)
    async with Caller(streams) as caller:
        call = caller.start_call("echo", "run me", timeout=20)
        await eventually(lambda: stream_has_entries(raw_redis, streams), what="the entry")
        [(_entry_id, fields)] = await ghost_reads(raw_redis, streams)
        request = orjson.loads(fields[b"r"])
        # The ghost ran it and stored its reply, then died before publishing and acking.
        stored = {"requestId": request["requestId"], "v": 1, "ok": True, "result": "from the store"}
        await raw_redis.set(streams.stored_reply_prefix + request["requestId"], orjson.dumps(stored), px=60_000)
        async with streams_responder(streams) as responder:
            assert await call == "from the store"  # not "run me": the handler did not run again
            assert responder.streams is not None
            assert responder.streams.stats.reclaimed == 1
            assert responder.streams.stats.answered_from_store == 1
            assert responder.latency is not None and not any(
                row for (action, _), row in responder.latency.rows.items() if action == "echo"
            )
            await eventually(lambda: responder.streams is not None and responder.streams.stats.acked == 1, what="the ack")
            assert await pending_count(raw_redis, streams) == 0


async def test_an_entry_delivered_too_often_is_dead_lettered_and_its_caller_told(
    streams: Settings, raw_redis: aioredis.Redis
) -> None:
    await create_group(raw_redis, streams)
    async with Caller(streams) as caller:
        call = caller.start_call("echo", "never answered", timeout=20)
        await eventually(lambda: stream_has_entries(raw_redis, streams), what="the entry")
        [(entry_id, _)] = await ghost_reads(raw_redis, streams)  # delivery 1, never acked
        async with streams_responder(streams, stream_max_deliveries=1) as responder:
            started = time.monotonic()
            with pytest.raises(DeadLettered, match="delivered 2 times"):
                await call
            print(f"dead-lettered {time.monotonic() - started:.2f}s after the responder started (visibility {VISIBILITY}s)")
            assert responder.streams is not None and responder.streams.stats.dead_lettered == 1
            [dead] = await dead_letters(raw_redis, streams)
            assert dead[b"id"] == entry_id and dead[b"deliveries"] == b"2"
            assert orjson.loads(dead[b"r"])["data"] == "never answered"
            assert await pending_count(raw_redis, streams) == 0


async def test_pending_entries_trimmed_away_are_counted_as_lost(streams: Settings, raw_redis: aioredis.Redis) -> None:
    await create_group(raw_redis, streams)
    for i in range(3):
        await raw_redis.xadd(streams.stream_key, {"r": orjson.dumps({"action": "echo", "data": i, "requestId": f"t{i}", "v": 1})})
    assert len(await ghost_reads(raw_redis, streams, count=3)) == 3  # pending with a dead consumer
    await raw_redis.xtrim(streams.stream_key, maxlen=0)  # as MAXLEN does under a long backlog
    async with streams_responder(streams) as responder:
        assert responder.streams is not None
        await eventually(lambda: responder.streams is not None and responder.streams.stats.trimmed == 3, what="the loss counted")
        assert responder.stats.received == 0  # nothing to run
        assert await pending_count(raw_redis, streams) == 0  # XAUTOCLAIM dropped them from the pending list


async def test_a_stream_entry_for_an_action_this_consumer_lacks_is_answered_unknown_action(
    streams: Settings, tmp_path: Path
) -> None:
    """Owner-only answers stop at the stream: the responder the registry says serves the
    action may not read the stream (a seed-era one never does), so a consumer answers
    `unknown_action` rather than leave the entry to be dead-lettered. A group's consumers
    are meant to serve the same actions (docs/delivery.md)."""
    # The owner of `work`: a pub/sub-mode responder (it never reads the stream).
    worker = Responder(dataclasses.replace(streams, transport="pubsub"), name="worker")
    register_work(worker, tmp_path / "starts", tmp_path / "done")
    echo_only = Responder(streams, name="echo-only")
    echo_only.action("echo")(lambda data: data)
    async with worker, echo_only, Caller(streams) as caller:
        await eventually(lambda: echo_only.directory.serves(streams.request_channel, "work"), what="the registry")
        with pytest.raises(UnknownAction):
            await caller.call("work", {"ms": 10}, timeout=10)
        assert echo_only.stats.not_ours == 0 and not executions(tmp_path / "done")


async def test_a_live_slow_handler_is_never_stolen(streams: Settings, raw_redis: aioredis.Redis, tmp_path: Path) -> None:
    """Handlers three times longer than the visibility timeout: claims are renewed, so the
    other consumer reclaims nothing and each request runs once."""
    fast = dataclasses.replace(streams, stream_visibility=0.6)
    responders = [Responder(fast, name=f"r{i}") for i in range(2)]
    for responder in responders:
        register_work(responder, tmp_path / "starts", tmp_path / "done")
    async with responders[0], responders[1], Caller(fast) as caller:
        ids = await asyncio.gather(*(caller.call("work", {"ms": 1800}) for _ in range(6)))
    assert sorted(executions(tmp_path / "done")) == sorted(ids)
    assert set(executions(tmp_path / "starts").values()) == {1}
    assert all(r.streams is not None and r.streams.stats.reclaimed == 0 for r in responders)


async def test_a_stopping_responder_leaves_unfinished_entries_to_the_others(streams: Settings, tmp_path: Path) -> None:
    """SIGTERM-style stop with a handler outlasting the drain: no `unavailable` reply, the
    entry stays pending and another consumer runs it."""
    quick_drain = dataclasses.replace(streams, drain_timeout=0.2)
    first, second = Responder(quick_drain, name="first"), Responder(quick_drain, name="second")
    for responder in (first, second):
        register_work(responder, tmp_path / "starts", tmp_path / "done")
    async with Caller(quick_drain) as caller:
        await first.start()
        call = caller.start_call("work", {"ms": 1500}, timeout=20)
        await eventually(lambda: first.in_flight == 1, what="the first to start it")
        await first.stop()
        assert first.streams is not None and first.streams.stats.released == 1
        assert first.stats.released == 1 and first.stats.errors == 0
        async with second:
            request_id = await call  # a result, not `unavailable`
            assert second.streams is not None and second.streams.stats.reclaimed == 1
    assert executions(tmp_path / "done") == {request_id: 1}


async def test_competing_consumers_run_each_request_once(streams: Settings, tmp_path: Path) -> None:
    responders = [Responder(streams, name=f"r{i}") for i in range(3)]
    for responder in responders:
        register_work(responder, tmp_path / "starts", tmp_path / "done")
    async with responders[0], responders[1], responders[2], Caller(streams) as caller:
        ids = await asyncio.gather(*(caller.call("work", {"ms": 20}) for _ in range(300)))
    done = executions(tmp_path / "done")
    shares = [r.stats.replied for r in responders]
    print(f"300 calls, 3 consumers: shares {shares}, run twice {sum(1 for c in done.values() if c > 1)}")
    assert sorted(done) == sorted(ids) and set(done.values()) == {1}
    assert sum(shares) == 300 and all(shares)  # every consumer took part


async def test_streams_mode_survives_a_redis_restart(own_redis: RedisProcess, streams: Settings) -> None:
    settings = dataclasses.replace(streams, redis_url=own_redis.url)
    async with streams_responder(settings) as responder, Caller(settings) as caller:
        assert await caller.call("echo", 1) == 1
        await own_redis.stop_async()
        await eventually(lambda: not responder.ready, what="the responder to notice")
        await own_redis.start_async()  # no persistence: the stream and its group are gone
        await eventually(lambda: caller.ready and responder.ready, timeout=15, what="both back, the group created again")
        assert await caller.call("echo", 2) == 2
        assert responder.streams is not None and responder.streams.reader.reconnects >= 1


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


def assert_outcomes_add_up(responder: Responder) -> None:
    """ResponderStats' invariant holds in streams mode too (each delivery one outcome)."""
    stats = responder.stats
    assert stats.received == stats.replied + stats.errors + stats.notifications + stats.expired + stats.dropped, stats


# -- real processes killed and frozen ------------------------------------------------------------


@dataclasses.dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path


def spawn(environ: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.stream_worker"], env=environ, cwd=ROOT, stdout=out, stderr=out)


@contextlib.asynccontextmanager
async def stream_worker(settings: Settings, tmp_path: Path, name: str, **env: str) -> AsyncIterator[Worker]:
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "services"), str(ROOT / "lib/pubsub_rpc/src")]),
        "REDIS_URL": settings.redis_url,
        "RPC_CHANNEL": settings.channel,
        "RPC_RESPONDER_PATTERN": settings.responder_pattern,
        "RPC_TRANSPORT": "streams",
        "RPC_STREAM_VISIBILITY": str(settings.stream_visibility),
        "STARTS_FILE": str(tmp_path / "starts"),
        "DONE_FILE": str(tmp_path / "done"),
        "PYTHONUNBUFFERED": "1",  # its log lines survive a SIGKILL
        **env,
    }
    ready = tmp_path / "starts.ready"
    ready.unlink(missing_ok=True)
    log = tmp_path / f"{name}.log"
    process = spawn(environ, log)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and process.poll() is None:  # (a crash test's worker may die at once)
            assert time.monotonic() < deadline, "the worker did not start"
            await asyncio.sleep(0.02)
        yield Worker(process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        await asyncio.to_thread(process.wait, 10)


def started_by(tmp_path: Path, pid: int) -> int:
    path = tmp_path / "starts"
    return sum(1 for line in path.read_text().splitlines() if line.endswith(f" {pid}")) if path.exists() else 0


async def test_a_killed_consumer_s_requests_are_answered_by_another(
    streams: Settings, raw_redis: aioredis.Redis, tmp_path: Path
) -> None:
    n = 12
    async with stream_worker(streams, tmp_path, "doomed") as doomed:
        async with Caller(streams) as caller:
            calls = [caller.start_call("work", {"ms": 1500}, timeout=20) for _ in range(n)]
            await eventually(lambda: started_by(tmp_path, doomed.process.pid) == n, what="the worker to start every call")
            survivor = Responder(streams, name="survivor")
            register_work(survivor, tmp_path / "starts", tmp_path / "done")
            async with survivor:
                doomed.process.kill()  # SIGKILL mid-request: no reply, no ack
                killed_at = time.monotonic()
                ids = await asyncio.gather(*calls)
                elapsed = time.monotonic() - killed_at
                assert survivor.streams is not None
                reclaimed = survivor.streams.stats.reclaimed
                assert_outcomes_add_up(survivor)
    done = executions(tmp_path / "done")
    print(
        f"SIGKILL with {n} requests in flight: all {len(ids)} answered {elapsed:.2f}s after the kill "
        f"(visibility {VISIBILITY}s + 1.5s of work), reclaimed {reclaimed}, completed twice "
        f"{sum(1 for c in done.values() if c > 1)}, lost {n - len(done)}"
    )
    assert sorted(done) == sorted(ids) and set(done.values()) == {1}  # 0 lost, 0 twice
    assert reclaimed == n
    assert elapsed < VISIBILITY + 1.5 + 5  # reclaim within about the visibility timeout (generous margin)


async def test_a_consumer_paused_past_the_visibility_timeout(
    streams: Settings, raw_redis: aioredis.Redis, tmp_path: Path
) -> None:
    """SIGSTOP a consumer with requests running, past the visibility timeout; another takes
    them over; SIGCONT. Every caller gets exactly one reply (counted on the wire); the only
    requests run twice are those the paused one had started."""
    n = 8
    replies: dict[str, int] = {}
    async with stream_worker(streams, tmp_path, "paused") as paused:
        async with Caller(streams) as caller:
            listener = raw_redis.pubsub()
            await listener.subscribe(caller.reply_channel)

            async def count_replies() -> None:
                async for message in listener.listen():
                    if message["type"] == "message":
                        request_id = orjson.loads(message["data"])["requestId"]
                        replies[request_id] = replies.get(request_id, 0) + 1

            counting = asyncio.create_task(count_replies())
            calls = [caller.start_call("work", {"ms": 2000}, timeout=20) for _ in range(n)]
            await eventually(lambda: started_by(tmp_path, paused.process.pid) == n, what="the worker to start every call")
            paused.process.send_signal(signal.SIGSTOP)
            # Sent while it is frozen: delivered to its blocked read if that is still
            # outstanding (BLOCK is a third of the visibility timeout here), then skipped
            # as read-while-frozen when it wakes up; else the other consumer reads it.
            calls.append(caller.start_call("work", {"ms": 200}, timeout=20))
            other = Responder(streams, name="other")
            register_work(other, tmp_path / "starts", tmp_path / "done")
            async with other:
                assert other.streams is not None
                await eventually(lambda: other.streams is not None and other.streams.stats.reclaimed >= n, what="the takeover")
                paused.process.send_signal(signal.SIGCONT)
                ids = await asyncio.gather(*calls)
                # the paused one finishes its handlers too: wait for both completions of each
                await eventually(lambda: sum(executions(tmp_path / "done").values()) == 2 * n + 1, what="both to finish")
                await eventually(lambda: len(replies) == n + 1, what="the replies")
                duplicates_suppressed = other.streams.stats.duplicate_replies
                assert_outcomes_add_up(other)
            counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counting
            await listener.aclose()
        paused_log = paused.log.read_text()
    done = executions(tmp_path / "done")
    twice = sum(1 for count in done.values() if count > 1)
    print(
        f"SIGSTOP past the visibility timeout with {n} started and 1 sent while frozen: {len(ids)} callers answered, "
        f"entries it read while frozen and skipped {paused_log.count('left pending for reclaim')}, replies per caller "
        f"{sorted(set(replies.values()))}, ran twice {twice} (all started before the pause), "
        f"replies suppressed by the store: here {duplicates_suppressed}, in the paused one "
        f"{paused_log.count('the other reply was first')}"
    )
    assert sorted(ids) == sorted(done)
    assert set(replies.values()) == {1}  # exactly one reply per caller on the wire
    assert twice <= n  # only the ones it had started (all n here); not the one sent while it was frozen


async def test_a_handler_that_kills_its_process_is_dead_lettered(
    streams: Settings, raw_redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Each delivery kills the consumer that runs it; after RPC_STREAM_MAX_DELIVERIES the
    next consumer dead-letters it instead of running it again."""
    async with Caller(streams) as caller:
        call = caller.start_call("crash", None, timeout=30)
        for attempt in range(2):
            async with stream_worker(streams, tmp_path, f"crash{attempt}", RPC_STREAM_MAX_DELIVERIES="2") as worker:
                await asyncio.to_thread(worker.process.wait, 15)
                assert worker.process.returncode == 3
        async with streams_responder(streams, stream_max_deliveries=2) as responder:
            with pytest.raises(DeadLettered):
                await call
            assert responder.streams is not None and responder.streams.stats.dead_lettered == 1
    [dead] = await dead_letters(raw_redis, streams)
    assert dead[b"deliveries"] == b"3"


async def test_streams_mode_needs_no_rights_beyond_the_acl_template(
    acl_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Caller and responder as compose's ACL users: every stream command (group create,
    read, store, ack, renew, reclaim, dead letter) is allowed, nothing is logged refused."""
    stream: dict[str, Any] = {"transport": "streams", "stream_visibility": 0.6, "stream_max_deliveries": 1}
    responder_settings = dataclasses.replace(as_user(acl_redis, "responder", "laravel_like_responder"), **stream)
    caller_settings = dataclasses.replace(as_user(acl_redis, "caller", "node_like_caller"), **stream)
    async with Caller(caller_settings, name="node_like_caller") as caller:
        for phase in ("serve", "dead letter"):
            if phase == "dead letter":  # an entry a consumer took and never answered
                call = caller.start_call("echo", 1, timeout=10)
                ghost = aioredis.Redis(port=acl_redis.port, username="responder", password=ACL_PASSWORDS["responder"])
                try:
                    await eventually(functools.partial(stream_has_entries_after, ghost, responder_settings, 2), what="the entry")
                    assert await ghost_reads(ghost, responder_settings)
                finally:
                    await ghost.aclose()
            responder = Responder(responder_settings)
            register(responder)
            async with responder:
                if phase == "serve":
                    assert await caller.call("sum", [1, 2], timeout=5) == 3
                    assert await caller.call("slow", {"ms": 700}, timeout=5) is not None  # renewed while it runs
                else:
                    with pytest.raises(DeadLettered):
                        await call
                    assert responder.streams is not None and responder.streams.stats.dead_lettered == 1
    refused = [r.getMessage() for r in caplog.records if r.name.startswith("pubsub_rpc") and r.levelno >= logging.WARNING]
    assert not [line for line in refused if "NOPERM" in line or "refused" in line or "could not" in line], refused


async def stream_has_entries_after(raw: aioredis.Redis, settings: Settings, n: int) -> bool:
    return int(await raw.xlen(settings.stream_key)) > n
