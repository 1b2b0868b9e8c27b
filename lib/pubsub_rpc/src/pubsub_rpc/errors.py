"""Named failures of a call: every way a call can fail has its own exception class.

Remote errors carry the machine-readable ``code`` from the reply envelope; local ones
(timeout, nobody listening, connection lost) are raised by the caller without a reply.
"""

from __future__ import annotations

from typing import Any


class RpcError(Exception):
    """Base class of every error a call can raise."""

    code = "rpc_error"

    def __init__(self, message: str = "", *, details: Any = None) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return error


# -- raised locally by the caller ------------------------------------------------------


class CallTimeout(RpcError, TimeoutError):
    """No reply within the call's timeout (the request may still run remotely)."""

    code = "timeout"


class NoResponder(RpcError):
    """PUBLISH reached zero subscribers: nobody is listening on the request channel."""

    code = "no_responder"


class ConnectionLost(RpcError, ConnectionError):
    """The Redis connection dropped (or is down) while the call was in flight."""

    code = "connection_lost"


class RequestTooLarge(RpcError, ValueError):
    """The encoded request exceeds ``max_message_bytes``: responders would drop it unread,
    so the caller refuses to send it rather than wait for a timeout."""

    code = "request_too_large"


class Backpressure(RpcError):
    """The Redis connection has more than REDIS_MAX_WRITE_BUFFER bytes unsent: Redis (or
    the network) is slower than we write, so the call fails now instead of queueing."""

    code = "backpressure"


# -- carried in error replies ----------------------------------------------------------


class RemoteError(RpcError):
    """An error reply from the responder; subclasses name the well-known codes."""


class UnknownAction(RemoteError):
    code = "unknown_action"


class InvalidRequest(RemoteError):
    """Raise this from a handler to reject bad input; the caller gets ``invalid_request``.
    A caller also raises it locally, without publishing, for data JSON cannot carry."""

    code = "invalid_request"


class HandlerError(RemoteError):
    code = "handler_error"


class Overloaded(RemoteError):
    code = "overloaded"


class Unavailable(RemoteError):
    """The responder is shutting down and did not finish the request."""

    code = "unavailable"


class DeadLettered(RemoteError):
    """Streams mode: the request was delivered RPC_STREAM_MAX_DELIVERIES times without an
    answer (its handler kept dying) and was moved to the dead-letter stream."""

    code = "dead_lettered"


_REMOTE_BY_CODE: dict[str, type[RemoteError]] = {
    cls.code: cls for cls in (UnknownAction, InvalidRequest, HandlerError, Overloaded, Unavailable, DeadLettered)
}


def error_from_wire(error: Any) -> RemoteError:
    """Build the named exception for an ``error`` object of a reply; unknown codes stay generic."""
    if not isinstance(error, dict):
        return RemoteError(str(error))
    code = str(error.get("code", "rpc_error"))
    message = str(error.get("message", code))
    cls = _REMOTE_BY_CODE.get(code)
    if cls is None:
        exc = RemoteError(message, details=error.get("details"))
        exc.code = code
        return exc
    return cls(message, details=error.get("details"))
