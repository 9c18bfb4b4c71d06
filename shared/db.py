"""Database plumbing every service shares: engines, reachability, migrations.

Each service owns one PostgreSQL schema and its own Alembic history (version table inside
that schema), so services can be migrated, deployed and dropped independently."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from itertools import chain, count
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from sqlalchemy import Connection, MetaData, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared import deadline
from shared.pseudonyms import Pseudonyms
from shared.sealed import Sealer
from shared.settings import async_url

if TYPE_CHECKING:  # alembic costs every service process ~0.1 s to import; only migrations need it
    from alembic.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")

# Every schema's migrations, in order: `auth` (the API keys every service reads) first, since its
# first migration takes over the keys ingest kept before; `themes` after `scoring`, since its first
# migration (themes_0001) moves the theme tables scoring's history created (scoring_0005-0007) into
# its own schema. The other services have no order between them.
SERVICE_SCHEMAS = {
    "auth": "shared:migrations",
    "ingest": "ingest_service:migrations",
    "scoring": "scoring_service:migrations",
    "themes": "themes_service:migrations",
    "followup": "followup_service:migrations",
    "alerts": "alerts_service:migrations",
    "delivery": "delivery_service:migrations",
}


# Connections a pool opens beyond its `pool_size` for a burst, and closes after it.
MAX_OVERFLOW = 5
# A pooled connection unused for longer than this is pinged before it is handed out.
RESTED_S = 1.0
_RESTED_AT = "nps_rested_at"


def make_engine(
    url: str, *, pool_size: int = 10, timeout_s: float = 10.0, rested_s: float = RESTED_S, name: str | None = None
) -> AsyncEngine:
    """An engine whose waits are bounded by `timeout_s`: for a connection from a full pool
    (`pool_timeout`) and for a new one to be opened (asyncpg's connect timeout: a server that
    accepts the socket but never answers). Work inside a `shared.deadline.Deadline` holds the
    connections it checks out, and a connection the pool gives up on is terminated (`track`). A
    pooled connection is pinged before use only after resting `rested_s` (`ping_when_rested`).
    `name` is each connection's `application_name`: `pg_stat_activity` says which service holds it."""
    # hide_parameters: a database error's message never carries the statement's values (respondent
    # ids, comments); those messages reach logs at WARNING and above.
    engine = create_async_engine(
        async_url(url),
        # Up to `pool_size` connections are kept, and MAX_OVERFLOW more opened for a burst and closed after it.
        # Overflow connections are expensive: PostgreSQL forks a backend, and the driver introspects
        # the JSON types on each one. With 5 kept and 10 overflow, follow-up opened ~11 a second
        # under the loop's sustained load (GETs queued behind a batch, then all at once).
        # LIFO: at a low rate the same few connections are reused and stay fresh (no ping, see
        # ping_when_rested); the others rest until a burst needs them.
        pool_size=pool_size,
        max_overflow=MAX_OVERFLOW,
        pool_use_lifo=True,
        pool_timeout=timeout_s,
        connect_args={"timeout": timeout_s, **({"server_settings": {"application_name": name}} if name else {})},
        hide_parameters=True,
    )
    deadline.track(engine)
    ping_when_rested(engine, rested_s)
    return engine


