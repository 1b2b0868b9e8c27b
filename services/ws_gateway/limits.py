"""What one client may cost the gateway: connection slots, a call rate, and the counters
that show each limit at work (``/readyz`` lists them; plain ints, cheap to bump)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

CLOSE_ABUSE = 4008
CLOSE_TRY_AGAIN_LATER = 1013
# Frames refused in a row (rate_limited) before a client that ignores the answers is cut off.
ABUSE_STRIKES = 200


@dataclass(slots=True)
class Counters:
    connections: int = 0  # accepted WebSockets since start
    frames_in: int = 0  # text and binary frames read from browsers
    frames_out: int = 0  # frames queued to browsers (results, errors, events, hello/ready, stats)
    pushes_fanned_out: int = 0  # push frames queued: one push to N sockets counts N
    refused_total: int = 0  # 1013: GATEWAY_MAX_CONNECTIONS reached
    refused_per_ip: int = 0  # 1013: GATEWAY_MAX_CONNECTIONS_PER_IP reached
    refused_host: int = 0  # 403: Host not in GATEWAY_ALLOWED_HOSTS
    refused_origin: int = 0  # 403: Origin not allowed
    refused_protocol: int = 0  # 400: bad Sec-WebSocket-Protocol
    authenticated: int = 0  # good auth (first or refresh)
    auth_failed: int = 0  # 4001: bad token
    auth_expired: int = 0  # 4002: expired token, at auth or while open
    auth_timeout: int = 0  # 4001: no token within GATEWAY_AUTH_TIMEOUT
    unauthenticated: int = 0  # `unauthenticated` error frames
    forbidden: int = 0  # `forbidden` error frames
    rate_limited: int = 0  # `rate_limited` error frames
    abuse_closed: int = 0  # 4008
    overloaded: int = 0  # `overloaded` error frames (calls in flight)
    bad_frames: int = 0  # `bad_frame` error frames
    protocol_closed: int = 0  # aiohttp closed it: 1009 too large, 1007 bad UTF-8, 1002 protocol
    idle_closed: int = 0  # no pong within GATEWAY_IDLE_TIMEOUT
    slow_dropped: int = 0  # left more than GATEWAY_SEND_BUFFER unread
    calls: int = 0  # calls forwarded to Redis
    user_pushes: int = 0  # per-user pushes delivered to at least one socket
    user_pushes_unrouted: int = 0  # per-user pushes for a sub with no socket here, or unreadable
    events_unencodable: int = 0  # pushes or replies JSON could not re-encode for browsers
    presence_malformed: int = 0  # presence heartbeats dropped: unreadable, or too many instances

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one token per frame."""

    __slots__ = ("rate", "burst", "tokens", "updated", "strikes")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.tokens = self.burst
        self.updated = time.monotonic()
        self.strikes = 0  # refused in a row

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            self.strikes += 1
            return False
        self.tokens -= 1.0
        self.strikes = 0
        return True


class ConnectionSlots:
    """Open WebSockets in total and per remote address."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def acquire(self, address: str) -> str | None:
        """Take a slot, or say why not (and take nothing)."""
        if self.total >= self.max_total:
            return "total"
        if self.per_ip.get(address, 0) >= self.max_per_ip:
            return "per_ip"
        self.total += 1
        self.per_ip[address] = self.per_ip.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        left = self.per_ip.get(address, 1) - 1
        if left > 0:
            self.per_ip[address] = left
        else:
            self.per_ip.pop(address, None)
