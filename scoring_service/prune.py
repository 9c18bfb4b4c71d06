"""`nps scoring prune` (and `nps themes prune`, the same for the theme counts): delete the counts of
days older than NPS_SCORING_RETENTION_DAYS (NPS_THEMES_RETENTION_DAYS: responses, daily rows, kept
comments), in steps of their own transaction,
while the services keep running (they ignore versions answered before the cutoff). Run it from a
daily job (deploy/kubernetes/prune-cronjob.yaml); `--dry-run` only counts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from scoring_service import repository
from scoring_service.repository import SCORES, Pruned, Store
from scoring_service.settings import ScoringSettings
from shared.db import make_engine
from shared.windows import utc_day

STEP = 20_000  # rows per transaction: each step holds its locks for well under a second


class RetentionNotSet(Exception):
    pass


async def run(
    settings: ScoringSettings,
    *,
    dry_run: bool,
    today: date | None = None,
    stores: Sequence[tuple[str, Store]] = (("scoring", SCORES),),
) -> dict[str, Pruned]:
    """Prune each of `stores`, by name (scoring's own; `nps themes prune` passes themes')."""
    cutoff = settings.retention_cutoff(today or utc_day(datetime.now(UTC)))
    if cutoff is None:
        raise RetentionNotSet(
            f"{settings.prefix}RETENTION_DAYS is not set (0 keeps everything): set it for the service too, "
            "so that it ignores what was answered before the cutoff"
        )
    engine = make_engine(settings.require_database_url())
    done: dict[str, Pruned] = {}
    try:
        for name, where in stores:
            if dry_run:
                async with engine.connect() as conn:
                    done[name] = await repository.count_before(conn, cutoff, where)
                continue
            total = Pruned(0, 0, 0)
            while True:
                async with engine.begin() as conn:
                    step = await repository.prune_before(conn, cutoff, where, STEP)
                total = Pruned(
                    total.responses + step.responses, total.daily + step.daily, total.comments + step.comments
                )
                if not (step.responses or step.daily):
                    break
            done[name] = total
    finally:
        await engine.dispose()
    verb = "would delete" if dry_run else "deleted"
    for name, where in stores:
        pruned = done[name]
        print(
            f"{name}: {verb} {pruned.responses:,} responses, {pruned.daily:,} daily rows"
            + (f", {pruned.comments:,} kept comments" if where.comments else "")
            + f" answered before {cutoff} ({settings.prefix}RETENTION_DAYS={settings.retention_days})"
        )
    return done
