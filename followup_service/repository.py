"""All of follow-up's SQL. Never commits."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from followup_service.domain import ContactHistory, FollowUp, Priority, Routed
from followup_service.outcomes import NOT_FOLLOWED_UP, Cell, Transition
from shared import outbox
from shared.db import UNIQUE_VIOLATION, copy_rows, fetch, split_list, sqlstate_of
from shared.privacy import Erasures
from shared.wire import Submitted

SCHEMA = "followup"

_FOLLOWUP_COLUMNS = (
    "followup_id", "response_id", "respondent_id", "respondent_key", "submitted_at", "kind", "score", "channel",
    "survey_id", "created_at", "ticket_id", "version", "rule", "policy_version", "status", "reason", "template",
    "locale", "eligible_at", "referral_code",
)  # fmt: skip

ACTIVE_STATUSES = ["open", "in_progress", "contacted"]


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


class WrittenConcurrently(Exception):
    """Another transaction wrote one of these rows meanwhile (a consumer that had the partition
    before a rebalance): the batch starts again on top of it."""


async def copy_new(conn: AsyncConnection, table: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """COPY rows the batch found new into `table` (in follow-up's schema). A unique key another
    transaction wrote meanwhile (a follow-up, the transition it brings, a ticket id, a person's
    one active ticket) is WrittenConcurrently; any other constraint failing is a bug, raised."""
    try:
        await copy_rows(conn, f"{SCHEMA}.{table}", columns, rows)
    except IntegrityError as exc:
        if sqlstate_of(exc) != UNIQUE_VIOLATION:
            raise
        raise WrittenConcurrently(table) from exc


async def insert_transitions(conn: AsyncConnection, transitions: Sequence[Transition]) -> None:
    if transitions:
        # Plain tuples: asyncpg encodes a tuple subclass's items through the generic path, ~2x slower.
        await copy_new(conn, "transitions", Transition._fields, [tuple(t) for t in transitions])


async def outcome_cells(
    conn: AsyncConnection, since: datetime, channel: str | None, survey_id: str | None
) -> list[Cell]:
    rows = await conn.execute(
        sa.text(
            f"""SELECT CASE WHEN followup_status = 'created' AND followup_kind <> 'none' THEN followup_kind
                            ELSE '{NOT_FOLLOWED_UP}' END AS grp,
                       previous_category, new_category, count(*) AS n
                FROM {SCHEMA}.transitions
                WHERE answered_at >= :since
                  AND (CAST(:channel AS text) IS NULL OR channel = :channel)
                  AND (CAST(:survey AS text) IS NULL OR survey_id = :survey)
                GROUP BY 1, 2, 3"""
        ),
        {"since": since, "channel": channel, "survey": survey_id},
    )
    return [Cell(r.grp, r.previous_category, r.new_category, int(r.n)) for r in rows]


async def active_tickets(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, str]:
    """The active ticket of each of these respondent keys that has one, locked."""
    rows = await fetch(
        conn,
        f"SELECT respondent_key, ticket_id FROM {SCHEMA}.tickets WHERE respondent_key = ANY(string_to_array($1, $2)) "
        "AND status = ANY($3::text[]) ORDER BY ticket_id FOR UPDATE",
        *split_list(set(keys)),
        ACTIVE_STATUSES,
    )
    return dict(rows)


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
            f.message.locale if f.message else None, f.eligible_at, f.referral_code,
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
    }
    casts = ", ".join(f"CAST(:{name} AS {kind}[])" for name, (kind, _) in columns.items())
    result = await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.followups f SET followup_id = v.fid, kind = v.kind, score = v.score,
                    ticket_id = v.tid, version = v.version, created_at = v.now, rule = v.rule,
                    policy_version = v.policy_version, status = v.status, reason = v.reason,
                    template = v.template, locale = v.locale, eligible_at = v.eligible,
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


@dataclass
class TicketRow:
    """A ticket as the batch handler changes it in memory before writing it once."""

    ticket_id: str
    version: int
    response_id: str
    respondent_id: str | None
    respondent_key: str
    score: int
    comment: str | None
    status: str
    priority: str
    assignee: str | None
    resolution: str | None
    channel: str | None
    survey_id: str | None
    created_at: datetime
    updated_at: datetime
    first_contact_at: datetime | None
    resolved_at: datetime | None
    first_contact_sla_s: float | None = None  # its rule's own SLA (None: its priority's)
    resolution_sla_s: float | None = None


_TICKET_ROW = [f.name for f in fields(TicketRow)]
TICKET_COLUMNS = ", ".join(_TICKET_ROW)  # what every read of a ticket selects
_ticket_values = operator.attrgetter(*_TICKET_ROW)  # a ticket's values, as one tuple
_TICKET_TYPES = {
    "version": "integer",
    "score": "smallint",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "first_contact_at": "timestamptz",
    "resolved_at": "timestamptz",
    "first_contact_sla_s": "float8",
    "resolution_sla_s": "float8",
}


def _unnest(rows: Sequence[TicketRow]) -> tuple[str, dict[str, list[object]]]:
    casts = ", ".join(f"CAST(:{c} AS {_TICKET_TYPES.get(c, 'text')}[])" for c in _TICKET_ROW)
    return f"unnest({casts})", {c: [getattr(r, c) for r in rows] for c in _TICKET_ROW}


async def tickets_for_update(conn: AsyncConnection, ticket_ids: Iterable[str]) -> dict[str, TicketRow]:
    ids = sorted(set(ticket_ids))
    if not ids:
        return {}
    rows = await fetch(
        conn,
        f"SELECT {TICKET_COLUMNS} FROM {SCHEMA}.tickets WHERE ticket_id = ANY($1::text[]) ORDER BY ticket_id FOR UPDATE",
        ids,
    )
    return {r[0]: TicketRow(*r) for r in rows}


async def write_tickets(conn: AsyncConnection, changed: Sequence[TicketRow], new: Sequence[TicketRow]) -> None:
    """The batch's tickets, as they end: changed ones first (a resolved ticket frees its person's
    slot), then the new ones, in one statement each."""
    if changed:
        source, params = _unnest(changed)
        columns = [c for c in _TICKET_ROW if c != "ticket_id"]
        await conn.execute(
            sa.text(
                f"UPDATE {SCHEMA}.tickets t SET {', '.join(f'{c} = v.{c}' for c in columns)} "
                f"FROM {source} AS v({', '.join(_TICKET_ROW)}) WHERE t.ticket_id = v.ticket_id"
            ),
            params,
        )
    if new:
        await copy_new(conn, "tickets", _TICKET_ROW, [_ticket_values(r) for r in new])


_HISTORY_COLUMNS = ("ticket_id", "version", "at", "actor", "status_from", "status_to", "assignee", "resolution", "note")
_history_values = operator.itemgetter(*_HISTORY_COLUMNS)  # a row's values, as one tuple


async def insert_history(conn: AsyncConnection, entries: Sequence[Mapping[str, object]]) -> None:
    if entries:
        rows = [_history_values(e) for e in entries]
        await copy_rows(conn, f"{SCHEMA}.ticket_history", _HISTORY_COLUMNS, rows)


async def get_by_response(conn: AsyncConnection, response_id: str) -> Row[tuple[object, ...]] | None:
    result = await conn.execute(
        sa.text(
            f"""SELECT f.followup_id, f.kind, f.response_id, f.respondent_id, f.score, f.created_at, f.status,
                       f.reason, f.eligible_at, f.rule, f.policy_version, t.ticket_id, t.status AS ticket_status
                FROM {SCHEMA}.followups f LEFT JOIN {SCHEMA}.tickets t ON t.ticket_id = f.ticket_id
                WHERE f.response_id = :rid"""
        ),
        {"rid": response_id},
    )
    return result.first()


# --- erasure ---


ERASURES = Erasures(SCHEMA)  # followup.erasures: requests remembered for late events


_ERASED = f"""
    WITH e AS (SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:times AS timestamptz[])) AS e(k, at))
    SELECT f.response_id FROM {SCHEMA}.followups f JOIN e ON f.respondent_key = e.k AND f.submitted_at <= e.at
