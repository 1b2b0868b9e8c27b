"""Start-up validation of ``Settings``: a bad value stops the process before it connects,
with one line naming the variable and what it may be, instead of a loop that answers its
own replies or a timeout of zero that fails every call.

Per-field rules are listed next to the fields (``settings.RULES``); the checks that need
several fields at once (patterns against channels) live here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .globs import glob_matches

if TYPE_CHECKING:
    from .settings import Settings

# A rule returns None when the value is allowed, else what is allowed ("must be ...").
Rule = Callable[[object], str | None]

# The shortest random tail a caller puts after its reply prefix (16+ hex characters).
REPLY_SAMPLE_TAIL = "0123456789abcdef"


class SettingsError(ValueError):
    """One or more settings out of their allowed range; ``str()`` is one line for the log."""


def integer_at_least(minimum: int) -> Rule:
    def rule(value: object) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        return None if ok else f"must be an integer >= {minimum}"

    return rule


def seconds(*, zero_means_off: bool = False) -> Rule:
    def rule(value: object) -> str | None:
        ok = isinstance(value, int | float) and math.isfinite(value) and (value >= 0 if zero_means_off else value > 0)
        if ok:
            return None
        return "must be a number of seconds >= 0 (0 = off)" if zero_means_off else "must be a number of seconds > 0"

    return rule


def port(value: object) -> str | None:
    ok = isinstance(value, int) and 1 <= value <= 65535
    return None if ok else "must be a port number in 1..65535"


def port_or_off(value: object) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535
    return None if ok else "must be a port number in 1..65535, or 0 (off)"


def non_empty(value: object) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must not be empty"


def log_level(value: object) -> str | None:
    names = [name for name in logging.getLevelNamesMapping() if name not in {"NOTSET", "WARN", "FATAL"}]
    ok = isinstance(value, str) and value.upper() in names
    return None if ok else "must be one of " + ", ".join(sorted(names, key=logging.getLevelName))


def one_of(*choices: str) -> Rule:
    def rule(value: object) -> str | None:
        return None if value in choices else "must be one of " + ", ".join(choices)

    return rule


def parse_host_ports(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (IPv6 as ``[::1]:26379``) as pairs; ValueError if malformed."""
    pairs = []
    for item in (part.strip() for part in value.split(",")):
        host, sep, port_text = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{item!r} is not host:port")
        pairs.append((host, int(port_text)))
    return pairs


def host_port_list(value: object) -> str | None:
    if value == "":
        return None
    try:
        parse_host_ports(str(value))
    except ValueError as exc:
        return f"must be comma-separated host:port ({exc})"
    return None


def url_scheme(*schemes: str) -> Rule:
    def rule(value: object) -> str | None:
        scheme = urlsplit(value).scheme if isinstance(value, str) else ""
        if scheme in schemes:
            return None
        got = f"{scheme}://" if scheme else "no scheme"
        return "must start with " + " or ".join(f"{s}://" for s in schemes) + f" (got {got})"

    return rule


def validate(settings: Settings, rules: dict[str, Rule], env: dict[str, tuple[str, str]]) -> None:
    """Raise ``SettingsError`` listing every problem (one line, '; '-separated)."""
    problems = [f"{_shown(settings, name, env)}: {problem}" for name, problem in _field_problems(settings, rules)]
    problems += _cross_field_problems(settings, env)
    if problems:
        raise SettingsError("; ".join(problems))


def _field_problems(settings: Settings, rules: dict[str, Rule]) -> Iterable[tuple[str, str]]:
    for name, rule in rules.items():
        problem = rule(getattr(settings, name))
        if problem is not None:
            yield name, problem


def _shown(settings: Settings, name: str, env: dict[str, tuple[str, str]]) -> str:
    """``VAR=value``, or ``VAR=<secret>`` for the fields kept out of repr (URLs, passwords)."""
    secret = not next(spec.repr for spec in dataclasses.fields(settings) if spec.name == name)
    return f"{env[name][0]}=" + ("<secret>" if secret else repr(getattr(settings, name)))


def _cross_field_problems(settings: Settings, env: dict[str, tuple[str, str]]) -> list[str]:
    """The responder's pattern must hear requests only: a pattern that matches the push
    channel, a reply channel or a user channel makes it answer its own messages forever."""
    if not settings.responder_pattern or not settings.channel:
        return []  # already reported by the per-field rules
    reply = settings.reply_prefix + settings.service + "." + REPLY_SAMPLE_TAIL
    samples = {  # sample channel -> what it is
        settings.channel: "the push channel (RPC_CHANNEL)",
        reply: "a reply channel",
        settings.reply_prefix + "x": "a reply channel",
        settings.user_prefix + "x": "a per-user push channel",
        settings.probe_prefix + settings.service + "." + REPLY_SAMPLE_TAIL: "a probe channel",
        settings.presence_channel: "the presence channel",
        settings.registry_name: "the responder registry channel",
    }
    problems = _sentinel_problems(settings)
    for sample, what in samples.items():
        if glob_matches(settings.responder_pattern, sample):
            problems.append(
                f"{_shown(settings, 'responder_pattern', env)} (by default '*' + RPC_REQUEST_SUFFIX) matches {what} "
                f"{sample!r}, so the responder would answer its own messages: it must match request channels only"
            )
            break
    reply_prefix, user_prefix = settings.reply_prefix, settings.user_prefix
    if reply_prefix.startswith(user_prefix) or user_prefix.startswith(reply_prefix):
        problems.append(
            f"RPC_REPLY_NAMESPACE={reply_prefix!r} and RPC_USER_NAMESPACE={user_prefix!r}: "
            "must differ, neither a prefix of the other (replies and user pushes would mix)"
        )
    if settings.max_channel_bytes < len(reply.encode()):
        problems.append(
            f"{_shown(settings, 'max_channel_bytes', env)}: must be >= {len(reply.encode())}, "
            f"the length of this service's reply channels ({reply!r})"
        )
    if settings.redis_cluster and settings.redis_url.startswith("unix:"):
        problems.append("REDIS_CLUSTER=true: REDIS_URL must name a cluster node by host:port (redis:// or rediss://)")
    if settings.redis_cluster and settings.transport != "pubsub":
        problems.append(
            f"REDIS_CLUSTER=true with RPC_TRANSPORT={settings.transport!r}: cluster mode carries pub/sub traffic only so far"
        )
    return problems


def _sentinel_problems(settings: Settings) -> list[str]:
    """Sentinel mode needs both the sentinels and the master's name, and a TCP REDIS_URL
    (its host and port are replaced by the master's address Sentinel reports)."""
    if bool(settings.sentinels) != bool(settings.sentinel_master):
        return [
            f"REDIS_SENTINELS={settings.sentinels!r} and REDIS_SENTINEL_MASTER={settings.sentinel_master!r}: "
            "set both (Sentinel mode) or neither"
        ]
    if settings.sentinels and settings.redis_cluster:
        return ["REDIS_SENTINELS with REDIS_CLUSTER=true: choose one (a cluster fails over by itself)"]
    if settings.sentinels and urlsplit(settings.redis_url).scheme == "unix":
        return ["REDIS_URL=<secret>: Sentinel mode needs redis:// or rediss:// (the master is reached over TCP)"]
    return []
