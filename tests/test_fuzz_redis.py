"""Ten thousand bad inputs over Redis against the live responder service (a subprocess,
as deployed), bounded in count and time.

Asserts what issue 8 asks: the process stays alive; every input is either answered with
a reply on an allowed channel or counted as dropped by the responder's own counters (the
``info`` action); RSS growth is bounded; a ``PSUBSCRIBE *`` monitor saw nothing published
outside the reply namespace and the shared channel; a good call succeeds right after.
It prints the counts.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from pubsub_rpc import Caller, NoResponder, Settings

from scripts.redis_process import RedisProcess

from .conftest import eventually
from .redis_monitor import monitoring

ROOT = Path(__file__).resolve().parent.parent
BATCH = 500  # PUBLISHes per pipeline; a call to `info` after each is the barrier
MAX_RSS_GROWTH_MB = 50


class Live:
    def __init__(self, process: subprocess.Popen[bytes], settings: Settings, log: Path) -> None:
        self.process, self.settings, self.log = process, settings, log

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@pytest.fixture
def live_responder(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Live]:
    channel = f"fuzz_{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=redis_server.url, channel=channel, responder_pattern=f"{channel}*_sender", service="fuzz")
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'services'}{os.pathsep}{ROOT}",
        "REDIS_URL": redis_server.url,
        "RPC_CHANNEL": channel,
        "RPC_RESPONDER_PATTERN": settings.responder_pattern,
        "PUSH_INTERVAL": "0",
        "LOG_LEVEL": "INFO",
    }
    log = tmp_path / "responder.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "laravel_like_responder"], env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        yield Live(process, settings, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def bad_inputs(settings: Settings, reply_to: str, rng: random.Random) -> Iterator[tuple[str, bytes, bytes]]:
    """(category, channel, payload); every channel matches the responder's pattern."""
    C = settings.channel
    request = (C + "_sender").encode()
    dumps = orjson.dumps

    def req(**fields: Any) -> bytes:
        return dumps({"action": "echo", "data": 1, "v": 1, "replyTo": reply_to, **fields})

    for _ in range(1500):
        yield "not JSON", request, rng.randbytes(rng.randrange(0, 200)) + b"{"
    for n in range(500):
        yield "invalid UTF-8", request, b'{"action":"echo","requestId":"u%d","data":"\xff\xfe\xc3"}' % n
    scalars = [b"[1,2]", b"null", b"123", b'"str"', b"true", b"[]", b'[{"action":"echo","requestId":"a"}]', b"-1e5", b"{}"]
    for n in range(1000):
        yield "array or scalar", request, scalars[n % len(scalars)]
    bad_values: list[Any] = [0, 1.5, True, None, [], {}, "", 2**63, [[["deep"]]], {"a": {"b": 1}}]
    fields = ["action", "requestId", "replyTo", "deadline", "source", "v", "data"]
    n = 0
    while n < 2500:
        for field in fields:
            for value in bad_values:
                yield "wrong type", request, req(**{"requestId": f"w{n}", field: value})
                n += 1
    for n in range(20):
        yield "2 MiB", request, req(requestId=f"big{n}", data="x" * (2 << 20))
    for n in range(10):
        yield "100,000 deep", request, b"[" * 100_000
        yield "100,000 deep", request, b'{"action":"echo","requestId":"d%d","data":' % n + b"[" * 100_000 + b"]" * 100_000 + b"}"
    nested = b"[" * 300 + b'"x"' + b"]" * 300  # orjson reads 1,024 levels but writes only 255
    for n in range(100):
        # decodes, but its echo cannot be encoded: a handler_error reply, not a dead connection
        yield "300 deep data", request, req(requestId=f"n{n}", data="NESTED").replace(b'"NESTED"', nested)
    for n in range(500):
        yield "10 KB requestId", request, req(requestId=f"{n}-" + "i" * 10_000)
    for n in range(500):
        yield "10 KB channel", f"{C}{n}{'c' * 10_000}_sender".encode(), req(requestId=f"c{n}")
    for n in range(500):
        yield "non-UTF-8 channel", C.encode() + b"\xff\xfe%d_sender" % n, req(requestId=f"b{n}")
    hostile: list[Any] = [
        "elsewhere.reply.x",
        f"{C}.reply.x_sender",
        C + "_sender",
        "x" * 10_000,
        f"{settings.reply_prefix}{'x' * 300}",
        "",
        "*",
        f"{settings.user_prefix}alice",
        C,
        0,
        [],
        {"channel": reply_to},
        True,
    ]
    for n in range(2000):
        yield "hostile replyTo", request, req(requestId=f"h{n}", replyTo=hostile[n % len(hostile)])
    for n in range(300):
        yield "seed era", request, dumps({"action": "echo", "data": n, "requestId": f"s{n}"})
    now_ms = int(time.time() * 1000)
    for n in range(300):
        yield "expired", request, req(requestId=f"e{n}", deadline=now_ms - 1000)
    for n in range(100):
        yield "far deadline", request, req(requestId=f"f{n}", deadline=1e18)
    for n in range(300):
        yield "unknown action", request, req(requestId=f"x{n}", action=f"nope{n}")
    for _ in range(300):
        yield "notification", request, req(requestId=None, replyTo=None)
    for n in range(50):
        yield (
            "slow past its deadline",
            request,
            req(requestId=f"slow{n}", action="slow", data={"ms": 60_000}, deadline=now_ms + 2000),
        )
    for n in range(200):
        yield "good", request, req(requestId=f"g{n}", data=n)


