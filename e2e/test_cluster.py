"""The `cluster` topology (deploy/cluster/compose.cluster.yaml) on real containers: three
Redis Cluster masters joined by the one-shot init container, the responder and the caller in
cluster mode. A round trip, a push, and slot moves of the request channel under load with
no hung call and no lost subscription. Its own compose project, torn down at the end."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.make_secrets import DEFAULT_CHANNEL, ensure_secrets
from scripts.redis_process import free_port

from .conftest import _compose_command, _load_image_overrides

ROOT = Path(__file__).resolve().parent.parent
PROJECT = os.environ.get("E2E_PROJECT", "pubsub-rpc-e2e") + "-cluster"
REQUESTS = "{" + DEFAULT_CHANNEL + "_sender}.requests"  # pubsub_rpc.cluster.shard_request_channel
SERVICES = ("redis", "redis-2", "redis-3", "laravel_like_responder", "node_like_caller")
CALL_TIMEOUT = 2.0
MOVES = 2

# Runs inside the caller's container (its user, its network): calls from 8 workers until
# told to stop (a line on stdin), then waits to be subscribed again and makes 100 more.
LOAD = """
import asyncio, json, sys, time
from collections import Counter
from pubsub_rpc import Caller, RpcError
from pubsub_rpc.lifecycle import load_settings

async def main():
    settings = load_settings("e2e-cluster", source="e2e", service="node_like_caller")
    async with Caller(settings, name="e2e") as caller:
        outcomes, slowest, stop = Counter(), [0.0], asyncio.Event()
        async def worker():
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await caller.call("echo", 1, timeout=CALL_TIMEOUT)
                    outcomes["ok"] += 1
                except RpcError as exc:
                    outcomes[exc.code] += 1
                    await asyncio.sleep(0.005)
                slowest[0] = max(slowest[0], time.monotonic() - started)
        workers = [asyncio.create_task(worker()) for _ in range(8)]
        print("loading", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), CALL_TIMEOUT + 1)
        deadline = time.monotonic() + 10
        after = Counter()
        while after["ok"] < 100 and time.monotonic() < deadline:
            try:
                await caller.call("echo", 2, timeout=CALL_TIMEOUT)
                after["ok"] += 1
            except RpcError as exc:
                after[exc.code] += 1
                await asyncio.sleep(0.05)
        print(json.dumps({"during": outcomes, "slowest": slowest[0], "after": after}), flush=True)

asyncio.run(main())
""".replace("CALL_TIMEOUT", str(CALL_TIMEOUT))

PUSH = """
import asyncio
from pubsub_rpc import Caller
from pubsub_rpc.lifecycle import load_settings

async def main():
    settings = load_settings("e2e-cluster", source="e2e", service="node_like_caller")
    async with Caller(settings, name="e2e") as caller, caller.events() as events:
        event = await asyncio.wait_for(events.__anext__(), 10)
        print(event.action)

