"""The demo page in headless Chromium, against the processes `make dev` starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.redis_process import free_port

from .browser_flows import check_narrow_layout, run_all_flows

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent


def get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return json.load(response)
    except OSError:
        return None


@pytest.fixture(scope="module")
def dev_system() -> Iterator[str]:
    """`python -m scripts.dev` (what `make dev` runs) on a free port with its own Redis."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env = {k: v for k, v in env.items() if not k.startswith("GATEWAY_")}
    # Demo tokens live 6 s here, so the page's refresh on the open socket is exercised.
    env.update(GATEWAY_PORT=str(port), PUSH_INTERVAL="1", GATEWAY_DEMO_TOKEN_TTL="6")
    process = subprocess.Popen([sys.executable, "-m", "scripts.dev"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while (get_json(url + "/readyz") or {}).get("ok") is not True:
        assert process.poll() is None, "make dev exited during start-up"
        assert time.monotonic() < deadline, "make dev not ready within 60s"
        time.sleep(0.1)
    yield url
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, "make dev did not stop cleanly"


def test_demo_page_flows(dev_system: str) -> None:
    def restart_gateway() -> None:
        pid = get_json(dev_system + "/healthz")["pid"]  # type: ignore[index]
        os.kill(pid, signal.SIGTERM)  # scripts/dev.py starts it again, as compose would

    burst = run_all_flows(dev_system + "/", restart_gateway, "demo-dev.png", expect_refresh=True)
    print(
        f"\nburst of 1000 from the page: p50 {burst['p50']:.2f} ms, p99 {burst['p99']:.2f} ms, {burst['perSecond']:.0f} calls/s"
    )


def test_demo_page_fits_a_narrow_window(dev_system: str) -> None:
    check_narrow_layout(dev_system + "/")


def test_page_script_never_parses_message_text_as_html() -> None:
    for path in (ROOT / "services" / "ws_gateway" / "static").glob("*.js"):
        script = path.read_text()
        assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script, path
