"""RPC and events over Redis pub/sub, wire-compatible with the Node.js/Laravel seed."""

from .caller import Caller
from .errors import (
    Backpressure,
    CallTimeout,
    ConnectionLost,
    DeadLettered,
    HandlerError,
    InvalidRequest,
    NoResponder,
    Overloaded,
    RemoteError,
    RequestTooLarge,
    RpcError,
    Unavailable,
    UnknownAction,
)
from .protocol import Event
from .responder import Responder, current_request
from .settings import Settings

__all__ = [
    "Backpressure",
    "Caller",
    "CallTimeout",
    "ConnectionLost",
    "DeadLettered",
    "Event",
    "HandlerError",
    "InvalidRequest",
    "NoResponder",
    "Overloaded",
    "RemoteError",
    "RequestTooLarge",
    "Responder",
    "RpcError",
    "Settings",
    "Unavailable",
    "UnknownAction",
    "current_request",
]
