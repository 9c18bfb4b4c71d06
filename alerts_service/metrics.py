from __future__ import annotations

from prometheus_client import Counter, Gauge

ALERT_TRANSITIONS = Counter("nps_alerts_transitions_total", "Alert state changes.", ["transition"])
STALE_SCORES = Counter(
    "nps_alerts_stale_scores_total", "ScoreChanged events older than the segment's last one (ignored)."
)
FIRING = Gauge("nps_alerts_firing", "Segments whose score-drop alert is firing (as of this process's last batch).")
