"""The one log format (shared/logs.py): JSON lines with the ids in play, text for a terminal, and
the request id accepted or made at the edge, answered back and read from Kafka headers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from shared import logs
from tests.unit.test_http_edges import follow_up_app

LOGGER = logging.getLogger("tests.logs")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    kept = (root.handlers[:], root.level)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("followup"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = kept
        logs.set_request_id(None)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_time_level_service_logger_message_and_only_the_known_ids(captured: io.StringIO) -> None:
    logs.set_request_id("req-42")
    LOGGER.warning(
        "ticket %s reopened", "t-1", extra={"ticket_id": "t-1", "response_id": "r-9", "email": "jane@example.com"}
    )
    (line,) = lines(captured)
    assert line.pop("time", "").endswith("+00:00")  # type: ignore[union-attr]
    assert line == {
        "level": "warning",
        "service": "followup",
        "logger": "tests.logs",
        "message": "ticket t-1 reopened",
        "request_id": "req-42",
        "response_id": "r-9",
        "ticket_id": "t-1",
    }


def test_an_explicit_request_id_wins_over_the_context_and_errors_carry_their_traceback(
    captured: io.StringIO,
) -> None:
    logs.set_request_id("from-the-request")
    try:
        raise ValueError("bad")
    except ValueError:
        LOGGER.exception("failed", extra={"request_id": "from-the-event"})
    (line,) = lines(captured)
    assert line["request_id"] == "from-the-event"
    assert "ValueError: bad" in str(line["error"])


def test_text_lines_put_the_ids_on_the_message_line() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "alert fired", None, None)
    record.alert_id = "a-1"
    text = logs.TextFormatter("alerts").format(record)
    assert text.endswith("INFO alerts x: alert fired [alert_id=a-1]")


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(logs.formatter("auto", "s", Terminal()), logs.TextFormatter)
    assert isinstance(logs.formatter("auto", "s", io.StringIO()), logs.JsonFormatter)
    assert isinstance(logs.formatter("json", "s", Terminal()), logs.JsonFormatter)


@pytest.mark.parametrize("sent", [None, "", "has space", "x" * 129, 'quote"d', "new\nline", "ünï"])
def test_a_missing_or_unsafe_request_id_is_replaced(sent: str | None) -> None:
    made = logs.accept_request_id(sent.encode() if sent is not None else None)
    assert made != sent and len(made) == 24 and made.isalnum()


def test_a_sane_request_id_is_kept_and_read_back_from_kafka_headers() -> None:
    assert logs.accept_request_id(b"0af7651916cd43dd8448eb211c80319c") == "0af7651916cd43dd8448eb211c80319c"
    logs.set_request_id("req-1")
    try:
        headers = logs.kafka_headers()
    finally:
        logs.set_request_id(None)
    assert headers == [("x-request-id", b"req-1")]
    assert logs.request_id_of([("other", b"v"), *headers]) == "req-1"
    assert logs.request_id_of([("x-request-id", b"bad id")]) is None
    assert logs.request_id_of(None) is None
    assert logs.kafka_headers() is None


async def test_every_answer_carries_the_request_id_and_the_logs_of_that_request_do_too(
    captured: io.StringIO,
) -> None:
    async with follow_up_app() as client:
        given = await client.get("/boom", headers={"X-Request-Id": "trace-me"})
        made = await client.get("/healthz")
    assert given.status_code == 500 and given.headers["x-request-id"] == "trace-me"
    assert made.status_code == 200 and len(made.headers["x-request-id"]) == 24
    failure = [line for line in lines(captured) if line["level"] == "error"]
    assert [line["request_id"] for line in failure] == ["trace-me"]
    assert "jane@example.com" not in captured.getvalue()


async def test_ingests_raw_routes_answer_the_request_id_too() -> None:
    from ingest_service.bootstrap import create_app
    from ingest_service.settings import IngestSettings
    from tests.unit.test_http_edges import SECRET

    app = create_app(IngestSettings(pseudonym_secret=SECRET))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as client:
        answer = await client.post("/v1/responses", content=b"{}", headers={"X-Request-Id": "raw-1"})
    # Not started (no lifespan, no gate): a 500, which must carry the id as much as a 202.
    assert answer.status_code == 500 and answer.headers["x-request-id"] == "raw-1"