def ping_when_rested(engine: AsyncEngine, rested_s: float) -> None:
    """Ping a pooled connection before use only when it has rested `rested_s` or more.

    SQLAlchemy's `pool_pre_ping` pings on every checkout. With asyncpg, that ping is three round
    trips (BEGIN, `;`, ROLLBACK). A query API's read paid it on every request, and so did a
    consumer's transaction on every batch: about half of what a one-row GET cost (a checkout and
    `SELECT 1` in a loop, docs/benchmarks.md). A connection used within the last second is as good as a pinged one. A server
    that went away since is met by the statement itself. Its error is a disconnect: the pool drops
    every connection older than it, consumers retry the batch, and a query answers 503. Registered
    after `deadline.track`, so a deadline holds the connection while its ping waits."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _rests(dbapi_connection: Any, record: Any) -> None:
        record.info[_RESTED_AT] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_rested(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        rested_at = record.info.get(_RESTED_AT)
        if rested_at is None or time.monotonic() - rested_at < rested_s:
            return  # just opened, or used a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool invalidates this connection and checks out another (a new one if need be).
            raise DisconnectionError(describe_failure(exc)) from exc


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (SQLAlchemy's, through the driver's error it wraps), if any."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def database_unavailable(exc: BaseException) -> bool:
    """The database is away (down, restarting, unreachable, a connection cut): worth retrying,
    not a bug in our code."""
    if isinstance(exc, DBAPIError):
        # SQLSTATE class 08: connection exceptions; class 57: the server is shutting down or starting
        # up (57P03 "not yet accepting connections", right after a restart), which asyncpg's
        # adapter raises as a plain DBAPIError.
        state = sqlstate_of(exc) or ""
        return (
            exc.connection_invalidated
            or isinstance(exc, OperationalError | InterfaceError)
            or state.startswith(("08", "57"))
        )
    # SQLAlchemy's TimeoutError: no connection came free in the pool within its timeout.
    return isinstance(exc, OSError | TimeoutError | ConnectionError | SQLAlchemyTimeoutError)


# SQLSTATEs of a transaction that lost a race with another, not a bug: deadlock_detected (two
# transactions waited on each other's rows; PostgreSQL aborted this one) and serialization_failure.
# Run again from the start, the transaction goes through.
LOST_A_RACE = frozenset({"40P01", "40001"})


def lost_a_race(exc: BaseException) -> bool:
    """The transaction was aborted for another's sake (a deadlock): retry it whole."""
    return isinstance(exc, DBAPIError) and sqlstate_of(exc) in LOST_A_RACE


def describe_failure(exc: BaseException) -> str:
    """What failed, for a log line above debug: the kind of error, never its message (a database's
    message can quote the values it refused: ids, comments)."""
    cause = getattr(exc, "orig", None)
    if cause is None:
        return type(exc).__name__
    state = sqlstate_of(exc)
    return f"{type(exc).__name__} ({type(cause).__name__}{f', SQLSTATE {state}' if state else ''})"


