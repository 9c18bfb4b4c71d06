"""The short version of `make chaos`, in `make test`: the loop under load while scoring is killed,
PostgreSQL hangs (5 s here, 20 s in `make chaos`) and poison messages arrive; every acknowledged
response counted exactly once, routed once; the hang is felt as 503s. How fast each answer comes
while the database hangs is tests/integration/test_hung_dependencies.py's to check, on a loop of its
own: here three other test workers share the two cores, and a request can wait seconds for its
service's event loop before any deadline of ours starts (a 200 after 5.8 s, queued behind the
catch-up), so the slowest answer is reported (`make chaos`: docs/reliability.md), not bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.scenario import Scenario

pytestmark = pytest.mark.e2e


async def test_under_load_a_killed_consumer_a_hung_database_and_poison_lose_and_double_nothing(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path / "var", rate=40, hang_s=5)
    try:
        outcomes = await scenario.execute(full=False, warm_s=2, recover_s=60, min_acked=60)
        assert scenario.driver.violations == []
        assert [o.fault for o in outcomes] == ["SIGKILL scoring", "PostgreSQL hung 5 s", "poison messages"]
        assert all(o.recovered_s is not None and o.acknowledged >= 60 for o in outcomes), outcomes
        hang = outcomes[1]
        assert hang.unavailable > 0, hang  # the hang was felt: ingest and the readers got 503s
        assert scenario.driver.answers["202"] >= sum(o.acknowledged for o in outcomes)
        assert scenario.recompute_matches()
    finally:
        scenario.close()
