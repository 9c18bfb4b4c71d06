"""Alerts use cases: evaluate a batch of score changes, fire and resolve."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from alerts_service import metrics, publisher, repository
from alerts_service.domain import DropRule, Transition, alert_id, transition
from alerts_service.repository import AlertRow, SegmentState
from shared import outbox
from shared.consumer import Message
from shared.events import ScoreChanged, ScoreEvent
from shared.outbox import Outgoing

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EvaluateScores:
    rule: DropRule
    alerts_topic: str

    async def __call__(self, conn: AsyncConnection, batch: Sequence[Message[ScoreEvent]]) -> None:
        latest: dict[str, ScoreChanged] = {}
        for message in batch:
            event = message.event
            seen = latest.get(event.segment)
            if seen is None or event.computed_at > seen.computed_at:
                latest[event.segment] = event

        states = await repository.lock_states(conn, list(latest))
        new_states: list[SegmentState] = []
        fired: list[AlertRow] = []
        resolved: list[tuple[str, datetime]] = []
        out: list[Outgoing] = []
        for segment, event in sorted(latest.items()):
            state = states.get(segment)
            if state is not None and state.last_computed_at >= event.computed_at:
                metrics.STALE_SCORES.inc()  # a redelivery, or an older event overtaken by a newer one
                continue
            current, baseline = event.current.counts, event.baseline.counts
            firing = state is not None and state.firing
            current_alert = state.alert_id if state is not None else None
            step = transition(firing, self.rule.dropped(current, baseline))
            if step is Transition.FIRE:
                assert current.nps is not None and baseline.nps is not None
                alert = AlertRow(
                    alert_id=alert_id(segment, event.computed_at),
                    segment=segment,
                    as_of=event.as_of,
                    current_nps=current.nps,
                    baseline_nps=baseline.nps,
                    current_n=current.n,
                    baseline_n=baseline.n,
                    fired_at=event.computed_at,
                )
                fired.append(alert)
                out.append(publisher.fired(self.alerts_topic, alert))
                firing, current_alert = True, alert.alert_id
                log.warning(
                    "score drop detected: segment=%s nps %.1f -> %.1f (%.1f points; n=%d vs baseline n=%d) alert=%s",
                    segment,
                    baseline.nps,
                    current.nps,
                    baseline.nps - current.nps,
                    current.n,
                    baseline.n,
                    alert.alert_id,
                )
            elif step is Transition.RESOLVE and current_alert is not None:
                resolved.append((current_alert, event.computed_at))
                out.append(
                    publisher.resolved(
                        self.alerts_topic,
                        current_alert,
                        segment,
                        event.as_of,
                        current.nps,
                        baseline.nps,
                        event.computed_at,
                    )
                )
                log.info("score drop resolved: segment=%s alert=%s", segment, current_alert)
                firing, current_alert = False, None
            if step is not Transition.NONE:
                metrics.ALERT_TRANSITIONS.labels(step.value).inc()
            new_states.append(SegmentState(segment, firing, current_alert, event.computed_at))

        await repository.save_states(conn, new_states)
        await repository.insert_alerts(conn, fired)
        await repository.resolve_alerts(conn, resolved)
        await outbox.enqueue(conn, repository.SCHEMA, out)
        metrics.FIRING.set(await repository.count_firing(conn))
