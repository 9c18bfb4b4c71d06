"""Follow-up's schema, and how a batch writes the rows it found new into it (every sub-domain's
repository uses these). Never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import UNIQUE_VIOLATION, copy_rows, sqlstate_of

SCHEMA = "followup"


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
