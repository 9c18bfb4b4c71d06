"""The audit log: who did what to the loop's configuration and people's data, and when. One
append-only table (`auth.audit_log`; the database refuses UPDATE, DELETE and TRUNCATE on it),
written in the same transaction as the change it records, read by `admin` keys
(`GET /v1/audit`, `nps audit`). It never holds personal data: an erasure is recorded by its
erasure_id, not by whom it erased."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

SCHEMA = "auth"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str  # the API key's name, or `cli:<user>` / `nps up`
    action: str  # key.created, key.revoked, respondent.erasure_requested, ...
    subject: str  # what it was done to: a key's name, an erasure id
    detail: dict[str, Any] = field(default_factory=dict)


async def record(
    conn: AsyncConnection, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None
) -> None:
    await conn.execute(
        sa.text(
            f"INSERT INTO {SCHEMA}.audit_log (actor, action, subject, detail) "
            "VALUES (:actor, :action, :subject, CAST(:detail AS jsonb))"
        ),
        {"actor": actor, "action": action, "subject": subject, "detail": json.dumps(detail or {})},
    )


async def entries(conn: AsyncConnection, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
    """The newest entries first, of one action if given."""
    rows = await conn.execute(
        sa.text(
            f"SELECT id, at, actor, action, subject, detail FROM {SCHEMA}.audit_log "
            "WHERE CAST(:action AS text) IS NULL OR action = :action ORDER BY id DESC LIMIT :limit"
        ),
        {"action": action, "limit": limit},
    )
    return [AuditEntry(r.id, r.at, r.actor, r.action, r.subject, dict(r.detail)) for r in rows]
