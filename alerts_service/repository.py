"""All of alerts' SQL. Never commits.

Lock order, so the consumer's batches and the evaluation rounds never deadlock: `segments` rows
(sorted by segment) before anything else; a round holds the transaction-scoped advisory lock
ROUND_LOCK, only reads `segments`, and its prune skips the `days` rows a batch holds."""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from alerts_service.domain import RuleState, State
from shared.consumer import RetryBatch
from shared.db import UNIQUE_VIOLATION, sqlstate_of
from shared.events import AlertExplanation
from shared.nps import NO_INVITATIONS, Counts, Rate

SCHEMA = "alerts"
ROUND_LOCK = 0x6E707361  # pg_try_advisory_xact_lock key: one evaluation round at a time, any replica


@dataclass(frozen=True, slots=True)
class Seen:
    last_computed_at: datetime
    last_arrival_at: datetime | None


async def lock_segments(conn: AsyncConnection, segments: Sequence[str]) -> dict[str, Seen]:
    rows = await conn.execute(
        sa.text(
            f"SELECT segment, last_computed_at, last_arrival_at FROM {SCHEMA}.segments "
            "WHERE segment = ANY(CAST(:segments AS text[])) ORDER BY segment FOR UPDATE"
        ),
        {"segments": sorted(segments)},
    )
    return {r.segment: Seen(r.last_computed_at, r.last_arrival_at) for r in rows}


async def save_segments(conn: AsyncConnection, seen: Mapping[str, Seen]) -> None:
    if not seen:
        return
    ordered = sorted(seen)
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO {SCHEMA}.segments AS s (segment, last_computed_at, last_arrival_at)
            SELECT * FROM unnest(CAST(:segments AS text[]), CAST(:computed AS timestamptz[]),
                                 CAST(:arrived AS timestamptz[]))
            ON CONFLICT (segment) DO UPDATE SET
                last_computed_at = EXCLUDED.last_computed_at, last_arrival_at = EXCLUDED.last_arrival_at
            """
        ),
        {
            "segments": ordered,
            "computed": [seen[s].last_computed_at for s in ordered],
            "arrived": [seen[s].last_arrival_at for s in ordered],
        },
    )


_DAYS_ROWS = f"""
    INSERT INTO {SCHEMA}.days AS k (segment, first_day, promoters, passives, detractors)
    SELECT s, f, CAST(p AS integer[]), CAST(pa AS integer[]), CAST(d AS integer[])
    FROM unnest(CAST(:segments AS text[]), CAST(:firsts AS date[]), CAST(:p AS text[]),
                CAST(:pa AS text[]), CAST(:d AS text[])) AS x(s, f, p, pa, d)"""


async def save_days(conn: AsyncConnection, days: Mapping[str, Days], new: Collection[str]) -> None:
    """Each segment's days held become `days` (NO_DAYS: none). Arrays go as their text literals:
    rows of arrays of different lengths do not fit one parameter array.

    `new`: the segments that had no row when the batch read them. If one has a row now, another
    transaction wrote it meanwhile (two consumers on one partition during a rebalance; a new
    segment has no `segments` row to lock): the unique violation becomes RetryBatch, and the batch
    is applied again on top of the other's days. A row the batch read is written whatever became of
    it since: only a prune can have touched it (its `segments` row is held), trimming days no
    window reads."""
    ordered = sorted(days)
    read = [s for s in ordered if days[s].promoters and s not in new]
    added = [s for s in ordered if days[s].promoters and s in new]
    emptied = [s for s in ordered if not days[s].promoters and s not in new]
    if read:
        await conn.execute(
            sa.text(
                f"""{_DAYS_ROWS}
                ON CONFLICT (segment) DO UPDATE SET
                    first_day = EXCLUDED.first_day, promoters = EXCLUDED.promoters,
                    passives = EXCLUDED.passives, detractors = EXCLUDED.detractors"""
            ),
            _days_params(days, read),
        )
    if added:
        try:
            await conn.execute(sa.text(_DAYS_ROWS), _days_params(days, added))
        except sa.exc.IntegrityError as exc:
            if sqlstate_of(exc) == UNIQUE_VIOLATION:
                raise RetryBatch("a segment's days were written by a concurrent transaction") from exc
            raise
    if emptied:
        await conn.execute(
            sa.text(f"DELETE FROM {SCHEMA}.days WHERE segment = ANY(CAST(:segments AS text[]))"), {"segments": emptied}
        )


def _days_params(days: Mapping[str, Days], segments: Sequence[str]) -> dict[str, list[Any]]:
    return {
        "segments": list(segments),
        "firsts": [days[s].first for s in segments],
        "p": [_literal(days[s].promoters) for s in segments],
        "pa": [_literal(days[s].passives) for s in segments],
        "d": [_literal(days[s].detractors) for s in segments],
    }


def _literal(values: Sequence[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


async def add_arrivals(conn: AsyncConnection, arrivals: Mapping[tuple[str, datetime], Counts]) -> None:
    if not arrivals:
        return
    keys = sorted(arrivals)
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO {SCHEMA}.arrivals AS a (segment, bucket, promoters, passives, detractors)
            SELECT * FROM unnest(CAST(:segments AS text[]), CAST(:buckets AS timestamptz[]),
                                 CAST(:p AS integer[]), CAST(:pa AS integer[]), CAST(:d AS integer[]))
            ON CONFLICT (segment, bucket) DO UPDATE SET
                promoters = a.promoters + EXCLUDED.promoters, passives = a.passives + EXCLUDED.passives,
                detractors = a.detractors + EXCLUDED.detractors
            """
        ),
        {
            "segments": [s for s, _ in keys],
            "buckets": [b for _, b in keys],
            "p": [arrivals[k].promoters for k in keys],
            "pa": [arrivals[k].passives for k in keys],
            "d": [arrivals[k].detractors for k in keys],
        },
    )


