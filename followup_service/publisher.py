"""What follow-up publishes, as outbox rows (sent after the batch's transaction commits)."""

from __future__ import annotations

from followup_service.domain import FollowUp
from shared.events import FollowUpCreated, TicketOpened
from shared.outbox import Outgoing
from shared.settings import Topics


def outgoing(topics: Topics, followup: FollowUp) -> list[Outgoing]:
    events = [
        Outgoing.event(
            topics.followups,
            followup.respondent_id,
            FollowUpCreated(
                followup_id=followup.followup_id,
                kind=followup.kind,
                response_id=followup.response_id,
                respondent_id=followup.respondent_id,
                score=followup.score,
                channel=followup.channel,
                survey_id=followup.survey_id,
                created_at=followup.created_at,
            ),
        )
    ]
    if followup.ticket_id is not None:
        events.append(
            Outgoing.event(
                topics.tickets,
                followup.respondent_id,
                TicketOpened(
                    ticket_id=followup.ticket_id,
                    response_id=followup.response_id,
                    respondent_id=followup.respondent_id,
                    score=followup.score,
                    comment=followup.comment,
                    survey_id=followup.survey_id,
                    channel=followup.channel,
                    answered_at=followup.answered_at,
                    created_at=followup.created_at,
                ),
            )
        )
    return events
