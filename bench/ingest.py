"""The ingest benchmark: one `nps ingest` process (one uvicorn worker) pinned to core 0, against a
private embedded PostgreSQL and tansu broker on core 1; load from wrk (C, epoll) on core 1. Three
runs, after a warm-up, in three rounds, each on a stack of its own (the median round judged, the
range shown: the same code's rates vary by ~±10% from run to run here):
  validate  POST /v1/responses/validate: parsing, validation, auth, no database, no broker
  single    POST /v1/responses: the same plus the idempotency record and the broker's ack
  batch     POST /v1/responses/batch with 1,000 responses per request
Every request carries a unique response_id. After the runs, the topic must hold every response
ingest acknowledged (a 202 is a promise)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BENCH_SECRET, BENCH_SECRETS_KEY, machine, spread, start_service, verdict, write_section
from bench.profile import Profiler
from services.embedded import free_port
from services.infra import create_api_key, pin, private_infrastructure
from shared.kafka import reading_from_start

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


async def on_broker(bootstrap: str, topic: str) -> tuple[int, int, int, int]:
    """(end offsets summed, records read, distinct response_ids, records sharing an offset with
    another record of the same partition) of the topic."""
    async with reading_from_start(bootstrap, topic) as consumer:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        records, ids, offsets = 0, set(), set()
        while True:
            batches = await consumer.getmany(timeout_ms=2000, max_records=10000)
            if not batches:
                # The local broker's end offsets lag what a fetch returns (below): stop only once a
                # fetch comes back empty and every position is at or past freshly asked end offsets.
                ends = await consumer.end_offsets(list(consumer.assignment()))
                if all([await consumer.position(p) >= end for p, end in ends.items()]):
                    break
                continue
            for messages in batches.values():
                for message in messages:
                    records += 1
                    offsets.add((message.partition, message.offset))
                    found = ID.search(message.value)
                    if found:
                        ids.add(found.group(1))
        return sum(ends.values()), records, len(ids), records - len(offsets)


ID = re.compile(rb'"response_id":"([^"]+)"')

# The phases of one batch item in ingest, by the functions that do them (bench/profile.py, phases).
BATCH_PHASES = [
    (
        "validate each item (check_item: pydantic, the rules a schema cannot say)",
        ["check_item ", "validate_python", " check ("],
    ),
    ("parse the request's JSON envelope", ["model_validate_json", "RawRequest.json"]),
    ("fingerprint of each item", ["fingerprint "]),
    ("build each event and its JSON (submission, encode_submitted)", ["submission ", "encode_submitted"]),
    ("idempotency records: one bulk statement (record_all, asyncpg)", ["record_all"]),
    ("Kafka: send per record (aiokafka send, partitioner, accumulator)", ["publish_many"]),
    ("submit_batch's own bookkeeping (a result per item)", ["submit_batch"]),
    ("encode and write the 1,000-item answer", ["RawRoutes.answer", "post_batch"]),
    ("HTTP: uvicorn and httptools reading the request", ["httptools", "uvicorn"]),
    ("aiokafka's sender task (produce requests)", ["Sender", "sender", "_send_produce", "AIOKafkaClient"]),
]


def accepted_count(metrics_url: str) -> int:
    text = urllib.request.urlopen(metrics_url).read().decode()
    match = re.search(r'^nps_ingest_responses_total\{outcome="accepted"\} ([\d.e+]+)$', text, flags=re.M)
    return int(float(match.group(1))) if match else 0


def keep_logs(work: Path) -> Path:
    """Ingest's and the broker's logs, copied out of the run's directory (removed at its end)."""
    kept = Path(tempfile.mkdtemp(prefix="nps-bench-logs-"))
    for log in ("ingest.log", "broker.log"):
        if (work / log).exists():
            shutil.copy(work / log, kept / log)
    return kept


def bench_ingest(
    seconds: int, profile_dir: Path | None, workers: int = 1, rounds: int = 3
) -> tuple[list[WrkResult], dict[str, int]]:
    """One worker pinned to core 0 (wrk and the infrastructure on core 1), or `workers` processes on
    one port (NPS_INGEST_WORKERS) sharing both cores with everything else: then only the single and
    batch runs, named `single-2w`, `batch-2w`. The runs go `rounds` times, each round on a stack of
    its own (on one stack, the later rounds' single POSTs met tables millions of rows larger: their
    p99 grew round after round); within a round, the single POSTs follow the validate-only run, so
    the ratio is taken within it. A profile, if asked for, samples the first round."""
    results: list[WrkResult] = []
    counts = {"acknowledged": 0, "on_broker": 0}
    for index in range(rounds):
        found, counted = one_round(seconds, profile_dir if index == 0 else None, workers)
        results += found
        counts = {name: counts[name] + counted[name] for name in counts}
    return results, counts


