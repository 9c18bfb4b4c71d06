"""bench/pgsample.py's arithmetic: shares are backends per round, by service and what they were
doing, and statements are cut to their first words (the sampling itself runs in the benches)."""

from __future__ import annotations

from bench.pgsample import PgSampler


def test_shares_are_active_backends_per_round_by_service_and_statement() -> None:
    sampler = PgSampler("postgresql://unused/db")
    copy = "COPY scoring.responses (response_id, respondent_key, version) FROM STDIN BINARY"
    sampler.count([("nps-scoring", "CPU", copy), ("nps-rates", "Client", "COPY scoring.rate_answers")])
    sampler.count([("nps-scoring", "CPU", copy), ("", "IO", "COMMIT")])
    sampler.count([])
    sampler.count([("nps-scoring", "CPU", "  SELECT   1 ")])
    summary = sampler.summary().splitlines()
    assert summary[0] == "PostgreSQL, 4 samples: 1.25 backends active on average"
    assert summary[1] == "  0.75  nps-scoring, CPU"
    assert "  0.25  (unnamed), IO" in summary
    assert summary[summary.index("statements:") + 1] == (
        "  0.50  nps-scoring, CPU: COPY scoring.responses (response_id, respondent_key, version) FROM STDIN BINARY"
    )
    assert "  0.25  nps-scoring, CPU: SELECT 1" in summary


def test_no_rounds_says_so() -> None:
    assert PgSampler("postgresql://unused/db").summary() == "PostgreSQL: no samples"