async def info(caller: Caller) -> dict[str, Any]:
    result = await caller.call("info", timeout=10)
    assert isinstance(result, dict)
    return result


OUTCOMES = ("replied", "errors", "notifications", "expired", "dropped")


@pytest.mark.timeout(180)
async def test_ten_thousand_bad_inputs_over_redis(
    live_responder: Live, raw_redis: aioredis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = live_responder.settings
    fuzz_reply_to = f"{settings.reply_prefix}fuzz.{uuid.uuid4().hex}"
    async with Caller(settings, name="fuzz-caller") as caller:

        async def answers() -> bool:
            try:
                await caller.call("echo", "ready?", timeout=2)
            except NoResponder:
                return False
            return True

        await eventually(answers, timeout=30, what="the responder service to serve")
        for n in range(200):  # warm up, so RSS is compared with a serving process
            assert await caller.call("echo", n) == n
        rss_before = await asyncio.to_thread(live_responder.rss_mb)

        inputs = list(bad_inputs(settings, fuzz_reply_to, random.Random(8)))
        categories = Counter(category for category, _, _ in inputs)
        published_on = {channel for _, channel, _ in inputs}
        started = time.monotonic()
        async with monitoring(raw_redis) as monitor:
            first = await info(caller)
            barriers = 0
            batch: list[tuple[str, bytes, bytes]] = []
            for index, item in enumerate(inputs):
                batch.append(item)
                size = sum(len(payload) for _, _, payload in batch)
                if len(batch) == BATCH or size > 4 << 20 or index == len(inputs) - 1:
                    async with raw_redis.pipeline(transaction=False) as pipe:
                        for _, channel, payload in batch:
                            pipe.publish(channel, payload)
                        receivers = await pipe.execute()
                    assert receivers == [2] * len(batch), "every input reached the responder (and the monitor)"
                    batch = []
                    await info(caller)  # the responder has taken everything before it
                    barriers += 1
                    assert live_responder.process.poll() is None, "the responder died"
            await eventually(lambda: _in_flight_zero(caller), timeout=30, what="the slow ones to expire")
            last = await info(caller)
            # every call of ours (barriers, the polls above, this one) is one request and, but this
            # last one, one reply: what remains is the fuzz inputs' own outcome.
            ours = last["received"] - first["received"] - len(inputs)
            delta = {key: last[key] - first[key] for key in (*OUTCOMES, "malformed", "badChannel", "rejectedReplyChannel")}
            delta["replied"] -= ours  # our calls (but `last`) were answered with results; `first` too
            await raw_redis.publish("fuzz-marker", b"")  # after it, the monitor has seen everything
            await eventually(lambda: monitor.on("fuzz-marker") != [], what="the monitor to catch up")
        elapsed = time.monotonic() - started

        # Not answers: each process's data-path probe nonces, presence and registry heartbeats.
        probes = settings.probe_prefix.encode()
        ignored = {b"fuzz-marker", settings.presence_channel.encode(), settings.registry_name.encode()}
        replies = [
            (ch, data)
            for ch, data in monitor.messages
            if ch not in published_on and ch not in ignored and not ch.startswith(probes)
        ]
        fuzz_replies = [(ch, data) for ch, data in replies if ch != caller.reply_channel.encode()]
        outside = {
            ch for ch, _ in fuzz_replies if not (ch == settings.channel.encode() or ch.startswith(settings.reply_prefix.encode()))
        }
        answered = delta["replied"] + delta["errors"]
        dropped = delta["notifications"] + delta["expired"] + delta["dropped"]
        rss_after = await asyncio.to_thread(live_responder.rss_mb)
        with capsys.disabled():  # the counts belong in every run's output, not only a failing one's
            print(
                f"\nfuzz: {len(inputs):,} bad inputs in {elapsed:.1f}s; by kind {dict(categories)}\n"
                f"fuzz: answered {answered:,} (results {delta['replied']:,}, errors {delta['errors']:,}; "
                f"{len(fuzz_replies):,} replies seen on allowed channels), dropped and counted {dropped:,} "
                f"(malformed {delta['malformed']:,}, bad channel {delta['badChannel']:,}, "
                f"reply channel refused {delta['rejectedReplyChannel']:,}, expired {delta['expired']:,}, "
                f"notifications {delta['notifications']:,}); RSS {rss_before:.1f} -> {rss_after:.1f} MB"
            )
        assert live_responder.process.poll() is None, "the responder died"
        assert answered + dropped == len(inputs), "every input answered or counted as dropped"
        assert len(fuzz_replies) == answered, "every answer counted was published, and nothing else"
        assert outside == set(), f"published outside the reply namespace and {settings.channel}: {sorted(outside)[:5]}"
        assert rss_after - rss_before < MAX_RSS_GROWTH_MB
        assert await caller.call("echo", "still serving") == "still serving"
    log = (await asyncio.to_thread(live_responder.log.read_text, errors="replace")).splitlines()
    assert not [line for line in log if "Traceback" in line or "handler failed" in line], "no traceback per message"
    assert len(log) < 100, f"bad input is logged rate-limited, not per message ({len(log)} lines)"


async def _in_flight_zero(caller: Caller) -> bool:
    return (await info(caller))["inFlight"] == 0
