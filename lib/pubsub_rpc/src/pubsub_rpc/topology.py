"""Redis Cluster topology (slot -> master node), kept by redis-py, not by us.

redis-py's asyncio ``RedisCluster`` reads ``CLUSTER SLOTS`` from any node it knows and
keeps the slot map; we ask it which master owns a channel's slot (``keyslot`` +
``get_node_from_key``) and to read the map again after a ``MOVED`` or an unsolicited
``sunsubscribe``. Only ``NodesManager.initialize()`` is used, never the client's own
``initialize()``: that would also send ``COMMAND``, a right the services' ACL users do
not need (``CLUSTER SLOTS`` is the one they get).

A node is named ``host:port`` as the cluster announces it; ``url_for`` turns that into
the seed REDIS_URL with its host and port replaced (credentials, TLS and options kept),
so every per-node link authenticates as the seed link does.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from .errors import ConnectionLost

# What a missing, unreachable or not yet formed cluster raises: RedisClusterException (e.g.
# "slots not covered") is not a RedisError, and redis-py 8.1 raises IndexError on a node
# whose slot map is still empty (no primary to pick as its default node).
SLOTS = 16_384
TOPOLOGY_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError, IndexError)


class Topology:
    def __init__(self, seed_url: str, connect_timeout: float) -> None:
        self.seed_url = seed_url
        self.timeout = connect_timeout
        self._client = self._new_client()
        self.refreshes = 0  # CLUSTER SLOTS reads, for the metrics and the tests

    def _new_client(self) -> RedisCluster:
        return RedisCluster.from_url(
            self.seed_url,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            require_full_coverage=False,  # a slot being moved may be briefly unowned
        )

    async def refresh(self, complete: bool = False) -> None:
        """Read the slot map again (``CLUSTER SLOTS`` from a known node), bounded by the
        connect timeout. Raises ConnectionLost when no node answered. After a failure the
        next read starts from the seed again: redis-py replaces its startup nodes with the
        nodes it found, none when the map was empty (a cluster still forming).
        ``complete``: also fail unless every slot has an owner (at start: a cluster being
        formed shows each node its own slots first)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._client.nodes_manager.initialize()
        except TOPOLOGY_ERRORS as exc:
            stale, self._client = self._client, self._new_client()
            await _close(stale, self.timeout)
            raise ConnectionLost(f"cannot read the cluster's slot map: {str(exc) or type(exc).__name__}") from None
        self.refreshes += 1
        covered = len(self._client.nodes_manager.slots_cache)
        if complete and covered < SLOTS:
            raise ConnectionLost(f"the cluster's slot map covers {covered} of {SLOTS} slots (still forming?)")

    def slot(self, channel: str) -> int:
        return self._client.keyslot(channel)

    def node_for(self, channel: str) -> str:
        """``host:port`` of the master owning the channel's slot. Raises ConnectionLost
        when no known master covers it."""
        try:
            node = self._client.get_node_from_key(channel)
        except TOPOLOGY_ERRORS as exc:
            raise ConnectionLost(f"no cluster node serves channel {channel!r}: {exc}") from None
        if node is None:
            raise ConnectionLost(f"no cluster node serves channel {channel!r}")
        return str(node.name)

    def masters(self) -> list[str]:
        return [str(node.name) for node in self._client.get_primaries()]

    def url_for(self, node: str) -> str:
        """The seed URL pointed at ``node`` (``host:port``)."""
        host, _, port = node.rpartition(":")
        parts = urlsplit(self.seed_url)
        credentials = parts.netloc.rpartition("@")[0]
        shown_host = f"[{host}]" if ":" in host else host
        netloc = (credentials + "@" if credentials else "") + f"{shown_host}:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def close(self) -> None:
        await _close(self._client, self.timeout)


async def _close(client: RedisCluster, timeout: float) -> None:
    manager: Any = client.nodes_manager
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout):
            await manager.aclose()
            await manager.aclose("startup_nodes")


def parse_redirect(error: object) -> tuple[int, str] | None:
    """``(slot, "host:port")`` from a ``MOVED``/``ASK`` error reply, else None."""
    parts = str(error).split()
    if len(parts) == 3 and parts[0] in ("MOVED", "ASK") and parts[1].isdigit():
        return int(parts[1]), parts[2]
    return None
