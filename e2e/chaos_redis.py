"""Redis faults under load, one round at a time: stop (SIGTERM), kill (SIGKILL) or pause
(frozen: the kernel still accepts TCP, nothing answers: a half-open peer), then back; and
what each round did to the calls around it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pubsub_rpc import Caller

from .chaos_load import Load, Outcome
from .chaos_recovery import first_good_browser_call, first_good_host_call, unready_after
from .chaos_stack import RESPONDERS, ChaosStack, docker, wait_for

DETECTION_BOUND = 5.0  # issue 9: a dead or frozen Redis connection is detected within 5 s
MARGIN = 2.0  # two shared cores, a loaded stack, docker CLI latency
DOWN_FOR = {"stop": 2.0, "kill": 2.0, "pause": 10.0}  # seconds Redis is away


@dataclass
class Round:
    fault: str
    fault_at: float  # monotonic, just before the docker command
    back_at: float  # Redis answers again (stop/kill: a PING from the host; pause: unpaused)
    unready: list[float | None]  # per gateway: seconds until /readyz said not ready
    recovery: list[float]  # seconds from back_at to the first good call: host, then each gateway
    listening: float  # seconds from back_at until a request reaches every responder again
    next_fault_at: float = float("inf")  # the next round's fault_at (or the load's end)

    def hit(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Calls in flight at the fault or started while Redis was away."""
        return [o for o in outcomes if o.ended > self.fault_at and o.started < self.back_at]

    def late(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Calls that ended later than the detection bound after the fault (or their start)."""
        return [o for o in self.hit(outcomes) if o.ended - max(o.started, self.fault_at) > DETECTION_BOUND + MARGIN]

    def after(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Calls started once every path had its first good call and every responder was
        listening again, before the next fault: each must be answered (a link that came back
        half way, a responder whose publisher is not back, would lose some)."""
        recovered = self.back_at + max(*self.recovery, self.listening)
        return [o for o in outcomes if recovered < o.started and o.ended < self.next_fault_at]

    def figures(self, outcomes: list[Outcome]) -> dict[str, Any]:
        hit = self.hit(outcomes)
        in_flight = [o for o in hit if o.started < self.fault_at]
        after = self.after(outcomes)
        return {
            "down_s": round(self.back_at - self.fault_at, 2),
            "in_flight_at_fault": len(in_flight),
            "in_flight_ended_within_s": round(max((o.ended - self.fault_at for o in in_flight), default=0), 2),
            "calls_hit": len(hit),
            "hit_codes": dict(Counter(o.code or "ok" for o in hit)),
            "slowest_hit_end_s": round(max((o.ended - max(o.started, self.fault_at) for o in hit), default=0), 2),
            "gateways_unready_after_s": [None if u is None else round(u, 2) for u in self.unready],
            "first_good_call_host_s": round(self.recovery[0], 2),
            "first_good_call_gateways_s": [round(r, 2) for r in self.recovery[1:]],
            "all_responders_listening_s": round(self.listening, 2),
            "calls_after_recovery": len(after),
            "after_recovery_codes": dict(Counter(o.code or "ok" for o in after)),
            "answered_after_by_replica": dict(Counter(str(o.result["replica"]) for o in after if o.ok)),
        }


async def fault_round(stack: ChaosStack, caller: Caller, load: Load, fault: str, redis_id: str, gateways: list[str]) -> Round:
    """Inject ``fault`` into Redis while ``load`` runs, bring Redis back, measure recovery.
    Nothing here blocks the event loop (docker runs in threads): calls answered while it
    was blocked would look as if they had ended after the fault."""
    fault_at = time.monotonic()
    watchers = [asyncio.create_task(unready_after(g, fault_at, fault_at + DETECTION_BOUND + MARGIN)) for g in gateways]
    if fault == "pause":
        await asyncio.to_thread(docker, "pause", redis_id)
        await load.run_for(DOWN_FOR[fault] - (time.monotonic() - fault_at))
        await asyncio.to_thread(docker, "unpause", redis_id)
    else:
        await asyncio.to_thread(docker, *(("stop", "-t", "10") if fault == "stop" else ("kill", "-s", "KILL")), redis_id)
        await load.run_for(DOWN_FOR[fault] - (time.monotonic() - fault_at))
        await asyncio.to_thread(docker, "start", redis_id)
        while not await asyncio.to_thread(stack.redis_answers):
            assert time.monotonic() - fault_at < 60, "Redis did not come back within 60 s"
    back_at = time.monotonic()
    listening, *recovery = await asyncio.gather(
        all_responders_listening(stack, back_at),
        first_good_host_call(caller, back_at),
        *(first_good_browser_call(g, stack.jwt_secret, back_at) for g in gateways),
    )
    unready = [await w for w in watchers]
    return Round(fault, fault_at, back_at, unready, recovery, listening)


async def all_responders_listening(stack: ChaosStack, since: float) -> float:
    """Seconds from ``since`` until a request reaches every responder replica again."""
    await asyncio.to_thread(wait_for, lambda: stack.responders_listening() >= RESPONDERS, 30, "every responder subscribed")
    return time.monotonic() - since
