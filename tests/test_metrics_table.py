"""The hot-path latency table: right buckets, bounded labels, standard exposition."""

from __future__ import annotations

import random

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pubsub_rpc.metrics import BUCKETS, MAX_ACTIONS, MAX_CODES, OTHER, Exporter, LatencyTable


def scrape(table: LatencyTable) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    exporter = Exporter()
    exporter.add(lambda: [table.family("rpc_server_call_duration_seconds", "test")])
    text = generate_latest(exporter.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_observations_land_in_cumulative_buckets_with_count_and_sum() -> None:
    table = LatencyTable()
    for seconds in (0.0002, 0.0005, 0.003, 7.0, 99.0):
        table.observe("sum", "ok", seconds)
    table.observe("sum", "invalid_request", 0.001)
    samples = scrape(table)
    le = lambda bound: ("rpc_server_call_duration_seconds_bucket", (("code", "ok"), ("le", bound), ("rpc_method", "sum")))  # noqa: E731
    assert samples[le("0.0005")] == 2  # 0.0005 itself is "less or equal"
    assert samples[le("0.005")] == 3
    assert samples[le("10.0")] == 4
    assert samples[le("+Inf")] == 5
    key = (("code", "ok"), ("rpc_method", "sum"))
    assert samples[("rpc_server_call_duration_seconds_count", key)] == 5
    assert abs(samples[("rpc_server_call_duration_seconds_sum", key)] - 106.0037) < 1e-9
    assert samples[("rpc_server_call_duration_seconds_count", (("code", "invalid_request"), ("rpc_method", "sum")))] == 1


def test_hostile_action_names_cannot_grow_the_series_past_the_bound() -> None:
    table = LatencyTable()
    for n in range(MAX_ACTIONS * 5):
        table.observe(f"action-{n}", "unknown_action", 0.001)
    actions = {action for action, _ in table.rows}
    assert len(actions) == MAX_ACTIONS + 1
    assert OTHER in actions
    counts = scrape(table)
    other = counts[("rpc_server_call_duration_seconds_count", (("code", "unknown_action"), ("rpc_method", OTHER)))]
    assert other == MAX_ACTIONS * 4


def test_the_success_shortcut_and_codes_stay_bounded_too() -> None:
    table = LatencyTable()
    for n in range(MAX_ACTIONS * 3):
        table.row(f"action-{n}", "ok")
    assert len(table.ok) == MAX_ACTIONS  # the inline lookup never holds the overflow names
    table = LatencyTable()
    for n in range(MAX_CODES * 3):
        table.observe("sum", f"code-{n}", 0.001)
    assert len({code for _, code in table.rows}) <= MAX_CODES + 1
    assert ("sum", OTHER) in table.rows


def test_a_batch_ending_together_is_binned_as_one_observation_each() -> None:
    rng = random.Random(4)
    for _ in range(200):
        end = 1000.0 + rng.random()
        durations = [
            rng.choice([rng.uniform(0, 0.002), rng.uniform(0, 40), rng.uniform(0, 0.05)]) for _ in range(rng.randint(1, 40))
        ]
        one_by_one, batched = LatencyTable(), LatencyTable()
        for seconds in durations:
            one_by_one.observe("echo", "ok", seconds)
        batched.add_ended("echo", [end - seconds for seconds in durations], end)
        expected, got = one_by_one.rows[("echo", "ok")], batched.rows[("echo", "ok")]
        assert got[:-1] == expected[:-1] or _edge(durations), (durations, got, expected)
        assert abs(got[-1] - expected[-1]) < 1e-6


def _edge(durations: list[float]) -> bool:
    """A duration on a bucket bound may round either way once subtracted from ``end``."""
    return any(abs(seconds - bound) < 1e-9 for seconds in durations for bound in BUCKETS)