def one_round(seconds: int, profile_dir: Path | None, workers: int) -> tuple[list[WrkResult], dict[str, int]]:
    """A warm-up, then each measured run once, on private infrastructure started for them."""
    work = Path(tempfile.mkdtemp(prefix="nps-bench-"))
    try:
        with private_infrastructure(work, namespace="bench") as infra:
            key = asyncio.run(create_api_key(infra.database_url, "bench"))
            port = free_port()
            env = {
                "DATABASE_URL": infra.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
                "NPS_TOPIC_NAMESPACE": "bench",
                "NPS_INGEST_PORT": str(port),
                "NPS_INGEST_RATE_LIMIT_PER_S": "0",
                "NPS_LOG_LEVEL": "WARNING",
                "NPS_INGEST_WORKERS": str(workers),
                # Ingest keys respondents (identities, invitations) since issue 36: it does not start without.
                "NPS_PSEUDONYM_SECRET": BENCH_SECRET,
                "NPS_SECRETS_KEY": BENCH_SECRETS_KEY,
            }
            # One worker, on one core; wrk, PostgreSQL and the broker share the other. Several: no pinning.
            single_core = workers == 1
            if single_core:
                pin(infra.pids, 1)
            ingest = start_service("ingest", env, work / "ingest.log", cpu="0" if single_core else None)
            try:
                base = f"http://127.0.0.1:{port}"
                profile = Profiler(ingest.pid, profile_dir) if profile_dir is not None else None
                run = f"b{int(time.time())}"
                common = {"auth": f"Bearer {key}", "run": run}
                print(f"ingest benchmark ({seconds} s per run, 64 connections):", flush=True)
                # (name, path, script, connections, responses per request); the warm-up is not reported.
                runs = [
                    ("warm-up", "/v1/responses", SINGLE_LUA, 64, 1),
                    ("validate", "/v1/responses/validate", SINGLE_LUA, 64, 1),
                    ("single", "/v1/responses", SINGLE_LUA, 64, 1),
                    ("batch", "/v1/responses/batch", BATCH_LUA, 8, 1000),
                ]
                if not single_core:
                    runs = [
                        (n if n == "warm-up" else f"{n}-{workers}w", path, script, conns, per)
                        for n, path, script, conns, per in runs
                        if n != "validate"
                    ]
                results = []
                for name, path, script, connections, per_request in runs:
                    warm_up = name == "warm-up"
                    variables = {**common, "path": path, "run": f"{run}-{name}"}
                    if per_request > 1:
                        variables["size"] = str(per_request)
                    result = run_wrk(
                        name,
                        f"{base}{path}",
                        script,
                        variables,
                        connections,
                        3 if warm_up else seconds,
                        1,
                        per_request=per_request,
                        cpu="1" if single_core else None,
                        profile=None if warm_up else profile,
                    )
                    if not warm_up:
                        results.append(result)
                acknowledged = accepted_count(f"{base}/metrics")
                offsets, records, distinct, shared = asyncio.run(on_broker(infra.bootstrap, infra.topics.responses))
                print(
                    f"  acknowledged {acknowledged} responses; the topic holds {distinct} distinct ids in {records} "
                    f"records (end offsets: {offsets}; records sharing an offset: {shared})",
                    flush=True,
                )
                if distinct < acknowledged:
                    kept = keep_logs(work)
                    raise SystemExit(f"FAIL: the topic holds fewer responses than ingest acknowledged; logs in {kept}")
                if any(r.errors for r in results):
                    print(f"  some requests failed: ingest's log is kept in {keep_logs(work)}", flush=True)
                if profile is not None:
                    for result in results:
                        summary = profile.summary(result.name, result.seconds)
                        print(f"\nprofile of {result.name} (self time, share of samples):\n{summary}")
                        if result.name.startswith("batch") and result.items_per_s:
                            table = profile.phases(result.name, result.seconds, BATCH_PHASES, 1e6 / result.items_per_s)
                            print(f"\nwhere a batch item's time goes ({result.items_per_s:,.0f}/s):\n{table}")
                return results, {"acknowledged": acknowledged, "on_broker": distinct}
            finally:
                ingest.terminate()
                ingest.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rounds_of(results: list[WrkResult]) -> dict[str, list[WrkResult]]:
    """Each run's results by name, in the order they ran."""
    found: dict[str, list[WrkResult]] = {}
    for result in results:
        found.setdefault(result.name, []).append(result)
    return found


