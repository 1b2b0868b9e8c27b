"""The `ha` profile (compose.yaml + deploy/ha/compose.ha.yaml: a master, a replica, three
sentinels, the services in Sentinel mode), as its own compose project: under a steady load
of calls from the caller container through the responder, stop the master container and
measure the time to the first good call through the new master, the calls by outcome, and
that none hung. Skipped only without a Docker engine (the profile needs one)."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.make_secrets import DEFAULT_CHANNEL, ensure_secrets
from scripts.redis_process import free_port

from .conftest import _compose_command, _load_image_overrides, gateway_ready

ROOT = Path(__file__).resolve().parent.parent
PROJECT = os.environ.get("E2E_PROJECT", "pubsub-rpc-e2e") + "-ha"
FAILOVER_BOUND = 10.0  # seconds from the master's stop to the first good call (issue 11)
NAMED = {"ok", "connection_lost", "timeout", "no_responder"}

# Runs in the caller container (its Settings: Sentinel mode, the caller's ACL user): 4
# workers call `echo` (1 s timeout, 4 s hard bound = hung); "warm" after 50 good calls;
# ends once 100 good calls followed the last failure, or after LIMIT seconds; prints JSON.
LOAD = """
import asyncio, json, time
from collections import Counter
from pubsub_rpc import Caller, RpcError, Settings

LIMIT = 60.0

async def main():
    outcomes, good, failed = Counter(), [], []
    async with Caller(Settings.from_env(service="node_like_caller"), name="ha-load") as caller:
        stop = asyncio.Event()
        started = time.monotonic()

        async def work(worker):
            n = 0
            while not stop.is_set():
                n += 1
                at = time.time()
                try:
                    async with asyncio.timeout(4.0):
                        await caller.call("echo", [worker, n], timeout=1.0)
                    outcomes["ok"] += 1
                    good.append(at)
                    if outcomes["ok"] == 50:
                        print("warm", flush=True)
                except RpcError as exc:
                    outcomes[exc.code] += 1
                    failed.append(at)
                    await asyncio.sleep(0.02)
                except TimeoutError:
                    outcomes["hung"] += 1
                recovered = failed and sum(1 for t in good[-100:] if t > failed[-1]) >= 100
                if recovered or time.monotonic() - started > LIMIT:
                    stop.set()

        await asyncio.gather(*(work(w) for w in range(4)))
    print(json.dumps({"outcomes": outcomes, "good": good, "failed": failed, "pending": caller.pending_count}), flush=True)

