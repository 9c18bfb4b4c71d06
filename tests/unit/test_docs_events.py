"""Every JSON example in docs/events.md decodes with the real contracts: the docs cannot drift."""

import json
import re
from pathlib import Path

from shared.events import (
    alert_events,
    contact_events,
    followup_events,
    invitation_events,
    response_events,
    score_events,
    ticket_events,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
ADAPTERS = {
    "ResponseSubmitted": response_events,
    "ResponseRevised": response_events,
    "RespondentErased": response_events,
    "InvitationSent": invitation_events,
    "ContactChanged": contact_events,
    "ScoreChanged": score_events,
    "FollowUpCreated": followup_events,
    "FollowUpHeldOut": followup_events,
    "TicketOpened": ticket_events,
    "TicketUpdated": ticket_events,
    "TicketSlaBreached": ticket_events,
    "AlertFired": alert_events,
    "AlertResolved": alert_events,
    "AlertAcknowledged": alert_events,
}


def test_every_documented_event_decodes_and_every_event_is_documented() -> None:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.S)
    documented = set()
    for block in blocks:
        example = json.loads(block)
        event = ADAPTERS[example["type"]].validate_python(example)
        assert json.loads(event.model_dump_json()) == example  # nothing lost, nothing invented
        documented.add(example["type"])
    assert documented == set(ADAPTERS)