# --- a round's reads ---


async def try_round_lock(conn: AsyncConnection) -> bool:
    return bool((await conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ROUND_LOCK})).scalar_one())


async def all_segments(conn: AsyncConnection) -> dict[str, Seen]:
    rows = await conn.execute(sa.text(f"SELECT segment, last_computed_at, last_arrival_at FROM {SCHEMA}.segments"))
    return {r.segment: Seen(r.last_computed_at, r.last_arrival_at) for r in rows}


def held_span(start: date, first: date, last: date) -> slice:
    """Of arrays holding one element a day from `start`, the elements of the days `first`..`last`."""
    return slice(max(0, (first - start).days), max(0, (last - start).days + 1))


@dataclass(frozen=True, slots=True)
class Days:
    """One segment's days held: its counts for every day from `first` on, one element a day (0 on
    a day without responses), as parallel arrays of one length."""

    first: date
    promoters: Sequence[int]
    passives: Sequence[int]
    detractors: Sequence[int]

    def span(self, first: date, last: date) -> slice:
        """The elements of the days from `first` to `last` held (none held: an empty slice)."""
        return held_span(self.first, first, last)

    def sum(self, first: date, last: date) -> Counts:
        return self.total(self.span(first, last))

    def total(self, held: slice) -> Counts:
        """The counts of the elements `held` (a round's windows are slices of the same arrays)."""
        return Counts(sum(self.promoters[held]), sum(self.passives[held]), sum(self.detractors[held]))

    def replaced(self, first: date, last: date, days: Iterable[tuple[date, Counts]]) -> Days:
        """These days with the span `first`..`last` made exactly `days` (a day of it not given has
        none); held again from the first day with responses to the last."""
        kept: dict[date, tuple[int, int, int]] = {}
        for i, day in enumerate(zip(self.promoters, self.passives, self.detractors, strict=True)):
            on = self.first + timedelta(days=i)
            if any(day) and not first <= on <= last:
                kept[on] = day
        for on, counts in days:
            if first <= on <= last and counts.n:
                kept[on] = (counts.promoters, counts.passives, counts.detractors)
        if not kept:
            return NO_DAYS
        start = min(kept)
        dense = [kept.get(start + timedelta(days=i), (0, 0, 0)) for i in range((max(kept) - start).days + 1)]
        return Days(start, *(array("i", column) for column in zip(*dense, strict=True)))


NO_DAYS = Days(date.min, (), (), ())


