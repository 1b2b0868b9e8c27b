"""Sentinel mode (REDIS_SENTINELS + REDIS_SENTINEL_MASTER): every link finds the master
through the sentinels on each (re)connect, and stays on it only while it is the master.

A link on the wrong node does not fail, it goes deaf: a demoted master (or a replica)
accepts PUBLISH and SUBSCRIBE and forwards nothing (redis#2942). So, per link:

- on each connect, ask the sentinels for the master (redis-py's
  ``Sentinel.discover_master``: the first sentinel that knows a master not marked down);
  REDIS_URL still gives the credentials, db, TLS and options, only host and port change;
- after the handshake ``ROLE`` must say ``master``; anything else refuses the node, and
  the link asks again with its usual backoff;

and per process and sentinel group, one watcher: a Subscriber on ``+switch-master`` that
moves from sentinel to sentinel when one fails. When the master moves it drops every link
still connected to another address, so each reconnects to the new master and resubscribes;
calls in flight on them fail with ``connection_lost`` (the usual disconnect path). After
each (re)subscription it also asks for the current master, catching a switch it missed
while reconnecting. Sentinel itself kills the demoted master's clients; the watcher covers
an old master that is cut off, frozen, or back before anyone told it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError

from .connection import CLOSE_TIMEOUT, Link
from .settings_checks import parse_host_ports
from .subscriber import Subscriber

log = logging.getLogger("pubsub_rpc.sentinel")

SWITCH_CHANNEL = "+switch-master"  # "<name> <old ip> <old port> <new ip> <new port>"

Address = tuple[str, int]


class NotMaster(RedisConnectionError):
    """The node is not (or no longer) the master: ROLE said otherwise, or the master moved
    while we were connecting to it. The link retries with backoff."""


_groups: dict[tuple[Any, ...], SentinelGroup] = {}


def resolver_for(settings: Any) -> SentinelGroup:
    """The process's one group for these settings: every link built from them shares it,
    and so its watcher."""
    key = (
        settings.sentinels,
        settings.sentinel_master,
        settings.sentinel_username,
        settings.sentinel_password,
        settings.connect_timeout,
        settings.liveness_timeout,
    )
    group = _groups.get(key)
    if group is None:
        group = _groups[key] = SentinelGroup(
            parse_host_ports(settings.sentinels),
            settings.sentinel_master,
            username=settings.sentinel_username,
            password=settings.sentinel_password,
            connect_timeout=settings.connect_timeout,
            liveness_timeout=settings.liveness_timeout,
        )
    return group


def _set_address(connection: AbstractConnection, address: Address) -> None:
    if not isinstance(connection, Connection):  # a unix socket: refused by the settings' checks
        raise RedisConnectionError("Sentinel mode needs a TCP REDIS_URL (redis:// or rediss://)")
    connection.host, connection.port = address


class SentinelGroup:
    """The link resolver of Sentinel mode (``connection.Resolver``) and its watcher."""

    def __init__(
        self,
        sentinels: Sequence[Address],
        master: str,
        *,
        username: str = "",
        password: str = "",
        connect_timeout: float = 3.0,
        liveness_timeout: float = 3.0,
    ) -> None:
        self.sentinels = list(sentinels)
        self.master = master
        self._username = username
        self._password = password
        self.connect_timeout = connect_timeout
        self.liveness_timeout = liveness_timeout
        self._links: dict[Link, Address | None] = {}  # attached link -> where it last connected
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sentinel: Sentinel | None = None
        self.watcher: Subscriber | None = None
        self._checks: set[asyncio.Task[None]] = set()
        # Resolved with the new address when the master moves (then replaced by a fresh one).
        self._moved: asyncio.Future[Address] | None = None  # made by attach(), in the loop
        self.switches = 0  # +switch-master events seen for this master
        self.dropped = 0  # links dropped because the master moved away from them
        self.not_master = 0  # connections refused after the handshake: ROLE was not master

    # -- connection.Resolver ---------------------------------------------------------

    def attach(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # the first link, or a new event loop: start afresh
            self._links.clear()
            self._sentinel = None
            self.watcher = None
            self._moved = loop.create_future()
            self._loop = loop
        self._links.setdefault(link, None)
        if self.watcher is None:
            self.watcher = self._new_watcher()
            self.watcher.start()

    async def detach(self, link: Link) -> None:
        self._links.pop(link, None)
        if self._links or self._loop is not asyncio.get_running_loop():
            return
        watcher, self.watcher = self.watcher, None
        sentinel, self._sentinel = self._sentinel, None
        for task in self._checks:
            task.cancel()
        if watcher is not None:
            await watcher.close()
        if sentinel is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await sentinel.aclose()

    async def connect(self, link: Link, connection: AbstractConnection) -> None:
        """Connect to where the sentinels say the master is, and check ROLE there. A connect
        still pending when the master moves elsewhere is abandoned (a stopped container's
        address does not refuse, it stays silent until the connect timeout)."""
        address = await self.master_address()
        _set_address(connection, address)
        if link in self._links:
            self._links[link] = address
        await self._connect_unless_moved(connection, address)
        await self._verify(connection, address)

    async def _connect_unless_moved(self, connection: AbstractConnection, address: Address) -> None:
        connecting = asyncio.ensure_future(connection.connect())  # type: ignore[no-untyped-call]
        try:
            while not connecting.done():
                moved = self._moved
                if moved is None:  # not attached (used on its own): nothing to abandon for
                    await connecting
                    break
                await asyncio.wait({connecting, moved}, return_when=asyncio.FIRST_COMPLETED)
                if moved.done() and moved.result() != address and not connecting.done():
                    raise NotMaster(f"the master moved to {_show(moved.result())} while connecting to {_show(address)}")
        finally:
            if not connecting.done():
                connecting.cancel()
                await asyncio.wait({connecting})
        connecting.result()

    async def _verify(self, connection: AbstractConnection, address: Address) -> None:
        """ROLE must say master (it needs ``+role`` in the link's ACL user)."""
        await connection.send_command("ROLE")
        reply = await connection.read_response()
        role = reply[0] if isinstance(reply, list) and reply else reply
        if role not in (b"master", "master"):
            self.not_master += 1
            raise NotMaster(f"{_show(address)} is not the master (ROLE: {role!r}); asking Sentinel again")

    # -- discovery ---------------------------------------------------------------------

    async def master_address(self) -> Address:
        """Where the sentinels say the master is (the first sentinel that knows one up)."""
        if self._sentinel is None:
            # Each sentinel gets a share of the connect timeout, so a dead or frozen one
            # leaves time to ask the next.
            share = self.connect_timeout / (len(self.sentinels) + 1)
            options: dict[str, Any] = {"socket_connect_timeout": share, "socket_timeout": share, "protocol": 2}
            if self._username:
                options["username"] = self._username
            if self._password:
                options["password"] = self._password
            self._sentinel = Sentinel(self.sentinels, sentinel_kwargs=options)  # type: ignore[no-untyped-call]
        host, port = await self._sentinel.discover_master(self.master)
        return str(host), int(port)

    # -- the watcher -------------------------------------------------------------------

    def _new_watcher(self) -> Subscriber:
        host, port = self.sentinels[0]  # a placeholder: _Rotation picks the sentinel
        auth = ""
        if self._username or self._password:
            auth = f"{quote(self._username, safe='')}:{quote(self._password, safe='')}@"
        netloc = f"[{host}]" if ":" in host else host
        watcher = Subscriber(
            f"redis://{auth}{netloc}:{port}",
            f"sentinel-watch-{self.master}",
            self._on_event,
            channels=[SWITCH_CHANNEL],
            liveness_timeout=self.liveness_timeout,
            connect_timeout=self.connect_timeout,
            resolver=_Rotation(self.sentinels),
        )
        watcher.on_subscribed(self._check_soon)
        return watcher

    def _on_event(self, channel: str, data: bytes) -> None:
        parts = data.decode(errors="replace").split()
        if channel != SWITCH_CHANNEL or len(parts) != 5 or parts[0] != self.master or not parts[4].isdigit():
            return
        self.switches += 1
        new = (parts[3], int(parts[4]))
        old = f"{parts[1]}:{parts[2]}"
        log.warning("Sentinel: master %r moved from %s to %s; reconnecting the links", self.master, old, _show(new))
        self._drop_all_but(new)

    def _check_soon(self) -> None:
        """After the watcher (re)subscribed: a switch may have happened meanwhile."""
        task = asyncio.get_running_loop().create_task(self._check(), name=f"sentinel-check-{self.master}")
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check(self) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                address = await self.master_address()
        except Exception as exc:  # the links find out on their own; this check is a bonus
            log.info("Sentinel: could not confirm master %r after subscribing (%s)", self.master, exc)
            return
        self._drop_all_but(address)

    def _drop_all_but(self, master: Address) -> None:
        moved, self._moved = self._moved, asyncio.get_running_loop().create_future()
        if moved is not None:
            moved.set_result(master)  # connects still pending elsewhere give up
        for link, address in list(self._links.items()):
            if address is not None and address != master:
                self.dropped += 1
                self._links[link] = None  # until it connects again
                link.disconnect(f"Sentinel: {_show(address)} is no longer the master ({_show(master)} is)")


class _Rotation:
    """The watcher's resolver: the next sentinel on each connect, so a dead one is left."""

    def __init__(self, sentinels: Sequence[Address]) -> None:
        self._sentinels = list(sentinels)
        self._next = 0

    def attach(self, link: Link) -> None:
        pass

    async def detach(self, link: Link) -> None:
        pass

    async def connect(self, link: Link, connection: AbstractConnection) -> None:
        _set_address(connection, self._sentinels[self._next % len(self._sentinels)])
        self._next += 1
        await connection.connect()  # type: ignore[no-untyped-call]


def _show(address: Address | None) -> str:
    return "?" if address is None else f"{address[0]}:{address[1]}"
