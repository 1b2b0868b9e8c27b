"""Metrics scraped over HTTP after a known sequence of calls: the real responder service
(``python -m laravel_like_responder`` with METRICS_PORT) and a real Caller serving its own
/metrics, against a real Redis. Names, labels and exact counts."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, CallTimeout, HandlerError, InvalidRequest, NoResponder, Responder, Settings, UnknownAction
from pubsub_rpc.metrics import served

from scripts.redis_process import RedisProcess, free_port

from .conftest import eventually
from .live_service import Samples, live_responder, scrape

# Every call in the test, by (action, code): what both sides must have counted.
CALLER_EXPECTED = {
    ("actions", "ok"): 1,
    ("sum", "ok"): 3,
    ("sum", "invalid_request"): 1,
    ("fail", "handler_error"): 1,
    ("nope", "unknown_action"): 1,
    ("slow", "timeout"): 1,
    ("echo", "no_responder"): 1,
}
SERVER_EXPECTED = {
    ("actions", "ok"): 1,
    ("sum", "ok"): 3,
    ("sum", "invalid_request"): 1,
    ("fail", "handler_error"): 1,
    ("nope", "unknown_action"): 1,
    ("_none", "invalid_request"): 1,  # an envelope without an action, answered
}


def count(samples: Samples, name: str, /, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def histogram_counts(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    found = {}
    for (sample, labels), value in samples.items():
        if sample == name + "_count":
            as_dict = dict(labels)
            found[(as_dict["rpc_method"], as_dict["code"])] = value
    return found


async def scrape_async(url: str) -> tuple[Samples, set[str]]:
    return await asyncio.to_thread(scrape, url)


@pytest.mark.timeout(90)
async def test_metrics_after_a_known_sequence_of_calls(redis_server: RedisProcess, tmp_path: Path) -> None:
    with live_responder(redis_server.url, tmp_path, RPC_PROBE_INTERVAL="0.5") as live:

        async def responder_ready() -> bool:
            try:
                samples, _ = await scrape_async(live.metrics_url)
            except OSError:
                return False
            return count(samples, "rpc_ready", component="laravel_like_responder") == 1

        await eventually(responder_ready, 30, "the responder's /metrics to say ready")
        settings = dataclasses.replace(live.settings, probe_interval=0.5)
        caller_port = free_port()
        caller_url = f"http://127.0.0.1:{caller_port}/metrics"
        caller = Caller(settings, name="metrics-caller")
        raw = aioredis.Redis.from_url(redis_server.url)
        with served(caller_port, "127.0.0.1", caller.metric_families):
            async with caller:
                assert isinstance(await caller.call("actions"), list)
                for numbers in ([1], [1, 2], [1, 2, 3]):
                    await caller.call("sum", numbers)
                with pytest.raises(InvalidRequest):
                    await caller.call("sum", "not numbers")
                with pytest.raises(HandlerError):
                    await caller.call("fail")
                with pytest.raises(UnknownAction):
                    await caller.call("nope")
                with pytest.raises(CallTimeout):  # the responder cancels it at its deadline: expired
                    await caller.call("slow", {"ms": 5000}, timeout=0.2)
                # Malformed input on the request channel (dropped) and an invalid envelope
                # with a requestId (answered invalid_request, not seen by our caller).
                request_channel = settings.request_channel
                await raw.publish(request_channel, b"not json")
                await raw.publish(request_channel, b"[1, 2]")
                invalid = {"requestId": "f" * 32, "replyTo": caller.reply_channel, "v": 1, "source": "test"}
                await raw.publish(request_channel, orjson.dumps(invalid))
                # ...and on the caller's own channel.
                await raw.publish(settings.channel, b"{broken")

                async def server_counted() -> bool:
                    samples, _ = await scrape_async(live.metrics_url)
                    return count(samples, "rpc_server_messages_received_total") == 11 and (
                        count(samples, "rpc_server_messages_dropped_total", reason="expired") == 1
                    )

                await eventually(server_counted, 15, "the responder to count every message")
                await eventually(lambda: caller.malformed == 1, 5, "the caller to read the junk")
                server, server_names = await scrape_async(live.metrics_url)

                live.process.terminate()  # nobody listens any more
                await asyncio.to_thread(live.process.wait, 15)
                with pytest.raises(NoResponder):
                    await caller.call("echo", 1)
                client, client_names = await scrape_async(caller_url)
        await raw.aclose()

    # The responder service.
    assert {
        "rpc_server_call_duration_seconds",
        "rpc_server_calls_in_flight",
        "rpc_server_backlog_requests",
        "rpc_server_backlog_bytes",
        "rpc_server_messages_received",
        "rpc_server_messages",
        "rpc_server_messages_dropped",
        "rpc_server_pushes",
        "rpc_ready",
        "rpc_redis_link_up",
        "rpc_redis_link_reconnects",
        "rpc_redis_link_liveness_failures",
    } <= server_names
    assert histogram_counts(server, "rpc_server_call_duration_seconds") == SERVER_EXPECTED
    for (action, code), n in SERVER_EXPECTED.items():
        labels = {"rpc_method": action, "code": code}
        assert count(server, "rpc_server_call_duration_seconds_bucket", le="+Inf", **labels) == n
        assert count(server, "rpc_server_call_duration_seconds_sum", **labels) > 0
    dropped = {dict(labels)["reason"]: v for (name, labels), v in server.items() if name == "rpc_server_messages_dropped_total"}
    assert dropped == {
        "malformed": 3,  # not JSON, not an object, an envelope without action (bad `sum` data is the handler's verdict)
        "bad_channel": 0,
        "rejected_reply_channel": 0,
        "expired": 1,
        "overloaded": 0,
        "lost_replies": 0,
        "claimed_elsewhere": 0,  # a solo responder claims nothing (docs/scale-out.md)
        "lost_claims": 0,
        "not_ours": 0,
        "stale": 0,
        "released": 0,  # streams mode only
    }
    outcomes = {dict(labels)["outcome"]: v for (name, labels), v in server.items() if name == "rpc_server_messages_total"}
    assert outcomes == {"replied": 4, "errors": 4, "notifications": 0, "expired": 1, "dropped": 2}
    assert sum(outcomes.values()) == count(server, "rpc_server_messages_received_total") == 11
    assert count(server, "rpc_server_calls_in_flight") == 0
    for link in ("laravel_like_responder-sub", "laravel_like_responder-pub"):
        assert count(server, "rpc_redis_link_up", link=link) == 1
        assert count(server, "rpc_redis_link_reconnects_total", link=link) == 0
        assert count(server, "rpc_redis_link_liveness_failures_total", link=link, reason="probe") == 0

    # The caller, in-process, over HTTP too.
    assert {
        "rpc_client_call_duration_seconds",
        "rpc_client_calls_in_flight",
        "rpc_client_malformed_messages",
        "rpc_ready",
        "rpc_redis_link_up",
    } <= client_names
    assert histogram_counts(client, "rpc_client_call_duration_seconds") == CALLER_EXPECTED
    timeout_sum = count(client, "rpc_client_call_duration_seconds_sum", rpc_method="slow", code="timeout")
    assert 0.2 <= timeout_sum < 5
    assert count(client, "rpc_client_malformed_messages_total") == 1
    assert count(client, "rpc_client_calls_in_flight") == 0
    assert count(client, "rpc_ready", component="metrics-caller") == 1
    assert count(client, "rpc_redis_link_up", link="metrics-caller-sub") == 1


async def test_successes_within_one_read_are_binned_per_action(settings: Settings) -> None:
    """Replies of sync handlers are binned once per read: mixed actions in one read still
    land in their own rows, each counted exactly once."""
    responder = Responder(settings, name="batch-responder")
    register(responder)
    async with responder, Caller(settings, name="batch-caller") as caller:
        calls = [caller.call("sum", [n]) if n % 3 else caller.call("echo", n) for n in range(300)]
        await asyncio.gather(*calls)
        await asyncio.gather(*(caller.call("slow", {"ms": 1}) for _ in range(20)))  # async: per message
    assert responder.latency is not None and caller.latency is not None
    server = {key: sum(row[:-1]) for key, row in responder.latency.rows.items()}
    assert server == {("sum", "ok"): 200, ("echo", "ok"): 100, ("slow", "ok"): 20}
    client = {key: sum(row[:-1]) for key, row in caller.latency.rows.items()}
    assert client == server
    assert all(row[-1] > 0 for row in responder.latency.rows.values())
