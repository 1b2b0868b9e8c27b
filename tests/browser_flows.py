"""What a visitor does on the demo page, in headless Chromium (Debian's) via Playwright.

Shared by tests/test_browser.py (against `make dev`'s processes) and e2e/test_browser.py
(against the compose stack); each passes the page's URL and a way to restart the gateway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Locator, Page, Response, expect, sync_playwright

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# What this sandbox needs: no sandboxing as root, no GPU, no calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@contextmanager
def demo_page(url: str, width: int = 1280, height: int = 900) -> Iterator[tuple[Page, list[str]]]:
    """The page, open and connected, with every console error collected."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(message.text)

            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))

            def on_response(response: Response) -> None:
                if response.status >= 400:
                    errors.append(f"{response.status} {response.url}")

            page.on("response", on_response)
            page.goto(url)
            expect(page.locator("#conn-state")).to_have_text("open", timeout=15_000)
            yield page, errors
        finally:
            browser.close()


def call(page: Page, action: str, data: str, timeout: str = "5") -> None:
    page.fill("#action", action)
    page.fill("#data", data)
    page.fill("#timeout", timeout)
    page.click("#send")


def latest_row(page: Page) -> Locator:
    return page.locator("#calls tbody tr").first


def check_demo_mode_is_announced(page: Page) -> None:
    expect(page.locator("#demo-banner")).to_be_visible()
    expect(page.locator("#demo-banner")).to_contain_text("Demo mode")
    expect(page.locator("#whoami")).to_contain_text("signed in as demo-")


def check_actions_listed(page: Page) -> None:
    # The sample allow-list (configs, echo, sum, slow, fail, actions); `info` is not on it.
    expect(page.locator("#actions li")).to_have_count(6, timeout=10_000)
    sum_item = page.locator("#actions li", has_text="sum")
    expect(sum_item).to_contain_text("Add numbers")
    expect(page.locator("#actions li", has_text="info")).to_have_count(0)


def check_sum_result(page: Page) -> None:
    call(page, "sum", "[1, 2, 3.5]")
    row = latest_row(page)
    expect(row.locator("td").nth(2)).to_have_text("ok")
    expect(row.locator("td").nth(3)).to_have_text("6.5")
    assert float(row.locator("td").nth(4).inner_text()) > 0


def check_error_codes(page: Page) -> None:
    call(page, "fail", "null")
    expect(latest_row(page).locator("td").nth(2)).to_have_text("error: handler_error")
    call(page, "info", "{}")  # not on the gateway's allow-list: refused without touching Redis
    expect(latest_row(page).locator("td").nth(2)).to_have_text("error: forbidden")
    expect(page.locator("#notice")).to_contain_text("forbidden")


def check_timeout(page: Page) -> None:
    call(page, "slow", '{"ms": 3000}', timeout="0.3")
    expect(latest_row(page).locator("td").nth(2)).to_have_text("timeout", timeout=10_000)


def check_invalid_json_is_caught_before_sending(page: Page) -> None:
    rows = page.locator("#calls tbody tr").count()
    call(page, "echo", "{not json")
    expect(page.locator("#data-error")).to_contain_text("Not valid JSON")
    expect(page.locator("#data")).to_have_attribute("aria-invalid", "true")
    assert page.locator("#calls tbody tr").count() == rows
    page.fill("#data", "1")  # leave it valid for the next flow
    page.dispatch_event("#data", "input")


def check_pushed_event(page: Page) -> None:
    expect(page.locator("#events li[data-action='configs']").first).to_contain_text("configs from laravel", timeout=15_000)


def check_burst(page: Page, count: int = 1000) -> dict[str, float]:
    page.fill("#burst-count", str(count))
    page.fill("#burst-action", "echo")
    page.click("#burst")
    expect(page.locator("#burst-result")).to_contain_text(f"{count} calls", timeout=60_000)
    result = json.loads(page.locator("#burst-result").get_attribute("data-result") or "{}")
    assert result["count"] == count and result["errors"] == 0
    return result


