"""Themes' metrics. Its consumer loop's and HTTP metrics are the shared ones (shared/metrics.py),
labelled with the service; its batches count in scoring's counters (scoring_service/metrics.py),
since they are scoring's counting steps."""

from prometheus_client import Gauge

# One series per theme of the taxonomy (an operator's file, not the data) and category, over the
# whole population (segment `all`) in the same window as nps_segment_*.
THEME_MENTIONS = Gauge(
    "nps_theme_mentions",
    "Comments of the last metric window that mention each theme of the taxonomy, by category.",
    ["theme", "category"],
)
THEME_COMMENTED = Gauge(
    "nps_theme_commented", "Responses of the last metric window with a comment, by category.", ["category"]
)