asyncio.run(main())
"""


class HaStack:
    def __init__(self) -> None:
        self.env = dict(os.environ, COMPOSE_PROFILES="ha", GATEWAY_PORT=str(free_port()), GATEWAY_DEMO_MODE="true")
        files = ["-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "deploy/ha/compose.ha.yaml")]
        self.command = _compose_command().split() + files + ["-p", PROJECT]
        self.gateway = f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command + list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=check
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command + list(args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def wait_healthy(self, timeout: float = 180) -> None:
        subprocess.run(
            ["bash", str(ROOT / "scripts/wait_healthy.sh"), " ".join(self.command), str(timeout)], env=self.env, check=True
        )

    def sentinel(self, *args: str) -> str:
        auth = 'REDISCLI_AUTH="$(cat /run/secrets/sentinel_client_password)"'
        script = f"{auth} redis-cli -p 26379 --user sentinel_client " + " ".join(args)
        return self.compose("exec", "-T", "sentinel-1", "sh", "-c", script, timeout=30).stdout

    def settled(self) -> bool:
        """Every sentinel knows the replica (in sync) and the two other sentinels: only
        then can a failover succeed (a sentinel learns a replica from the master's INFO,
        every 10 s)."""
        if not self.node("redis-replica", "ROLE").split()[3:4] == ["connected"]:
            return False
        for sentinel in ("sentinel-1", "sentinel-2", "sentinel-3"):
            auth = 'REDISCLI_AUTH="$(cat /run/secrets/sentinel_client_password)"'
            script = f"{auth} redis-cli -p 26379 --user sentinel_client sentinel masters"
            lines = self.compose("exec", "-T", sentinel, "sh", "-c", script, timeout=30, check=False).stdout.split()
            state = dict(zip(lines[::2], lines[1::2], strict=False))
            if state.get("num-slaves") != "1" or state.get("num-other-sentinels") != "2":
                return False
        return True

    def node(self, service: str, *command: str) -> str:
        """A command on a Redis node, as Sentinel's user there (from a sentinel container,
        which holds that password)."""
        auth = 'REDISCLI_AUTH="$(cat /run/secrets/redis_sentinel_password)"'
        script = f"{auth} redis-cli -h {service} --user sentinel " + " ".join(command)
        return self.compose("exec", "-T", "sentinel-1", "sh", "-c", script, timeout=30, check=False).stdout


def _docker_available() -> bool:
    return shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def ha_stack() -> Iterator[HaStack]:
    if not _docker_available():
        pytest.skip("the ha profile needs a Docker engine (make bootstrap)")
    _load_image_overrides()
    ensure_secrets(ROOT / ".secrets", os.environ.get("RPC_CHANNEL") or DEFAULT_CHANNEL)
    stack = HaStack()
    stack.compose("down", "-v", "--remove-orphans", check=False)
    try:
        stack.compose("up", "--build", "-d", timeout=900)
        stack.wait_healthy()
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans", check=False)


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of ``process``, waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"no output within {timeout}s")
    return process.stdout.readline().strip()


def test_stopping_the_master_fails_over_under_load_within_the_bound(ha_stack: HaStack) -> None:
    deadline = time.monotonic() + 60
    while not ha_stack.settled():
        assert time.monotonic() < deadline, "the sentinels did not learn the replica and each other within 60 s"
    old = ha_stack.sentinel("sentinel", "get-master-addr-by-name", "mymaster").split()
    load = ha_stack.popen("exec", "-T", "node_like_caller", "python", "-c", LOAD)
    try:
        line = _read_line(load, 60)
        assert line == "warm", load.stderr.read() if load.stderr and load.poll() is not None else line
        master = ha_stack.compose("ps", "-q", "redis").stdout.strip()
        stopped = time.time()
        subprocess.run(["docker", "stop", "-t", "5", master], capture_output=True, check=True, timeout=60)  # SIGTERM
        out, err = load.communicate(timeout=90)
    finally:
        if load.poll() is None:
            load.kill()
    result = json.loads(out.strip().splitlines()[-1])
    outcomes, good = result["outcomes"], result["good"]
    # The outage starts with the first failed call after the stop; the first call started
    # after that and answered went through the new master (the old one is gone).
    first_failure = min(t for t in result["failed"] if t >= stopped)
    first_good = min((t for t in good if t > first_failure), default=None)
    new = ha_stack.sentinel("sentinel", "get-master-addr-by-name", "mymaster").split()
    assert first_good is not None, err[-2000:]
    recovery = first_good - stopped
    print(
        f"\nha profile: master {':'.join(old)} stopped; Sentinel promoted {':'.join(new)}; first failed call "
        f"{first_failure - stopped:.2f} s after the stop, first good call through the new master {recovery:.2f} s "
        f"after it (outage seen by callers {first_good - first_failure:.2f} s); calls by outcome: {outcomes}"
    )
    assert new != old
    assert recovery < FAILOVER_BOUND, err[-2000:]
    assert outcomes.get("hung", 0) == 0
    assert set(outcomes) <= NAMED, outcomes
    assert result["pending"] == 0
    deadline = time.monotonic() + FAILOVER_BOUND
    while not gateway_ready(ha_stack.gateway):  # the gateway's links followed too
        assert time.monotonic() < deadline, "the gateway is not ready on the new master"
        time.sleep(0.25)

    # The old master comes back: Sentinel makes it a replica of the new one (it syncs as the
    # `replication` user), and calls keep going through the new master.
    restarted = time.monotonic()
    subprocess.run(["docker", "start", master], capture_output=True, check=True, timeout=60)
    role = ""
    while not role.startswith(f"slave {new[0]} {new[1]} connected"):
        assert time.monotonic() - restarted < 60, f"the old master did not rejoin as a replica: {role!r}"
        role = " ".join(ha_stack.node("redis", "ROLE").split())
    print(f"the old master rejoined as a replica of {':'.join(new)} in {time.monotonic() - restarted:.1f} s")
    call = ha_stack.compose(
        "exec", "-T", "node_like_caller", "python", "-m", "node_like_caller", "call", "sum", "[1, 2]", check=False
    )
    assert call.stdout.strip() == "3", call.stdout + call.stderr