asyncio.run(main())
"""


class ClusterStack:
    def __init__(self) -> None:
        files = ["-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "deploy/cluster/compose.cluster.yaml")]
        self.base = [*_compose_command().split(), *files, "-p", PROJECT]

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def healthy(self) -> bool:
        for service in ("laravel_like_responder", "node_like_caller"):
            container = self.compose("ps", "-q", service).stdout.strip()
            if not container:
                return False
            fmt = "{{if .State.Health}}{{.State.Health.Status}}{{end}}"
            state = subprocess.run(["docker", "inspect", "-f", fmt, container], capture_output=True, text=True).stdout
            if state.strip() != "healthy":
                return False
        return True

    def admin(self, host: str, *command: str) -> str:
        """A redis-cli command as the ACL's cluster_admin, against ``host`` (an address)."""
        script = 'REDISCLI_AUTH="$(cat /run/secrets/redis_cluster_admin_password)" exec redis-cli --user cluster_admin "$@"'
        done = self.compose("exec", "-T", "redis", "sh", "-c", script, "sh", "-h", host, *command, timeout=30)
        assert done.returncode == 0 and not done.stdout.startswith(("ERR", "NOPERM")), done.stdout + done.stderr
        return done.stdout.strip()

    def masters(self) -> dict[str, tuple[str, list[tuple[int, int]]]]:
        """node id -> (address, slot ranges), from CLUSTER NODES."""
        nodes = {}
        for line in self.admin("127.0.0.1", "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" in fields[2]:
                ranges = [tuple(int(x) for x in (r.split("-") * 2)[:2]) for r in fields[8:] if not r.startswith("[")]
                nodes[fields[0]] = (fields[1].split(":")[0], ranges)
        return nodes  # type: ignore[return-value]

    def move_slot(self, slot: int) -> str:
        """Move ``slot`` to the next master (IMPORTING, MIGRATING, NODE everywhere)."""
        masters = self.masters()
        ids = sorted(masters)
        source = next(node for node, (_, ranges) in masters.items() if any(a <= slot <= b for a, b in ranges))
        target = ids[(ids.index(source) + 1) % len(ids)]
        address = {node: masters[node][0] for node in ids}
        self.admin(address[target], "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source)
        self.admin(address[source], "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target)
        self.admin(address[target], "CLUSTER", "SETSLOT", str(slot), "NODE", target)
        self.admin(address[source], "CLUSTER", "SETSLOT", str(slot), "NODE", target)
        for node in ids:
            if node not in (source, target):
                self.admin(address[node], "CLUSTER", "SETSLOT", str(slot), "NODE", target)
        return f"{address[source]} -> {address[target]}"


@pytest.fixture(scope="module")
def cluster_stack() -> Iterator[ClusterStack]:
    _load_image_overrides()
    ensure_secrets(ROOT / ".secrets", os.environ.get("RPC_CHANNEL") or DEFAULT_CHANNEL)
    os.environ.setdefault("GATEWAY_PORT", str(free_port()))
    os.environ["PUSH_INTERVAL"] = "1"
    stack = ClusterStack()
    stack.compose("down", "-v", "--remove-orphans")
    try:
        up = stack.compose("up", "--build", "-d", *SERVICES, timeout=600)
        assert up.returncode == 0, up.stderr[-3000:]
        deadline = time.monotonic() + 120
        while not stack.healthy():
            if time.monotonic() > deadline:
                raise AssertionError("cluster stack not healthy:\n" + stack.compose("logs", "--tail=30").stdout[-5000:])
            time.sleep(0.5)
        yield stack
    finally:
        stack.compose("down", "-v", "--remove-orphans")


def test_round_trip_and_push_on_the_cluster_profile(cluster_stack: ClusterStack) -> None:
    call = cluster_stack.compose("exec", "-T", "node_like_caller", "python", "-m", "node_like_caller", "call", "sum", "[1, 2, 3]")
    assert call.returncode == 0 and call.stdout.strip() == "6", call.stdout + call.stderr
    info = cluster_stack.admin("127.0.0.1", "CLUSTER", "INFO")
    assert "cluster_state:ok" in info and "cluster_known_nodes:3" in info
    # The responder's `configs` push (each second here), classic PUBLISH broadcast by the cluster.
    push = cluster_stack.compose("exec", "-T", "node_like_caller", "python", "-c", PUSH, timeout=60)
    assert push.returncode == 0 and push.stdout.strip() == "configs", push.stdout + push.stderr


def test_slot_moves_under_load_no_hung_call_no_lost_subscription(cluster_stack: ClusterStack) -> None:
    slot = int(cluster_stack.admin("127.0.0.1", "CLUSTER", "KEYSLOT", REQUESTS))
    load = subprocess.Popen(
        [*cluster_stack.base, "exec", "-T", "node_like_caller", "python", "-c", LOAD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert load.stdout is not None and load.stdin is not None
        assert load.stdout.readline().strip() == "loading"
        moved = []
        for _ in range(MOVES):
            time.sleep(1.0)  # load runs between moves (a paced load, not synchronisation)
            moved.append(cluster_stack.move_slot(slot))
        time.sleep(1.0)
        load.stdin.write("stop\n")
        load.stdin.flush()
        out, err = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
    figures = json.loads(out.strip().splitlines()[-1])
    print(f"\ncluster e2e: slot {slot} moved {moved}: {figures}")
    during, after = figures["during"], figures["after"]
    assert during.get("ok", 0) > 0
    assert set(during) <= {"ok", "no_responder", "connection_lost"}, during  # every failure named
    assert figures["slowest"] <= CALL_TIMEOUT + 1.0  # none hung
    assert after.get("ok") == 100, after  # the responder followed the slot: no lost subscription
    logs = cluster_stack.compose("logs", "laravel_like_responder").stdout
    assert logs.count("resubscribing on the slot's owner") >= MOVES, err
