"""The `observability` profile: Prometheus scrapes every service, counts the calls, loads the
rules (which pass promtool), and raises NoResponder when the responder goes away.

Prometheus is reached the way an operator would, on its loopback port, through its HTTP API.
Scrapes and rule evaluations run every 2 s in the profile, so every wait here is bounded by a
few of those intervals plus start-up.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Stack

SERVICES = {"laravel_like_responder", "node_like_caller", "ws_gateway", "prometheus"}
ALERTS = {"NoResponder", "HighErrorRatio", "HighP99", "DeafLink", "TargetDown"}


def api(stack: Stack, path: str, **params: str) -> Any:
    """``data`` of a Prometheus API answer (``status`` must be ``success``)."""
    url = f"{stack.prometheus}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy; on timeout, say what it last saw."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except OSError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
        time.sleep(0.5)


def query(stack: Stack, promql: str) -> list[dict[str, Any]]:
    return list(api(stack, "query", query=promql)["result"])


def total(stack: Stack, promql: str) -> float:
    """The value of a query that sums to one sample, 0 when it has none."""
    result = query(stack, promql)
    return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture
def prometheus(stack: Stack) -> Stack:
    def ready() -> bool:
        with urllib.request.urlopen(stack.prometheus + "/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    until(ready, 60, "Prometheus to be ready")
    return stack


def test_config_and_rules_pass_promtool(prometheus: Stack) -> None:
    promtool = ("exec", "-T", "prometheus", "promtool")
    checked = prometheus.compose(*promtool, "check", "config", "/etc/prometheus/prometheus.yml", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr
    # The rules' unit tests: each alert fires on its condition, not on start-up blips.
    tested = prometheus.compose(*promtool, "test", "rules", "/etc/prometheus/rules_test.yml", check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_service_is_scraped_and_up(prometheus: Stack) -> None:
    def targets() -> dict[str, list[str]] | None:
        active = api(prometheus, "targets", state="active")["activeTargets"]
        health: dict[str, list[str]] = {}
        for target in active:
            health.setdefault(target["labels"]["job"], []).append(f"{target['health']} {target.get('lastError', '')}".strip())
        seen.update(health)
        return health if set(health) >= SERVICES and all(h == "up" for states in health.values() for h in states) else None

    seen: dict[str, list[str]] = {}
    try:
        until(targets, 60, f"every target ({sorted(SERVICES)}) to be up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; targets by job: {seen}") from None
    print(f"targets: {seen}")


def test_calls_are_counted_with_their_code(prometheus: Stack) -> None:
    ok = 'sum(rpc_server_call_duration_seconds_count{rpc_method="echo", code="ok"})'
    failed = 'sum(rpc_server_call_duration_seconds_count{rpc_method="fail", code!="ok"})'
    until(lambda: query(prometheus, "up{job='laravel_like_responder'} == 1"), 60, "the responder to be scraped")
    before_ok, before_failed = total(prometheus, ok), total(prometheus, failed)
    for _ in range(3):
        assert prometheus.cli("echo", '{"n": 1}').returncode == 0
    assert prometheus.cli("fail", "null").returncode == 1
    # Scraped every 2 s: a few scrapes at most.
    until(lambda: total(prometheus, ok) >= before_ok + 3, 30, "3 more echo calls in rpc_server_call_duration_seconds_count")
    until(lambda: total(prometheus, failed) >= before_failed + 1, 30, "the failed call, with its error code")
    fail_series = query(prometheus, 'rpc_server_call_duration_seconds_count{rpc_method="fail"}')
    codes = {series["metric"]["code"] for series in fail_series}
    print(f"fail's codes: {codes}")
    assert "ok" not in codes
    # The recording rules turn the histograms into a p99 per action.
    echo_p99 = 'rpc_method:rpc_server_call_duration_seconds:p99_1m{rpc_method="echo"}'
    p99 = until(lambda: query(prometheus, echo_p99), 30, "echo's p99")
    print(f"echo p99 over the last minute: {float(p99[0]['value'][1]) * 1000:.2f} ms")


def test_rules_are_loaded_and_evaluated(prometheus: Stack) -> None:
    def healthy_rules() -> dict[str, str] | None:
        groups = api(prometheus, "rules")["groups"]
        rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
        seen.update(rules)
        return rules if ALERTS <= set(rules) and all(health == "ok" for health in rules.values()) else None

    seen: dict[str, str] = {}
    try:
        rules = until(healthy_rules, 30, "the rules to be loaded and evaluated without error")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; rules' health: {seen}") from None
    assert any(name.startswith("rpc_method:") for name in rules), rules


def test_a_stopped_responder_raises_no_responder(prometheus: Stack) -> None:
    def no_responder() -> str | None:
        alerts = api(prometheus, "alerts")["alerts"]
        states = [alert["state"] for alert in alerts if alert["labels"]["alertname"] == "NoResponder"]
        return states[0] if states else None

    # Not active on a healthy stack (a test before may have stopped the responder).
    until(lambda: no_responder() is None, 90, "NoResponder to be inactive on a healthy stack")
    prometheus.compose("stop", "laravel_like_responder")
    try:
        # One failed scrape (2 s) and one evaluation (2 s) make it pending; it fires after 1 m.
        state = until(no_responder, 30, "NoResponder to become pending")
        print(f"NoResponder: {state}")
    finally:
        prometheus.compose("start", "laravel_like_responder")
    until(lambda: no_responder() is None, 60, "NoResponder to clear once the responder is back")
