"""Where a responder may publish, whatever a request says.

A request names its reply channel (``replyTo``) or, seed-style, implies it (the request
channel minus the suffix). Trusted blindly, that lets anyone who can publish a request make
the responder publish anywhere: onto another service's private channel (spoofed replies)
or onto a channel its own pattern hears, where the reply becomes a new request; two
responders sharing the default ``*_sender`` pattern then double the traffic every hop.

The rules (docs/protocol.md, "Reply rules"):

- every channel a responder publishes on is at most ``max_channel_bytes`` long, not empty,
  and matched by none of its own subscription patterns (Redis glob semantics);
- a ``replyTo`` must also start with the reply namespace (``settings.reply_prefix``);
- a push goes to the push channel, an explicitly given channel, or ``user_prefix + sub``.

Verdicts are cached per name (a reply channel is checked once, not per reply), in bounded
dicts that are emptied when full: an attacker naming a million channels costs a million
checks, never a million entries.
"""

from __future__ import annotations

from collections.abc import Iterable

from .globs import glob_matches
from .settings import Settings

CACHE_SIZE = 1024


class ChannelRules:
    def __init__(self, settings: Settings, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self.reply_prefix = settings.reply_prefix
        self.user_prefix = settings.user_prefix
        self.push_channel = settings.channel
        self.max_bytes = settings.max_channel_bytes
        self._suffix = settings.request_suffix
        # replyTo -> allowed. Public so the responder's hot path can read it inline; it is
        # only ever cleared, never replaced.
        self.reply_to_verdicts: dict[str, bool] = {}
        self._seed: dict[str, str] = {}  # request channel -> its reply channel, or "" for none

    def publishable(self, channel: str) -> bool:
        """Bounded, non-empty, and not a name this responder's own patterns hear."""
        if not channel or len(channel) > self.max_bytes:
            return False
        try:
            if len(channel.encode()) > self.max_bytes:
                return False
        except UnicodeEncodeError:  # lone surrogates: not a name Redis could carry anyway
            return False
        return not any(glob_matches(pattern, channel) for pattern in self.patterns)

    def reply_to_allowed(self, reply_to: str) -> bool:
        verdicts = self.reply_to_verdicts
        allowed = verdicts.get(reply_to)
        if allowed is None:
            allowed = reply_to.startswith(self.reply_prefix) and self.publishable(reply_to)
            if len(verdicts) >= CACHE_SIZE:
                verdicts.clear()
            verdicts[reply_to] = allowed
        return allowed

    def seed_reply_channel(self, request_channel: str) -> str | None:
        """A seed-era request (no replyTo) is answered on its channel minus the suffix,
        under the same rule; None when that is not allowed."""
        target = self._seed.get(request_channel)
        if target is None:
            suffix = self._suffix
            if suffix and request_channel.endswith(suffix):
                target = request_channel[: -len(suffix)]
            else:
                target = self.push_channel
            if not self.publishable(target):
                target = ""  # cached as "nowhere": an empty name is never publishable
            if len(self._seed) >= CACHE_SIZE:
                self._seed.clear()
            self._seed[request_channel] = target
        return target or None

    def reply_channel(self, reply_to: str | None, request_channel: str) -> str | None:
        """Where the reply to a request goes, or None: then nothing may be published."""
        if reply_to is None:
            return self.seed_reply_channel(request_channel)
        return reply_to if self.reply_to_allowed(reply_to) else None

    def push_target(self, channel: str | None, user: object) -> str | None:
        """The channel a push goes to, or None when it may not be sent."""
        if user is not None:
            if not isinstance(user, str) or not user:
                return None
            target = self.user_prefix + user
        else:
            target = self.push_channel if channel is None else channel
        return target if self.publishable(target) else None
