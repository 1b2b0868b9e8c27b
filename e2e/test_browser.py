"""The demo page in headless Chromium against the compose stack (published gateway port)."""

from __future__ import annotations

import pytest

from tests.browser_flows import run_all_flows

from .conftest import Stack

pytestmark = pytest.mark.browser


def test_demo_page_against_the_containers(stack: Stack) -> None:
    burst = run_all_flows(stack.gateway + "/", lambda: stack.compose("restart", "ws_gateway"), "demo-compose.png")
    summary = f"p50 {burst['p50']:.2f} ms, p99 {burst['p99']:.2f} ms, {burst['perSecond']:.0f} calls/s"
    print(f"\nburst of 1000 from the page (compose): {summary}")
