"""`nps themes`: scoring's second consumer (group nps-scoring-themes) and its API. It reads the
responses topic, tags each comment with the taxonomy's themes, and counts them per segment and day
in scoring's schema (theme_responses, theme_daily) by scoring's own exactness rule. A process of
its own so tagging never slows scoring (docs/themes.md has the measurement)."""
