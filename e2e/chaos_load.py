"""A steady, bounded load for the chaos suite: library calls from the host and browser-style
WebSocket calls through every gateway, each call recorded with how it ended.

Every call is `work` with a unique tag (e2e/chaos_runs.py counts its runs by that tag) and is
bounded by its own timeout plus HANG_MARGIN: a call still unresolved then is recorded as
``hung``, which no test accepts. Each worker starts at most one call per ``period`` (with
jitter), so a worker whose calls fail at once (Redis down) does not spin; the workers' first
calls are spread over one call's length, so a fault always finds calls in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aredis
from pubsub_rpc import Caller, RpcError

from tests.ws_frames import FrameClient, connect, mint

HANG_MARGIN = 3.0  # seconds past a call's own timeout after which it counts as hung
HUNG = "hung"
SOCKET_CLOSED = "socket_closed"
UNNAMED = (HUNG, SOCKET_CLOSED, "rpc_error")


@dataclass(slots=True)
class Outcome:
    via: str  # "host" or "gw1", "gw2"
    tag: str
    started: float  # time.monotonic()
    ended: float
    result: Any = None
    code: str | None = None  # None: answered with a result; else the error's code

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def named(self) -> bool:
        """Answered, or failed with a named error (never hung, never a bare socket loss)."""
        return self.code is None or (self.code not in UNNAMED and not self.code.startswith("exception:"))


@dataclass
class Load:
    """``async with Load(...)``: workers run inside the block; ``outcomes`` fill as calls end."""

    caller: Caller
    gateways: list[str]  # http://host:port of each gateway
    jwt_secret: str
    prefix: str
    ms: int = 300
    timeout: float = 5.0
    host_workers: int = 6
    ws_clients: int = 2  # per gateway
    period: float = 0.1
    outcomes: list[Outcome] = field(default_factory=list)
    connect_failures: int = 0  # WebSocket (re)connections refused: not calls, counted apart

    async def __aenter__(self) -> Load:
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()  # set whenever a call ends
        self._http = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._host(n)) for n in range(self.host_workers)]
        for g, url in enumerate(self.gateways, 1):
            ws_url = url.replace("http", "ws", 1) + "/ws"
            self._tasks += [asyncio.create_task(self._ws(f"gw{g}", ws_url, n)) for n in range(self.ws_clients)]
        spread = (self.ms / 1000 + self.period) / len(self._tasks)
        self._first: dict[asyncio.Task[Any], float] = {task: n * spread for n, task in enumerate(self._tasks)}
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Start no more calls; wait (bounded by the calls' own bound) for those in flight."""
        self._stop.set()
        try:
            async with asyncio.timeout(self.timeout + 2 * HANG_MARGIN):
                for task in self._tasks:
                    await task  # a worker's failure surfaces here
        finally:
            for task in self._tasks:
                task.cancel()
            await self._http.close()

    async def until(self, predicate: Any, timeout: float, what: str) -> None:
        """Wait (bounded) until ``predicate(outcomes)`` holds, the load running meanwhile."""
        async with asyncio.timeout(timeout):
            while not predicate(self.outcomes):
                self._progress.clear()
                await self._progress.wait()

    async def run_for(self, seconds: float) -> None:
        """Let the load run on for ``seconds`` (the load itself is what is being waited for)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self._progress.set()

    async def _pace(self, began: float) -> None:
        """Until one period (jittered +-50 %) after ``began``."""
        period = self.period * random.uniform(0.5, 1.5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), max(0.0, began + period - time.monotonic()))

    async def _spread(self) -> None:
        """A worker's first wait: its share of one call's length, so calls do not march in step."""
        task = asyncio.current_task()
        offset = self._first.get(task, 0.0) if task is not None else 0.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), offset)

    def _data(self, tag: str) -> dict[str, Any]:
        return {"ms": self.ms, "tag": tag}

    async def _host(self, n: int) -> None:
        await self._spread()
        i = 0
        while not self._stop.is_set():
            tag, i = f"{self.prefix}-h{n}-{i}", i + 1
            began = time.monotonic()
            result, code = None, None
            try:
                async with asyncio.timeout(self.timeout + HANG_MARGIN):
                    result = await self.caller.call("work", self._data(tag), timeout=self.timeout)
            except RpcError as exc:
                code = exc.code
            except TimeoutError:
                code = HUNG
            except Exception as exc:  # recorded, and failed by the named-error check
                code = f"exception:{type(exc).__name__}"
            self._add(Outcome("host", tag, began, time.monotonic(), result, code))
            await self._pace(began)

    async def _ws(self, via: str, url: str, n: int) -> None:
        token = mint(secret=self.jwt_secret, sub=f"chaos-{via}-{n}")
        await self._spread()
        i = 0
        while not self._stop.is_set():
            try:
                async with connect(self._http, url, token) as ws:
                    while not self._stop.is_set():
                        tag, i = f"{self.prefix}-{via}c{n}-{i}", i + 1
                        began = time.monotonic()
                        outcome = await self._ws_call(ws, via, tag, i, began)
                        self._add(outcome)
                        if outcome.code == SOCKET_CLOSED:
                            break
                        await self._pace(began)
            except (aiohttp.ClientError, OSError):
                self.connect_failures += 1
                await self._pace(time.monotonic())

    async def _ws_call(self, ws: FrameClient, via: str, tag: str, call_id: int, began: float) -> Outcome:
        try:
            await ws.send({"type": "call", "id": call_id, "action": "work", "data": self._data(tag), "timeout": self.timeout})
            async with asyncio.timeout(self.timeout + HANG_MARGIN):
                while True:
                    frame = await ws.next_frame(self.timeout + HANG_MARGIN)
                    if frame.get("id") == call_id and frame["type"] in ("result", "error"):
                        break
        except TimeoutError:
            return Outcome(via, tag, began, time.monotonic(), None, HUNG)
        except (aiohttp.ClientError, ConnectionError, TypeError, ValueError):  # closed mid-call
            return Outcome(via, tag, began, time.monotonic(), None, SOCKET_CLOSED)
        code = None if frame["type"] == "result" else str(frame.get("code"))
        return Outcome(via, tag, began, time.monotonic(), frame.get("result"), code)


def summary(outcomes: list[Outcome]) -> str:
    codes = Counter(o.code or "ok" for o in outcomes)
    vias = Counter(o.via for o in outcomes)
    return f"{len(outcomes)} calls ({', '.join(f'{v} {n}' for v, n in sorted(vias.items()))}): " + ", ".join(
        f"{code} {n}" for code, n in codes.most_common()
    )


class ReplyTap:
    """Counts the replies published on a caller's private reply channel, per requestId:
    what "exactly one reply" means on the wire (the Caller itself settles a call once and
    drops any later reply)."""

    def __init__(self, client: aredis.Redis, channel: str) -> None:
        self._client, self._channel = client, channel
        self.counts: Counter[str] = Counter()

    async def __aenter__(self) -> ReplyTap:
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(self._channel)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._pubsub.aclose()
        await self._client.aclose()

    async def _read(self) -> None:
        async for message in self._pubsub.listen():
            if message["type"] == "message":
                self.counts[str(orjson.loads(message["data"]).get("requestId"))] += 1

    def more_than_once(self) -> int:
        return sum(1 for n in self.counts.values() if n > 1)