async def driver_of(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under `conn`, as it is: outside a transaction, each statement it runs
    commits on its own (one round trip, where BEGIN and COMMIT would add two)."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert isinstance(driver, asyncpg.Connection)
    return driver


class HeldConnection:
    """One connection kept by the one task that uses it for all its statements (ingest's recorder,
    its prompt reader): no pool checkout (and its ping) per use, and the asyncpg connection under it
    looked up once (SQLAlchemy's `get_raw_connection` costs ~8 us, a greenlet's round trip, each
    time). One a deadline closed (shared/deadline.py), or `drop`ped after a failure, is given up;
    the next use opens another."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._held: AsyncConnection | None = None
        self._driver: asyncpg.Connection | None = None  # the asyncpg connection under it, dropped with it

    @property
    def current(self) -> asyncpg.Connection | None:
        """The asyncpg connection held now, if any (never opens one)."""
        return self._driver

    async def driver(self) -> asyncpg.Connection:
        if self._driver is not None and self._driver.is_closed():
            await self.drop()  # closed under a statement whose deadline passed
        if self._held is None:
            self._held = await self._engine.connect()
        if self._driver is None:
            self._driver = await driver_of(self._held)
        return self._driver

    async def drop(self) -> None:
        """Give the connection up: the pool closes it."""
        self._driver = None
        if self._held is not None:
            held, self._held = self._held, None
            with contextlib.suppress(Exception):
                await held.invalidate()

    async def close(self) -> None:
        """Give the connection back (at shutdown, before the engine is disposed)."""
        self._driver = None
        if self._held is not None:
            held, self._held = self._held, None
            try:
                await held.close()
            except Exception as exc:  # a statement cut short by the stop: the engine closes it anyway
                log.debug("closing a held connection failed: %s", type(exc).__name__)


async def fetch_alone(driver: asyncpg.Connection, statement: str, *args: Any) -> list[asyncpg.Record]:
    """One statement straight through asyncpg on `driver`: committed on its own outside a
    transaction (`driver_of`), part of it inside one (`fetch`); errors are SQLAlchemy's, as from
    `conn.execute`."""
    deadline.hold(driver)
    with _as_sqlalchemy_errors(statement):
        rows: list[asyncpg.Record] = await driver.fetch(statement, *args)
        return rows


async def _driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under `conn`, inside the caller's transaction."""
    driver = await driver_of(conn)
    deadline.hold(driver)
    if not driver.is_in_transaction():
        await conn.execute(text("SELECT 1"))  # SQLAlchemy begins the transaction on first use
    return driver


@contextlib.contextmanager
def _as_sqlalchemy_errors(statement: str) -> Iterator[None]:
    """asyncpg's errors as SQLAlchemy's (what `conn.execute` raises, and what the retry logic and
    the API's error handlers look at), the statement's values hidden."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        state = exc.sqlstate or ""
        kind = (
            IntegrityError
            if state.startswith("23")
            else OperationalError
            if state.startswith(("08", "57"))
            else DBAPIError
        )
        raise kind(statement, None, exc, hide_parameters=True) from exc
    except (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError) as exc:
        # InternalClientError: asyncpg's protocol is out of step with the server, as when the server
        # ends the connection as a statement starts (its FATAL is consumed and no ReadyForQuery
        # follows): the connection is as unusable as a closed one, and is treated so.
        raise InterfaceError(statement, None, exc, hide_parameters=True) from exc


async def fetch(conn: AsyncConnection, statement: str, *args: Any) -> list[asyncpg.Record]:
    """A hot path's query straight through asyncpg (`$1` parameters) in the caller's transaction:
    its rows are asyncpg records (by index, by name, or unpacked), without SQLAlchemy's Row
    objects and result processing, which cost several times the query's own decoding on the
    tens of thousands of rows a batch reads. Errors are SQLAlchemy's, as from `conn.execute`."""
    return await fetch_alone(await _driver(conn), statement, *args)


_SEPARATORS = ("\x1f", "\x1e", "\x1d", "\x1c")  # control characters: ids and keys have none


def split_list(values: Iterable[str]) -> tuple[str, str]:
    """Strings as the two parameters of `string_to_array($n, $m)`, in place of a text[] parameter.
    asyncpg encodes a list parameter checking each element against three ABCs, 0.4-0.8 µs
    apiece: 4-8 ms for a batch's 10,000 keys, where one joined string costs a tenth of that.
    string_to_array is immutable, so under the custom plans the consumers force PostgreSQL folds
    it into a constant array, as it would the list's (a hashed `= ANY`, estimates from its
    length). The separator is one no value contains. For lookups (`= ANY`, `unnest` to lock):
    a lone empty string comes back twice."""
    items = list(values)
    everything = "".join(items)
    sep = next(s for s in chain(_SEPARATORS, map(chr, count(0xE000))) if s not in everything)
    if items == [""]:
        return sep, sep  # string_to_array('', sep) is empty; this is {"", ""}
    return sep.join(items), sep


UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE, on an IntegrityError's `orig`


async def copy_rows(
    conn: AsyncConnection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    then: str = "",
) -> list[Any]:
    """INSERT many rows into `table` (schema-qualified) in the caller's transaction by a binary COPY,
    in the rows' order. Without `then`, straight into the table: a row that breaks a constraint
    fails the whole COPY (and the transaction) with an IntegrityError. With `then` (an INSERT's
    tail, `ON CONFLICT ... DO NOTHING RETURNING ...`, whose rows are returned), through a
    session-local staging table moved in one statement: that costs the staging table's write
    and a second pass, about as much again. Either is three times quicker than `unnest` of
    parameter arrays for a batch of 10,000 wide rows (asyncpg checks every array element's type;
    COPY encodes rows as they are). Errors are SQLAlchemy's, as from `conn.execute`."""
    driver = await _driver(conn)
    cols = ", ".join(columns)
    schema, _, name = table.rpartition(".")
    if not then:
        with _as_sqlalchemy_errors(f"COPY {table} ({cols}) FROM STDIN (FORMAT binary)"):
            await driver.copy_records_to_table(name, schema_name=schema or None, records=rows, columns=columns)
            return []
    staging = "copy_" + hashlib.sha1(f"{table}({cols})".encode()).hexdigest()[:16]
    statement = (
        f"WITH moved AS (DELETE FROM {staging} RETURNING *) "
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM moved ORDER BY copy_seq {then}"
    )
    with _as_sqlalchemy_errors(statement):
        await driver.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
            f"SELECT {cols}, 0::bigint AS copy_seq FROM {table} WITH NO DATA"
        )
        await driver.copy_records_to_table(
            staging, records=[(*row, seq) for seq, row in enumerate(rows)], columns=[*columns, "copy_seq"]
        )
        return list(await driver.fetch(statement))