@dataclass(frozen=True, slots=True)
class RateDays:
    """One segment's response-rate days: invitations and the answered ones for every day from
    `first` on (by the invitation's day), as parallel arrays of one length."""

    first: date
    invited: Sequence[int]
    responded: Sequence[int]

    def sum(self, first: date, last: date) -> Rate:
        held = held_span(self.first, first, last)
        return Rate(sum(self.invited[held]), sum(self.responded[held]))

    @classmethod
    def of(cls, first: date, days: Iterable[tuple[date, Rate]]) -> RateDays:
        """Dense from `first` to the last day given (a day not given has none)."""
        given = {day: rate for day, rate in days if day >= first}
        if not given:
            return cls(first, array("i"), array("i"))
        length = (max(given) - first).days + 1
        dense = [given.get(first + timedelta(days=i), NO_INVITATIONS) for i in range(length)]
        return cls(first, array("i", (r.invited for r in dense)), array("i", (r.responded for r in dense)))


NO_RATES = RateDays(date.min, (), ())


async def save_rate_days(conn: AsyncConnection, rates: Mapping[str, tuple[RateDays, datetime]]) -> None:
    """Each segment's rate days become what its newest ScoreChanged said (`computed_at`): a row
    written by a newer one meanwhile stays."""
    ordered = sorted(rates)
    if not ordered:
        return
    await conn.execute(
        sa.text(
            f"""INSERT INTO {SCHEMA}.rate_days AS r (segment, first_day, invited, responded, computed_at)
                SELECT s, f, CAST(i AS integer[]), CAST(a AS integer[]), c
                FROM unnest(CAST(:segments AS text[]), CAST(:firsts AS date[]), CAST(:invited AS text[]),
                            CAST(:responded AS text[]), CAST(:computed AS timestamptz[])) AS x(s, f, i, a, c)
                ON CONFLICT (segment) DO UPDATE SET
                    first_day = EXCLUDED.first_day, invited = EXCLUDED.invited,
                    responded = EXCLUDED.responded, computed_at = EXCLUDED.computed_at
                WHERE r.computed_at < EXCLUDED.computed_at"""
        ),
        {
            "segments": ordered,
            "firsts": [rates[s][0].first for s in ordered],
            "invited": [_literal(rates[s][0].invited) for s in ordered],
            "responded": [_literal(rates[s][0].responded) for s in ordered],
            "computed": [rates[s][1] for s in ordered],
        },
    )


async def rate_days_of(conn: AsyncConnection, segments: Sequence[str]) -> dict[str, RateDays]:
    rows = await conn.execute(
        sa.text(
            f"""SELECT segment, first_day, array_send(invited) AS i, array_send(responded) AS a
                FROM {SCHEMA}.rate_days WHERE segment = ANY(CAST(:segments AS text[]))"""
        ),
        {"segments": list(segments)},
    )
    return {r.segment: RateDays(r.first_day, int4s(r.i), int4s(r.a)) for r in rows}


async def days_of(conn: AsyncConnection, segments: Sequence[str]) -> dict[str, Days]:
    """Each segment's days held: one row a segment. Each array comes as array_send's bytes, read
    into C ints without a Python int per day (a start's first round reads 10,000 segments' days)."""
    rows = await conn.execute(
        sa.text(
            f"""SELECT segment, first_day, array_send(promoters) AS p, array_send(passives) AS pa,
                       array_send(detractors) AS d
                FROM {SCHEMA}.days WHERE segment = ANY(CAST(:segments AS text[]))"""
        ),
        {"segments": list(segments)},
    )
    # Kept between rounds (EvaluateRounds' cache): C ints take ~1.4 KB a segment, lists ~2.2 KB.
    return {r.segment: Days(r.first_day, int4s(r.p), int4s(r.pa), int4s(r.d)) for r in rows}


_ARRAY_HEADER = struct.Struct(">iiiii")  # dimensions, has NULLs, element type, length, lower bound
_EMPTY_HEADER = struct.Struct(">iii")  # an empty array: no dimensions, so no length and no bound
_INT4 = 23


def int4s(sent: bytes) -> array[int]:
    """An int4[] of one dimension without NULLs, as array_send writes it: the header, then each
    element as its length (4) and its value, big-endian. An empty one ('{}', e.g. a segment's rate
    days after erasure took all its invitations) has no dimension."""
    if len(sent) == _EMPTY_HEADER.size and _EMPTY_HEADER.unpack(sent) == (0, 0, _INT4):
        return array("i")
    dimensions, nulls, element, length, _ = _ARRAY_HEADER.unpack_from(sent)
    if dimensions != 1 or nulls or element != _INT4 or len(sent) != _ARRAY_HEADER.size + 8 * length:
        raise ValueError(f"not a one-dimensional int4[] without NULLs ({dimensions}, {nulls}, {element}, {length})")
    found = array("i")
    found.frombytes(sent[_ARRAY_HEADER.size :])
    values = found[1::2]  # every other int is a length
    if sys.byteorder == "little":
        values.byteswap()
    return values


