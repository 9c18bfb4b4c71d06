"""Delivery's tables (schema `delivery`): subscriptions, the queue of deliveries (one per
subscription and event, its id the webhook-id), each attempt, and remembered erasure requests."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from delivery_service.domain import Format, Subscription
from shared.db import copy_rows, fetch, split_list
from shared.privacy import Erasures
from shared.sealed import Sealer

SCHEMA = "delivery"
ERASURES = Erasures(SCHEMA)

SUBSCRIPTION_COLUMNS = (
    "subscription_id, url, description, events, kinds, segments, format, status, disabled_reason, "
    "failing_since, created_at, updated_at, previous_secret_until"
)


def new_subscription_id() -> str:
    return "wh_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    """A subscription as the API shows it (never its secrets)."""

    subscription_id: str
    url: str
    description: str | None
    events: list[str]
    kinds: list[str] | None
    segments: list[str] | None
    format: Format
    status: str
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    previous_secret_until: datetime | None

    def matcher(self) -> Subscription:
        return Subscription(
            self.subscription_id,
            self.url,
            frozenset(self.events),
            None if self.kinds is None else frozenset(self.kinds),
            None if self.segments is None else frozenset(self.segments),
            self.format,
            self.status,  # type: ignore[arg-type]
        )


def _stored(row: Any) -> StoredSubscription:
    return StoredSubscription(**dict(row._mapping))


def place(subscription_id: str) -> str:
    """What a subscription's sealed secrets are bound to (shared/sealed.py): both columns alike, so a
    rotation moves `secret` into `previous_secret` as it is."""
    return f"{SCHEMA}.subscriptions:{subscription_id}"


async def insert_subscription(
    conn: AsyncConnection,
    sealer: Sealer,
    *,
    url: str,
    description: str | None,
    events: Sequence[str],
    kinds: Sequence[str] | None,
    segments: Sequence[str] | None,
    format: Format,
    secret: str,
    now: datetime,
) -> StoredSubscription:
    subscription_id = new_subscription_id()
    row = (
        await conn.execute(
            sa.text(
                f"""INSERT INTO {SCHEMA}.subscriptions
                    (subscription_id, url, description, events, kinds, segments, format, status, secret,
                     created_at, updated_at)
                VALUES (:id, :url, :description, :events, :kinds, :segments, :format, 'active', :secret, :now, :now)
                RETURNING {SUBSCRIPTION_COLUMNS}"""
            ),
            {
                "id": subscription_id,
                "url": url,
                "description": description,
                "events": list(events),
                "kinds": None if kinds is None else list(kinds),
                "segments": None if segments is None else list(segments),
                "format": format,
                "secret": sealer.seal(secret, place(subscription_id)),
                "now": now,
            },
        )
    ).one()
    return _stored(row)


async def subscriptions(conn: AsyncConnection, limit: int, after: str | None) -> list[StoredSubscription]:
    rows = await conn.execute(
        sa.text(
            f"SELECT {SUBSCRIPTION_COLUMNS} FROM {SCHEMA}.subscriptions "
            "WHERE CAST(:after AS text) IS NULL OR subscription_id > :after ORDER BY subscription_id LIMIT :limit"
        ),
        {"after": after, "limit": limit},
    )
    return [_stored(r) for r in rows]


async def subscription(conn: AsyncConnection, subscription_id: str, lock: bool = False) -> StoredSubscription | None:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT {SUBSCRIPTION_COLUMNS} FROM {SCHEMA}.subscriptions WHERE subscription_id = :id"
                + (" FOR UPDATE" if lock else "")
            ),
            {"id": subscription_id},
        )
    ).one_or_none()
    return None if row is None else _stored(row)


async def update_subscription(
    conn: AsyncConnection, subscription_id: str, changes: dict[str, Any], now: datetime
) -> StoredSubscription:
    """Set these columns (names from the API's own model, never from input)."""
    assignments = ", ".join(f"{column} = :{column}" for column in changes)
    row = (
        await conn.execute(
            sa.text(
                f"UPDATE {SCHEMA}.subscriptions SET {assignments}, updated_at = :now "
                f"WHERE subscription_id = :id RETURNING {SUBSCRIPTION_COLUMNS}"
            ),
            {**changes, "id": subscription_id, "now": now},
        )
    ).one()
    return _stored(row)


async def rotate_secret(conn: AsyncConnection, sealer: Sealer, subscription_id: str, secret: str) -> None:
    """The new secret signs from now; the current one becomes the previous (its end set by the caller)."""
    await conn.execute(
        sa.text(
            f"UPDATE {SCHEMA}.subscriptions SET previous_secret = secret, secret = :secret WHERE subscription_id = :id"
        ),
        {"secret": sealer.seal(secret, place(subscription_id)), "id": subscription_id},
    )


async def delete_subscription(conn: AsyncConnection, subscription_id: str) -> bool:
    result = await conn.execute(
        sa.text(f"DELETE FROM {SCHEMA}.subscriptions WHERE subscription_id = :id"), {"id": subscription_id}
    )
    return bool(result.rowcount)


# --- the consumer: events in, deliveries queued ---


async def receiving(conn: AsyncConnection) -> list[Subscription]:
    """Subscriptions that queue events (active and paused), share-locked for the batch's
    transaction: one deleted meanwhile waits for the batch to commit, then takes its deliveries."""
    rows = await conn.execute(
        sa.text(
            f"SELECT {SUBSCRIPTION_COLUMNS} FROM {SCHEMA}.subscriptions WHERE status <> 'disabled' "
            "ORDER BY subscription_id FOR SHARE"
        )
    )
    return [_stored(r).matcher() for r in rows]


DELIVERY_COLUMNS = (
    "delivery_id", "subscription_id", "event_type", "lane", "respondent_key", "occurred_at", "payload", "status",
    "next_attempt_at", "created_at",
)  # fmt: skip


async def enqueue(conn: AsyncConnection, rows: Sequence[tuple[object, ...]]) -> list[str]:
    """Queue deliveries (DELIVERY_COLUMNS, in the events' order); a redelivered event's are there
    already and are skipped. Returns the event type of each new one."""
    if not rows:
        return []
    new = await copy_rows(
        conn,
        f"{SCHEMA}.deliveries",
        DELIVERY_COLUMNS,
        rows,
        "ON CONFLICT (delivery_id) DO NOTHING RETURNING event_type",
    )
    return [r[0] for r in new]


async def forget(conn: AsyncConnection, keys: Iterable[str], now: datetime) -> int:
    """Erasure: these people's queued deliveries are cancelled and every payload naming them dropped."""
    result = await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.deliveries SET payload = NULL,
                    status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
                    last_error = CASE WHEN status = 'pending' THEN 'erased' ELSE last_error END,
                    finished_at = coalesce(finished_at, :now)
                WHERE respondent_key = ANY(string_to_array(:keys, :sep))"""
        ),
        dict(zip(("keys", "sep"), split_list(set(keys)), strict=True), now=now),
    )
    return int(result.rowcount)


# --- the worker: claim, attempt, record ---


@dataclass(frozen=True, slots=True)
class Target:
    """What the worker needs of a subscription to send to it."""

    subscription_id: str
    url: str
    format: Format
    secrets: tuple[str, ...]  # the current one first; the previous one during a rotation's overlap


_TARGETS = f"""SELECT subscription_id, url, format, secret,
                      CASE WHEN previous_secret_until > now() THEN previous_secret END
               FROM {SCHEMA}.subscriptions WHERE """


def _target(row: Any, sealer: Sealer) -> Target:
    sealed = (row[3],) if row[4] is None else (row[3], row[4])
    return Target(row[0], row[1], row[2], tuple(sealer.open(s, place(row[0])) for s in sealed))


async def targets(conn: AsyncConnection, sealer: Sealer) -> dict[str, Target]:
    """Active subscriptions, with the secrets that sign for them now (opened)."""
    return {r[0]: _target(r, sealer) for r in await fetch(conn, _TARGETS + "status = 'active'")}


async def target(conn: AsyncConnection, sealer: Sealer, subscription_id: str) -> Target | None:
    """One subscription, whatever its status (a test goes to a paused one too)."""
    rows = await fetch(conn, _TARGETS + "subscription_id = $1", subscription_id)
    return _target(rows[0], sealer) if rows else None


async def sealed_secrets(conn: AsyncConnection) -> list[tuple[str, str, str | None]]:
    """Every subscription's (id, sealed secret, sealed previous secret), locked: for a key rotation."""
    rows = await fetch(conn, f"SELECT subscription_id, secret, previous_secret FROM {SCHEMA}.subscriptions FOR UPDATE")
    return [(r[0], r[1], r[2]) for r in rows]


async def reseal(conn: AsyncConnection, subscription_id: str, secret: str, previous: str | None) -> None:
    await conn.execute(
        sa.text(f"UPDATE {SCHEMA}.subscriptions SET secret = :s, previous_secret = :p WHERE subscription_id = :id"),
        {"s": secret, "p": previous, "id": subscription_id},
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery_id: str
    subscription_id: str
    event_type: str
    occurred_at: datetime
    payload: bytes | None
    attempt: int  # this attempt's number, from 1
    created_at: datetime


async def claim(conn: AsyncConnection, free: dict[str, int], lease_s: float) -> list[Claimed]:
    """Up to `free[s]` due deliveries of each subscription s, leased for `lease_s` (a worker that
    dies holding them: they are due again after it). Only the oldest pending delivery of each
    ticket, alert or follow-up per subscription is due, so an endpoint gets them in order. Rows
    another worker is claiming are skipped (FOR UPDATE SKIP LOCKED)."""
    if not free:
        return []
    ids = list(free)
    rows = await fetch(
        conn,
        f"""WITH picked AS (
                SELECT c.delivery_id
                FROM unnest(string_to_array($1, $2), $3::int[]) AS f(subscription_id, n)
                CROSS JOIN LATERAL (
                    SELECT d.delivery_id FROM {SCHEMA}.deliveries d
                    WHERE d.subscription_id = f.subscription_id AND d.status = 'pending'
                      AND d.next_attempt_at <= now()
                      -- the oldest pending of its lane (one probe of deliveries_lane: a lane is one
                      -- column so no other index can serve, whatever the statistics say)
                      AND d.seq = (
                          SELECT e.seq FROM {SCHEMA}.deliveries e WHERE e.lane = d.lane AND e.status = 'pending'
                          ORDER BY e.seq LIMIT 1)
                    ORDER BY d.next_attempt_at LIMIT f.n
                    FOR UPDATE SKIP LOCKED
                ) c
            )
            UPDATE {SCHEMA}.deliveries d
            SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $4)
            FROM picked WHERE d.delivery_id = picked.delivery_id
            RETURNING d.delivery_id, d.subscription_id, d.event_type, d.occurred_at, d.payload, d.attempts,
                      d.created_at, d.seq""",
        *split_list(ids),
        [free[i] for i in ids],
        lease_s,
    )
    rows.sort(key=lambda r: r[7])  # the order they were queued in
    return [Claimed(*r[:7]) for r in rows]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One attempt's outcome, to store."""

    delivery_id: str
    subscription_id: str
    attempt: int
    at: datetime
    status: str  # the delivery's status after it: pending (retry), delivered, failed
    retry_in_s: float | None
    status_code: int | None
    error: str | None
    latency_ms: float
    gone: bool = False


async def record(conn: AsyncConnection, outcomes: Sequence[Recorded]) -> None:
    """Store attempts and move their deliveries on. An outcome for an attempt that is no longer the
    delivery's latest (its lease ran out and another attempt started) or for a delivery no longer
    pending (erased) is kept in the attempts but changes nothing else."""
    if not outcomes:
        return
    await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.deliveries d SET
                    status = v.status,
                    next_attempt_at = CASE WHEN v.status = 'pending'
                        THEN now() + make_interval(secs => v.retry_in) ELSE d.next_attempt_at END,
                    finished_at = CASE WHEN v.status = 'pending' THEN NULL ELSE now() END,
                    last_status_code = v.code, last_error = v.error, last_latency_ms = v.latency
                FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS int[]), CAST(:statuses AS text[]),
                            CAST(:retry AS float8[]), CAST(:codes AS int[]), CAST(:errors AS text[]),
                            CAST(:latency AS float8[])) AS v(delivery_id, attempt, status, retry_in, code, error, latency)
                WHERE d.delivery_id = v.delivery_id AND d.attempts = v.attempt AND d.status = 'pending'"""
        ),
        {
            "ids": [o.delivery_id for o in outcomes], "attempts": [o.attempt for o in outcomes],
            "statuses": [o.status for o in outcomes], "retry": [o.retry_in_s or 0.0 for o in outcomes],
            "codes": [o.status_code for o in outcomes], "errors": [o.error for o in outcomes],
            "latency": [o.latency_ms for o in outcomes],
        },
    )  # fmt: skip
    await copy_rows(
        conn,
        f"{SCHEMA}.attempts",
        ("delivery_id", "attempt", "at", "status_code", "error", "latency_ms"),
        [(o.delivery_id, o.attempt, o.at, o.status_code, o.error, o.latency_ms) for o in outcomes],
        "ON CONFLICT DO NOTHING",
    )


async def release(conn: AsyncConnection, claimed: Sequence[tuple[str, int]]) -> None:
    """Claimed deliveries given back unattempted (their subscription paused, deleted or disabled
    meanwhile): due again, the claim's attempt not counted."""
    if not claimed:
        return
    await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.deliveries d SET attempts = d.attempts - 1, next_attempt_at = now()
                FROM unnest(CAST(:ids AS text[]), CAST(:attempts AS int[])) AS v(delivery_id, attempt)
                WHERE d.delivery_id = v.delivery_id AND d.attempts = v.attempt AND d.status = 'pending'"""
        ),
        {"ids": [c[0] for c in claimed], "attempts": [c[1] for c in claimed]},
    )


async def note_health(
    conn: AsyncConnection, outcomes: Sequence[Recorded], disable_after_s: float
) -> list[tuple[str, str]]:
    """Subscriptions' failing streaks: a delivered attempt ends one, a failed one starts one. A
    subscription failing for `disable_after_s`, or answered 410 Gone, is disabled; returns those
    (id, reason)."""
    succeeded = {o.subscription_id for o in outcomes if o.status == "delivered"}
    failing = {o.subscription_id for o in outcomes if o.status != "delivered"} - succeeded
    gone = {o.subscription_id for o in outcomes if o.gone}
    if succeeded:
        await conn.execute(
            sa.text(
                f"UPDATE {SCHEMA}.subscriptions SET failing_since = NULL "
                "WHERE subscription_id = ANY(CAST(:ids AS text[])) AND failing_since IS NOT NULL"
            ),
            {"ids": sorted(succeeded)},
        )
    if not failing and not gone:
        return []
    rows = await conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.subscriptions SET
                    failing_since = coalesce(failing_since, now()),
                    status = CASE WHEN subscription_id = ANY(CAST(:gone AS text[]))
                                   OR coalesce(failing_since, now()) <= now() - make_interval(secs => :after)
                             THEN 'disabled' ELSE status END,
                    disabled_reason = CASE
                        WHEN subscription_id = ANY(CAST(:gone AS text[])) THEN 'the endpoint answered 410 Gone'
                        WHEN coalesce(failing_since, now()) <= now() - make_interval(secs => :after)
                        THEN 'every attempt failed since ' || to_char(failing_since AT TIME ZONE 'UTC',
                                                                      'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                        ELSE disabled_reason END,
                    updated_at = now()
                WHERE subscription_id = ANY(CAST(:ids AS text[])) AND status = 'active'
                RETURNING subscription_id, status, disabled_reason"""
        ),
        {"ids": sorted(failing | gone), "gone": sorted(gone), "after": disable_after_s},
    )
    return [(r.subscription_id, r.disabled_reason) for r in rows if r.status == "disabled"]