"""
# The tickets of those responses (a ticket can hold several responses of its person).
_ERASED_TICKETS = f"SELECT ticket_id FROM {SCHEMA}.followups WHERE ticket_id IS NOT NULL AND response_id IN ({_ERASED})"


@dataclass(frozen=True, slots=True)
class Forgotten:
    followups: int  # follow-ups newly cleared
    closed: list[Row[tuple[object, ...]]]  # active tickets closed (resolution `erased`), as they now are


async def forget(
    conn: AsyncConnection, requested: Mapping[str, datetime], respondent_ids: Sequence[str], now: datetime
) -> Forgotten:
    """Clear the personal data of every follow-up (and its ticket) submitted at or before its
    respondent's erasure request: the respondent id, the comment, support's notes; close the
    person's active tickets (resolution `erased`); drop unsent outbox rows about them (events keyed
    by their id or their tickets'). What was routed stays, so counts and ticket states survive."""
    if not requested:
        return Forgotten(0, [])
    keys = sorted(requested)
    params = {"keys": keys, "times": [requested[k] for k in keys]}
    tickets = [r[0] for r in await conn.execute(sa.text(_ERASED_TICKETS), params)]
    await outbox.drop_keys(conn, SCHEMA, [i.encode() for i in respondent_ids] + [t.encode() for t in tickets])
    await conn.execute(  # notes support wrote about the person go with them
        sa.text(
            f"UPDATE {SCHEMA}.ticket_history SET note = NULL "
            "WHERE note IS NOT NULL AND ticket_id = ANY(CAST(:tickets AS text[]))"
        ),
        {"tickets": tickets},
    )
    await conn.execute(
        sa.text(
            f"UPDATE {SCHEMA}.tickets SET respondent_id = NULL, comment = NULL "
            "WHERE ticket_id = ANY(CAST(:tickets AS text[])) AND (respondent_id IS NOT NULL OR comment IS NOT NULL)"
        ),
        {"tickets": tickets},
    )
    closed = list(
        await conn.execute(
            sa.text(
                f"""UPDATE {SCHEMA}.tickets SET status = 'closed', resolution = 'erased', version = version + 1,
                        updated_at = :now, resolved_at = coalesce(resolved_at, :now)
                    WHERE ticket_id = ANY(CAST(:tickets AS text[])) AND status = ANY(CAST(:active AS text[]))
                    RETURNING {TICKET_COLUMNS}"""
            ),
            {"tickets": tickets, "active": ACTIVE_STATUSES, "now": now},
        )
    )
    await conn.execute(  # their answers leave the outcome counts, as they leave scoring's
        sa.text(
            f"""DELETE FROM {SCHEMA}.transitions t
                USING unnest(CAST(:keys AS text[]), CAST(:times AS timestamptz[])) AS e(k, at)
                WHERE t.respondent_key = e.k AND t.answered_at <= e.at"""
        ),
        params,
    )
    cleared = await conn.execute(
        sa.text(
            f"UPDATE {SCHEMA}.followups SET respondent_id = NULL "
            f"WHERE response_id IN ({_ERASED}) AND respondent_id IS NOT NULL"
        ),
        params,
    )
    return Forgotten(int(cleared.rowcount), closed)


