"""All of alerts' SQL. Never commits."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from alerts_service.domain import Alert, Resolution, SegmentState

SCHEMA = "alerts"


async def lock_states(conn: AsyncConnection, segments: Sequence[str]) -> dict[str, SegmentState]:
    rows = await conn.execute(
        sa.text(
            f"SELECT segment, firing, alert_id, last_computed_at FROM {SCHEMA}.segment_states "
            "WHERE segment = ANY(CAST(:segments AS text[])) ORDER BY segment FOR UPDATE"
        ),
        {"segments": sorted(segments)},
    )
    return {r.segment: SegmentState(r.segment, r.firing, r.alert_id, r.last_computed_at) for r in rows}


async def save_states(conn: AsyncConnection, states: Sequence[SegmentState]) -> None:
    if not states:
        return
    ordered = sorted(states, key=lambda s: s.segment)
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO {SCHEMA}.segment_states AS s (segment, firing, alert_id, last_computed_at)
            SELECT * FROM unnest(CAST(:segments AS text[]), CAST(:firing AS boolean[]),
                                 CAST(:alert_ids AS text[]), CAST(:computed AS timestamptz[]))
            ON CONFLICT (segment) DO UPDATE SET
                firing = EXCLUDED.firing, alert_id = EXCLUDED.alert_id,
                last_computed_at = EXCLUDED.last_computed_at
            """
        ),
        {
            "segments": [s.segment for s in ordered],
            "firing": [s.firing for s in ordered],
            "alert_ids": [s.alert_id for s in ordered],
            "computed": [s.last_computed_at for s in ordered],
        },
    )


async def insert_alerts(conn: AsyncConnection, alerts: Sequence[Alert]) -> None:
    if not alerts:
        return
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO {SCHEMA}.alerts
                (alert_id, segment, as_of, current_nps, baseline_nps, current_n, baseline_n, fired_at)
            SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:segments AS text[]), CAST(:as_of AS date[]),
                CAST(:cur AS double precision[]), CAST(:base AS double precision[]),
                CAST(:cur_n AS integer[]), CAST(:base_n AS integer[]), CAST(:fired AS timestamptz[]))
            ON CONFLICT (alert_id) DO NOTHING
            """
        ),
        {
            "ids": [a.alert_id for a in alerts],
            "segments": [a.segment for a in alerts],
            "as_of": [a.as_of for a in alerts],
            "cur": [a.current_nps for a in alerts],
            "base": [a.baseline_nps for a in alerts],
            "cur_n": [a.current_n for a in alerts],
            "base_n": [a.baseline_n for a in alerts],
            "fired": [a.fired_at for a in alerts],
        },
    )


async def resolve_alerts(conn: AsyncConnection, resolved: Sequence[Resolution]) -> None:
    if resolved:
        await conn.execute(
            sa.text(
                f"UPDATE {SCHEMA}.alerts a SET resolved_at = r.at FROM unnest("
                "CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS r(id, at) WHERE a.alert_id = r.id"
            ),
            {"ids": [r.alert_id for r in resolved], "ats": [r.resolved_at for r in resolved]},
        )


async def list_alerts(conn: AsyncConnection, firing_only: bool, limit: int) -> Sequence[Row[tuple[object, ...]]]:
    where = "WHERE resolved_at IS NULL" if firing_only else ""
    result = await conn.execute(
        sa.text(
            f"""SELECT alert_id, segment, as_of, current_nps, baseline_nps, current_n, baseline_n,
                       fired_at, resolved_at
                FROM {SCHEMA}.alerts {where} ORDER BY fired_at DESC LIMIT :limit"""
        ),
        {"limit": limit},
    )
    return result.all()


async def count_firing(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.segment_states WHERE firing"))).scalar_one())
