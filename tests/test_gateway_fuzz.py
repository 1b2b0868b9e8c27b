"""Ten thousand bad inputs against a live gateway process, bounded in time.

``python -m ws_gateway`` and ``python -m laravel_like_responder`` run as subprocesses (as
`make dev` runs them) against the test redis-server. Raw sockets speak RFC 6455 so any byte
can be sent. Asserted: the gateway never dies; every input is answered with an error (or
result) frame, or closes its socket with a documented code, or is counted; its RSS grows
boundedly; nothing forbidden or unauthenticated is published to Redis; a good call works
after. The counts are printed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import redis.asyncio as aioredis
import uvloop

from scripts.redis_process import RedisProcess, free_port

from .ws_frames import SAMPLE_ACTIONS, TEST_SECRET, mint

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED_CLOSES = {1000, 1001, 1002, 1007, 1009, 1013, 4001, 4002, 4008, 4009}
FORBIDDEN_MARK = "fuzz-forbidden-marker"
UNAUTH_MARK = "fuzz-unauthenticated-marker"
RATE, BURST = 2000.0, 4000


def mask_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame with an all-zero mask (valid: the payload is sent as is)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    return header + b"\x00\x00\x00\x00" + payload


class RawWs:
    """A raw RFC 6455 client over asyncio streams: any bytes out, frames and close codes in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.close_code: int | None = None
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, port: int, protocols: str | None = None, origin: str | None = None) -> RawWs:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = (f"Sec-WebSocket-Protocol: {protocols}\r\n" if protocols else "") + (f"Origin: {origin}\r\n" if origin else "")
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if b" 101 " not in head.split(b"\r\n")[0]:
            writer.close()
            raise ConnectionRefusedError(head.split(b"\r\n")[0].decode())
        return cls(reader, writer)

    def send(self, payload: bytes | str, opcode: int = 1) -> None:
        self.writer.write(mask_frame(opcode, payload.encode() if isinstance(payload, str) else payload))

    def send_json(self, value: Any) -> None:
        self.send(orjson.dumps(value))

    async def read_frame(self) -> tuple[int, bytes] | None:
        try:
            head = await self.reader.readexactly(2)
            size = head[1] & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return head[0] & 0x0F, await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def answers(self, count: int, timeout: float = 20.0) -> int:
        """Read until ``count`` result/error frames came, or the socket closed; how many came."""
        got = 0
        async with asyncio.timeout(timeout):
            while got < count:
                frame = await self.read_frame()
                if frame is None:
                    return got
                opcode, payload = frame
                if opcode == 8:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return got
                if opcode == 1:
                    message = orjson.loads(payload)
                    if message["type"] in ("result", "error"):
                        got += 1
                        self.frames.append(message)
                    elif message["type"] == "ready":
                        self.frames.append(message)
        return got

    async def until_closed(self, timeout: float = 15.0) -> int | None:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.read_frame()
                if frame is None:
                    return self.close_code
                if frame[0] == 8:
                    self.close_code = struct.unpack("!H", frame[1][:2])[0] if len(frame[1]) >= 2 else 1005
                    return self.close_code

    async def ready(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                frame = await self.read_frame()
                assert frame is not None, "closed before ready"
                if frame[0] == 1 and (message := orjson.loads(frame[1]))["type"] == "ready":
                    return message
                assert frame[0] != 8, f"closed before ready: {frame[1]!r}"

    def close(self) -> None:
        self.writer.close()


def wrong_typed_frames() -> Iterator[dict[str, Any] | str]:
    """Every field with every wrong type, plus shapes that are not frames at all."""
    values: list[Any] = [None, True, False, 0, -1, 2**63, 1.5, -0.0, "", "x" * 5000, [], [1], {}, {"a": 1}, "\u0000"]
    deep300: Any = json.loads("[" * 300 + "]" * 300)
    values.append(deep300)
    base = {"type": "call", "id": 1, "action": "echo", "data": "ok"}
    for field in ("type", "id", "action", "data", "timeout"):
        for value in values:
            yield {**base, field: value}
    for action in ("info", "nope", "FLUSHALL", "actions\u0000", "x" * 3000):
        yield {**base, "action": action, "data": FORBIDDEN_MARK}
    yield from ("not json", "", " ", "[1, 2]", "42", '"call"', "null", "{", '{"type": "call"', '"\\ud800"')
    yield '{"type": "call", "id": 1, "action": "echo", "data": ' + "[" * 30000 + "]" * 30000 + "}"  # < 64 KiB, too deep
    yield '{"type": "call", "id": ' + "[" * 300 + "]" * 300 + ', "action": "echo"}'
    yield '{"type": "call", "id": 1, "action": "sum", "data": ' + "{" * 1 + '"numbers": "no"}'
    yield {"type": "call", "id": "t", "action": "echo", "timeout": -5}
    yield {"type": "call", "id": "t", "action": "echo", "timeout": 1e308}


@pytest.fixture(scope="module")
def live(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    channel = f"fuzz_{uuid.uuid4().hex[:8]}_general"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "RPC_"))}
    env.update(
        PYTHONPATH=str(ROOT / "services"),
        REDIS_URL=redis_server.url,
        RPC_CHANNEL=channel,
        RPC_RESPONDER_PATTERN=f"{channel}_sender",
        PUSH_INTERVAL="0",
        LOG_LEVEL="WARNING",
        GATEWAY_PORT=str(port),
        GATEWAY_JWT_SECRET=TEST_SECRET,
        GATEWAY_ALLOWED_ACTIONS=SAMPLE_ACTIONS,
        GATEWAY_AUTH_TIMEOUT="1",
        GATEWAY_IDLE_TIMEOUT="3",
        GATEWAY_RATE_LIMIT=str(RATE),
        GATEWAY_RATE_BURST=str(BURST),
        GATEWAY_MAX_CALLS_PER_CLIENT="64",
        GATEWAY_SEND_BUFFER="262144",
    )
    responder = subprocess.Popen([sys.executable, "-m", "laravel_like_responder"], env=env, cwd=ROOT)
    log_file = tmp_path_factory.mktemp("fuzz") / "gateway.log"
    log = log_file.open("w")
    gateway = subprocess.Popen([sys.executable, "-m", "ws_gateway"], env=env, cwd=ROOT, stderr=log, stdout=log)
    try:
        deadline = time.monotonic() + 30
        while not ready(port):
            assert gateway.poll() is None, f"gateway exited: {log_file.read_text()}"
            assert time.monotonic() < deadline, "gateway not ready within 30s"
            time.sleep(0.05)
        yield {"port": port, "gateway": gateway, "channel": channel, "redis": redis_server.url, "log": log_file}
    finally:
        for process in (gateway, responder):
            process.terminate()
        for process in (gateway, responder):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def readyz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ten_thousand_bad_inputs(live: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    counts, published, rss = uvloop.run(fuzz(live))
    elapsed = time.monotonic() - started
    counters = readyz(live["port"])["counters"]
    total = sum(counts.values())
    with capsys.disabled():  # the counts belong in `make test`'s output, not only on failure
        print(f"\nWebSocket fuzz: {total:,} bad inputs in {elapsed:.1f}s; RSS {rss[0] / 1024:.0f} -> {rss[1] / 1024:.0f} MiB")
        for name, value in sorted(counts.items()):
            print(f"  {name:<46} {value:>7,}")
        print("  gateway counters:", {k: v for k, v in counters.items() if v})
    assert live["gateway"].poll() is None, "the gateway died"
    assert total >= 10_000
    assert published["forbidden_or_unauthenticated"] == 0, published
    assert rss[1] - rss[0] < 96 * 1024, f"RSS grew {(rss[1] - rss[0]) / 1024:.0f} MiB"
    assert counters["forbidden"] >= counts["forbidden calls"]
    assert counters["unauthenticated"] >= counts["unauthenticated calls"]
    closed_by_aiohttp = sum(v for k, v in counts.items() if "invalid UTF-8" in k or "16 MiB" in k or "100,000-deep" in k)
    assert counters["protocol_closed"] >= closed_by_aiohttp  # counted even where the close frame was lost
    log = live["log"].read_text()
    assert TEST_SECRET not in log and "eyJ" not in log  # no secret, no token (JWTs start with eyJ)


async def fuzz(live: dict[str, Any]) -> tuple[Counter[str], Counter[str], tuple[int, int]]:
    port, pid = live["port"], live["gateway"].pid
    counts: Counter[str] = Counter()
    published: Counter[str] = Counter()
    token = mint(sub="fuzzer")
    redis = aioredis.Redis.from_url(live["redis"])
    pubsub = redis.pubsub()
    await pubsub.psubscribe(live["channel"] + "*")
    stop = asyncio.Event()

    async def watch() -> None:
        """Every request published during the run; forbidden or unauthenticated ones must not be."""
        while not stop.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is None:
                continue
            raw = message["data"]
            published["messages"] += 1
            if FORBIDDEN_MARK.encode() in raw or UNAUTH_MARK.encode() in raw or b'"action":"info"' in raw:
                published["forbidden_or_unauthenticated"] += 1

    watcher = asyncio.create_task(watch())
    try:
        warm = await RawWs.open(port)
        warm.send_json({"type": "auth", "token": token})
        await warm.ready()
        warm.send_json({"type": "call", "id": 1, "action": "echo", "data": 1})
        assert await warm.answers(1) == 1
        warm.close()
        rss_before = rss_kib(pid)

        # 1. Wrong types for every field, non-frames, deep nesting: one answer each.
        frames = [f if isinstance(f, str) else json.dumps(f) for f in wrong_typed_frames()]
        per_socket = 1000

        async def typed_batch(batch: list[str]) -> None:
            ws = await RawWs.open(port)
            ws.send_json({"type": "auth", "token": token})
            await ws.ready()
            for frame in batch:
                ws.send(frame)
                if FORBIDDEN_MARK in frame:
                    counts["forbidden calls"] += 1
            got = await ws.answers(len(batch), timeout=30)
            assert got == len(batch), f"{got} answers to {len(batch)} frames (close {ws.close_code})"
            counts["wrong-typed frames (answered)"] += got
            ws.close()

        batch = (frames * (8000 // len(frames) + 1))[:8000]
        await asyncio.gather(*(typed_batch(batch[i : i + per_socket]) for i in range(0, len(batch), per_socket)))

        # 2. Binary frames: bad_frame each.
        ws = await RawWs.open(port)
        ws.send_json({"type": "auth", "token": token})
        await ws.ready()
        for n in range(500):
            ws.send(os.urandom(n % 64 + 1), opcode=2)
        assert await ws.answers(500) == 500
        counts["binary frames (answered)"] += 500
        ws.close()

        # 3. Unauthenticated calls: `unauthenticated` each, then 4001 at the auth timeout.
        ws = await RawWs.open(port)
        for n in range(500):
            ws.send_json({"type": "call", "id": n, "action": "echo", "data": UNAUTH_MARK})
        assert await ws.answers(500) == 500
        assert await ws.until_closed() == 4001
        counts["unauthenticated calls"] += 500
        ws.close()

        # 4. Forged, expired, wrong-algorithm, alg-none tokens, in the first frame and the subprotocol.
        none_token = (
            base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
            + "."
            + base64.urlsafe_b64encode(orjson.dumps({"sub": "x", "exp": 4102444800, "actions": ["*"]})).rstrip(b"=").decode()
            + "."
        )
        bad_tokens = [
            mint(secret="x" * 64),
            mint(ttl=-5),
            mint(algorithm="HS384"),
            none_token,
            jwt.encode({"exp": int(time.time() + 60)}, TEST_SECRET, algorithm="HS256"),  # no sub
            jwt.encode({"sub": "x"}, TEST_SECRET, algorithm="HS256"),  # no exp
            "a.b.c",
            "",
        ]

        async def bad_token(n: int) -> None:
            bad = bad_tokens[n % len(bad_tokens)]
            if n % 2 and bad:
                ws = await RawWs.open(port, protocols=f"pubsub-rpc.v1, bearer.{bad}")
            else:
                ws = await RawWs.open(port)
                ws.send_json({"type": "auth", "token": bad if n % 3 else {"not": "a string"}})
            code = await ws.until_closed()
            assert code in (4001, 4002), code
            counts[f"bad tokens (closed {code})"] += 1
            ws.close()

        for start in range(0, 400, 40):
            await asyncio.gather(*(bad_token(n) for n in range(start, start + 40)))

        # 5. Invalid UTF-8 and protocol abuse: aiohttp closes with 1007 / 1002.
        async def invalid(n: int) -> None:
            ws = await RawWs.open(port)
            if n % 2:
                ws.send(b'{"type": "call", "id": 1, "action": "echo", "data": "\xff\xfe"}', opcode=1)
            else:
                ws.send(b"hello", opcode=3)  # a reserved opcode: a protocol error
            code = await ws.until_closed()
            assert code in DOCUMENTED_CLOSES or code is None, code
            counts[f"invalid UTF-8 / reserved opcode (closed {code})"] += 1
            ws.close()

        for start in range(0, 200, 50):
            await asyncio.gather(*(invalid(n) for n in range(start, start + 50)))

        # 6. Oversized frames: 16 MiB and 100,000-deep JSON (200 KB) exceed GATEWAY_MAX_FRAME_BYTES.
        async def oversized(payload: bytes, name: str) -> None:
            ws = await RawWs.open(port)
            ws.send_json({"type": "auth", "token": token})
            await ws.ready()
            try:
                ws.send(payload)
                await ws.writer.drain()
            except ConnectionError:
                pass
            code = await ws.until_closed()
            assert code in (1009, None), code
            counts[f"{name} (closed {code})"] += 1
            ws.close()

        for _ in range(3):
            await oversized(b"x" * (16 * 1024 * 1024), "16 MiB frames")
            await oversized(b"[" * 100_000 + b"]" * 100_000, "100,000-deep JSON")

        # 7. Floods beyond the rate limit and beyond the calls in flight.
        ws = await RawWs.open(port)
        ws.send_json({"type": "auth", "token": token})
        await ws.ready()
        flood = BURST + 1500
        for n in range(flood):
            ws.send_json({"type": "call", "id": n, "action": "echo", "data": n})
        got = await ws.answers(flood, timeout=30)
        limited = sum(1 for f in ws.frames if f.get("code") == "rate_limited")
        assert got == flood or ws.close_code == 4008, (got, ws.close_code)
        assert limited > 0 or ws.close_code == 4008
        counts["rate flood (answered or 4008)"] += flood
        ws.close()

        ws = await RawWs.open(port)
        ws.send_json({"type": "auth", "token": token})
        await ws.ready()
        for n in range(300):
            ws.send_json({"type": "call", "id": n, "action": "slow", "data": {"ms": 100}})
        assert await ws.answers(300, timeout=30) == 300
        overloaded = sum(1 for f in ws.frames if f.get("code") == "overloaded")
        assert overloaded >= 300 - 64
        counts["in-flight flood (answered)"] += 300
        ws.close()

        # 8. 2,000 connect/disconnect cycles, 50 at a time (under the per-address cap).
        async def cycle(n: int) -> None:
            if n % 4 == 0:  # TCP only, gone before the handshake
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
            else:
                ws = await RawWs.open(port)
                if n % 4 == 2:
                    ws.send_json({"type": "auth", "token": token})
                if n % 4 == 3:
                    ws.send(b"\x03\xe8bye", opcode=8)  # a proper close
                ws.close()
            counts["connect/disconnect cycles"] += 1

        for start in range(0, 2000, 50):
            await asyncio.gather(*(cycle(n) for n in range(start, start + 50)))

        # 9. A socket that never reads while pushes pile up: dropped (send buffer or idle timeout).
        silent = await RawWs.open(port, protocols=f"pubsub-rpc.v1, bearer.{token}")
        push = orjson.dumps({"source": "fuzz", "action": "blob", "requestId": None, "v": 1, "data": "x" * 200_000})
        before = readyz(port)["counters"]
        for _ in range(40):
            await redis.publish(live["channel"], push)
        deadline = time.monotonic() + 15
        while True:
            now = readyz(port)["counters"]
            if now["slow_dropped"] + now["idle_closed"] > before["slow_dropped"] + before["idle_closed"]:
                break
            assert time.monotonic() < deadline, "the never-reading socket was not dropped"
            await asyncio.sleep(0.05)
        counts["never-reading sockets (dropped)"] += 1
        silent.close()

        # The gateway is alive and a good call works right after.
        ws = await RawWs.open(port)
        ws.send_json({"type": "auth", "token": token})
        await ws.ready()
        ws.send_json({"type": "call", "id": "after", "action": "sum", "data": [1, 2, 3]})
        assert await ws.answers(1) == 1
        assert ws.frames[-1] == {"type": "result", "id": "after", "result": 6, "ms": ws.frames[-1]["ms"]}
        ws.close()
        rss_after = rss_kib(pid)
    finally:
        stop.set()
        await watcher
        await pubsub.aclose()
        await redis.aclose()
    return counts, published, (rss_before, rss_after)
