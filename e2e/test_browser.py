"""The demo page in headless Chromium against the compose stack (published gateway port)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser_flows import ARTIFACTS, demo_page, run_all_flows

from .conftest import Stack

pytestmark = pytest.mark.browser


def test_demo_page_against_the_containers(stack: Stack) -> None:
    burst = run_all_flows(stack.gateway + "/", lambda: stack.compose("restart", "ws_gateway"), "demo-compose.png")
    summary = f"p50 {burst['p50']:.2f} ms, p99 {burst['p99']:.2f} ms, {burst['perSecond']:.0f} calls/s"
    print(f"\nburst of 1000 from the page (compose): {summary}")


def test_demo_page_shows_the_peers_pushes(stack: Stack) -> None:
    """With the peers profile up, the page lists the Node.js peer's rounds and the PHP peer's
    answers (their seed-style pushes), like any other push."""
    with demo_page(stack.gateway + "/") as (page, errors):
        events = page.locator("#events")
        expect(events.locator("li[data-action='node_peer']").first).to_contain_text("node_peer from nodejs", timeout=15_000)
        expect(events.locator("li[data-action='php_peer']").first).to_contain_text("php_peer from laravel", timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "demo-compose-peers.png"), full_page=True)
        assert errors == [], errors
