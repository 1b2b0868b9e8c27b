"""Per-user pushes: a responder publishes on ``<user_prefix><sub>`` and only that user's
sockets receive it. The gateway PSUBSCRIBEs ``<user_prefix>*`` on a connection of its own
(a Subscriber from the library) and routes each message by the channel's suffix, so the
number of users costs nothing in Redis subscriptions."""

from __future__ import annotations

import logging

from pubsub_rpc import Event, Settings, protocol
from pubsub_rpc.link import Subscriber, link_options

from . import frames
from .clients import WsClient
from .limits import Counters

log = logging.getLogger(__name__)
GLOB_SPECIAL = "*?[]\\"


def escape_glob(text: str) -> str:
    return "".join("\\" + char if char in GLOB_SPECIAL else char for char in text)


class UserPushes:
    def __init__(self, settings: Settings, counters: Counters) -> None:
        self.prefix = settings.user_prefix
        self._max_bytes = settings.max_message_bytes
        self._counters = counters
        self._sockets: dict[str, set[WsClient]] = {}
        self.subscriber = Subscriber(
            settings.redis_dsn,
            "ws_gateway-users",
            self._on_message,
            patterns=[escape_glob(self.prefix) + "*"],
            **link_options(settings),
        )

    @property
    def ready(self) -> bool:
        return self.subscriber.ready.is_set()

    def add(self, sub: str, client: WsClient) -> None:
        self._sockets.setdefault(sub, set()).add(client)

    def remove(self, sub: str, client: WsClient) -> None:
        clients = self._sockets.get(sub)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self._sockets[sub]

    def _on_message(self, channel: str, raw: bytes) -> None:
        clients = self._sockets.get(channel[len(self.prefix) :]) if channel.startswith(self.prefix) else None
        if not clients:
            self._counters.user_pushes_unrouted += 1
            return
        try:
            message = protocol.decode(raw, self._max_bytes)
        except protocol.MalformedMessage:
            self._counters.user_pushes_unrouted += 1
            return
        if message.get("requestId") is not None:  # only pushes travel here
            self._counters.user_pushes_unrouted += 1
            return
        frame = frames.event(Event.from_message(message, channel), private=True)
        if frame is None:
            self._counters.events_unencodable += 1
            return
        self._counters.user_pushes += 1
        for client in list(clients):
            client.send(frame)
        self._counters.pushes_fanned_out += len(clients)
