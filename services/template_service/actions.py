"""This service's actions: plain or async functions registered on the Responder. Raise
InvalidRequest for bad input (the caller gets `invalid_request`); any other exception
becomes `handler_error`. Results must be JSON-serialisable."""

from __future__ import annotations

from typing import Any

from pubsub_rpc import InvalidRequest, Responder


def register(responder: Responder) -> None:
    @responder.action("ping", 'Answer "pong" (replace with your own actions)')
    def ping(data: Any) -> str:
        if data is not None:
            raise InvalidRequest("ping takes no data")
        return "pong"

    @responder.action("actions", "List the actions this service serves")
    def actions(data: Any) -> list[dict[str, str]]:
        return responder.describe()
