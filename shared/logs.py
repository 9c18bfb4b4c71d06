"""One log format for every process, and the ids that let one response be followed through them.

Two formats:
- `json`: one object per line (time, level, service, logger, message, and the ids in play), what
  a log pipeline (Loki, Elasticsearch, Cloud Logging) parses without a grok pattern;
- `text`: the same, for a person at a terminal.
`auto` (the default) is `text` when stderr is a terminal and `json` otherwise.

Ids: a log call names the ids it has with `extra={"response_id": ...}` (only the names in IDS are
emitted); the current request's id (`X-Request-Id`, accepted from the client or made at the edge)
is a context variable, so every line logged while answering a request carries it, and ingest
sends it on as the `x-request-id` Kafka header for consumers to log with the event.

Personal data (email, comment text, attribute values) is only ever logged at DEBUG.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["auto", "json", "text"]

# The ids a line may carry: identifiers, never personal data (respondent ids are pseudonymous but
# stay out: a log is not where erasure reaches).
IDS = ("request_id", "response_id", "followup_id", "ticket_id", "alert_id", "erasure_id", "delivery_id")

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_BYTES = REQUEST_ID_HEADER.encode()
# What we accept from a client: printable, no spaces or quotes, bounded; anything else is replaced
# (a header is attacker-controlled and ends up in every service's logs).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    return os.urandom(12).hex()


def accept_request_id(value: bytes | str | None) -> str:
    """The client's X-Request-Id when it is a sane id, else a new one."""
    if value is not None:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if _REQUEST_ID.fullmatch(text):
            return text
    return new_request_id()


def set_request_id(request_id: str | None) -> None:
    """The request being answered in this task (and the tasks it starts)."""
    _request_id.set(request_id)


def current_request_id() -> str | None:
    return _request_id.get()


def kafka_headers() -> list[tuple[str, bytes]] | None:
    """The Kafka headers that carry the current request's id to the consumers."""
    return headers_for(_request_id.get()) or None


def headers_for(request_id: str | None) -> list[tuple[str, bytes]]:
    """The Kafka headers that carry `request_id` (none without one)."""
    return [] if request_id is None else [(REQUEST_ID_HEADER, request_id.encode())]


def request_id_of(headers: Any) -> str | None:
    """The request id in a Kafka record's headers ((str, bytes) pairs), if one was sent and is sane."""
    for key, value in headers or ():
        if key == REQUEST_ID_HEADER:
            text = value.decode("latin-1") if isinstance(value, bytes) else None
            return text if text is not None and _REQUEST_ID.fullmatch(text) else None
    return None


def _ids(record: logging.LogRecord) -> dict[str, str]:
    found = {name: str(value) for name in IDS if (value := record.__dict__.get(name)) is not None}
    if "request_id" not in found:
        request_id = _request_id.get()
        if request_id is not None:
            found["request_id"] = request_id
    return found


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            **_ids(record),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = _ids(record)
        if not ids:
            return text
        head, newline, rest = text.partition("\n")  # ids on the message's line, before a traceback
        return head + " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]" + newline + rest


def formatter(fmt: LogFormat, service: str, stream: Any = None) -> logging.Formatter:
    if fmt == "auto":
        isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
        fmt = "text" if isatty is not None and isatty() else "json"
    return JsonFormatter(service) if fmt == "json" else TextFormatter(service)


def configure(level: str = "INFO", service: str = "nps", fmt: LogFormat = "auto") -> None:
    """Every line of this process to stderr, in `fmt` (NPS_LOG_FORMAT)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, service, sys.stderr))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every rebalance and retry at INFO/WARNING; our loop logs what matters.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    # uvicorn's own records ("Started server process", errors) go through the same handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
