"""Collecting from pages and apps, and response rates (`make bench`, section `collect`):

  prompt       GET /v1/prompt with a publishable key, paced by wrk at a fixed offered rate
               (2,000/s: 20 connections, each waiting 10 ms between its requests), over 5,000
               people of whom half answered and a quarter were invited: latency at that rate.
  publishable  POST /v1/responses with a publishable key (origin, identity hash, per-person and
               per-address limits off: wrk is one address), as fast as it goes.
  rates        scoring's response-rate consumer's batch handler (decode included), in this process
               on one core, over 200,000 invitations and 100,000 responses in batches of 10,000, on a
               private PostgreSQL on the other core: invitations counted per second.

One `nps ingest` (one worker) on core 0; PostgreSQL, the broker and wrk on core 1. wrk measures from
when it sends (a request delayed by a queue at the client side is not counted late), so the prompt's
figure is the server's latency at that offered rate."""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import BENCH_SECRETS_KEY, machine, start_service, verdict, write_section
from bench.ingest import WrkResult, run_wrk
from ingest_service.public import identity_hash
from scoring_service.bootstrap import rates_spec
from scoring_service.settings import ScoringSettings
from services.embedded import free_port
from services.infra import pin, private_infrastructure
from shared.auth import KeyStore, Publishable, hash_api_key, identity_place, new_identity_secret, new_publishable_key
from shared.consumer import Message
from shared.db import make_engine
from shared.events import InvitationSent, ResponseSubmitted
from shared.sealed import Sealer

PAGE = "https://app.example.com"
PEOPLE = 5_000
PROMPT_RATE = 2_000
PROMPT_CONNECTIONS = 20

PROMPT_LUA = r"""
local n = 0
request = function()
  n = n + 1
  local i = (n * 7919) % #people + 1
  return wrk.format("GET", path .. "?survey_id=q4&respondent_id=" .. people[i] .. "&respondent_hash=" .. hashes[i], {
    ["Authorization"]=auth, ["Origin"]=origin})
end
delay = function() return pause end
"""

PUBLIC_POST_LUA = r"""
local n = 0
local tid = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
request = function()
  n = n + 1
  local i = (n * 7919) % #people + 1
  local body = string.format(
    '{"response_id":"%s-%d-%d","respondent_id":"%s","respondent_hash":"%s","score":%d,"survey_id":"q4",' ..
    '"comment":"the checkout is slow","attributes":{"product":"atlas"}}', run, tid, n, people[i], hashes[i], n % 11)
  return wrk.format("POST", path, {["Content-Type"]="application/json", ["Authorization"]=auth, ["Origin"]=origin},
    body)
end
"""


@dataclass(frozen=True, slots=True)
class RateRun:
    stream: str  # what the counting was given, for the report
    invitations: int
    responses: int
    seconds: float

    @property
    def invitations_per_s(self) -> float:
        return self.invitations / self.seconds


# The streams the counting is measured on: invitations alone (the target's), then with answers.
RATE_STREAMS = (
    ("invitations alone", 0, True),
    ("with an answer for every fifth invitation (a 20% response rate), in the order a stream arrives", 40_000, False),
    ("with an answer for every other one, arriving in random order (the worst case)", 100_000, True),
)


@dataclass(frozen=True, slots=True)
class CollectResult:
    prompt: WrkResult
    publishable: WrkResult
    rates: list[RateRun]


def lua_table(name: str, values: list[str]) -> str:
    return f"{name} = {{" + ",".join(f'"{v}"' for v in values) + "}\n"


async def publishable_key(database_url: str) -> tuple[str, str]:
    key, identity, name = new_publishable_key(), new_identity_secret(), f"bench-{uuid.uuid4().hex[:6]}"
    engine = make_engine(database_url)
    try:
        sealed = Sealer.of(BENCH_SECRETS_KEY).seal(identity, identity_place(name))
        await KeyStore(engine).create(name, hash_api_key(key), (), "bench", Publishable(frozenset({PAGE})), sealed)
    finally:
        await engine.dispose()
    return key, identity


async def seed_people(base: str, key: str, identity: str, people: list[str]) -> None:
    """Half the people answered, a quarter were shown the prompt: the prompt's reads find rows."""
    headers = {"Authorization": f"Bearer {key}", "Origin": PAGE}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        for n, person in enumerate(people):
            hashed = identity_hash(identity, person)
            if n % 2 == 0:
                body = {"respondent_id": person, "respondent_hash": hashed, "score": n % 11, "survey_id": "q4"}
                assert (await client.post("/v1/responses", json=body)).status_code == 202
            elif n % 4 == 1:
                shown = {"impression_id": str(uuid.uuid4()), "action": "shown", "respondent_id": person,
                         "respondent_hash": hashed, "survey_id": "q4"}  # fmt: skip
                assert (await client.post("/v1/impressions", json=shown)).status_code == 202


