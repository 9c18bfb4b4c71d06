"""Deadlines on work that waits for PostgreSQL: a request, a consumer's batch, a readiness probe.

A database that stops answering (a network partition, a server stuck on I/O or a lock, a failover
in progress) does not fail a statement: it leaves it waiting as long as the hang lasts. Inside
`async with Deadline(seconds, what):` the block is cancelled when its time is up and raises
`DeadlineExceeded` (a TimeoutError: `shared.db.database_unavailable` counts it as the database
being away, so a request gets 503 with Retry-After and a consumer retries the batch).

Before the block is cancelled, every database connection it holds is closed at once (asyncpg's
`terminate`: the socket is dropped, no goodbye is waited for). Cancelling alone is not enough:
cleaning up after a cancelled statement (ROLLBACK, or returning the connection to the pool, which
rolls back, or closing it politely) waits for the same server that does not answer, so a
cancelled request would still wait out the hang, and a connection put back in the pool would
hang the next request that takes it. A terminated connection fails every later use at once, so
the clean-up is immediate, the pool opens a fresh connection for the next request, and the server
rolls back whatever the transaction had begun when it sees the socket gone (a COMMIT already sent
may or may not have been applied: what a deadline leaves is always "outcome unknown").

A block holds the connections it checked out of an engine's pool while it ran (`track`: pool
events), and the raw asyncpg connections it used (`hold`, called by shared/db.py's raw paths:
a connection kept across blocks, as ingest's recorder keeps one, is held by each block using it).
Deadlines nest: an inner block's connections are held by the outer ones too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

_CURRENT: ContextVar[Deadline | None] = ContextVar("nps_deadline", default=None)


class DeadlineExceeded(TimeoutError):
    """The block did not finish in time; the database connections it held were closed."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} did not finish within {seconds:g}s")
        self.what = what
        self.seconds = seconds


class Deadline:
    """`async with Deadline(2.0, "GET /v1/nps"):` (or `at=` a time of the running loop's clock)."""

    __slots__ = ("_timer", "_token", "at", "connections", "expired", "on_expire", "parent", "seconds", "task", "what")

    def __init__(self, seconds: float, what: str, *, at: float | None = None) -> None:
        self.seconds = seconds
        self.what = what
        self.at = at
        self.connections: set[Any] = set()  # asyncpg connections: each has terminate()
        self.expired = False
        self.parent: Deadline | None = None
        self.task: asyncio.Task[Any] | None = None
        self.on_expire: Callable[[], object] | None = None  # told once the block is cancelled
        self._timer: asyncio.TimerHandle | None = None
        self._token: Token[Deadline | None] | None = None

    async def __aenter__(self) -> Deadline:
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        if self.at is None:
            self.at = loop.time() + self.seconds
        self.parent = _CURRENT.get()
        self._token = _CURRENT.set(self)
        self._timer = loop.call_at(self.at, self._expire)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disarm()
        if self._token is not None:
            _CURRENT.reset(self._token)
        self.connections.clear()
        if self.expired:
            assert self.task is not None
            self.task.uncancel()
            # Whatever the block raised on its way out (the cancellation, or the error of a
            # connection closed under it) was caused by the deadline.
            raise DeadlineExceeded(self.what, self.seconds) from exc

    def disarm(self) -> None:
        """No cancellation from now on (e.g. a request whose answer has started)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause(self) -> float | None:
        """Stop the clock while waiting on something the deadline is not about (a client sending
        its body); returns what `resume` needs, None if nothing was running."""
        if self._timer is None or self.at is None:
            return None
        self._timer.cancel()
        self._timer = None
        return self.at - asyncio.get_running_loop().time()

    def resume(self, remaining: float | None) -> None:
        if remaining is None or self.expired:
            return
        loop = asyncio.get_running_loop()
        self.at = loop.time() + remaining
        self._timer = loop.call_at(self.at, self._expire)

    def hold(self, connection: Any) -> None:
        scope: Deadline | None = self
        while scope is not None:
            scope.connections.add(connection)
            scope = scope.parent

    def release(self, connection: Any) -> None:
        scope: Deadline | None = self
        while scope is not None:
            scope.connections.discard(connection)
            scope = scope.parent

    def _expire(self) -> None:
        self._timer = None
        self.expired = True
        for connection in list(self.connections):
            connection.terminate()
        self.connections.clear()
        if self.task is not None:
            self.task.cancel()
        if self.on_expire is not None:
            self.on_expire()


def current() -> Deadline | None:
    return _CURRENT.get()


class paused:
    """The running deadline stopped while the block waits on something that is not the database and
    bounds its own wait (a webhook endpoint answering a test send, with its own timeout)."""

    __slots__ = ("_remaining", "_scope")

    async def __aenter__(self) -> None:
        self._scope = _CURRENT.get()
        self._remaining = self._scope.pause() if self._scope is not None else None

    async def __aexit__(self, *_: object) -> None:
        if self._scope is not None:
            self._scope.resume(self._remaining)


def hold(connection: Any) -> None:
    """The block running now (if any) holds this asyncpg connection: closed if its time is up."""
    scope = _CURRENT.get()
    if scope is not None:
        scope.hold(connection)


_HOLDER = "nps_deadline"  # where a pooled connection's record keeps the block that checked it out


def track(engine: AsyncEngine) -> None:
    """Connections checked out of `engine`'s pool inside a deadline are held by it until checked
    back in; and a connection the pool gives up on (invalidates: after a cancelled statement, a
    lost server) is terminated, not closed politely: SQLAlchemy's polite close waits up to 2 s
    for a server that, hung, never answers."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        scope = _CURRENT.get()
        if scope is not None:
            scope.hold(dbapi_connection.driver_connection)
            record.info[_HOLDER] = scope

    @event.listens_for(pool, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        scope = record.info.pop(_HOLDER, None)
        if scope is not None and dbapi_connection is not None:
            scope.release(dbapi_connection.driver_connection)

    @event.listens_for(pool, "invalidate")
    def _invalidated(dbapi_connection: Any, record: Any, exc: BaseException | None) -> None:
        if dbapi_connection is not None:
            dbapi_connection.driver_connection.terminate()
