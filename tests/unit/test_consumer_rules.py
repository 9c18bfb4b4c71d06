"""Which failures the consumer loop retries (the batch is applied again) and which stop it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from shared.consumer import ConsumerLoop, Every, RetryBatch, is_transient


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


async def test_a_stop_lets_the_outbox_flush_under_way_finish() -> None:
    """Cancelled between publishing and deleting its rows, a flush left them to go out twice: a stop
    now lets it finish (then makes its own last flush)."""

    class SlowOutbox:
        started = finished = 0

        async def flush(self) -> int:
            self.started += 1
            await asyncio.sleep(0.3)  # the broker acknowledging
            self.finished += 1
            return 0

    outbox = SlowOutbox()
    loop: ConsumerLoop[Any] = ConsumerLoop(
        service="t", consumer=cast(Any, None), producer=cast(Any, None), engine=cast(Any, None),
        decode=lambda b: b, handler=cast(Any, None), deadletter_topic="dlq", outbox=cast(Any, outbox),
    )  # fmt: skip
    relay = asyncio.create_task(loop._relay())
    loop._relay_wanted.set()
    await asyncio.sleep(0.05)  # a flush under way
    await loop._stop_relay(relay)
    assert outbox.started == outbox.finished == 2  # the one under way, then the last one
    assert relay.done() and not relay.cancelled()


async def test_a_step_every_interval_runs_first_at_once_then_only_once_its_interval_has_passed() -> None:
    ran: list[object] = []

    async def step(conn: Any) -> None:
        ran.append(conn)

    hourly, always = Every(step, 3600), Every(step, 0)
    for conn in ("a", "b", "c"):
        await hourly(cast(Any, conn))
    assert ran == ["a"]
    hourly.due = 0.0  # its hour has passed
    await hourly(cast(Any, "d"))
    await always(cast(Any, "e"))
    await always(cast(Any, "f"))
    assert ran == ["a", "d", "e", "f"]


def test_follow_up_checks_slas_every_sla_check_s_not_every_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SLA watch reads every active ticket: it runs every NPS_FOLLOWUP_SLA_CHECK_S within the
    loop's tick, which stays every NPS_FOLLOWUP_OUTBOX_INTERVAL_S for the API's TicketUpdated."""
    from followup_service.bootstrap import spec
    from followup_service.settings import FollowUpSettings
    from followup_service.tickets.handlers import WatchSlas

    monkeypatch.setenv("NPS_PSEUDONYM_SECRET", "s" * 32)
    settings = FollowUpSettings(sla_check_s=7, outbox_interval_s=0.5)
    consumer = spec(settings)
    assert consumer.tick_s == 0.5
    assert isinstance(consumer.tick, Every) and consumer.tick.interval_s == 7
    assert isinstance(consumer.tick.step, WatchSlas)


@pytest.mark.parametrize(("first_s", "lead"), [(30.0, "nps.invitations.v1"), (5.0, "nps.invitations.v1"), (0.0, None)])
def test_the_rates_loop_reads_invitations_first_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch, first_s: float, lead: str | None
) -> None:
    from scoring_service.bootstrap import rates_spec
    from scoring_service.settings import ScoringSettings

    monkeypatch.setenv("NPS_PSEUDONYM_SECRET", "s" * 32)
    consumer = rates_spec(ScoringSettings(rates_invitations_first_s=first_s))
    assert (consumer.topic, consumer.more_topics) == ("nps.invitations.v1", ("nps.responses.v1",))
    assert (consumer.lead_topic, consumer.lead_hold_s) == (lead, first_s)
