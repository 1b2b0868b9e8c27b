"""The Redis link layer, one import away: ``from .link import Publisher, Subscriber``.

Each job has a module of its own: connection (``Link``: connect, reconnect, supervision),
liveness (a frozen or half-open Redis is dropped within REDIS_LIVENESS_TIMEOUT plus a
tick), writes (one write per loop tick, back-pressure above REDIS_MAX_WRITE_BUFFER),
publisher (pipelined commands, replies matched in order), subscriber (subscriptions
confirmed or retried) and sentinel (Sentinel mode: where to connect, ROLE, failover).
Build links as ``Subscriber(url, name, ..., **link_options(settings))`` so a new link
setting reaches every link from here.
"""

from __future__ import annotations

from typing import Any

from .connection import BACKOFF_INITIAL, BACKOFF_MAX, Link, LinkDropped, Resolver, connection_pool
from .publisher import HEADER_CACHE_SIZE, Publisher
from .sentinel import resolver_for
from .subscriber import BadChannelHandler, MessageHandler, Subscriber
from .writes import command

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "HEADER_CACHE_SIZE",
    "BadChannelHandler",
    "Link",
    "LinkDropped",
    "MessageHandler",
    "Publisher",
    "Resolver",
    "Subscriber",
    "command",
    "connection_pool",
    "link_options",
]


def link_options(settings: Any) -> dict[str, Any]:
    """The keyword arguments every Link takes from Settings (timeouts, buffer bounds, and
    in Sentinel mode the process's shared resolver: pubsub_rpc.sentinel)."""
    options: dict[str, Any] = {
        "liveness_timeout": settings.liveness_timeout,
        "connect_timeout": settings.connect_timeout,
        "max_write_buffer": settings.max_write_buffer,
    }
    if getattr(settings, "sentinels", ""):
        options["resolver"] = resolver_for(settings)
    return options