async def recent_arrivals(conn: AsyncConnection, since: datetime) -> dict[str, Counts]:
    """Arrivals per segment after `since`; a negative sum (erasures) counts as none."""
    rows = await conn.execute(
        sa.text(
            f"""SELECT segment, greatest(sum(promoters), 0) AS p, greatest(sum(passives), 0) AS pa,
                       greatest(sum(detractors), 0) AS d
                FROM {SCHEMA}.arrivals WHERE bucket >= :since GROUP BY segment"""
        ),
        {"since": since},
    )
    return {r.segment: Counts(int(r.p), int(r.pa), int(r.d)) for r in rows}


async def rule_states(conn: AsyncConnection, now: datetime) -> dict[tuple[str, str], RuleState]:
    """Every (rule, segment) not plainly ok: a missing row is RuleState's default."""
    rows = await conn.execute(
        sa.text(
            f"""SELECT rule, segment, state, since, evaluations, alert_id, cooldown_until, flaps
                FROM {SCHEMA}.rule_states WHERE state <> 'ok' OR cooldown_until > :now"""
        ),
        {"now": now},
    )
    return {
        (r.rule, r.segment): RuleState(
            r.rule, r.segment, State(r.state), r.since, r.evaluations, r.alert_id, r.cooldown_until, r.flaps
        )
        for r in rows
    }


async def save_rule_states(conn: AsyncConnection, states: Sequence[RuleState]) -> None:
    plain = [s for s in states if s == RuleState(s.rule, s.segment)]
    kept = sorted((s for s in states if s != RuleState(s.rule, s.segment)), key=lambda s: (s.rule, s.segment))
    if plain:
        await conn.execute(
            sa.text(
                f"""DELETE FROM {SCHEMA}.rule_states r USING unnest(CAST(:rules AS text[]), CAST(:segments AS text[]))
                    AS k(rule, segment) WHERE r.rule = k.rule AND r.segment = k.segment"""
            ),
            {"rules": [s.rule for s in plain], "segments": [s.segment for s in plain]},
        )
    if kept:
        await conn.execute(
            sa.text(
                f"""
                INSERT INTO {SCHEMA}.rule_states AS r
                    (rule, segment, state, since, evaluations, alert_id, cooldown_until, flaps)
                SELECT * FROM unnest(CAST(:rules AS text[]), CAST(:segments AS text[]), CAST(:states AS text[]),
                    CAST(:since AS timestamptz[]), CAST(:evaluations AS integer[]), CAST(:alert_ids AS text[]),
                    CAST(:cooldowns AS timestamptz[]), CAST(:flaps AS integer[]))
                ON CONFLICT (rule, segment) DO UPDATE SET
                    state = EXCLUDED.state, since = EXCLUDED.since, evaluations = EXCLUDED.evaluations,
                    alert_id = EXCLUDED.alert_id, cooldown_until = EXCLUDED.cooldown_until, flaps = EXCLUDED.flaps
                """
            ),
            {
                "rules": [s.rule for s in kept],
                "segments": [s.segment for s in kept],
                "states": [s.state.value for s in kept],
                "since": [s.since for s in kept],
                "evaluations": [s.evaluations for s in kept],
                "alert_ids": [s.alert_id for s in kept],
                "cooldowns": [s.cooldown_until for s in kept],
                "flaps": [s.flaps for s in kept],
            },
        )
        # an open alert's flap count follows its state
        await conn.execute(
            sa.text(
                f"""UPDATE {SCHEMA}.alerts a SET flaps = k.flaps
                    FROM unnest(CAST(:ids AS text[]), CAST(:flaps AS integer[])) AS k(id, flaps)
                    WHERE a.alert_id = k.id AND a.flaps <> k.flaps"""
            ),
            {"ids": [s.alert_id for s in kept if s.alert_id], "flaps": [s.flaps for s in kept if s.alert_id]},
        )


@dataclass(frozen=True, slots=True)
class Silence:
    silence_id: str
    matcher: str
    rule: str | None
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str | None
    created_at: datetime


