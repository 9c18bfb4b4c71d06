"""The simulator, small: it is seeded, it runs the service's own rules, and the rules it runs
catch what they should (enough streams to catch a broken rule, not to publish figures)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from alerts_service import simulate
from alerts_service.detection import DropRule, EwmaRule, IncidentRule, RateRule, Rules, SilenceRule
from alerts_service.domain import Timing
from shared import simtable

PER_30 = "alerts per segment per 30 days"

DROP_ONLY = Rules(
    ewma=EwmaRule(enabled=False), incident=IncidentRule(enabled=False), silence=SilenceRule(enabled=False)
)


def test_the_same_seed_gives_the_same_alerts() -> None:
    truths = {f"sim:{i}": simulate.step_change(60, simulate.START, simulate.nps_shift(-15)) for i in range(6)}
    end = simulate.START + timedelta(days=4)
    runs = [simulate.simulate(truths, simulate.START, end, DROP_ONLY, Timing(), seed=3) for _ in range(2)]
    assert runs[0].fired == runs[1].fired and runs[0].fired  # a 15-point drop at 60 a day is found in 4 days


def test_a_stable_stream_rarely_alerts_and_a_drop_is_found() -> None:
    rows = {(r.scenario, r.measure): r for r in simulate.run(11, simulate.QUICK)}
    false_drop = float(rows[("null, 57.1429/day", "false drop alerts per segment per 30 days")].value)
    assert false_drop <= 0.5  # 20 segments x 10 days: an always-firing rule would be ~3
    power = float(rows[("10-point drop, ~400 per window", "power: detected by the drop rule within 7 days")].value)
    assert power >= 0.4
    fdr = float(rows[("40 segments, 4 drop", "false discovery proportion, mean over rounds of 1 run(s)")].value)
    assert fdr <= 0.25
    spike = "detractors 20% -> 40% at 14:00, 100/hour"
    found, _ = rows[(spike, "incidents fired within 3 hours")].value.split(" of ")
    slowest = rows[(spike, "slowest time to fire")].value
    assert slowest != "none" and float(slowest.split()[0]) <= 180 and int(found) >= 1
    assert rows[(spike, "median time to fire")].met is not None  # judged against its target
    ewma, _ = rows[("1 point a week decline, ~57/day", "ewma: detected / median delay")].value.split(" of ")
    assert int(ewma) >= 1
    settle = RateRule().settle_days
    false_rate = rows[(f"null, rate 20%, ~400 invitations/week, settle {settle} days", f"false response_rate {PER_30}")]
    assert float(false_rate.value) <= 0.5 and false_rate.met is not None
    fell = rows[("rate 20% -> 12%, ~400 invitations/week", "power: detected by response_rate within 21 days")]
    assert float(fell.value) >= 0.5
    # Without settling, the youngest invitations (answers still coming) read as a fall: the table shows it.
    unsettled = rows[("null, rate 20%, ~400 invitations/week, settle 0 days", f"false response_rate {PER_30}")]
    assert float(unsettled.value) > 1.0


def test_a_broken_rule_shows_in_the_table() -> None:
    """A drop rule that ignores significance pages on every stable segment: the table says so."""
    careless = Rules(
        drop=DropRule(min_drop_points=0, q=0.999),
        ewma=EwmaRule(enabled=False),
        incident=IncidentRule(enabled=False),
        silence=SilenceRule(enabled=False),
    )
    rows = simulate.null_rows(5, 10, 5, (57.0,), careless, Timing(cooldown_s=0, clear_s=0))
    assert float(rows[0].value) > 1.0 and rows[0].met is False


def test_write_replaces_only_the_marked_table(tmp_path: Path) -> None:
    doc = tmp_path / "alerts.md"
    doc.write_text(f"# Alerts\n\nbefore\n\n{simtable.BEGIN}\nold table\n{simtable.END}\n\nafter\n")
    rows = [simtable.Row("s", "m", "0.01", "<= 0.05", True)]
    simtable.write_table(doc, rows, "stamp")
    text = doc.read_text()
    assert text.startswith("# Alerts\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old table" not in text
    assert "| s | m | 0.01 | <= 0.05 | yes |" in text and "stamp" in text
