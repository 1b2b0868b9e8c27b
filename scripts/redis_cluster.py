"""A real Redis Cluster for tests and the bench (make bench): three redis-server masters on loopback
ports, joined by ``redis-cli --cluster create``, and a slot move done the way
``redis-cli --cluster reshard`` does it (``CLUSTER SETSLOT ... IMPORTING / MIGRATING /
NODE``), so a test can move a channel's slot while calls flow."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence

import redis

from scripts.redis_process import RedisProcess, free_port

CLUSTER_ARGS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a port too, and free."""
    while True:
        port = free_port()
        if port + 10_000 <= 65_535:
            try:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
            return port


class ClusterProcesses:
    def __init__(self, masters: int = 3, extra_args: Sequence[str] = (), admin: tuple[str, str] | None = None) -> None:
        """``admin``: (user, password) with CLUSTER and INFO rights, for an ``--aclfile``
        whose default user is off."""
        self.admin = admin
        self.nodes = [RedisProcess(port=cluster_port(), extra_args=[*CLUSTER_ARGS, *extra_args]) for _ in range(masters)]

    @property
    def url(self) -> str:
        """A seed URL: the first node (any node would do)."""
        return self.nodes[0].url

    def start(self, timeout: float = 20.0) -> ClusterProcesses:
        self.start_nodes()
        self.create(timeout)
        return self

    def start_nodes(self) -> None:
        """The redis-server processes alone: cluster-enabled, not joined, no slots."""
        for node in self.nodes:
            node.start()

    def create(self, timeout: float = 20.0) -> None:
        """Join the nodes and assign every slot (``redis-cli --cluster create``); wait for
        cluster_state:ok on each."""
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli not found: apt-get install redis-tools")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        auth = ["--user", self.admin[0]] if self.admin else []
        env = {**os.environ, "REDISCLI_AUTH": self.admin[1]} if self.admin else None
        subprocess.run(
            [cli, *auth, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while not all(self._ok(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def _ok(self, node: RedisProcess) -> bool:
        with self.client(node) as client:
            info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def client(self, node: RedisProcess) -> redis.Redis:
        if self.admin:
            return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5, username=self.admin[0], password=self.admin[1])
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)

    def node_id(self, node: RedisProcess) -> str:
        with self.client(node) as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def slot_of(self, name: str) -> int:
        with self.client(self.nodes[0]) as client:
            return int(client.execute_command("CLUSTER", "KEYSLOT", name))

    def owner(self, slot: int) -> RedisProcess:
        """The master that owns ``slot``, as the first node sees it."""
        with self.client(self.nodes[0]) as client:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"slot {slot} is not covered")

    def move_slot(self, slot: int, target: RedisProcess) -> RedisProcess:
        """Move ``slot`` to ``target`` as a resharding does: IMPORTING on the target,
        MIGRATING on the source, keys MIGRATEd, then NODE on the target, the source and the
        rest. Returns the source. Shard channels are not keys: the source drops their
        subscribers (unsolicited ``sunsubscribe``) once it no longer owns the slot."""
        source = self.owner(slot)
        if source is target:
            return source
        source_id, target_id = self.node_id(source), self.node_id(target)
        with self.client(target) as t, self.client(source) as s:
            t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            t.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.nodes:
            if node is not source and node is not target:
                with self.client(node) as other:
                    other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return source

    def stop(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> ClusterProcesses:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
