"""docs/template.md, followed literally: its `sh` blocks run in order in one shell, in a
scratch HOME, as their own compose project, and the call prints what the page says it prints.

The only help the shell gets: the stand-in base images where official ones cannot be pulled
(as `make e2e` exports them), a unique project name, and on hosts with docker-compose 1.29
only, a `docker compose` function that runs it (and waits for health where v2 has `--wait`).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

from .conftest import ROOT, _compose_command, _load_image_overrides

GUIDE = ROOT / "docs" / "template.md"

V1_SHIM = r"""
if ! command docker compose version >/dev/null 2>&1; then
  docker() {
    if [ "$1" != compose ]; then command docker "$@"; return; fi
    shift
    local arg args=() wait=0
    for arg in "$@"; do if [ "$arg" = --wait ]; then wait=1; else args+=("$arg"); fi; done
    docker-compose "${args[@]}"
    if [ $wait = 1 ]; then bash "$TEMPLATE/scripts/wait_healthy.sh" docker-compose 90; fi
  }
fi
"""


def guide_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", GUIDE.read_text(), flags=re.MULTILINE | re.DOTALL)


def expected_outputs(blocks: list[str]) -> list[str]:
    """Lines the guide shows as output: a `# {...}` comment right after a command."""
    return [line[2:] for block in blocks for line in block.splitlines() if line.startswith("# {")]


def test_the_guide_has_the_five_steps() -> None:
    blocks = guide_blocks()
    text = "\n".join(blocks)
    for step in ("make new-service NAME=orders", "cat > services/orders/actions.py", "docker build", "cat > compose.yaml"):
        assert step in text, step
    assert expected_outputs(blocks), "the guide shows no result to check"


def test_following_the_guide_builds_runs_and_calls_orders(tmp_path: Path) -> None:
    _load_image_overrides()
    blocks = guide_blocks()
    project = f"guide-{os.environ.get('E2E_PROJECT', 'pubsub-rpc-e2e')}-{uuid.uuid4().hex[:6]}"
    home = tmp_path / "home"
    home.mkdir()
    environ = {**os.environ, "HOME": str(home), "COMPOSE_PROJECT_NAME": project, "TEMPLATE": str(ROOT)}
    script = "set -euo pipefail\n" + V1_SHIM + "\n".join(blocks)
    started = time.monotonic()
    try:
        result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)
    finally:
        compose = _compose_command().split()
        subprocess.run(
            [*compose, "-p", project, "-f", str(home / "shop" / "compose.yaml"), "down", "-v", "--remove-orphans"],
            capture_output=True,
            timeout=120,
        )
        subprocess.run(["docker", "image", "rm", "shop/orders"], capture_output=True, timeout=60)
    print(f"\nthe guide, copy to call (image build included): {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    printed = result.stdout.splitlines()
    for line in expected_outputs(blocks):
        assert line in printed, f"the guide promises {line!r}; printed:\n{result.stdout[-2000:]}"
    assert (home / "shop" / "services" / "orders" / "__main__.py").read_text().count("orders") >= 1
