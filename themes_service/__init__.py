"""`nps themes`: the sixth service (port 8005, consumer group nps-scoring-themes). It reads the
responses topic, tags each comment with the taxonomy's themes, and counts them per segment and day
by scoring's own exactness rule and statements (scoring_service.handlers.CountResponses with
ThemeCounts). A process of its own so tagging never slows scoring (docs/themes.md has the
measurement)."""
