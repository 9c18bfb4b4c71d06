"""Which failures the consumer loop retries (the batch is applied again) and which stop it."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from shared.consumer import RetryBatch, is_transient


@pytest.mark.parametrize(
    "exc",
    [
        RetryBatch("a concurrent writer"),
        OperationalError("SELECT 1", {}, Exception("connection refused")),
        KafkaConnectionError(),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ProgrammingError("SELECT nope", {}, Exception("syntax error")),
        IntegrityError("INSERT", {}, Exception("violates check constraint")),
        ValueError("a bug"),
        KeyError("a bug"),
    ],
)
def test_bugs_are_not_retried(exc: BaseException) -> None:
    assert not is_transient(exc)
