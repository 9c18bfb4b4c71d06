"""The follow-ups' SQL: what was routed, people's previous answers, new and re-routed follow-ups.
Never commits."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.routing.domain import FollowUp, Routed
from followup_service.tables import SCHEMA, WrittenConcurrently, copy_new
from shared.db import fetch, split_list
from shared.wire import Submitted

_FOLLOWUP_COLUMNS = (
    "followup_id", "response_id", "respondent_id", "respondent_key", "submitted_at", "kind", "score", "channel",
    "survey_id", "created_at", "ticket_id", "version", "rule", "policy_version", "status", "reason", "template",
    "locale", "eligible_at", "referral_code", "experiment_id", "arm",
)  # fmt: skip


async def routed_of(conn: AsyncConnection, response_ids: Iterable[str]) -> dict[str, Routed]:
    """What is known of these responses, their rows locked for the batch's transaction."""
    rows = await fetch(
        conn,
        f"SELECT response_id, respondent_key, kind, version, ticket_id, score FROM {SCHEMA}.followups "
        "WHERE response_id = ANY(string_to_array($1, $2)) ORDER BY response_id FOR UPDATE",
        *split_list(set(response_ids)),
    )
    return {r[0]: Routed(*r) for r in rows}


class PreviousAnswer(NamedTuple):
    """A person's latest answer before this batch's, and what it got (a named tuple: the batch
    handler makes one per response)."""

    response_id: str
    score: int
    submitted_at: datetime
    kind: str
    status: str
    ticket_resolved_at: datetime | None
    had_ticket: bool


async def previous_answers(
    conn: AsyncConnection, keys: Iterable[str], excluding: Iterable[str]
) -> dict[str, PreviousAnswer]:
    """Each person's latest answer among their other responses (the policy's history, the outcomes)."""
    rows = await fetch(
        conn,
        # One backward index probe per person (followups_answers), whatever the table's size: a
        # DISTINCT ON over their rows went to a hash join of the whole table at ~80,000 rows.
        f"""SELECT k.key, p.response_id, p.score, p.submitted_at, p.kind, p.status, p.resolved_at,
                   p.ticket_id IS NOT NULL
            FROM unnest(string_to_array($1, $2)) AS k(key)
            CROSS JOIN LATERAL (
                SELECT f.response_id, f.score, f.submitted_at, f.kind, f.status, f.ticket_id, t.resolved_at
                FROM {SCHEMA}.followups f LEFT JOIN {SCHEMA}.tickets t ON t.ticket_id = f.ticket_id
                WHERE f.respondent_key = k.key AND NOT f.response_id = ANY(string_to_array($3, $4))
                ORDER BY f.submitted_at DESC LIMIT 1
            ) p""",
        *split_list(set(keys)),
        *split_list(set(excluding)),
    )
    return {r[0]: PreviousAnswer(*r[1:]) for r in rows}


async def insert_new(
    conn: AsyncConnection, followups: Sequence[FollowUp], respondent_key: Callable[[str], str]
) -> None:
    """Store follow-ups for responses that had none when the batch read them; WrittenConcurrently
    if another transaction stored one meanwhile (nothing of the batch is then kept)."""
    if not followups:
        return
    rows = [
        (
            f.followup_id, f.response.response_id, None if f.reason == "erased" else f.response.respondent_id,
            respondent_key(f.response.respondent_id),
            submitted_at(f), f.kind, f.response.score, f.response.channel, f.response.survey_id, f.created_at,
            f.ticket_id, f.version, f.rule, f.policy_version, f.status, f.reason, f.template,
            f.message.locale if f.message else None, f.eligible_at, f.referral_code, f.experiment_id, f.arm,
        )
        for f in followups
    ]  # fmt: skip
    await copy_new(conn, "followups", _FOLLOWUP_COLUMNS, rows)


def submitted_at(followup: FollowUp) -> datetime:
    response = followup.response
    return response.submitted_at if isinstance(response, Submitted) else response.revised_at


async def reroute(conn: AsyncConnection, followups: Sequence[FollowUp]) -> None:
    """A revision changed these responses' category: their follow-up is now the new one (the latest
    version's, when a batch re-routes a response twice). WrittenConcurrently if another consumer
    got there first."""
    latest = list({f.response.response_id: f for f in sorted(followups, key=lambda f: f.version)}.values())
    if not latest:
        return
    columns = {
        "rid": ("text", [f.response.response_id for f in latest]),
        "fid": ("text", [f.followup_id for f in latest]),
        "kind": ("text", [f.kind for f in latest]),
        "score": ("smallint", [f.response.score for f in latest]),
        "tid": ("text", [f.ticket_id for f in latest]),
        "version": ("integer", [f.version for f in latest]),
        "now": ("timestamptz", [f.created_at for f in latest]),
        "rule": ("text", [f.rule for f in latest]),
        "policy_version": ("text", [f.policy_version for f in latest]),
        "status": ("text", [f.status for f in latest]),
        "reason": ("text", [f.reason for f in latest]),
        "template": ("text", [f.template for f in latest]),
        "locale": ("text", [f.message.locale if f.message else None for f in latest]),
        "eligible": ("timestamptz", [f.eligible_at for f in latest]),
        "code": ("text", [f.referral_code for f in latest]),
        "experiment": ("text", [f.experiment_id for f in latest]),
        "arm": ("text", [f.arm for f in latest]),
    }
    casts = ", ".join(f"CAST(:{name} AS {kind}[])" for name, (kind, _) in columns.items())
    result = await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.followups f SET followup_id = v.fid, kind = v.kind, score = v.score,
                    ticket_id = v.tid, version = v.version, created_at = v.now, rule = v.rule,
                    policy_version = v.policy_version, status = v.status, reason = v.reason,
                    template = v.template, locale = v.locale, eligible_at = v.eligible,
                    experiment_id = v.experiment, arm = v.arm,
                    referral_code = coalesce(f.referral_code, v.code)  -- the first code stays valid
                FROM unnest({casts}) AS v({", ".join(columns)})
                WHERE f.response_id = v.rid AND f.version < v.version"""
        ),
        {name: values for name, (_, values) in columns.items()},
    )
    if int(result.rowcount) != len(latest):
        raise WrittenConcurrently("followups (re-routed)")


async def set_versions(conn: AsyncConnection, versions: Mapping[str, int], scores: Mapping[str, int]) -> None:
    """Revisions within a category: the follow-up is unchanged, its version and score move on."""
    if not versions:
        return
    ids = sorted(versions)
    await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.followups f SET version = v.version, score = v.score
                FROM unnest(CAST(:ids AS text[]), CAST(:versions AS integer[]), CAST(:scores AS smallint[]))
                    AS v(response_id, version, score)
                WHERE f.response_id = v.response_id AND f.version < v.version"""
        ),
        {"ids": ids, "versions": [versions[i] for i in ids], "scores": [scores[i] for i in ids]},
    )


async def get_by_response(conn: AsyncConnection, response_id: str) -> Row[tuple[object, ...]] | None:
    result = await conn.execute(
        sa.text(
            f"""SELECT f.followup_id, f.kind, f.response_id, f.respondent_id, f.score, f.created_at, f.status,
                       f.reason, f.eligible_at, f.rule, f.policy_version, f.experiment_id, f.arm, f.referral_code,
                       t.ticket_id, t.status AS ticket_status
                FROM {SCHEMA}.followups f LEFT JOIN {SCHEMA}.tickets t ON t.ticket_id = f.ticket_id
                WHERE f.response_id = :rid"""
        ),
        {"rid": response_id},
    )
    return result.first()