def bench_http(seconds: int) -> tuple[WrkResult, WrkResult]:
    work = Path(tempfile.mkdtemp(prefix="nps-bench-collect-"))
    with private_infrastructure(work, namespace="bench") as infra:
        key, identity = asyncio.run(publishable_key(infra.database_url))
        port = free_port()
        env = {
            "DATABASE_URL": infra.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
            "NPS_TOPIC_NAMESPACE": "bench",
            "NPS_INGEST_PORT": str(port),
            "NPS_LOG_LEVEL": "WARNING",
            "NPS_SECRETS_KEY": BENCH_SECRETS_KEY,
            "NPS_PSEUDONYM_SECRET": "nps-bench-pseudonym-secret-0123456789",
            "NPS_INGEST_PUBLIC_RATE_PER_ADDRESS_S": "0",  # wrk is one address
            "NPS_INGEST_PUBLIC_RATE_PER_RESPONDENT_S": "0",
        }
        pin(infra.pids, 1)
        ingest = start_service("ingest", env, work / "ingest.log", cpu="0")
        try:
            base = f"http://127.0.0.1:{port}"
            people = [f"user-{n}" for n in range(PEOPLE)]
            asyncio.run(seed_people(base, key, identity, people))
            tables = lua_table("people", people) + lua_table("hashes", [identity_hash(identity, p) for p in people])
            common = {"auth": f"Bearer {key}", "origin": PAGE}
            pause = PROMPT_CONNECTIONS * 1000 // PROMPT_RATE
            print(f"collect benchmark ({seconds} s per run):", flush=True)
            warm = run_wrk("warm-up", f"{base}/v1/prompt", tables + PROMPT_LUA, {**common, "path": "/v1/prompt",
                           "pause": str(pause)}, PROMPT_CONNECTIONS, 3, 1, cpu="1")  # fmt: skip
            # Each connection sends, waits for the answer, then pauses: enough connections that the
            # offered rate is PROMPT_RATE at the warm-up's latency.
            connections = max(PROMPT_CONNECTIONS, round(PROMPT_RATE * (pause + warm.p50_ms) / 1000))
            prompt = run_wrk(
                "prompt", f"{base}/v1/prompt", tables + PROMPT_LUA,
                {**common, "path": "/v1/prompt", "pause": str(pause)}, connections, seconds, 1, cpu="1",
            )  # fmt: skip
            run = f"b{int(time.time())}"
            posted = run_wrk(
                "public", f"{base}/v1/responses", tables + PUBLIC_POST_LUA,
                {**common, "path": "/v1/responses", "run": run}, 64, seconds, 1, cpu="1",
            )  # fmt: skip
        finally:
            ingest.terminate()
            ingest.wait(30)
    return prompt, posted