def middle(runs: list[WrkResult]) -> WrkResult:
    """The median run by rate (the upper middle one of an even count): its p50 and p99 are reported."""
    return sorted(runs, key=lambda r: r.items_per_s)[len(runs) // 2]


def write_report(
    results: list[WrkResult], counts: dict[str, int], seconds: int, scaled: list[WrkResult] | None = None
) -> Path:
    runs = rounds_of(results)
    validate, single, batch = (middle(runs[name]) for name in ("validate", "single", "batch"))
    ratios = [s.requests_per_s / v.requests_per_s for v, s in zip(runs["validate"], runs["single"], strict=True)]
    ratio = statistics.median(ratios)
    ratio_range = "" if len(ratios) < 2 else f", {min(ratios):.2f} to {max(ratios):.2f} over the rounds"
    errors = {name: sum(r.errors for r in found) for name, found in runs.items()}
    lines = [
        "## Ingest",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {machine()}",
        "- **Setup:** one `nps ingest` process (one uvicorn worker) pinned to core 0; wrk, PostgreSQL 18 (embedded)",
        "  and the tansu broker (memory storage) share core 1. Each run lasts "
        f"{seconds} s after a 3 s warm-up; every request has a new `response_id`. The three runs go "
        f"{len(runs['single'])} times, each round on a stack of its own; each row is its median run (its p50, "
        "p99), the range of the rounds in brackets, the errors of all of them.",
        "",
        "| run | connections | requests/s | responses/s | p50 | p99 | errors | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| validate only (`/v1/responses/validate`) | {validate.connections} | {spread([r.requests_per_s for r in runs['validate']])} | "
        f"{validate.items_per_s:,.0f} | {validate.p50_ms:.1f} ms | {validate.p99_ms:.1f} ms | {errors['validate']} | "
        "baseline | |",
        f"| single POST, broker-acknowledged | {single.connections} | {spread([r.requests_per_s for r in runs['single']])} | "
        f"{single.items_per_s:,.0f} | {single.p50_ms:.1f} ms | {single.p99_ms:.1f} ms | {errors['single']} | "
        f"≥ 3,500/s, p99 < 50 ms | {verdict(single.requests_per_s >= 3500 and single.p99_ms < 50)} |",
        f"| batch import, 1,000 per request | {batch.connections} | {batch.requests_per_s:,.1f} | "
        f"{spread([r.items_per_s for r in runs['batch']])} | {batch.p50_ms:.0f} ms | {batch.p99_ms:.0f} ms | {errors['batch']} | "
        f"≥ 50,000 responses/s | {verdict(batch.items_per_s >= 50_000)} |",
        "",
        f"Publishing costs the single POST {1 - ratio:.0%} of the validate-only throughput "
        f"(single / validate = {ratio:.2f}, the median of the rounds' own ratios{ratio_range}; "
        f"target ≥ 0.6: {verdict(ratio >= 0.6)}).",
        f"After the runs ingest had acknowledged {counts['acknowledged']:,} responses; read back, the topic held "
        f"{counts['on_broker']:,} distinct response ids (every 202 is on the broker; the surplus were in "
        "flight when wrk stopped).",
        "",
    ]
    if scaled:
        two = {r.name.rsplit("-", 1)[0]: r for r in scaled}
        lines += [
            "Two worker processes on the one port (`NPS_INGEST_WORKERS=2`), nothing pinned: the two workers, wrk,",
            "PostgreSQL and the broker share this machine's two cores (the one-worker rows above have a core to",
            "themselves). The ratio says what a second core buys here, not what it buys on a larger machine.",
            "",
            "| run | 1 worker (core 0) | 2 workers (both cores, shared) | ratio | p99, 2 workers |",
            "|---|---|---|---|---|",
            f"| single POST, requests/s | {single.requests_per_s:,.0f} | {two['single'].requests_per_s:,.0f} | "
            f"{two['single'].requests_per_s / single.requests_per_s:.2f} | {two['single'].p99_ms:.1f} ms |",
            f"| batch import, responses/s | {batch.items_per_s:,.0f} | {two['batch'].items_per_s:,.0f} | "
            f"{two['batch'].items_per_s / batch.items_per_s:.2f} | {two['batch'].p99_ms:.0f} ms |",
            "",
        ]
    return write_section("ingest", lines)
