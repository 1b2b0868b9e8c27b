"""A real Sentinel topology on loopback for tests: a master, one replica and three
sentinels (``redis-server <conf> --sentinel``), with the short failure detection of the
compose ``ha`` profile (down-after 1 s), so a failover takes seconds."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from scripts.redis_process import RedisProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
MASTER_NAME = "mymaster"
PEER_PASSWORD = "sentinel-peer-test-password"
CLIENT_PASSWORD = "sentinel-client-test-password"
ADMIN_PASSWORD = "sentinel-admin-test-password"


def profile_sentinel_users() -> str:
    """The `user` and `sentinel sentinel-*` lines of the ha profile's sentinels
    (deploy/ha/sentinel.sh), with test passwords: the tests run the profile's own rights,
    plus an `admin` user for the fixture's own checks."""
    script = (ROOT / "deploy" / "ha" / "sentinel.sh").read_text().splitlines()
    lines = [line for line in script if line.startswith(("user ", "sentinel sentinel-"))]
    text = "\n".join(lines).replace("$peer", PEER_PASSWORD).replace("$client", CLIENT_PASSWORD)
    return text + f"\nuser admin on >{ADMIN_PASSWORD} allchannels +@all\n"


DOWN_AFTER_MS = 1000  # as deploy/ha/sentinel.conf
FAILOVER_TIMEOUT_MS = 5000


class SentinelProcess:
    """One sentinel; its config file is its own (Sentinel rewrites it)."""

    def __init__(self, master_port: int, quorum: int = 2, protected: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.binary = binary
        self.port = free_port()
        self._workdir = tempfile.mkdtemp(prefix="sentinel-test-")
        self.config = Path(self._workdir) / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self._workdir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n" + (profile_sentinel_users() if protected else "")
        )
        self.protected = protected
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> SentinelProcess:
        self.process = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sentinel exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"sentinel on port {self.port} did not answer within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def client(self) -> Any:
        """A sync client (Any: redis-py types the SENTINEL commands' replies loosely)."""
        if self.protected:
            return redis.Redis(port=self.port, socket_timeout=2, username="admin", password=ADMIN_PASSWORD)
        return redis.Redis(port=self.port, socket_timeout=2)


class SentinelTopology:
    """Master + replica + 3 sentinels; ``settings_env`` is what the services need."""

    def __init__(self, protected_sentinels: bool = False) -> None:
        self.protected_sentinels = protected_sentinels
        self.master = RedisProcess()
        self.replica = RedisProcess(extra_args=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinels: list[SentinelProcess] = []

    @property
    def nodes(self) -> dict[int, RedisProcess]:
        return {self.master.port: self.master, self.replica.port: self.replica}

    @property
    def sentinel_list(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self) -> SentinelTopology:
        self.master.start()
        self.replica.start()
        self.sentinels = [SentinelProcess(self.master.port, protected=self.protected_sentinels).start() for _ in range(3)]
        self.wait_settled()
        return self

    def master_port(self) -> int:
        """Where the sentinels (the first that answers) say the master is."""
        for sentinel in self.sentinels:
            try:
                _, port = sentinel.client().sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
            except (redis.RedisError, TypeError):
                continue
        raise RuntimeError("no sentinel answers")

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Until every sentinel sees the same master, a replica in sync and the 2 other
        sentinels: only then can a failover succeed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._settled():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Sentinel topology did not settle within {timeout}s")

    def _settled(self) -> bool:
        try:
            ports = set()
            for sentinel in self.sentinels:
                client = sentinel.client()
                state = client.sentinel_master(MASTER_NAME)
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
                replicas = client.sentinel_slaves(MASTER_NAME)
                if not any(replica.get("master-link-status") == "ok" for replica in replicas):
                    return False
                ports.add(int(state["port"]))
            if len(ports) != 1:
                return False
            master = self.nodes[ports.pop()]
            return bool(redis.Redis(port=master.port, socket_timeout=2).info("replication")["connected_slaves"] >= 1)
        except (redis.RedisError, KeyError):
            return False

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for node in (self.master, self.replica):
            if node.process is not None and node.process.poll() is None:
                node.thaw()
            node.close()
