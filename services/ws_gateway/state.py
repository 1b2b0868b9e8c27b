"""Everything one gateway process shares between its connections, in one object."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from pubsub_rpc import Caller, Event, Settings

from . import frames
from .auth import TokenVerifier
from .clients import Outbox, WsClient
from .guards import RequestGuard
from .limits import ConnectionSlots, Counters
from .live import LiveFeed
from .livestats import LiveStats
from .presence import PresenceListener
from .users import UserPushes


@dataclass(eq=False)
class Gateway:
    settings: Settings
    verifier: TokenVerifier
    guard: RequestGuard
    slots: ConnectionSlots
    counters: Counters
    caller: Caller
    users: UserPushes
    presence: PresenceListener
    live: LiveFeed
    outbox: Outbox = field(default_factory=Outbox)
    clients: weakref.WeakSet[WsClient] = field(default_factory=weakref.WeakSet)
    descriptions: dict[str, str] = field(default_factory=dict)  # allowed action -> description

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        """Raises auth.ConfigError when tokens cannot be verified as configured."""
        counters = Counters()
        presence = PresenceListener(settings, counters)
        return cls(
            settings=settings,
            verifier=TokenVerifier.from_settings(settings),
            guard=RequestGuard(settings.gateway_allowed_hosts, settings.gateway_allowed_origins),
            slots=ConnectionSlots(settings.gateway_max_connections, settings.gateway_max_connections_per_ip),
            counters=counters,
            caller=Caller(settings, name="ws_gateway"),
            users=UserPushes(settings, counters),
            presence=presence,
            live=LiveFeed(LiveStats(), presence.board),
        )

    @property
    def ready(self) -> bool:
        return self.caller.ready and self.users.ready

    def fan_out(self, event: Event) -> None:
        """A public push: encoded once, queued for every authenticated client that wants it."""
        frame = frames.event(event)
        if frame is None:
            self.counters.events_unencodable += 1
            return
        delivered = 0
        for client in list(self.clients):
            identity = client.identity
            if identity is not None and (identity.events is None or event.action in identity.events):
                client.send(frame)
                delivered += 1
        self.counters.pushes_fanned_out += delivered
