"""`make bench`: measure the loop on this machine and write docs/benchmarks.md.

Ingest: one `nps ingest` process (one uvicorn worker) against a private embedded PostgreSQL and
tansu broker; load from wrk (C, epoll) on 64 connections. Three runs, in this order:
  validate  POST /v1/responses/validate: parsing, validation, auth, no database, no broker
  single    POST /v1/responses: the same plus the idempotency record and the broker's ack
  batch     POST /v1/responses/batch with 1,000 responses per request
Every request carries a unique response_id. After the runs, the broker's end offsets must hold at
least every response ingest acknowledged (a 202 is a promise)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import scoring as scoring_bench
from ingest_service import domain, repository
from services.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from shared.db import make_engine, upgrade
from shared.kafka import ensure_topics, group_committed
from shared.settings import Topics

ROOT = Path(__file__).resolve().parents[1]

SINGLE_LUA = r"""
local n = 0
local tid = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
request = function()
  n = n + 1
  local body = string.format(
    '{"response_id":"%s-%d-%d","respondent_id":"u%d","score":%d,"channel":"web",' ..
    '"comment":"the checkout is slow","attributes":{"product":"atlas","region":"eu"}}',
    run, tid, n, n % 5000, n % 11)
  return wrk.format("POST", path, {["Content-Type"]="application/json", ["Authorization"]=auth}, body)
end
"""

BATCH_LUA = r"""
local n = 0
local tid = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
request = function()
  local items = {}
  for i = 1, size do
    n = n + 1
    items[i] = string.format(
      '{"response_id":"%s-%d-%d","respondent_id":"u%d","score":%d,"channel":"email",' ..
      '"answered_at":"2026-06-01T10:00:00Z","attributes":{"product":"atlas"}}',
      run, tid, n, n % 50000, n % 11)
  end
  local body = '{"responses":[' .. table.concat(items, ",") .. ']}'
  return wrk.format("POST", path, {["Content-Type"]="application/json", ["Authorization"]=auth}, body)
end
"""


class Profiler:
    """py-spy, sampling the ingest process during a run; collapsed stacks land in `directory`."""

    def __init__(self, pid: int, directory: Path) -> None:
        self.pid, self.directory = pid, directory
        directory.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, seconds: int) -> subprocess.Popen[bytes]:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        return subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(self.pid),
                "-d",
                str(seconds),
                "-r",
                str(self.RATE),
                "-f",
                "raw",
                "-o",
                str(self.directory / f"{name}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    RATE = 200  # samples per second

    def summary(self, name: str, seconds: int, top: int = 25) -> str:
        """Where the samples were: self time per function (its lines added up), busiest first, and
        how busy the process was (py-spy samples only a thread that is not idle)."""
        own: dict[str, int] = {}
        total = 0
        for line in (self.directory / f"{name}.txt").read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = re.sub(r":\d+\)$", ")", stack.split(";")[-1])
            total += int(count)
            own[leaf] = own.get(leaf, 0) + int(count)
        rows = sorted(own.items(), key=lambda kv: -kv[1])[:top]
        header = f"{total} samples: the process was busy {total / (self.RATE * seconds):.0%} of the run"
        return "\n".join([header, *(f"{count / total:6.1%}  {frame}" for frame, count in rows)])


@dataclass
class WrkResult:
    name: str
    connections: int
    seconds: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors
    per_request: int = 1

    @property
    def items_per_s(self) -> float:
        return self.requests_per_s * self.per_request


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    name: str,
    url: str,
    script: str,
    variables: dict[str, str],
    connections: int,
    seconds: int,
    threads: int,
    per_request: int = 1,
    cpu: str | None = None,
    profile: Profiler | None = None,
) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        prelude = "".join(f'{k} = "{v}"\n' if not v.isdigit() else f"{k} = {v}\n" for k, v in variables.items())
        f.write(prelude + script)
        path = f.name
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        path,
        url,
    ]
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpu, *command]
    spy = profile.start(name, seconds) if profile is not None else None
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if spy is not None:
        spy.wait(30)
    os.unlink(path)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, flags=re.M))
    if "50" not in latency:
        raise RuntimeError(f"wrk measured nothing for {name}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if sockets:
        errors += sum(int(x) for x in sockets.groups())
    result = WrkResult(name, connections, seconds, rps, to_ms(latency["50"]), to_ms(latency["99"]), errors, per_request)
    print(
        f"  {name:<9} {result.requests_per_s:>9.0f} req/s  {result.items_per_s:>9.0f} responses/s  "
        f"p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms  errors {errors}",
        flush=True,
    )
    return result


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print("installing wrk (Debian package)", flush=True)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
    )


async def create_key(url: str) -> str:
    engine = make_engine(url)
    key = domain.new_api_key()
    async with engine.begin() as conn:
        await repository.create_key(conn, "bench", domain.hash_api_key(key))
    await engine.dispose()
    return key


async def on_broker(bootstrap: str, topic: str) -> tuple[int, int, int, int]:
    """(end offsets summed, records read, distinct response_ids, records sharing an offset with
    another record of the same partition) of the topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records, ids, offsets = 0, set(), set()
        while [p for p, end in ends.items() if await consumer.position(p) < end]:
            batches = await consumer.getmany(timeout_ms=2000, max_records=10000)
            if not batches:
                break
            for messages in batches.values():
                for message in messages:
                    records += 1
                    offsets.add((message.partition, message.offset))
                    found = ID.search(message.value)
                    if found:
                        ids.add(found.group(1))
        return sum(ends.values()), records, len(ids), records - len(offsets)
    finally:
        await consumer.stop()


