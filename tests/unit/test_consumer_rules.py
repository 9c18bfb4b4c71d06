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


async def test_an_instance_id_makes_the_consumer_a_static_member_and_an_empty_one_does_not() -> None:
    from shared.kafka import make_consumer
    from shared.settings import ServiceSettings

    static = make_consumer(
        ServiceSettings(kafka_bootstrap_servers="127.0.0.1:1", consumer_instance_id="scoring-host-1"),
        "t",
        group_id="g",
        client_id="c",
    )
    dynamic = make_consumer(
        ServiceSettings(kafka_bootstrap_servers="127.0.0.1:1", consumer_instance_id=""),
        "t",
        group_id="g",
        client_id="c",
    )
    assert static._group_instance_id == "scoring-host-1"
    assert dynamic._group_instance_id is None
    for consumer in (static, dynamic):
        await consumer.stop()