# --- tickets: the lifecycle API ---


async def get_ticket(conn: AsyncConnection, ticket_id: str) -> Row[tuple[object, ...]] | None:
    result = await conn.execute(
        sa.text(f"SELECT {TICKET_COLUMNS} FROM {SCHEMA}.tickets WHERE ticket_id = :id"), {"id": ticket_id}
    )
    return result.first()


async def ticket_history(conn: AsyncConnection, ticket_id: str) -> list[Row[tuple[object, ...]]]:
    result = await conn.execute(
        sa.text(
            f"SELECT version, at, actor, status_from, status_to, assignee, resolution, note "
            f"FROM {SCHEMA}.ticket_history WHERE ticket_id = :id ORDER BY version"
        ),
        {"id": ticket_id},
    )
    return list(result)


@dataclass(frozen=True, slots=True)
class TicketFilter:
    status: str | None = None
    priority: str | None = None
    channel: str | None = None
    survey_id: str | None = None
    created_before: datetime | None = None  # "older than"
    after: tuple[datetime, str] | None = None  # the cursor: the last (created_at, ticket_id) seen


async def list_tickets(conn: AsyncConnection, where: TicketFilter, limit: int) -> list[Row[tuple[object, ...]]]:
    """Newest first; `limit` of them after the cursor."""
    result = await conn.execute(
        sa.text(
            f"""SELECT {TICKET_COLUMNS} FROM {SCHEMA}.tickets
                WHERE (CAST(:status AS text) IS NULL OR status = :status)
                  AND (CAST(:priority AS text) IS NULL OR priority = :priority)
                  AND (CAST(:channel AS text) IS NULL OR channel = :channel)
                  AND (CAST(:survey AS text) IS NULL OR survey_id = :survey)
                  AND (CAST(:before AS timestamptz) IS NULL OR created_at < :before)
                  AND (CAST(:after_at AS timestamptz) IS NULL OR (created_at, ticket_id) < (:after_at, :after_id))
                ORDER BY created_at DESC, ticket_id DESC
                LIMIT :limit"""
        ),
        {
            "status": where.status,
            "priority": where.priority,
            "channel": where.channel,
            "survey": where.survey_id,
            "before": where.created_before,
            "after_at": where.after[0] if where.after else None,
            "after_id": where.after[1] if where.after else None,
            "limit": limit,
        },
    )
    return list(result)


# --- SLAs ---

_SLA_DEADLINES = {
    # deadline: (the time that meets it, the mark that it was missed, the ticket's own SLA)
    "first_contact": ("first_contact_at", "first_contact_breached_at", "first_contact_sla_s"),
    "resolution": ("resolved_at", "resolution_breached_at", "resolution_sla_s"),
}


