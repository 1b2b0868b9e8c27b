"""Checks on the HTTP request before anything else happens: Host, Origin, subprotocols.

Host: a DNS-rebinding page reaches us under its own name, so only names we know are served
(port ignored). Origin: a browser names the page that opened the socket; same-origin means
the Origin's host is one of ours (not "equals the request's Host", which a rebinding page
controls). A missing Origin is a non-browser client; it must present a token like anyone.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .auth import split_list

PROTOCOL = "pubsub-rpc.v1"
BEARER = "bearer."


def hostname(host_or_url: str) -> str | None:
    """The lower-case host name of ``host[:port]`` or of a URL, brackets stripped from IPv6."""
    text = host_or_url if "//" in host_or_url else "//" + host_or_url
    try:
        return urlsplit(text).hostname or None
    except ValueError:
        return None


class RequestGuard:
    def __init__(self, allowed_hosts: str, allowed_origins: str) -> None:
        hosts = split_list(allowed_hosts)
        self.any_host = "*" in hosts
        self.hosts = frozenset(h for h in (hostname(entry) for entry in hosts if entry != "*") if h)
        origins = split_list(allowed_origins)
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)

    def host_allowed(self, host: str | None) -> bool:
        if self.any_host:
            return True
        name = hostname(host) if host else None
        return name is not None and name in self.hosts

    def origin_allowed(self, origin: str | None) -> bool:
        if origin is None or self.any_origin or origin in self.origins:
            return True
        name = hostname(origin)
        return name is not None and name in self.hosts


def bearer_from_protocols(header: str | None) -> tuple[str | None, bool]:
    """(token, ok) from ``Sec-WebSocket-Protocol``. ok is False when the header is present
    without ``pubsub-rpc.v1``: refuse it before aiohttp logs the offered list (a token)."""
    if header is None:
        return None, True
    offered = [part.strip() for part in header.split(",")]
    if PROTOCOL not in offered:
        return None, False
    tokens = [part[len(BEARER) :] for part in offered if part.startswith(BEARER)]
    return (tokens[0] if len(tokens) == 1 else None), len(tokens) <= 1