def rate_events(invitations: int, responses: int, seed: int = 7, shuffled: bool = True) -> list[bytes]:
    """A month of invitations to 100,000... people (two each) and `responses` answers. Shuffled: the
    answers at random times of random people, everything in random order (the worst case: half the
    invitations arrive after answers they may be picked by). Else as a stream arrives: each answer
    to a random invitation of its person, after it (half within the hour, the rest exponential with a
    2-day mean, at most 13 days), everything in the order of its time."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    people = invitations // 2
    out: list[tuple[datetime, bytes]] = []
    sent: list[tuple[str, datetime]] = []
    for n in range(invitations):
        at = start + timedelta(minutes=rng.randrange(60 * 24 * 30))
        sent.append((f"p{n % people}", at))
        out.append((at,
            InvitationSent(
                invitation_id=f"inv-{n}", respondent_id=f"p{n % people}", survey_id="q4",
                channel=rng.choice(("email", "web", "sms")), invited_at=at,
                attributes={"product": rng.choice(("atlas", "nimbus", "zephyr")), "plan": rng.choice(("pro", "free"))},
                recorded_at=at,
            ).to_bytes()
        ))  # fmt: skip
    for n in range(responses):
        if shuffled:
            person, at = f"p{rng.randrange(people)}", start + timedelta(minutes=rng.randrange(60 * 24 * 31))
        else:
            person, invited = sent[rng.randrange(len(sent))]
            late = rng.expovariate(1 / 48) if rng.random() < 0.5 else rng.random()
            at = invited + timedelta(hours=min(late, 13 * 24))
        out.append((at,
            ResponseSubmitted(
                response_id=f"r-{n}", respondent_id=person, score=rng.randrange(11),
                survey_id="q4", answered_at=at, submitted_at=at,
            ).to_bytes()
        ))  # fmt: skip
    if shuffled:
        rng.shuffle(out)
    else:
        out.sort(key=lambda pair: pair[0])
    return [value for _, value in out]


def bench_rates(
    invitations: int = 200_000, responses: int = 100_000, batch: int = 10_000, shuffled: bool = True
) -> float:
    """Seconds the handler took (decode included) for everything, in batches."""
    work = Path(tempfile.mkdtemp(prefix="nps-bench-rates-"))
    with private_infrastructure(work, namespace="bench") as infra:
        pin(infra.pids, 1)
        settings = ScoringSettings(
            database_url=infra.database_url, pseudonym_secret="nps-bench-pseudonym-secret-0123456789"
        )
        spec = rates_spec(settings)
        events = rate_events(invitations, responses, shuffled=shuffled)

        async def run() -> float:
            engine = make_engine(infra.database_url)
            spent = 0.0
            try:
                for offset in range(0, len(events), batch):
                    began = time.perf_counter()
                    chunk = [
                        Message(spec.decode(v), "t", 0, offset + i, 0)
                        for i, v in enumerate(events[offset : offset + batch])
                    ]
                    async with engine.begin() as conn:
                        await spec.handler(conn, chunk)
                    spent += time.perf_counter() - began
            finally:
                await engine.dispose()
            return spent

        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {0})
        return asyncio.run(run())


def bench_collect(seconds: int) -> CollectResult:
    prompt, posted = bench_http(seconds)
    invitations, runs = 200_000, []
    for stream, responses, shuffled in RATE_STREAMS:
        run = RateRun(stream, invitations, responses, bench_rates(invitations, responses, shuffled=shuffled))
        print(f"  rates     {run.invitations_per_s:>9,.0f} invitations/s ({stream}: {run.seconds:.1f} s)")
        runs.append(run)
    return CollectResult(prompt, posted, runs)


def write_collect_report(result: CollectResult) -> Path:
    p = result.prompt
    lines = [
        "## Collecting from pages and apps, and response rates",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {machine()}. `python -m bench --only collect` (bench/collect.py): one",
        "`nps ingest` worker on core 0; PostgreSQL, the broker and wrk on core 1.",
        "",
        "| what | measured | target | met |",
        "|---|---|---|---|",
        f"| `GET /v1/prompt` at {p.requests_per_s:,.0f}/s offered ({p.connections} paced connections), "
        f"publishable key | p50 {p.p50_ms:.1f} ms, p99 {p.p99_ms:.1f} ms, {p.errors} errors | p99 < 20 ms at 2,000/s "
        f"| {verdict(p.p99_ms < 20 and p.requests_per_s >= 0.95 * PROMPT_RATE and p.errors == 0)} |",
        f"| `POST /v1/responses`, publishable key (origin, identity hash) | {result.publishable.requests_per_s:,.0f}/s, "
        f"p99 {result.publishable.p99_ms:.1f} ms, {result.publishable.errors} errors | recorded | — |",
        *(
            f"| response-rate counting, one core (decode included): {run.stream} | "
            f"{run.invitations_per_s:,.0f} invitations/s ({run.invitations:,} invitations"
            + (f" and {run.responses:,} answers" if run.responses else "")
            + f" in {run.seconds:.1f} s) | "
            + (f"≥ 20,000/s | {verdict(run.invitations_per_s >= 20_000)} |" if not run.responses else "recorded | — |")
            for run in result.rates
        ),
        "",
        "The counting's target is for invitations; a stream's answers cost their matching on top. Where the time",
        "goes (profiled, 200,000 invitations and 40,000 answers in arrival order): about half is PostgreSQL's on",
        "the other core, which the consumer waits for, mostly the COPY into `rate_invitations` and its three",
        "indexes (~15 us a row); the rest is this process's Python (~20 us an event: decode, the keyed pseudonym,",
        "segments, rows). An answer adds its pick (one indexed lookup and the update of the invitation it picks,",
        "kept on its page by the table's fillfactor); only an invitation an earlier answer may pick (it arrives",
        "after that answer) has its person matched again in full, which is why the random order costs more.",
    ]
    return write_section("collect", lines)
