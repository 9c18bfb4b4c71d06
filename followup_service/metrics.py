from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from followup_service.tickets.domain import PRIORITIES

FOLLOWUPS_CREATED = Counter("nps_followups_created_total", "Follow-ups created, by kind.", ["kind"])
EXPERIMENT_FOLLOWUPS = Counter(
    "nps_followup_experiment_followups_total",
    "Follow-ups decided by an experiment's arm (held-out arms included), by experiment and arm: ids and arms the "
    "policy file names, at zero from the policy's load.",
    ["experiment", "arm"],
)
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
TICKET_SLA_BREACHES = Counter(
    "nps_ticket_sla_breaches_total",
    "Tickets that missed an SLA deadline, by priority and deadline.",
    ["priority", "deadline"],
)
for _priority in PRIORITIES:  # at 0 from the start, so the first breach is an increase (NpsTicketSlaBreaches)
    for _deadline in ("first_contact", "resolution"):
        TICKET_SLA_BREACHES.labels(_priority, _deadline)
TICKETS_ACTIVE = Gauge(
    "nps_tickets_active",
    "Active tickets (open, in_progress, contacted) by priority and age: 1h (under an hour), 4h, 1d, 3d, older.",
    ["priority", "age"],
)
# Support's own work only: resolutions by a revision or an erasure are not counted.
TICKET_FIRST_CONTACT_SECONDS = Histogram(
    "nps_ticket_first_contact_seconds",
    "Time from a ticket's opening to its first contact, by priority.",
    ["priority"],
    buckets=(300, 900, 1_800, 3_600, 4 * 3_600, 12 * 3_600, 86_400, 2 * 86_400, 5 * 86_400, 14 * 86_400),
)
TICKET_RESOLUTION_SECONDS = Histogram(
    "nps_ticket_resolution_seconds",
    "Time from a ticket's opening to its resolution, by priority.",
    ["priority"],
    buckets=(3_600, 4 * 3_600, 12 * 3_600, 86_400, 2 * 86_400, 5 * 86_400, 14 * 86_400, 30 * 86_400),
)
for _priority in PRIORITIES:  # at zero from the start: the dashboards' queries have data on a fresh loop
    TICKET_FIRST_CONTACT_SECONDS.labels(_priority)
    TICKET_RESOLUTION_SECONDS.labels(_priority)
POLICY_RELOADS = Counter(
    "nps_followup_policy_reloads_total",
    "Policy reloads asked for (SIGHUP): reloaded, or refused (the file did not check out; the running policy stays).",
    ["outcome"],
)
MESSAGES_FAILED = Counter(
    "nps_followup_messages_failed_total",
    "Follow-ups whose message template failed to render on the response (recorded as failed, with the reason).",
)