# --- operations ---


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery_id: str
    event_type: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_latency_ms: float | None
    seq: int


async def deliveries(
    conn: AsyncConnection, subscription_id: str, status: str | None, limit: int, before: int | None
) -> list[DeliveryRow]:
    """Newest first; `before`: a seq from the previous page."""
    rows = await conn.execute(
        sa.text(
            f"""SELECT delivery_id, event_type, status, attempts, created_at,
                       CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, finished_at,
                       last_status_code, last_error, last_latency_ms, seq
                FROM {SCHEMA}.deliveries
                WHERE subscription_id = :id AND (CAST(:status AS text) IS NULL OR status = :status)
                  AND (CAST(:before AS bigint) IS NULL OR seq < :before)
                ORDER BY seq DESC LIMIT :limit"""
        ),
        {"id": subscription_id, "status": status, "before": before, "limit": limit},
    )
    return [DeliveryRow(**dict(r._mapping)) for r in rows]


@dataclass(frozen=True, slots=True)
class AttemptRow:
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    latency_ms: float


async def attempts_of(conn: AsyncConnection, delivery_ids: Sequence[str]) -> dict[str, list[AttemptRow]]:
    rows = await conn.execute(
        sa.text(
            f"SELECT delivery_id, attempt, at, status_code, error, latency_ms FROM {SCHEMA}.attempts "
            "WHERE delivery_id = ANY(CAST(:ids AS text[])) ORDER BY delivery_id, attempt"
        ),
        {"ids": list(delivery_ids)},
    )
    found: dict[str, list[AttemptRow]] = {}
    for r in rows:
        found.setdefault(r.delivery_id, []).append(AttemptRow(r.attempt, r.at, r.status_code, r.error, r.latency_ms))
    return found