async def active_silences(conn: AsyncConnection, now: datetime) -> list[Silence]:
    rows = await conn.execute(
        sa.text(
            f"""SELECT silence_id, matcher, rule, starts_at, ends_at, created_by, comment, created_at
                FROM {SCHEMA}.silences WHERE deleted_at IS NULL AND starts_at <= :now AND ends_at > :now
                ORDER BY created_at"""
        ),
        {"now": now},
    )
    return [Silence(**r._mapping) for r in rows]


# --- alerts ---


@dataclass(frozen=True, slots=True)
class Opened:
    alert_id: str
    rule: str
    segment: str
    fired_at: datetime
    explanation: AlertExplanation
    silence_id: str | None


async def insert_alerts(conn: AsyncConnection, alerts: Sequence[Opened]) -> None:
    if not alerts:
        return
    await conn.execute(
        sa.text(
            f"""
            INSERT INTO {SCHEMA}.alerts (alert_id, rule, segment, fired_at, explanation, silence_id)
            SELECT id, rule, segment, fired_at, explanation::jsonb, silence_id
            FROM unnest(CAST(:ids AS text[]), CAST(:rules AS text[]), CAST(:segments AS text[]),
                        CAST(:fired AS timestamptz[]), CAST(:explanations AS text[]), CAST(:silences AS text[]))
                 AS a(id, rule, segment, fired_at, explanation, silence_id)
            ON CONFLICT (alert_id) DO NOTHING
            """
        ),
        {
            "ids": [a.alert_id for a in alerts],
            "rules": [a.rule for a in alerts],
            "segments": [a.segment for a in alerts],
            "fired": [a.fired_at for a in alerts],
            "explanations": [a.explanation.model_dump_json() for a in alerts],
            "silences": [a.silence_id for a in alerts],
        },
    )


async def resolve_alerts(conn: AsyncConnection, resolved: Sequence[tuple[str, datetime, AlertExplanation]]) -> None:
    if resolved:
        await conn.execute(
            sa.text(
                f"""UPDATE {SCHEMA}.alerts a SET resolved_at = r.at, resolution = r.resolution::jsonb
                    FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[]), CAST(:resolutions AS text[]))
                    AS r(id, at, resolution) WHERE a.alert_id = r.id"""
            ),
            {
                "ids": [i for i, _, _ in resolved],
                "ats": [at for _, at, _ in resolved],
                "resolutions": [x.model_dump_json() for _, _, x in resolved],
            },
        )


async def opened(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, tuple[datetime, str | None]]:
    """These alerts' fired_at, and the silence that held their AlertFired back (None: it went out)."""
    if not ids:
        return {}
    rows = await conn.execute(
        sa.text(
            f"SELECT alert_id, fired_at, silence_id FROM {SCHEMA}.alerts WHERE alert_id = ANY(CAST(:ids AS text[]))"
        ),
        {"ids": list(ids)},
    )
    return {r.alert_id: (r.fired_at, r.silence_id) for r in rows}


ALERT_COLUMNS = (
    "alert_id, rule, segment, fired_at, resolved_at, explanation, resolution, acknowledged_by, acknowledged_at, "
    "ack_note, silence_id, flaps"
)


async def list_alerts(
    conn: AsyncConnection,
    state: str,
    rule: str | None,
    segment: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    before: tuple[datetime, str] | None,
) -> Sequence[Row[tuple[object, ...]]]:
    where, params = [], {"limit": limit}
    if state == "firing":
        where.append("resolved_at IS NULL")
    elif state == "resolved":
        where.append("resolved_at IS NOT NULL")
    for name, value, clause in (
        ("rule", rule, "rule = :rule"),
        ("segment", segment, "segment = :segment"),
        ("since", since, "fired_at >= :since"),
        ("until", until, "fired_at < :until"),
    ):
        if value is not None:
            where.append(clause)
            params[name] = value  # type: ignore[assignment]
    if before is not None:
        where.append("(fired_at, alert_id) < (:before_at, :before_id)")
        params["before_at"], params["before_id"] = before  # type: ignore[assignment]
    sql = f"SELECT {ALERT_COLUMNS} FROM {SCHEMA}.alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY fired_at DESC, alert_id DESC LIMIT :limit"
    return (await conn.execute(sa.text(sql), params)).all()


async def get_alert(conn: AsyncConnection, alert_id: str, lock: bool = False) -> Row[tuple[object, ...]] | None:
    sql = f"SELECT {ALERT_COLUMNS} FROM {SCHEMA}.alerts WHERE alert_id = :id" + (" FOR UPDATE" if lock else "")
    return (await conn.execute(sa.text(sql), {"id": alert_id})).one_or_none()