def check_services_panel(page: Page) -> None:
    """The services alive, from their heartbeats: the responder with its actions, the caller
    and this gateway, each with a badge."""
    services = page.locator("#services")
    responder = services.locator("li[data-kind='responder'][data-service='laravel_like_responder']").first
    expect(responder).to_contain_text("sum", timeout=15_000)
    expect(responder).to_contain_text("echo")
    expect(responder).to_have_attribute("data-state", "ready")
    expect(responder.locator(".badge")).to_have_text("ready")
    expect(services.locator("li[data-kind='caller'][data-service='node_like_caller']").first).to_be_visible(timeout=15_000)
    expect(services.locator("li[data-kind='gateway'][data-service='ws_gateway']").first).to_be_visible(timeout=15_000)


def rate_chart(page: Page) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """() => { const c = document.getElementById('chart-rate');
                       return {total: Number(c.dataset.total || 0), points: JSON.parse(c.dataset.points || '[]'),
                               t: Number(c.dataset.t || 0), pixels: c.toDataURL()}; }"""
        )
    )


def check_live_charts_move_during_a_burst(page: Page, count: int = 1000) -> dict[str, float]:
    """The calls/s chart (stats from the gateway each second) takes in the burst: its data
    and its pixels change, and the histogram shows the burst's own round trips."""
    expect(page.locator("#chart-rate")).not_to_have_attribute("data-t", "", timeout=10_000)  # first stats frame
    before = rate_chart(page)
    # Every stats frame the page draws from here on, with whether the burst was still running.
    page.evaluate(
        """() => { window.rateSeen = []; const c = document.getElementById('chart-rate');
                   new MutationObserver(() => window.rateSeen.push({total: Number(c.dataset.total),
                       running: document.getElementById('burst').disabled}))
                     .observe(c, {attributes: true, attributeFilter: ['data-t']}); }"""
    )
    burst = check_burst(page, count)
    page.wait_for_function(
        "(n) => Number(document.getElementById('chart-rate').dataset.total) >= n",
        arg=int(before["total"]) + count,
        timeout=10_000,
    )
    after = rate_chart(page)
    assert after["t"] > before["t"] and after["points"] != before["points"]
    assert max(after["points"]) > 0 and after["pixels"] != before["pixels"]
    seen = page.evaluate("window.rateSeen")
    assert any(frame["total"] > before["total"] for frame in seen), seen
    histogram = page.locator("#chart-histogram")
    expect(histogram).to_have_attribute("data-count", str(count))
    assert sum(json.loads(histogram.get_attribute("data-bins") or "[]")) == count
    expect(page.locator("#latency-summary")).to_contain_text("p99")
    assert float(page.locator("#chart-latency").get_attribute("data-p99") or 0) > 0
    return burst


def check_reconnects(page: Page, restart_gateway: Callable[[], object]) -> None:
    restart_gateway()
    expect(page.locator("#conn-state")).to_contain_text("reconnecting", timeout=15_000)
    expect(page.locator("#conn-state")).to_have_text("open", timeout=30_000)
    call(page, "echo", '"after reconnect"')
    expect(latest_row(page).locator("td").nth(3)).to_have_text('"after reconnect"', timeout=10_000)


def check_token_refreshed_on_the_open_socket(page: Page) -> None:
    """The demo token is short-lived in the tests: the page renews it for the same sub."""
    sub = page.locator("#whoami").inner_text()
    expect(page.locator("#whoami")).not_to_have_attribute("data-refreshes", "0", timeout=30_000)
    expect(page.locator("#whoami")).to_have_text(sub)
    expect(page.locator("#conn-state")).to_have_text("open")


def check_narrow_layout(url: str) -> None:
    with demo_page(url, width=360, height=740) as (page, errors):
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"page is {overflow}px wider than a 360px window"
        assert errors == []


def run_all_flows(
    url: str, restart_gateway: Callable[[], object], screenshot: str, expect_refresh: bool = False
) -> dict[str, float]:
    with demo_page(url) as (page, errors):
        check_demo_mode_is_announced(page)
        check_actions_listed(page)
        check_sum_result(page)
        check_error_codes(page)
        check_timeout(page)
        check_invalid_json_is_caught_before_sending(page)
        check_pushed_event(page)
        check_services_panel(page)
        burst = check_live_charts_move_during_a_burst(page)
        if expect_refresh:
            check_token_refreshed_on_the_open_socket(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
        assert errors == [], errors  # checked before the restart, which the browser reports
        check_reconnects(page, restart_gateway)
    return burst
