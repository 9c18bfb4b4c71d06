from __future__ import annotations

from prometheus_client import Counter

FOLLOWUPS_CREATED = Counter("nps_followups_created_total", "Follow-ups created, by kind.", ["kind"])
FOLLOWUPS_DUPLICATE = Counter(
    "nps_followups_duplicates_total", "Responses seen again whose follow-up already existed (not repeated)."
)
FOLLOWUPS_ERASED = Counter(
    "nps_followups_erased_total", "Follow-ups whose personal data an erasure cleared (respondent id, comment)."
)
FOLLOWUPS_SKIPPED_ERASED = Counter(
    "nps_followups_skipped_erased_total",
    "Responses not routed because their respondent had asked to be erased (late or redelivered events).",
)
TICKETS_CHANGED_BY_RESPONSES = Counter(
    "nps_tickets_changed_by_responses_total",
    "Tickets changed by the loop: another response of the person joined (attach), a revision updated (revise) or "
    "resolved (resolve) it.",
    ["op"],
)
TICKET_CHANGES = Counter(
    "nps_ticket_changes_total", "Ticket changes made through the API, by the status the ticket is in after.", ["status"]
)
