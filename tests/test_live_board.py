"""The live view's bookkeeping on its own, with a clock the test moves: the per-second ring
and its percentiles, and the presence board's ready/stale/gone rules."""

from __future__ import annotations

import orjson
import pytest
from ws_gateway.limits import Counters
from ws_gateway.livestats import BASE_MS, BUCKETS, STEPS_PER_DOUBLING, WINDOW, LiveStats, bucket_of, bucket_value, quantile
from ws_gateway.presence import MAX_ENTRIES, PresenceBoard


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("ms", [0.06, 0.3, 1.0, 4.2, 17.0, 123.0, 999.0, 5_000.0, 30_000.0])
def test_a_bucket_holds_its_value_within_ten_percent(ms: float) -> None:
    assert abs(bucket_value(bucket_of(ms)) - ms) / ms < 0.1


@pytest.mark.parametrize("index", range(1, BUCKETS - 1))
def test_bucket_edges_follow_the_definition(index: int) -> None:
    """Bucket i holds (BASE_MS * 2**((i-1)/4), BASE_MS * 2**(i/4)]: the upper edge is inside."""
    upper = BASE_MS * 2 ** (index / STEPS_PER_DOUBLING)
    assert bucket_of(upper) == index
    assert bucket_of(upper * (1 + 1e-9)) == index + 1
    assert bucket_of(upper * (1 - 1e-9)) == index


def test_out_of_range_latencies_land_in_the_end_buckets() -> None:
    assert bucket_of(0.0) == 0 and bucket_of(-1.0) == 0
    assert bucket_of(10**9) == BUCKETS - 1


def test_quantiles_of_a_known_mix() -> None:
    histogram = [0] * BUCKETS
    for ms, count in ((1.0, 98), (200.0, 2)):
        histogram[bucket_of(ms)] += count
    assert quantile(histogram, 0.5) == pytest.approx(1.0, rel=0.1)
    assert quantile(histogram, 0.99) == pytest.approx(200.0, rel=0.1)
    assert quantile([0] * BUCKETS, 0.5) is None


def test_seconds_are_reported_oldest_first_and_age_out() -> None:
    clock = Clock()
    stats = LiveStats(clock)
    for n in range(10):
        stats.record(2.0, error=n == 0)
    clock.now += 1
    stats.record(50.0, error=False)
    clock.now += 1  # both seconds are complete now
    snap = stats.snapshot()
    assert snap["calls"][-2:] == [10, 1] and snap["errors"][-2:] == [1, 0]
    assert snap["p50"][-2] == pytest.approx(2.0, rel=0.1) and snap["p99"][-1] == pytest.approx(50.0, rel=0.1)
    assert snap["minute"] == {"calls": 11, "errors": 1, "p50": snap["p50"][-2], "p99": snap["p99"][-1]}
    clock.now += WINDOW - 1  # the first second just left the window
    assert stats.snapshot()["minute"]["calls"] == 1
    clock.now += WINDOW  # a slot reused a minute later starts from zero
    stats.record(3.0, error=False)
    clock.now += 1
    assert stats.snapshot()["minute"]["calls"] == 1


def beat(service: str, kind: str = "responder", instance: str = "a1", **extra: object) -> bytes:
    body = {"service": service, "kind": kind, "instance": instance, "actions": ["sum", "echo"], "ready": True, "interval": 2.0}
    return orjson.dumps({**body, **extra})


def test_a_service_turns_stale_after_a_missed_beat_and_goes_after_three() -> None:
    clock, counters = Clock(), Counters()
    board = PresenceBoard(counters, clock)
    board.heard(beat("laravel_like_responder"))
    version = board.version
    [entry] = board.services()
    assert entry == {
        "service": "laravel_like_responder",
        "kind": "responder",
        "instance": "a1",
        "actions": ["echo", "sum"],
        "ready": True,
        "state": "ready",
    }
    clock.now += 2.0
    board.heard(beat("laravel_like_responder"))  # same state: nothing to send
    board.prune()
    assert board.version == version
    clock.now += 3.1  # more than 1.5 intervals without a beat
    board.prune()
    assert board.services()[0]["state"] == "stale" and board.version == version + 1
    board.heard(beat("laravel_like_responder"))  # back
    assert board.services()[0]["state"] == "ready" and board.version == version + 2
    clock.now += 6.1
    board.prune()
    assert board.services() == []


def test_order_readiness_and_leaving() -> None:
    board = PresenceBoard(Counters(), Clock())
    board.heard(beat("ws_gateway", kind="gateway", actions=[]))
    board.heard(beat("node_like_caller", kind="caller", actions=[], ready=False))
    board.heard(beat("laravel_like_responder"))
    assert [(s["kind"], s["state"]) for s in board.services()] == [
        ("responder", "ready"),
        ("caller", "not ready"),
        ("gateway", "ready"),
    ]
    board.heard(beat("laravel_like_responder", ready=False, leaving=True))
    assert [s["kind"] for s in board.services()] == ["caller", "gateway"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b'"x"',
        beat("x", kind="admin"),
        beat("x" * 65),
        beat("bad\nname"),
        beat("x", instance=""),
        beat("x", actions=["ok", 3]),
        beat("x", actions=["a"] * 201),
        beat("x", interval=True),
        beat("x", interval=600),
        beat("x", extra="y" * 20_000),
    ],
)
def test_bad_heartbeats_are_counted_not_shown(raw: bytes) -> None:
    counters = Counters()
    board = PresenceBoard(counters, Clock())
    board.heard(raw)
    assert board.services() == [] and counters.presence_malformed == 1


def test_the_board_is_capped() -> None:
    counters = Counters()
    board = PresenceBoard(counters, Clock())
    for n in range(MAX_ENTRIES + 10):
        board.heard(beat("svc", instance=f"i{n}"))
    assert len(board.services()) == MAX_ENTRIES and counters.presence_malformed == 10