ID = re.compile(rb'"response_id":"([^"]+)"')


def accepted_count(metrics_url: str) -> int:
    text = urllib.request.urlopen(metrics_url).read().decode()
    match = re.search(r'^nps_ingest_responses_total\{outcome="accepted"\} ([\d.e+]+)$', text, flags=re.M)
    return int(float(match.group(1))) if match else 0


def pin_infrastructure(pg: EmbeddedPostgres, broker: EmbeddedBroker, cpu: int = 1) -> None:
    """PostgreSQL and the broker on `cpu`, as the report says: left to the scheduler they sometimes
    shared core 0 with the measured process, and single POSTs came out at ~2,500/s or ~4,500/s from
    run to run with the same code. Backends forked later inherit the postmaster's affinity."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    pids = [
        postmaster,
        *(
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        ),
    ]
    if broker.pid is not None:
        pids.append(broker.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, {cpu})


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (PostgreSQL's background workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    return (
        f"{model}, {os.cpu_count()} cores, {memory_kb / 1024 / 1024:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def bench_ingest(seconds: int, profile_dir: Path | None) -> tuple[list[WrkResult], dict[str, int]]:
    work = Path(tempfile.mkdtemp(prefix="nps-bench-"))
    pg = EmbeddedPostgres(work / "pg", database="nps")
    broker = EmbeddedBroker(free_port(), work / "broker.log")
    ingest: subprocess.Popen[bytes] | None = None
    try:
        url = pg.start()
        upgrade(url)
        bootstrap = broker.start()
        pin_infrastructure(pg, broker)
        topics = Topics("bench")
        asyncio.run(ensure_topics(bootstrap, topics.all(), 6))
        key = asyncio.run(create_key(url))
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "NPS_TOPIC_NAMESPACE": "bench",
            "NPS_INGEST_PORT": str(port),
            "NPS_INGEST_RATE_LIMIT_PER_S": "0",
            "NPS_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "services", "ingest"]
        # One worker, on one core; wrk, PostgreSQL and the broker share the other.
        if shutil.which("taskset"):
            command = ["taskset", "-c", "0", *command]
        ingest = subprocess.Popen(command, env=env, stdout=(work / "ingest.log").open("wb"), stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{base}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
            if time.monotonic() > deadline:
                raise RuntimeError((work / "ingest.log").read_text()[-3000:])

        profile = Profiler(ingest.pid, profile_dir) if profile_dir is not None else None
        auth = f"Bearer {key}"
        run = f"b{int(time.time())}"
        common = {"auth": auth, "run": run}
        print(f"ingest benchmark ({seconds} s per run, 64 connections):", flush=True)
        # (name, path, script, connections, responses per request); the warm-up is not reported.
        runs = [
            ("warm-up", "/v1/responses", SINGLE_LUA, 64, 1),
            ("validate", "/v1/responses/validate", SINGLE_LUA, 64, 1),
            ("single", "/v1/responses", SINGLE_LUA, 64, 1),
            ("batch", "/v1/responses/batch", BATCH_LUA, 8, 1000),
        ]
        results = []
        for name, path, script, connections, per_request in runs:
            warm_up = name == "warm-up"
            result = run_wrk(
                name,
                f"{base}{path}",
                script,
                {
                    **common,
                    "path": path,
                    "run": f"{run}-{name}",
                    **({"size": str(per_request)} if per_request > 1 else {}),
                },
                connections,
                3 if warm_up else seconds,
                1,
                per_request=per_request,
                cpu="1",
                profile=None if warm_up else profile,
            )
            if not warm_up:
                results.append(result)
        acknowledged = accepted_count(f"{base}/metrics")
        offsets, records, distinct, shared = asyncio.run(on_broker(bootstrap, topics.responses))
        print(
            f"  acknowledged {acknowledged} responses; the topic holds {distinct} distinct ids in {records} records "
            f"(end offsets: {offsets}; records sharing an offset: {shared})",
            flush=True,
        )
        if distinct < acknowledged:
            kept = Path(tempfile.mkdtemp(prefix="nps-bench-failed-"))
            for log in ("ingest.log", "broker.log"):
                if (work / log).exists():
                    shutil.copy(work / log, kept / log)
            raise SystemExit(f"FAIL: the topic holds fewer responses than ingest acknowledged; logs in {kept}")
        if profile is not None:
            for result in results:
                print(
                    f"\nprofile of {result.name} (self time, share of samples):\n{profile.summary(result.name, result.seconds)}"
                )
        return results, {"acknowledged": acknowledged, "on_broker": distinct}
    finally:
        if ingest is not None:
            ingest.terminate()
            ingest.wait(30)
        broker.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def write_report(results: list[WrkResult], counts: dict[str, int], seconds: int) -> Path:
    by = {r.name: r for r in results}
    validate, single, batch = by["validate"], by["single"], by["batch"]
    ratio = single.requests_per_s / validate.requests_per_s
    lines = [
        "## Ingest",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {machine()}",
        "- **Setup:** one `nps ingest` process (one uvicorn worker) pinned to core 0; wrk, PostgreSQL 18 (embedded)",
        "  and the tansu broker (memory storage) share core 1. Each run lasts "
        f"{seconds} s after a 3 s warm-up; every request has a new `response_id`.",
        "",
        "| run | connections | requests/s | responses/s | p50 | p99 | errors | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| validate only (`/v1/responses/validate`) | {validate.connections} | {validate.requests_per_s:,.0f} | "
        f"{validate.items_per_s:,.0f} | {validate.p50_ms:.1f} ms | {validate.p99_ms:.1f} ms | {validate.errors} | "
        "baseline | |",
        f"| single POST, broker-acknowledged | {single.connections} | {single.requests_per_s:,.0f} | "
        f"{single.items_per_s:,.0f} | {single.p50_ms:.1f} ms | {single.p99_ms:.1f} ms | {single.errors} | "
        f"≥ 3,500/s, p99 < 50 ms | {verdict(single.requests_per_s >= 3500 and single.p99_ms < 50)} |",
        f"| batch import, 1,000 per request | {batch.connections} | {batch.requests_per_s:,.1f} | "
        f"{batch.items_per_s:,.0f} | {batch.p50_ms:.0f} ms | {batch.p99_ms:.0f} ms | {batch.errors} | "
        f"≥ 50,000 responses/s | {verdict(batch.items_per_s >= 50_000)} |",
        "",
        f"Publishing costs the single POST {1 - ratio:.0%} of the validate-only throughput "
        f"(single / validate = {ratio:.2f}).",
        f"After the runs ingest had acknowledged {counts['acknowledged']:,} responses; read back, the topic held "
        f"{counts['on_broker']:,} distinct response ids (every 202 is on the broker; the surplus were in "
        "flight when wrk stopped).",
        "",
    ]
    return write_section("ingest", lines)


HEADER = [
    "# Benchmarks",
    "",
    "Written by `make bench` (`python -m bench`); numbers from the last run on the machine below.",
    "Targets from BRIEF.md, on one worker core. Timed assertions never appear in the tests.",
    "",
]


def write_section(name: str, lines: list[str]) -> Path:
    """Replace one generated section of docs/benchmarks.md (the other, and the notes, stay)."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "\n".join(HEADER) + "\n<!-- notes -->\n"
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{begin}\n" + "\n".join(lines) + f"\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.replace("<!-- notes -->", block + "\n<!-- notes -->", 1)
    path.write_text(text)
    return path


