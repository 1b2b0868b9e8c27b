"""Who a WebSocket is: JWT verification (PyJWT) and, in demo mode only, token minting.

A real application's backend signs short-lived tokens (docs/gateway-auth.md); the gateway
only verifies them. HS256 uses a shared secret, RS256/ES256 an identity provider's public
key. What a socket may call is the gateway's allow-list intersected with the token's
``actions`` claim, computed once per (re)authentication so a call costs one set lookup.
Tokens are never logged: errors name the reason, not the token.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pubsub_rpc import Settings

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4001
CLOSE_EXPIRED = 4002
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
MAX_TOKEN_CHARS = 8192
MAX_SUB_CHARS = 128
MAX_CLAIM_ITEMS = 256


class ConfigError(ValueError):
    """The gateway cannot verify tokens as configured; it refuses to start."""


class AuthFailed(Exception):
    """A token was refused; ``close_code`` is 4001 (bad) or 4002 (expired)."""

    def __init__(self, message: str, close_code: int = CLOSE_UNAUTHENTICATED) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    actions: frozenset[str]  # already intersected with the gateway's allow-list
    events: frozenset[str] | None  # None: every public push
    expires_at: float  # epoch seconds


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _string_list(claims: dict[str, Any], name: str) -> list[str] | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_CLAIM_ITEMS or not all(isinstance(v, str) for v in value):
        raise AuthFailed(f"claim `{name}` must be a list of at most {MAX_CLAIM_ITEMS} strings")
    return value


class TokenVerifier:
    """Verifies tokens against one configuration; built once at start-up."""

    def __init__(
        self,
        *,
        secret: str = "",
        public_key: str = "",
        algorithms: Iterable[str] = (),
        audience: str = "",
        issuer: str = "",
        allowed_actions: Iterable[str] = (),
    ) -> None:
        if not secret and not public_key:
            raise ConfigError(
                "no way to verify browser tokens: set GATEWAY_JWT_SECRET (HS256) or GATEWAY_JWT_PUBLIC_KEY "
                "(RS256/ES256), or GATEWAY_DEMO_MODE=true for a local demo only"
            )
        if secret and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"GATEWAY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)")
        chosen = list(algorithms) or (["HS256"] if secret else []) + (["RS256", "ES256"] if public_key else [])
        for name in chosen:
            if name in HMAC_ALGORITHMS and not secret:
                raise ConfigError(f"GATEWAY_JWT_ALGORITHMS names {name}, which needs GATEWAY_JWT_SECRET")
            if name in KEY_ALGORITHMS and not public_key:
                raise ConfigError(f"GATEWAY_JWT_ALGORITHMS names {name}, which needs GATEWAY_JWT_PUBLIC_KEY")
            if name not in HMAC_ALGORITHMS | KEY_ALGORITHMS:
                raise ConfigError(f"GATEWAY_JWT_ALGORITHMS: unsupported algorithm {name!r}")
        self.algorithms = chosen
        self._secret = secret
        self._public_key: Any = None
        if public_key:
            try:
                self._public_key = _load_public_key(public_key)
            except ValueError as exc:
                raise ConfigError(f"GATEWAY_JWT_PUBLIC_KEY is not a PEM public key: {exc}") from None
        self._audience = audience or None
        self._issuer = issuer or None
        self.allowed_actions = frozenset(allowed_actions)
        self._decoder = jwt.PyJWT()

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        secret = settings.gateway_jwt_secret
        if settings.gateway_demo_mode and not secret and not settings.gateway_jwt_public_key:
            secret = secrets.token_urlsafe(48)  # lives as long as this process: demo tokens only
        return cls(
            secret=secret,
            public_key=settings.gateway_jwt_public_key,
            algorithms=split_list(settings.gateway_jwt_algorithms),
            audience=settings.gateway_jwt_audience,
            issuer=settings.gateway_jwt_issuer,
            allowed_actions=split_list(settings.gateway_allowed_actions),
        )

    @property
    def can_mint(self) -> bool:
        return bool(self._secret) and "HS256" in self.algorithms

    def verify(self, token: object) -> Identity:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise AuthFailed(f"a token is a non-empty string of at most {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm not in self.algorithms:
                raise AuthFailed(f"token algorithm {algorithm!r} not accepted (accepted: {', '.join(self.algorithms)})")
            key = self._secret if algorithm in HMAC_ALGORITHMS else self._public_key
            claims = self._decoder.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthFailed("token expired", CLOSE_EXPIRED) from None
        except jwt.InvalidTokenError as exc:
            raise AuthFailed(f"bad token: {exc}") from None
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> Identity:
        sub, exp = claims.get("sub"), claims.get("exp")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS:
            raise AuthFailed(f"claim `sub` must be a non-empty string of at most {MAX_SUB_CHARS} characters")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise AuthFailed("claim `exp` must be a number")
        wanted = _string_list(claims, "actions") or []
        actions = self.allowed_actions if "*" in wanted else self.allowed_actions.intersection(wanted)
        events = _string_list(claims, "events")
        return Identity(sub, actions, None if events is None else frozenset(events), float(exp))

    def mint(self, sub: str, actions: Iterable[str], ttl: float, events: Iterable[str] | None = None) -> tuple[str, float]:
        """A signed HS256 token and its expiry (demo mode and tests; real apps sign their own)."""
        if not self.can_mint:
            raise ConfigError("minting needs an HS256 secret")
        expires_at = int(time.time() + ttl)
        claims: dict[str, Any] = {"sub": sub, "exp": expires_at, "iat": int(time.time()), "actions": list(actions)}
        if events is not None:
            claims["events"] = list(events)
        if self._audience:
            claims["aud"] = self._audience
        if self._issuer:
            claims["iss"] = self._issuer
        return jwt.encode(claims, self._secret, algorithm="HS256"), float(expires_at)


def _load_public_key(pem: str) -> Any:
    # An env var often carries the PEM's newlines as "\\n".
    return load_pem_public_key(pem.replace("\\n", "\n").strip().encode())