async def retry(conn: AsyncConnection, subscription_id: str, delivery_id: str) -> str | None:
    """A failed delivery due again now (its attempts start over); returns the status it had
    (`erased` if its payload is gone), None if there is no such delivery. Only a failed one is retried."""
    row = (
        await conn.execute(
            sa.text(
                f"SELECT status, payload IS NOT NULL AS has_payload FROM {SCHEMA}.deliveries "
                "WHERE subscription_id = :s AND delivery_id = :d FOR UPDATE"
            ),
            {"s": subscription_id, "d": delivery_id},
        )
    ).one_or_none()
    if row is None:
        return None
    if not row.has_payload:
        return "erased"
    if row.status == "failed":
        await conn.execute(
            sa.text(
                f"UPDATE {SCHEMA}.deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), "
                "finished_at = NULL WHERE delivery_id = :d"
            ),
            {"d": delivery_id},
        )
    return str(row.status)


async def prune(conn: AsyncConnection, older_than_days: float) -> int:
    result = await conn.execute(
        sa.text(
            f"DELETE FROM {SCHEMA}.deliveries WHERE status <> 'pending' "
            "AND finished_at < now() - make_interval(secs => :s)"
        ),
        {"s": older_than_days * 86_400},
    )
    return int(result.rowcount)


async def queue_state(conn: AsyncConnection) -> tuple[int, float]:
    """Pending deliveries, and the age in seconds of the oldest."""
    row = (
        await conn.execute(
            sa.text(
                f"SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age "
                f"FROM {SCHEMA}.deliveries WHERE status = 'pending'"
            )
        )
    ).one()
    return int(row.n), float(row.age)


async def status_counts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(sa.text(f"SELECT status, count(*) AS n FROM {SCHEMA}.subscriptions GROUP BY status"))
    return {r.status: int(r.n) for r in rows}
