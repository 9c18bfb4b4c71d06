"""What the follow-up and themes benchmarks share: a backlog on a private broker, read raw, then
consumed by one service pinned to core 0 (the infrastructure and the bench's polling on core 1)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import BENCH_SECRET, catch_up, start_service
from bench.profile import Profiler, sampling
from bench.scoring import fill, run_raw
from services.embedded import free_port
from services.infra import pin, private_infrastructure


@dataclass
class ConsumerResult:
    events: int
    raw_s: float
    service_events: int
    service_s: float

    @property
    def raw_rate(self) -> float:
        return self.events / self.raw_s

    @property
    def service_rate(self) -> float:
        return self.service_events / self.service_s


def run_consumer(
    service: str,
    events: list[tuple[bytes, bytes]],
    doing: str,
    profile_dir: Path | None = None,
    then: Callable[[str], None] | None = None,
) -> ConsumerResult:
    """`nps <service>` (its own group, NPS_<SERVICE>_GROUP_ID) through `events` on the responses topic;
    `then(database_url)` runs after it caught up, on the database it wrote."""
    n = len(events)
    work = Path(tempfile.mkdtemp(prefix=f"nps-bench-{service}-"))
    children: list[subprocess.Popen[bytes]] = []
    try:
        with private_infrastructure(work, namespace="bench") as infra:
            pin(infra.pids, 1)
            bootstrap, topics = infra.bootstrap, infra.topics
            print(f"{service} benchmark: producing a backlog of {n:,} events", flush=True)
            asyncio.run(fill(bootstrap, topics.responses, events))
            raw_s = run_raw(bootstrap, topics.responses, n)
            print(f"  raw consume  {n / raw_s:>9,.0f} events/s", flush=True)
            group = f"bench-{service}"
            prefix = f"NPS_{service.upper()}"
            env: Mapping[str, str] = {
                "DATABASE_URL": infra.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "NPS_TOPIC_NAMESPACE": "bench",
                f"{prefix}_GROUP_ID": group,
                f"{prefix}_PORT": str(free_port()),
                "NPS_PSEUDONYM_SECRET": BENCH_SECRET,
                "NPS_LOG_LEVEL": "WARNING",
            }
            log = work / f"{service}.log"
            process = start_service(service, env, log, cpu="0")
            children.append(process)
            profiler = Profiler(process.pid, profile_dir) if profile_dir is not None else None
            spy = profiler.start(service, 30) if profiler is not None else None
            with sampling(infra.database_url, profile_dir, service):
                done, seconds = catch_up(service, bootstrap, group, topics.responses, n, log, 900)
            if spy is not None and profiler is not None:
                spy.wait(60)
                print(profiler.summary(service, 30), flush=True)
            result = ConsumerResult(n, raw_s, done, seconds)
            print(f"  {service:<12} {result.service_rate:>9,.0f} events/s ({doing})", flush=True)
            process.terminate()
            process.wait(30)
            if then is not None:
                then(infra.database_url)
            return result
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        shutil.rmtree(work, ignore_errors=True)