class InOrder:
    """A transaction's statements run one after another in the background while the caller goes on
    with the Python work of the next ones: PostgreSQL (another core) and the caller's CPU overlap
    instead of taking turns. Use as `async with InOrder() as writes:`; `writes.then(step)` queues a
    step (an async callable using the connection) behind the ones before and returns its task, to
    await when its result is needed. The caller must yield (`await asyncio.sleep(0)`) now and then
    in long loops, or the next statement waits for it. Leaving the block waits for every step; the
    first step that fails fails the rest and the block (after they stopped, so the connection is
    never used by two at once)."""

    def __init__(self) -> None:
        self._last: asyncio.Future[Any] | None = None

    def then(self, step: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        previous = self._last

        async def run() -> T:
            if previous is not None:
                await asyncio.shield(previous)  # cancelling a step must not cancel the one it waits for
            return await step()

        task = self._last = asyncio.ensure_future(run())
        return task

    async def __aenter__(self) -> InOrder:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        last = self._last
        if last is None:
            return
        if exc is None:
            await last
            return
        # The caller failed: its steps still finish (or fail) before the transaction rolls back.
        await asyncio.wait([last])
        if not last.cancelled():
            last.exception()  # retrieved: the caller's own error is the one that matters


async def database_reachable(engine: AsyncEngine, timeout: float = 1.0) -> bool:
    """Whether the database answers a query within `timeout` (a hung one does not: the probe's
    connection is terminated then, and the answer is False at the deadline, not after the hang)."""
    try:
        async with deadline.Deadline(timeout, "readiness probe"), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (TimeoutError, OSError, DBAPIError, OperationalError, SQLAlchemyTimeoutError):
        return False
    return True


def alembic_config(
    script_location: str, url: str, pseudonym_secret: str | None = None, sealer: Sealer | None = None
) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["url"] = async_url(url)
    # For migrations that convert stored respondent keys (shared.privacy.rekey_columns).
    cfg.attributes["pseudonyms"] = Pseudonyms(pseudonym_secret) if pseudonym_secret else None
    # For migrations that seal stored secrets (delivery_0003).
    cfg.attributes["sealer"] = sealer
    return cfg


def upgrade(
    url: str, services: list[str] | None = None, pseudonym_secret: str | None = None, sealer: Sealer | None = None
) -> None:
    """`alembic upgrade head` for each service's schema. Synchronous: call it from a thread
    when an event loop is running. The secret is needed only where stored keys must be converted,
    the sealer only where stored secrets must be sealed."""
    from alembic import command

    for name in services or list(SERVICE_SCHEMAS):
        log.info("migrating %s", name)
        command.upgrade(alembic_config(SERVICE_SCHEMAS[name], url, pseudonym_secret, sealer), "head")


def run_migrations_env(schema: str, metadata: MetaData | None = None) -> None:
    """Body of every service's migrations/env.py (online mode only: we always have a database)."""
    from alembic import context

    url = context.config.attributes["url"]

    def migrate(connection: Connection) -> None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run(fn: Callable[[Connection], None]) -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(fn)
        finally:
            await engine.dispose()

    asyncio.run(run(migrate))
