from __future__ import annotations

from prometheus_client import Counter

FOLLOWUPS_CREATED = Counter("nps_followups_created_total", "Follow-ups created, by kind.", ["kind"])
FOLLOWUPS_DUPLICATE = Counter(
    "nps_followups_duplicates_total", "Responses seen again whose follow-up already existed (not repeated)."
)
NOT_YET_APPLIED = Counter(
    "nps_followups_erasures_not_applied_total", "Erasure events decoded but not yet applied to follow-up data."
)
