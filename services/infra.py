"""Helpers the launcher, the tests and the benchmarks share: readiness polling, topic creation,
API keys, and a private PostgreSQL + broker pair. One home each."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.auth import KeyStore, Scope, hash_api_key, new_api_key
from shared.db import make_engine, upgrade
from shared.kafka import ensure_topics
from shared.settings import InfraSettings, Topics


def is_ready(url: str) -> bool:
    """Whether a service at `url` answers /readyz with 200."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(
    urls: Mapping[str, str], timeout: float = 90.0, give_up: Callable[[], bool] = lambda: False
) -> list[str]:
    """Poll each service's /readyz until all answer; returns the names still not ready at the
    deadline, or when `give_up()` says so (a stop requested, a process that died)."""
    pending = dict(urls)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline and not give_up():
        for name, url in list(pending.items()):
            if is_ready(url):
                del pending[name]
        if pending:
            time.sleep(0.2)
    return sorted(pending)


async def create_topics(settings: InfraSettings) -> list[str]:
    """The namespace's versioned topics that do not exist yet; returns those created."""
    return await ensure_topics(
        settings.require_bootstrap(), settings.topics.all(), settings.topic_partitions, settings.topic_replication
    )


async def create_api_key(database_url: str, name: str, scopes: Sequence[Scope] = ("admin",), actor: str = "nps") -> str:
    """A new API key named `name`, granting `scopes` (KeyExists if an active one has that name); only its hash is
    stored, so the key is returned this once."""
    engine = make_engine(database_url)
    try:
        key = new_api_key()
        await KeyStore(engine).create(name, hash_api_key(key), scopes, actor)
        return key
    finally:
        await engine.dispose()


@dataclass
class Private:
    """A PostgreSQL (migrated) and a broker (with the namespace's topics) for one process's own use."""

    database_url: str
    bootstrap: str
    topics: Topics
    pids: list[int]  # the postmaster, its children, the broker
    another_database: Callable[[str], str]  # a further (empty) database on the same server: its URL


@contextlib.contextmanager
def private_infrastructure(work: Path, namespace: str = "nps", partitions: int = 6) -> Iterator[Private]:
    """Embedded PostgreSQL and broker under `work`, stopped on exit (the benchmarks' set-up)."""
    from services.embedded import EmbeddedBroker, EmbeddedPostgres, free_port

    pg = EmbeddedPostgres(work / "pg", database="nps")
    broker = EmbeddedBroker(free_port(), work / "broker.log")
    try:
        url = pg.start()
        upgrade(url)
        bootstrap = broker.start()
        topics = Topics(namespace)
        asyncio.run(ensure_topics(bootstrap, topics.all(), partitions))
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        pids = [postmaster, *child_pids(postmaster), *([broker.pid] if broker.pid is not None else [])]
        yield Private(url, bootstrap, topics, pids, pg.another_database)
    finally:
        broker.stop()
        pg.stop()


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def pin(pids: list[int], cpu: int) -> None:
    """Keep these processes on one core (where the platform allows); children forked later
    (PostgreSQL's backends) inherit it."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, {cpu})
