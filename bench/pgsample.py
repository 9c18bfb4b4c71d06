"""Where PostgreSQL's time goes during a run, by service and statement (`--profile DIR`).

py-spy says where a service's own time goes, and how long it sat idle; when it sat waiting on the
database, this says on what. Every `every_s` a thread of its own reads `pg_stat_activity`: each
client backend that is running a statement is one sample, charged to its service (the connection's
`application_name`, which `shared.db.make_engine` sets), to what it was doing (on CPU, or the wait
event's type: `IO`, `LWLock`, `Lock`, or `Client`, i.e. waiting on the service, as during a COPY)
and to the statement's first words. A share of 0.30 means that, on average over the run, 0.3 of a
backend was busy with it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType

import asyncpg

_ACTIVE = """
    SELECT application_name, coalesce(wait_event_type, 'CPU'),
           regexp_replace(left(query, 300), '\\s+', ' ', 'g')
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()"""


class PgSampler:
    """`with PgSampler(url) as sampler: ...run...`, then `sampler.summary()`."""

    def __init__(self, database_url: str, every_s: float = 0.05) -> None:
        self.url = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self.every_s = every_s
        self.rounds = 0
        self.by_service: Counter[tuple[str, str]] = Counter()
        self.by_statement: Counter[tuple[str, str, str]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._sample()), daemon=True)

    def __enter__(self) -> PgSampler:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _sample(self) -> None:
        conn = await asyncpg.connect(self.url, server_settings={"application_name": "bench-pgsample"})
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                self.count(await conn.fetch(_ACTIVE))
                await asyncio.sleep(max(0.0, self.every_s - (time.monotonic() - began)))
        finally:
            await conn.close()

    def count(self, rows: list[tuple[str, str, str]] | list[asyncpg.Record]) -> None:
        """One round's active backends."""
        self.rounds += 1
        for service, doing, statement in rows:
            service = service or "(unnamed)"
            self.by_service[(service, doing)] += 1
            self.by_statement[(service, doing, " ".join(statement.split()[:12]))] += 1

    def summary(self, top: int = 15) -> str:
        if not self.rounds:
            return "PostgreSQL: no samples"
        busy = sum(self.by_service.values()) / self.rounds
        lines = [f"PostgreSQL, {self.rounds} samples: {busy:.2f} backends active on average"]
        lines += [
            f"{n / self.rounds:6.2f}  {service}, {doing}" for (service, doing), n in self.by_service.most_common()
        ]
        lines.append("statements:")
        lines += [
            f"{n / self.rounds:6.2f}  {service}, {doing}: {statement}"
            for (service, doing, statement), n in self.by_statement.most_common(top)
        ]
        return "\n".join(lines)

    def write(self, path: Path) -> str:
        """The summary, into `path` and returned."""
        text = self.summary(top=40)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        return text
