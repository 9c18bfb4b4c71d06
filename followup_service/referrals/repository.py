"""The referrals' SQL: codes given out, the sign-ups they brought. Never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.tables import SCHEMA


async def code_exists(conn: AsyncConnection, code: str) -> bool:
    found = await conn.scalar(sa.text(f"SELECT 1 FROM {SCHEMA}.followups WHERE referral_code = :c"), {"c": code})
    return found is not None


async def record_conversion(
    conn: AsyncConnection, conversion_id: str, code: str, converted_at: datetime
) -> tuple[bool, str]:
    """(newly recorded?, the code the conversion id is recorded with)."""
    row = (
        await conn.execute(
            sa.text(
                f"""WITH new AS (
                        INSERT INTO {SCHEMA}.referral_conversions (conversion_id, code, converted_at)
                        VALUES (:id, :code, :at) ON CONFLICT (conversion_id) DO NOTHING RETURNING code)
                    SELECT true AS new, code FROM new
                    UNION ALL
                    SELECT false, code FROM {SCHEMA}.referral_conversions WHERE conversion_id = :id
                    LIMIT 1"""
            ),
            {"id": conversion_id, "code": code, "at": converted_at},
        )
    ).one()
    return bool(row.new), str(row.code)


@dataclass(frozen=True, slots=True)
class ReferralStats:
    codes_issued: int
    conversions: int
    converting_codes: int


async def referral_stats(
    conn: AsyncConnection, since: datetime, channel: str | None, survey_id: str | None
) -> ReferralStats:
    """Codes issued since `since` (of those segments), their conversions, and how many converted."""
    row = (
        await conn.execute(
            sa.text(
                f"""WITH codes AS (
                        SELECT referral_code FROM {SCHEMA}.followups
                        WHERE referral_code IS NOT NULL AND created_at >= :since
                          AND (CAST(:channel AS text) IS NULL OR channel = :channel)
                          AND (CAST(:survey AS text) IS NULL OR survey_id = :survey))
                    SELECT (SELECT count(*) FROM codes) AS issued,
                           count(c.conversion_id) AS conversions,
                           count(DISTINCT c.code) AS converting
                    FROM {SCHEMA}.referral_conversions c JOIN codes ON codes.referral_code = c.code"""
            ),
            {"since": since, "channel": channel, "survey": survey_id},
        )
    ).one()
    return ReferralStats(int(row.issued), int(row.conversions), int(row.converting))