async def acknowledge(conn: AsyncConnection, alert_id: str, by: str, note: str | None, at: datetime) -> None:
    await conn.execute(
        sa.text(
            f"UPDATE {SCHEMA}.alerts SET acknowledged_by = :by, ack_note = :note, acknowledged_at = :at "
            "WHERE alert_id = :id"
        ),
        {"id": alert_id, "by": by, "note": note, "at": at},
    )


async def insert_silence(conn: AsyncConnection, silence: Silence) -> None:
    await conn.execute(
        sa.text(
            f"""INSERT INTO {SCHEMA}.silences
                (silence_id, matcher, rule, starts_at, ends_at, created_by, comment, created_at)
                VALUES (:silence_id, :matcher, :rule, :starts_at, :ends_at, :created_by, :comment, :created_at)"""
        ),
        {
            "silence_id": silence.silence_id,
            "matcher": silence.matcher,
            "rule": silence.rule,
            "starts_at": silence.starts_at,
            "ends_at": silence.ends_at,
            "created_by": silence.created_by,
            "comment": silence.comment,
            "created_at": silence.created_at,
        },
    )


async def list_silences(conn: AsyncConnection, now: datetime, include_expired: bool) -> list[Silence]:
    where = "deleted_at IS NULL" + ("" if include_expired else " AND ends_at > :now")
    rows = await conn.execute(
        sa.text(
            f"""SELECT silence_id, matcher, rule, starts_at, ends_at, created_by, comment, created_at
                FROM {SCHEMA}.silences WHERE {where} ORDER BY created_at DESC LIMIT 1000"""
        ),
        {"now": now},
    )
    return [Silence(**r._mapping) for r in rows]


async def delete_silence(conn: AsyncConnection, silence_id: str, now: datetime) -> bool:
    result = await conn.execute(
        sa.text(
            f"UPDATE {SCHEMA}.silences SET deleted_at = :now WHERE silence_id = :id AND deleted_at IS NULL"
            " RETURNING silence_id"
        ),
        {"id": silence_id, "now": now},
    )
    return result.one_or_none() is not None


async def prune(conn: AsyncConnection, arrivals_before: datetime, days_before: date) -> None:
    """Arrivals before `arrivals_before`; the days held before `days_before` (a segment's row with
    none after it goes). A row a mirror batch has locked is left to the next prune: the round never
    waits on a batch (which holds `segments` rows first, then its days rows: waiting here could
    close a cycle with a batch waiting on a row this round already trimmed)."""
    await conn.execute(sa.text(f"DELETE FROM {SCHEMA}.arrivals WHERE bucket < :at"), {"at": arrivals_before})
    due = f"SELECT segment FROM {SCHEMA}.days WHERE first_day < CAST(:day AS date) FOR UPDATE SKIP LOCKED"
    await conn.execute(
        sa.text(
            f"""WITH due AS ({due}) DELETE FROM {SCHEMA}.days d USING due
                WHERE d.segment = due.segment AND d.first_day + cardinality(d.promoters) <= CAST(:day AS date)"""
        ),
        {"day": days_before},
    )
    await conn.execute(
        sa.text(
            f"""WITH due AS ({due}) UPDATE {SCHEMA}.days d SET first_day = CAST(:day AS date),
                       promoters = d.promoters[(CAST(:day AS date) - d.first_day) + 1:],
                       passives = d.passives[(CAST(:day AS date) - d.first_day) + 1:],
                       detractors = d.detractors[(CAST(:day AS date) - d.first_day) + 1:]
                FROM due WHERE d.segment = due.segment"""
        ),
        {"day": days_before},
    )
    await conn.execute(
        sa.text(
            f"""WITH due AS (
                    SELECT segment FROM {SCHEMA}.rate_days
                    WHERE first_day + cardinality(invited) <= CAST(:day AS date) FOR UPDATE SKIP LOCKED)
                DELETE FROM {SCHEMA}.rate_days r USING due WHERE r.segment = due.segment"""
        ),
        {"day": days_before},
    )


async def count_firing(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        sa.text(f"SELECT rule, count(*) AS n FROM {SCHEMA}.alerts WHERE resolved_at IS NULL GROUP BY rule")
    )
    return {r.rule: int(r.n) for r in rows}