async def mark_breaches(
    conn: AsyncConnection, deadline: str, seconds: Mapping[Priority, float], now: datetime
) -> list[Row[tuple[object, ...]]]:
    """Active tickets past their `deadline` (their rule's own SLA, else their priority's in
    `seconds`; a priority not there has none) that had not met it, marked (once) and returned with
    their `due_at`."""
    met, missed, own = _SLA_DEADLINES[deadline]
    due = f"t.created_at + make_interval(secs => coalesce(t.{own}, CAST(CAST(:seconds AS jsonb) ->> t.priority AS float8)))"
    result = await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.tickets t SET {missed} = :now
                WHERE t.{met} IS NULL AND t.{missed} IS NULL AND t.status = ANY(CAST(:active AS text[]))
                  AND {due} < CAST(:now AS timestamptz)
                RETURNING t.ticket_id, t.priority, t.status, t.assignee, t.created_at, {due} AS due_at"""
        ),
        {"seconds": json.dumps(dict(seconds)), "active": ACTIVE_STATUSES, "now": now},
    )
    return list(result)


AGE_BUCKETS = (("1h", 3_600), ("4h", 4 * 3_600), ("1d", 86_400), ("3d", 3 * 86_400), ("older", None))


async def active_by_age(conn: AsyncConnection, now: datetime) -> dict[tuple[str, str], int]:
    """Active tickets by (priority, age bucket): `1h` for under an hour old, ..., `older` past 3 days."""
    cases = " ".join(
        f"WHEN created_at > CAST(:now AS timestamptz) - make_interval(secs => {secs}) THEN '{name}'"
        for name, secs in AGE_BUCKETS
        if secs
    )
    rows = await conn.execute(
        sa.text(
            f"""SELECT priority, CASE {cases} ELSE 'older' END AS bucket, count(*) AS n
                FROM {SCHEMA}.tickets WHERE status = ANY(CAST(:active AS text[])) GROUP BY 1, 2"""
        ),
        {"active": ACTIVE_STATUSES, "now": now},
    )
    return {(r.priority, r.bucket): int(r.n) for r in rows}


# --- contact rules ---


async def lock_people(conn: AsyncConnection, keys: Iterable[str]) -> None:
    """Serialise transactions about the same people (two consumers on one partition during a
    rebalance): the contact rules read a person's messages, then add to them."""
    await fetch(
        conn,
        "SELECT count(pg_advisory_xact_lock(hashtext(k))) FROM (SELECT k FROM unnest(string_to_array($1, $2)) AS k ORDER BY k) o",
        *split_list(set(keys)),
    )


async def contact_histories(conn: AsyncConnection, keys: Iterable[str], since: datetime) -> dict[str, ContactHistory]:
    """Each person's opt-out and the messages sent to them since `since` (tickets are not messages)."""
    histories = {k: ContactHistory() for k in keys}
    wanted = split_list(histories)
    opted = await fetch(
        conn,
        f"SELECT respondent_key FROM {SCHEMA}.opt_outs WHERE respondent_key = ANY(string_to_array($1, $2))",
        *wanted,
    )
    for (key,) in opted:
        histories[key].opted_out = True
    sent = await fetch(
        conn,
        f"""SELECT respondent_key, kind, created_at FROM {SCHEMA}.followups
            WHERE respondent_key = ANY(string_to_array($1, $2)) AND status = 'created'
              AND kind NOT IN ('ticket', 'none') AND created_at > $3
            ORDER BY created_at""",
        *wanted,
        since,
    )
    for key, kind, at in sent:
        histories[key].sent.append((kind, at))
    return histories


async def set_opt_out(conn: AsyncConnection, key: str, at: datetime | None) -> bool:
    """Opt a person out (`at`) or back in (None); True if that changed anything."""
    if at is None:
        result = await conn.execute(sa.text(f"DELETE FROM {SCHEMA}.opt_outs WHERE respondent_key = :k"), {"k": key})
    else:
        result = await conn.execute(
            sa.text(f"INSERT INTO {SCHEMA}.opt_outs VALUES (:k, :at) ON CONFLICT (respondent_key) DO NOTHING"),
            {"k": key, "at": at},
        )
    return bool(result.rowcount)


@dataclass(frozen=True, slots=True)
class ContactState:
    opted_out_at: datetime | None
    last_answer_at: datetime | None
    erased_at: datetime | None


async def contact_state(conn: AsyncConnection, key: str) -> ContactState:
    row = (
        await conn.execute(
            sa.text(
                f"""SELECT (SELECT opted_out_at FROM {SCHEMA}.opt_outs WHERE respondent_key = :k) AS opted_out_at,
                           (SELECT max(submitted_at) FROM {SCHEMA}.followups WHERE respondent_key = :k) AS last_answer_at,
                           (SELECT requested_at FROM {SCHEMA}.erasures WHERE respondent_key = :k) AS erased_at"""
            ),
            {"k": key},
        )
    ).one()
    return ContactState(row.opted_out_at, row.last_answer_at, row.erased_at)


# --- referrals ---


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
