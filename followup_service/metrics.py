from __future__ import annotations

from prometheus_client import Counter

FOLLOWUPS_CREATED = Counter("nps_followups_created_total", "Follow-ups created, by kind.", ["kind"])
FOLLOWUPS_DUPLICATE = Counter(
    "nps_followups_duplicates_total", "Responses seen again whose follow-up already existed (not repeated)."
)
