"""Log lines people and machines can both read.

``LOG_FORMAT=json`` (the images' default) writes one JSON object per line; ``text`` (make
dev) writes a readable line. Lines about a call carry its fields (``call_fields``): the
requestId, action, caller, code and duration, as keys in JSON and as ``key=value`` in text,
so one grep or one log query follows a call across services.

Credentials never reach the output: a password inside a Redis DSN is masked in every
message, whatever code logged it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

# The fields a call's log lines may carry, in the order text lines show them.
CALL_FIELDS = ("requestId", "action", "caller", "code", "durationMs", "traceparent")
_DSN_PASSWORD = re.compile(r"(rediss?://[^:/@\s]*):[^@\s]+@")


def call_fields(
    request_id: str | None = None,
    action: str | None = None,
    caller: str | None = None,
    code: str | None = None,
    duration_ms: float | None = None,
    traceparent: str | None = None,
) -> dict[str, Any]:
    """``extra=`` for a log call about one call: ``log.info("...", extra=call_fields(...))``."""
    fields = {
        "requestId": request_id,
        "action": action,
        "caller": caller,
        "code": code,
        "durationMs": None if duration_ms is None else round(duration_ms, 3),
        "traceparent": traceparent,
    }
    return {key: value for key, value in fields.items() if value is not None}


def redact(text: str) -> str:
    return _DSN_PASSWORD.sub(r"\1:***@", text)


class JsonFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)  # timestamps in UTC, marked Z

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in CALL_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = " ".join(f"{key}={record.__dict__[key]}" for key in CALL_FIELDS if record.__dict__.get(key) is not None)
        return redact(f"{text} [{extras}]" if extras else text)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """One line per record on stdout; called once by each entry point, never on import."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