@dataclass
class ScoringResult:
    events: int
    raw_s: float
    service_events: int
    service_s: float
    replay_rate: float
    same_state: bool
    latency: scoring_bench.LatencyProbe | None

    @property
    def raw_rate(self) -> float:
        return self.events / self.raw_s

    @property
    def service_rate(self) -> float:
        return self.service_events / self.service_s


async def daily_state(url: str) -> object:
    from scoring_service.repository import all_daily

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await all_daily(conn)
    finally:
        await engine.dispose()


def wait_ready(base: str, log: Path, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if urllib.request.urlopen(f"{base}/readyz", timeout=1).status == 200:
                return
        except OSError:
            time.sleep(0.2)
        if time.monotonic() > deadline:
            raise RuntimeError(log.read_text()[-3000:])


def bench_scoring(n: int, e2e_seconds: int, profile_dir: Path | None = None) -> ScoringResult:
    work = Path(tempfile.mkdtemp(prefix="nps-bench-scoring-"))
    pg = EmbeddedPostgres(work / "pg", database="nps")
    broker = EmbeddedBroker(free_port(), work / "broker.log")
    children: list[subprocess.Popen[bytes]] = []
    try:
        url = pg.start()
        upgrade(url)
        bootstrap = broker.start()
        pin_infrastructure(pg, broker)
        topics = Topics("bench")
        asyncio.run(ensure_topics(bootstrap, topics.all(), 6))
        print(f"scoring benchmark: producing a backlog of {n:,} events", flush=True)
        asyncio.run(scoring_bench.fill(bootstrap, topics.responses, scoring_bench.backlog(n)))

        raw_s = scoring_bench.run_raw(bootstrap, topics.responses, n)
        print(f"  raw consume  {n / raw_s:>9,.0f} events/s", flush=True)

        group = "bench-scoring"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "NPS_TOPIC_NAMESPACE": "bench",
            "NPS_SCORING_GROUP_ID": group,
            "NPS_SCORING_PORT": str(free_port()),
            "NPS_SCORING_MAX_VALUES_PER_DIMENSION": "100000",
            "NPS_LOG_LEVEL": "WARNING",
        }
        log = work / "scoring.log"
        scoring = subprocess.Popen(
            scoring_bench.pinned([sys.executable, "-m", "services", "scoring"]),
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        children.append(scoring)
        profiler = Profiler(scoring.pid, profile_dir) if profile_dir is not None else None
        spy = profiler.start("scoring", 30) if profiler is not None else None
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 600
        while True:
            committed = asyncio.run(group_committed(bootstrap, group, topics.responses))
            now = time.monotonic()
            if first is None and committed > 0:
                first = (now, committed)
            if committed >= n or now > deadline:
                break
            time.sleep(0.25)
        if first is None or committed < n:
            raise RuntimeError(f"scoring did not catch up: {committed} of {n}\n{log.read_text()[-3000:]}")
        service_events, service_s = n - first[1], now - first[0]
        if spy is not None and profiler is not None:
            spy.wait(60)
            print(profiler.summary("scoring", 30), flush=True)
        print(f"  scoring      {service_events / service_s:>9,.0f} events/s (consumed and committed)", flush=True)

        replay_url = pg.another_database("replay")
        upgrade(replay_url)
        replay = subprocess.run(
            scoring_bench.pinned([sys.executable, "-m", "services", "scoring", "rebuild", "--replay"]),
            env={**env, "DATABASE_URL": replay_url},
            capture_output=True,
            text=True,
            check=True,
        )
        rate = re.search(r"\(([\d,]+) events/s\)", replay.stdout)
        replay_rate = float(rate.group(1).replace(",", "")) if rate else 0.0
        print(f"  replay       {replay_rate:>9,.0f} events/s (rebuild from the log)", flush=True)
        same = asyncio.run(daily_state(url)) == asyncio.run(daily_state(replay_url))
        print(f"  live state equals the replayed state: {same}", flush=True)

        latency = None
        if e2e_seconds:
            key = asyncio.run(create_key(url))
            ingest_port = free_port()
            ingest_log = work / "ingest.log"
            ingest = subprocess.Popen(
                [sys.executable, "-m", "services", "ingest"],
                env={**env, "NPS_INGEST_PORT": str(ingest_port), "NPS_INGEST_RATE_LIMIT_PER_S": "0"},
                stdout=ingest_log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            children.append(ingest)
            wait_ready(f"http://127.0.0.1:{ingest_port}", ingest_log)
            scoring_url = f"http://127.0.0.1:{env['NPS_SCORING_PORT']}"
            wait_ready(scoring_url, log)
            latency = asyncio.run(
                scoring_bench.end_to_end(f"http://127.0.0.1:{ingest_port}", scoring_url, key, 1000, e2e_seconds)
            )
            print(
                f"  end to end   p50 {latency.p50_ms:.0f} ms  p99 {latency.p99_ms:.0f} ms  max {latency.max_ms:.0f} ms "
                f"({latency.sent:,} POSTs at 1,000/s; errors or unseen probes: {latency.errors})",
                flush=True,
            )
        return ScoringResult(n, raw_s, service_events, service_s, replay_rate, same, latency)
    finally:
        for child in children:
            child.terminate()
            child.wait(30)
        broker.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def write_scoring_report(result: ScoringResult) -> Path:
    ratio = result.service_rate / result.raw_rate
    latency = result.latency
    lines = [
        "## Scoring",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {machine()}",
        f"- **Setup:** a backlog of {result.events:,} events on a 6-partition responses topic (~94% submissions, "
        "3% retried duplicates, 3% revisions; 90 days; ~6 segments each). Each reader pinned to core 0; "
        "PostgreSQL and the broker on core 1. End to end: ingest and scoring unpinned, load from the bench.",
        "",
        "| run | events/s | ratio to raw consume | target | met |",
        "|---|---|---|---|---|",
        f"| raw consume (aiokafka, no decoding, no database) | {result.raw_rate:,.0f} | 1.00 | ceiling | |",
        f"| `nps scoring`: consumed, applied, committed | {result.service_rate:,.0f} | {ratio:.2f} | ≥ 20,000/s | "
        f"{verdict(result.service_rate >= 20_000)} |",
        f"| `nps scoring rebuild --replay` (from the log) | {result.replay_rate:,.0f} | "
        f"{result.replay_rate / result.raw_rate:.2f} | ≥ 20,000/s | {verdict(result.replay_rate >= 20_000)} |",
        "",
        f"The replayed database's daily counts equal the live service's: **{'yes' if result.same_state else 'NO'}**.",
        "",
    ]
    if latency is not None:
        lines += [
            "| end to end, POST 202 → visible in `GET /v1/nps` | p50 | p99 | max | probes unseen or errors | target | met |",
            "|---|---|---|---|---|---|---|",
            f"| {latency.sent:,} POSTs at 1,000/s, one probe in 50 | {latency.p50_ms:.0f} ms | {latency.p99_ms:.0f} ms | "
            f"{latency.max_ms:.0f} ms | {latency.errors} | p99 < 1 s | {verdict(latency.p99_ms < 1000 and not latency.errors)} |",
            "",
        ]
    return write_section("scoring", lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=15, help="length of each measured run")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample ingest with py-spy during each run; collapsed stacks go to DIR",
    )
    parser.add_argument("--only", choices=["ingest", "scoring"], help="run one benchmark (its section is rewritten)")
    parser.add_argument("--events", type=int, default=200_000, help="scoring backlog size")
    parser.add_argument("--e2e-seconds", type=int, default=20, help="end-to-end latency run length (0: skip)")
    args = parser.parse_args()
    if args.only in (None, "ingest"):
        ensure_wrk()
        results, counts = bench_ingest(args.seconds, args.profile)
        print(f"wrote {write_report(results, counts, args.seconds)}")
    if args.only in (None, "scoring"):
        print(f"wrote {write_scoring_report(bench_scoring(args.events, args.e2e_seconds, args.profile))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
