"""Alerts use cases: evaluate a batch of score changes, fire and resolve."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from alerts_service import metrics, publisher, repository
from alerts_service.domain import DropRule, SegmentState, Transition, evaluate
from shared import outbox
from shared.consumer import Message
from shared.events import ScoreChanged, ScoreEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EvaluateScores:
    rule: DropRule
    alerts_topic: str

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ScoreEvent]]) -> None:
        latest: dict[str, ScoreChanged] = {}  # only a segment's newest score in the batch matters
        for message in batch:
            event = message.event
            seen = latest.get(event.segment)
            if seen is None or event.computed_at > seen.computed_at:
                latest[event.segment] = event

        states = await repository.lock_states(conn, list(latest))
        decisions = [evaluate(states.get(segment), event, self.rule) for segment, event in sorted(latest.items())]
        new_states: list[SegmentState] = []
        for decision in decisions:
            if decision.state is None:
                metrics.STALE_SCORES.inc()  # a redelivery, or an older event overtaken by a newer one
                continue
            new_states.append(decision.state)
            if decision.transition is not Transition.NONE:
                metrics.ALERT_TRANSITIONS.labels(decision.transition.value).inc()
        fired = [d.fired for d in decisions if d.fired is not None]
        resolved = [d.resolved for d in decisions if d.resolved is not None]
        for alert in fired:
            log.warning(
                "score drop detected: segment=%s nps %.1f -> %.1f (%.1f points; n=%d vs baseline n=%d) alert=%s",
                alert.segment,
                alert.baseline_nps,
                alert.current_nps,
                alert.baseline_nps - alert.current_nps,
                alert.current_n,
                alert.baseline_n,
                alert.alert_id,
            )
        for resolution in resolved:
            log.info("score drop resolved: segment=%s alert=%s", resolution.segment, resolution.alert_id)

        await repository.save_states(conn, new_states)
        await repository.insert_alerts(conn, fired)
        await repository.resolve_alerts(conn, resolved)
        await outbox.enqueue(
            conn,
            repository.SCHEMA,
            [publisher.fired(self.alerts_topic, a) for a in fired]
            + [publisher.resolved(self.alerts_topic, r) for r in resolved],
        )
        metrics.FIRING.set(await repository.count_firing(conn))
