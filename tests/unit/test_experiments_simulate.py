"""The experiments simulator, small (`make test`'s version of `make experiments-sim`): seeded, its
population regresses to the mean as documented, its true effect is what it says, and the service's
estimators run on it behave: a null is not decided however often it is read, the naive comparison
is far off, a real 15-point effect is found."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from followup_service.experiments import simulate
from shared.simtable import BEGIN, END


def test_the_population_s_exact_shares_match_its_draws() -> None:
    rng = random.Random(5)
    detractors = again = not_promoter = 0
    for _ in range(60_000):
        mu = rng.gauss(simulate.SATISFACTION.mean, simulate.SATISFACTION.stdev)
        if simulate.score(mu, rng) <= 6:
            detractors += 1
            later = simulate.score(mu, rng)
            again += later <= 6
            not_promoter += later <= 8
    # the grid's exact figures against 12,000-odd draws: within ~3 standard errors
    assert again / detractors == pytest.approx(simulate.among_detractors(6), abs=0.015)
    assert not_promoter / detractors == pytest.approx(simulate.among_detractors(8), abs=0.012)
    assert 0.5 < 1 - simulate.among_detractors(6) < 0.65  # the regression to the mean docs/experiments.md cites


def test_the_true_effect_is_the_mean_difference_of_the_simulated_outcomes() -> None:
    """With everyone answering again at once and the arms' people alike (one seed stream), the
    treated arm's mean change less the held-out arm's converges on the effect set."""
    scenario = simulate.Scenario("big", effect=15.0, per_day=5_000, days=2, answer_again=1.0, delay=(1, 1))
    found = simulate.simulate(scenario, 3, simulate.among_detractors(8))
    assert found.estimate is not None
    se = (found.estimate.high - found.estimate.low) / (2 * 1.96)
    assert se < 4 and abs(found.estimate.points - 15) < 4 * se


def test_a_null_is_not_decided_when_read_daily_and_the_naive_comparisons_are_far_off() -> None:
    null = simulate.Scenario("null", effect=0.0)
    not_promoter = simulate.among_detractors(8)
    runs = [simulate.simulate(null, seed, not_promoter) for seed in range(8)]
    assert all(r.first_decided is None for r in runs)
    naive = statistics.fmean(r.naive for r in runs if r.naive is not None)
    own_change = statistics.fmean(r.treated_change for r in runs if r.treated_change is not None)
    assert naive > 50 and own_change > 50  # regression to the mean, taken for an effect
    real = [
        simulate.simulate(simulate.Scenario("real", effect=15.0, per_day=300), seed, not_promoter) for seed in (1, 2)
    ]
    assert all(r.first_decided is not None and r.estimate is not None and r.estimate.low > 0 for r in real)


def test_the_same_seed_gives_the_same_table_and_it_is_written_between_the_markers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = simulate.Size(runs=3, seed_runs=2)
    monkeypatch.setattr(simulate, "QUICK", small)
    rows = simulate.run(4, small)
    assert rows == simulate.run(4, small)
    assert {r.measure for r in rows if r.target} == {
        "coverage of the 95% interval (day 180)",
        "false 'decided', read every day for 180 days (anytime interval)",
        "false 'decided', read every day (the fixed 95% interval)",
    }
    doc = tmp_path / "experiments.md"
    doc.write_text(f"# Experiments\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    assert simulate.main(4, True, str(doc)) == 0
    text = doc.read_text()
    assert "old" not in text and "| population |" in text and text.endswith("\nafter\n")
