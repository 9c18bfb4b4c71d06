"""The whole loop, as a user runs it (issue 39): `nps up`'s six services, not pinned, on this
machine's cores with the embedded PostgreSQL and broker; a backlog shaped like real traffic (40% of
answers with a comment of 5-40 words in two languages, ~6 segments, 3% retried duplicates, 3%
revisions, a few erasures, one invitation per answer; the default policy with a holdout on
passives) waiting on the topics; the time until every consumer group has committed it.

Measured: from the first commit any group makes to the moment no group has anything left to read
(delivery's follow-up and ticket topics included, which fill while follow-up works), as whole-loop
responses/s; and each group's own rate, from its first commit to its last on the responses topic
(the rates group: on the invitations topic). Then 2,000 POSTs/s through ingest for a minute, every
200th a probe polled until it is visible in scoring, follow-up and themes: the p99 from its 202."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.common import BENCH_SECRET, BENCH_SECRETS_KEY, ROOT, cpu_seconds, machine, write_section
from bench.latency import POLL_S, LatencyProbe, in_followup, in_scoring, in_themes, visible_after
from bench.profile import sampling
from bench.scoring import backlog, fill, run_raw
from followup_service.routing.policy import DEFAULT_POLICY
from services.embedded import free_port
from services.infra import create_api_key, private_infrastructure
from shared.events import InvitationSent, RespondentErased, ResponseSubmitted, response_events
from shared.kafka import group_lag

TARGET = 15_000
RATE = 2_000  # POSTs/s of the sustained run
P99_TARGET_MS = 1_000
CONNECTIONS = 64  # keep-alive connections the load is sent over
COMMENTS = ROOT / "tests" / "data" / "themes_eval.jsonl"
SERVICES = ("ingest", "scoring", "followup", "alerts", "delivery", "themes")


@dataclass
class GroupProgress:
    group: str
    topic: str  # the topic its rate is counted on
    others: tuple[str, ...] = ()  # further topics it must have read to the end
    first: float | None = None
    done: float | None = None
    first_committed: int = 0


@dataclass
class LoopResult:
    responses: int
    invitations: int
    raw_s: float
    whole_s: float
    groups: list[GroupProgress] = field(default_factory=list)
    sustained: dict[str, LatencyProbe] = field(default_factory=dict)
    sustain_s: int = 60
    cpu_backlog: dict[str, float] = field(default_factory=dict)  # CPU seconds per part of the loop
    cpu_sustained: dict[str, float] = field(default_factory=dict)

    @property
    def raw_rate(self) -> float:
        return self.responses / self.raw_s

    @property
    def whole_rate(self) -> float:
        return self.responses / self.whole_s


def loop_backlog(n: int, seed: int = 7) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """The responses topic's events and one invitation per submitted answer (sent before it)."""
    rng = random.Random(seed)
    eval_comments = [json.loads(line)["comment"] for line in COMMENTS.read_text().splitlines()]
    # 5-40 words: one to three of the labelled set's comments (English and German) run together
    comments = [" ".join(rng.sample(eval_comments, rng.randint(1, 3))) for _ in range(5_000)]
    responses = backlog(n, seed=seed, comments=comments, comment_share=0.4)
    invitations: list[tuple[bytes, bytes]] = []
    now = datetime.now(UTC)
    erased = 0
    for key, value in list(responses):
        event = response_events.validate_json(value)
        if isinstance(event, ResponseSubmitted):
            invitation = InvitationSent(
                invitation_id=f"inv-{event.response_id}", respondent_id=event.respondent_id, channel=event.channel,
                invited_at=event.answered_at, attributes=event.attributes, recorded_at=now,
            )  # fmt: skip
            invitations.append((key, invitation.to_bytes()))
            if rng.random() < 0.001:  # a few people ask to be erased
                erasure = RespondentErased(
                    erasure_id=f"erase-{erased}", respondent_id=event.respondent_id, requested_at=now
                )
                responses.append((key, erasure.to_bytes()))
                erased += 1
    return responses, invitations


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by each part of the loop: the six services (by name), PostgreSQL (its
    processes added up) and the broker; a process that ended is not counted."""
    found: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            used = cpu_seconds(entry.name)
        except OSError:
            continue
        if " -m services " in command and command.split(" -m services ")[1].split(" ")[0] in SERVICES:
            part = command.split(" -m services ")[1].split(" ")[0]
        elif (entry / "comm").read_text().strip() == "postgres":  # the bench's own: nothing else runs beside it
            part = "postgresql"
        elif "tansu" in command:
            part = "broker"
        else:
            continue
        found[part] = found.get(part, 0.0) + used
    return found


def _cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {part: round(after[part] - before.get(part, 0.0), 1) for part in after}


def policy_with_an_experiment(work: Path) -> Path:
    path = work / "policy.yaml"
    text = DEFAULT_POLICY.read_text()
    marker = "    template: passive_education\n"
    assert marker in text
    path.write_text(
        text.replace("version: default-1", "version: bench-1").replace(marker, marker + "    holdout: 0.1\n", 1)
    )
    return path


def bench_loop(n: int, sustain_s: int = 60, profile_dir: Path | None = None) -> LoopResult:
    """With `profile_dir`, PostgreSQL is sampled in each phase (bench/pgsample.py): by service and
    statement, printed and written there."""
    responses, invitations = loop_backlog(n)
    work = Path(tempfile.mkdtemp(prefix="nps-bench-loop-"))
    try:
        return _run(work, responses, invitations, sustain_s, profile_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    work: Path,
    responses: list[tuple[bytes, bytes]],
    invitations: list[tuple[bytes, bytes]],
    sustain_s: int,
    profile_dir: Path | None,
) -> LoopResult:
    n = len(responses)
    with private_infrastructure(work, namespace="bench") as infra:
        bootstrap, topics = infra.bootstrap, infra.topics
        print(f"loop benchmark: {len(responses):,} response events, {len(invitations):,} invitations", flush=True)
        asyncio.run(fill(bootstrap, topics.invitations, invitations))
        asyncio.run(fill(bootstrap, topics.responses, responses))
        raw_s = run_raw(bootstrap, topics.responses, len(responses))
        print(f"  raw consume  {len(responses) / raw_s:>9,.0f} events/s", flush=True)
        ports = {name: free_port() for name in SERVICES}
        env = {
            **os.environ,
            "DATABASE_URL": infra.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "NPS_TOPIC_NAMESPACE": "bench",
            "NPS_PSEUDONYM_SECRET": BENCH_SECRET,
            "NPS_SECRETS_KEY": BENCH_SECRETS_KEY,
            "NPS_VAR_DIR": str(work / "var"),
            "NPS_LOG_LEVEL": "WARNING",
            "NPS_FOLLOWUP_POLICY": str(policy_with_an_experiment(work)),
            **{f"NPS_{name.upper()}_PORT": str(port) for name, port in ports.items()},
            # The bench's key without the per-key rate limit (2,000/s): the load, and probes polling hard
            **{f"NPS_{name.upper()}_RATE_LIMIT_PER_S": "0" for name in SERVICES},
            "NPS_SCORING_MAX_VALUES_PER_DIMENSION": "100000",  # every probe its own segment
        }
        key = asyncio.run(create_api_key(infra.database_url, "bench"))  # known to the services from their start
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        log = work / "loop.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "services", "up"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        try:
            groups = [
                GroupProgress("nps-scoring", topics.responses),
                GroupProgress("nps-scoring-rates", topics.invitations, (topics.responses,)),
                GroupProgress("nps-scoring-themes", topics.responses),
                GroupProgress("nps-followup", topics.responses),
                GroupProgress("nps-delivery", topics.responses, (topics.followups, topics.tickets)),
            ]
            sizes = {topics.responses: len(responses), topics.invitations: len(invitations)}
            # Polled from the start: the services consume as soon as their loops run, before /readyz
            cpu_start = _cpu_seconds()
            with sampling(infra.database_url, profile_dir, "loop-backlog"):
                whole_s = _until_read(bootstrap, groups, sizes, 900, log, lambda: process.poll() is not None)
            cpu_backlog = _cpu_used(cpu_start, _cpu_seconds())
            print(
                f"  whole loop   {n / whole_s:>9,.0f} responses/s; now {RATE:,} POSTs/s for {sustain_s} s", flush=True
            )
            where = [in_scoring(urls["scoring"]), in_followup(urls["followup"]), in_themes(urls["themes"])]
            asyncio.run(visible_after(urls["ingest"], key, RATE, 5, where, 200, CONNECTIONS))  # warm-up, not reported
            cpu_before = _cpu_seconds()
            with sampling(infra.database_url, profile_dir, "loop-sustained"):
                sustained = asyncio.run(visible_after(urls["ingest"], key, RATE, sustain_s, where, 200, CONNECTIONS))
            cpu_sustained = _cpu_used(cpu_before, _cpu_seconds())
        finally:
            process.terminate()
            process.wait(60)
    result = LoopResult(
        len(responses), len(invitations), raw_s, whole_s, groups, sustained, sustain_s, cpu_backlog, cpu_sustained
    )
    print(f"  CPU seconds, backlog: {cpu_backlog}", flush=True)
    print(f"  CPU seconds, sustained run: {cpu_sustained}", flush=True)
    for g in groups:
        print(f"  {g.group:<18} {_rate(g, result):>9,.0f} events/s", flush=True)
    for name, probe in sustained.items():
        print(f"  202 -> visible in {name:<9} p50 {probe.p50_ms:,.0f} ms  p99 {probe.p99_ms:,.0f} ms  "
              f"max {probe.max_ms:,.0f} ms ({probe.sent:,} POSTs acked at {probe.acked_rate:,.0f}/s; "
              f"errors or unseen probes: {probe.errors})", flush=True)  # fmt: skip
    return result


def _rate(group: GroupProgress, result: LoopResult) -> float:
    total = result.invitations if group.topic.endswith("invitations.v1") else result.responses
    if group.first is None or group.done is None or group.done <= group.first:
        return 0.0
    return (total - group.first_committed) / (group.done - group.first)


def _until_read(
    bootstrap: str,
    groups: list[GroupProgress],
    sizes: dict[str, int],
    limit_s: float,
    log: Path,
    died: Callable[[], bool],
) -> float:
    """Poll every group's lag until none has anything left; returns seconds from the first commit."""
    deadline = time.monotonic() + limit_s
    while True:
        for g in groups:
            if g.done is not None:
                continue
            lags = asyncio.run(group_lag(bootstrap, g.group, [g.topic, *g.others]))
            now = time.monotonic()
            committed = sizes[g.topic] - lags[g.topic]
            if g.first is None and committed > 0:
                g.first, g.first_committed = now, committed
            if g.first is not None and all(v == 0 for v in lags.values()):
                g.done = now
        if all(g.done is not None for g in groups):
            starts = [g.first for g in groups if g.first is not None]
            return max(g.done for g in groups if g.done is not None) - min(starts)
        if time.monotonic() > deadline or died():
            raise RuntimeError(
                f"the loop did not catch up: {[(g.group, g.done) for g in groups]}\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.1)


def write_loop_report(result: LoopResult) -> Path:
    rows = [
        f"| `{g.group}` | {_rate(g, result):,.0f} | "
        + ("invitations" if g.topic.endswith("invitations.v1") else "response events")
        + " |"
        for g in result.groups
    ]
    lines = [
        "## The whole loop",
        "",
        f"- **Date:** {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {machine()}",
        f"- **Setup:** `nps up`'s six services, not pinned, with the embedded PostgreSQL and broker on the same "
        f"cores; a backlog of {result.responses:,} response events (40% with a comment of 5-40 words in two "
        f"languages, ~6 segments, 3% retried duplicates, 3% revisions, a few erasures) and {result.invitations:,} "
        "invitations waiting on the topics; the default policy with a 10% holdout on passives. Timed from the first "
        "commit of any group to the moment no group has anything left to read (delivery's follow-up and ticket "
        "topics included). Then, on the same loop, 2,000 POSTs/s through ingest (64 keep-alive connections from "
        f"this host), every 200th a probe polled every {POLL_S * 1000:.0f} ms in scoring, follow-up and themes until "
        "it shows.",
        f"- **This host's raw consume** (aiokafka, no decoding, no database): {result.raw_rate:,.0f} events/s.",
        "",
        "| run | responses/s | target | met |",
        "|---|---|---|---|",
        f"| whole loop: every group committed the backlog | {result.whole_rate:,.0f} | ≥ {TARGET:,}/s | "
        f"{'yes' if result.whole_rate >= TARGET else '**no**'} |",
        *[
            f"| {RATE:,} POSTs/s for {result.sustain_s} s (acked at {p.acked_rate:,.0f}/s): p99 from the 202 to "
            f"visible in {name} (p50 {p.p50_ms:,.0f} ms, max {p.max_ms:,.0f} ms; {p.errors} errors or unseen probes "
            f"of {p.sent // 200:,}) | {p.p99_ms:,.0f} ms | < {P99_TARGET_MS:,} ms | "
            f"{'yes' if p.p99_ms < P99_TARGET_MS and p.errors == 0 and p.acked_rate >= 0.97 * RATE else '**no**'} |"
            for name, p in result.sustained.items()
        ],
        *(
            [
                "",
                f"The load was not taken at its rate: ingest acknowledged {slowest:,.0f} POSTs/s (a 202 waits for the "
                "broker's ack; with the whole loop reading, the embedded broker was the busiest process), so the "
                "latencies above are at that rate, not at 2,000/s.",
            ]
            if (slowest := min((p.acked_rate for p in result.sustained.values()), default=RATE)) < 0.97 * RATE
            else []
        ),
        "",
        f"Where the CPU went (seconds of CPU per part of the loop; the host has {os.cpu_count()} cores):",
        "",
        "| part | backlog phase | sustained phase |",
        "|---|---|---|",
        *[
            f"| {part} | {result.cpu_backlog.get(part, 0.0):,.1f} | {result.cpu_sustained.get(part, 0.0):,.1f} |"
            for part in sorted(set(result.cpu_backlog) | set(result.cpu_sustained))
        ],
        f"| (wall clock) | {result.whole_s:,.1f} | "
        f"{max((p.acked_s for p in result.sustained.values()), default=0.0):,.1f} |",
        "",
        "Each group's own rate, from its first commit to its last:",
        "",
        "| group | events/s | counted on |",
        "|---|---|---|",
        *rows,
        "",
    ]
    return write_section("loop", lines)
