"""The chaos scenario: the whole loop (`nps up`) under a steady load of unique responses over HTTP,
and, in turn, the faults an operator meets. After each fault the phase's responses must be counted
exactly once by scoring, routed once by follow-up, with one ticket per detractor; over the whole
run, no 5xx but 503 with Retry-After, and every poison message in the dead-letter topic.

`make chaos` runs every fault at ~500 responses/s and writes docs/reliability.md; `make test` runs a
short version (tests/chaos/test_chaos.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from services.infra import is_ready
from shared.events import ResponseSubmitted
from tests.e2e.conftest import SERVICES, Loop, start_loop, stop_loop
from tests.helpers import children_of, postgres_hung, process_hung, read_topic

REPO = Path(__file__).resolve().parents[2]
BACKLOG = 10_000  # responses the consumers are behind when the broker hangs
BACKLOG_FIRST = 10_000_000  # the backlog's response numbers, apart from the driver's


# What the readers ask, in turn: one query of each service's API that reads the database.
READS = (
    ("scoring", "/v1/nps?segment=all"),
    ("followup", "/v1/tickets?limit=5"),
    ("alerts", "/v1/alerts?limit=5"),
    ("themes", "/v1/themes?window=7d"),
    ("delivery", "/v1/webhooks"),
)


@dataclass(frozen=True, slots=True)
class Answered:
    at: float  # when it was asked (time.monotonic())
    seconds: float
    status: str  # the HTTP status, or the transport error's name
    what: str  # the method and the URL's path


@dataclass
class Driver:
    """Posts unique responses at `rate` per second, and `readers` clients read every service's API
    without pause. A response is retried with its response_id until it gets 202 (what the README
    tells clients to do), so every response ends up acknowledged once; every answer is recorded
    with its time."""

    urls: dict[str, str]
    auth: dict[str, str]
    rate: float
    workers: int = 64  # each waits for its answer: enough of them that latency does not cap the rate
    readers: int = 2
    phase: str = "warmup"
    acked: dict[str, dict[str, int]] = field(default_factory=dict)  # phase -> response_id -> score
    pending: Counter[str] = field(default_factory=Counter)  # phase -> responses not yet acknowledged
    answers: Counter[str] = field(default_factory=Counter)
    timeline: list[Answered] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    posting: asyncio.Event = field(default_factory=asyncio.Event)  # cleared: ingest is left idle
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _seq: int = 0

    async def run(self) -> None:
        self.posting.set()
        # Each client its own connection, waiting for its answer as long as it takes: the slowest
        # answer is measured, not cut short. (One httpx client shared by the 66 made answers the
        # services gave within 2 s, by their own metrics, arrive up to 10 s later: its pool.)
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(timeout=60))
                for _ in range(self.workers + self.readers)
            ]
            await asyncio.gather(
                *(self._worker(clients[w], w) for w in range(self.workers)),
                *(self._reader(clients[self.workers + r], r) for r in range(self.readers)),
            )

    def stop(self) -> None:
        self._stop.set()

    def during(self, start: float, end: float) -> list[Answered]:
        """The answers to what was in flight at some time between `start` and `end`: asked before
        `end`, answered after `start`. On a loaded machine this process's event loop can lag by
        seconds, so a request stamped as asked just before a fault can reach its service during it
        (in a fresh clone's suite ingest's log showed 20 requests answered 503 in a 5 s PostgreSQL
        hang, and counted by when they were asked the driver saw none of them: "the hang went unfelt")."""
        return [a for a in self.timeline if a.at <= end and a.at + a.seconds >= start]

    async def _ask(self, client: httpx.AsyncClient, method: str, url: str, **kw: object) -> httpx.Response | None:
        at = time.monotonic()
        try:
            reply = await client.request(method, url, headers=self.auth, **kw)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            self.answers[type(exc).__name__] += 1
            self.timeline.append(Answered(at, time.monotonic() - at, type(exc).__name__, _what(method, url)))
            return None
        self.answers[str(reply.status_code)] += 1
        self.timeline.append(Answered(at, time.monotonic() - at, str(reply.status_code), _what(method, url)))
        if reply.status_code == 503 and "retry-after" not in reply.headers:
            self.violations.append(f"503 without Retry-After: {reply.text[:200]}")
        return reply

    async def _reader(self, client: httpx.AsyncClient, r: int) -> None:
        turn = r
        while not self._stop.is_set():
            service, path = READS[turn % len(READS)]
            turn += 1
            reply = await self._ask(client, "GET", f"{self.urls[service]}{path}")
            if reply is not None and reply.status_code not in (200, 503):
                self.violations.append(f"{reply.status_code} for GET {service}{path}: {reply.text[:200]}")
            await asyncio.sleep(0.05 if reply is not None else 0.2)

    async def _worker(self, client: httpx.AsyncClient, w: int) -> None:
        interval = self.workers / self.rate
        next_at = time.monotonic() + w * interval / self.workers
        while not self._stop.is_set():
            if not self.posting.is_set():
                await self.posting.wait()
                next_at = time.monotonic() + w * interval / self.workers
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic() - interval)
            self._seq += 1
            phase, n = self.phase, self._seq
            score = n % 11
            body = {
                "response_id": f"{phase}-{n}",
                "respondent_id": f"{phase}-person-{n}",  # one person each: one ticket per detractor
                "score": score,
                "attributes": {"phase": phase},
            }
            self.pending[phase] += 1
            await self._until_acknowledged(client, body)
            self.pending[phase] -= 1
            self.acked.setdefault(phase, {})[str(body["response_id"])] = score

    async def _until_acknowledged(self, client: httpx.AsyncClient, body: dict[str, object]) -> None:
        while True:
            reply = await self._ask(client, "POST", f"{self.urls['ingest']}/v1/responses", json=body)
            if reply is None:
                await asyncio.sleep(0.2)
                continue
            if reply.status_code == 202:
                return
            if reply.status_code not in (503, 429):
                self.violations.append(f"{reply.status_code} for {body['response_id']}: {reply.text[:200]}")
            await asyncio.sleep(0.2)


def _what(method: str, url: str) -> str:
    return f"{method} {url.split('/', 3)[-1].split('?')[0]} ({url.split('//')[1].split('/')[0].rsplit(':', 1)[1]})"


@dataclass
class Outcome:
    fault: str
    acknowledged: int
    recovered_s: float | None
    detail: str = ""
    slowest_s: float = 0.0  # the slowest answer to what was asked from the fault until recovered
    slowest: str = ""  # what that was
    unavailable: int = 0  # the 503s given meanwhile


class Scenario:
    def __init__(self, var: Path, rate: float, fast_group: bool = True, hang_s: float = 20.0) -> None:
        self.var = var
        self.rate = rate
        self.hang_s = hang_s
        self.fast_group = fast_group
        self.run = uuid.uuid4().hex[:6]
        self.loop: Loop = start_loop(var, REPO, fast_group=fast_group)
        self.ports = {name: int(url.rsplit(":", 1)[1]) for name, url in self.loop.urls.items()}
        self.driver = Driver(dict(self.loop.urls), self.loop.auth, rate)
        self.outcomes: list[Outcome] = []
        self.poison_keys: list[bytes] = []
        self.mismatch = ""
        self.achieved_rate = 0.0
        self.closing = ""  # the phase the fault being applied closes

    # -- faults ---------------------------------------------------------------------------------

    def kill_service(self, name: str) -> Callable[[], Awaitable[str]]:
        async def fault() -> str:
            os.kill(self.loop.children()[name], signal.SIGKILL)
            return ""

        return fault

    async def stop_broker(self) -> str:
        with process_hung(broker_pid(self.loop.process.pid)):
            await asyncio.sleep(10)
        return "SIGSTOP for 10 s"

    async def hang_postgres(self) -> str:
        """Every PostgreSQL process stopped (a database stuck on I/O, a partition): nothing dies,
        nothing answers."""
        with postgres_hung(self.var / "pg"):
            await asyncio.sleep(self.hang_s)
        return f"SIGSTOP for {self.hang_s:.0f} s"

    async def hang_broker_behind(self) -> str:
        """The broker stopped while the consumers work through a backlog and ingest is idle: the
        backlog goes straight onto the topic (as ingest would have published it), the broker is
        stopped at once, and posting resumes after it continues. The backlog belongs to the phase
        this fault closes: its exactness is what the recovery waits for."""
        self.driver.posting.clear()
        await asyncio.sleep(1.0)  # the requests in flight are answered
        phase = self.closing
        backlog = await self.publish_backlog(phase, BACKLOG)
        with process_hung(broker_pid(self.loop.process.pid)):
            await asyncio.sleep(self.hang_s)
        self.driver.acked.setdefault(phase, {}).update(backlog)
        self.driver.posting.set()
        return f"{len(backlog):,} responses behind, SIGSTOP for {self.hang_s:.0f} s"

    async def publish_backlog(self, phase: str, n: int) -> dict[str, int]:
        producer = AIOKafkaProducer(bootstrap_servers=self.loop.bootstrap, linger_ms=20)
        await producer.start()
        made: dict[str, int] = {}
        try:
            sent = []
            now = datetime.now(UTC)
            for i in range(n):
                # Numbered apart from the driver's responses, in the phase's id pattern (`exact`).
                response_id, score = f"{phase}-{BACKLOG_FIRST + i}", i % 11
                event = ResponseSubmitted(
                    response_id=response_id,
                    respondent_id=f"{phase}-backlog-{i}",
                    score=score,
                    answered_at=now,
                    submitted_at=now,
                    attributes={"phase": phase},
                )
                sent.append(
                    await producer.send("nps.responses.v1", value=event.to_bytes(), key=event.respondent_id.encode())
                )
                made[response_id] = score
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        return made

    async def kill_postmaster(self) -> str:
        os.kill(int((self.var / "pg" / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        return ""

    async def kill_launcher(self) -> str:
        children = list(self.loop.children().values())
        self.loop.process.kill()
        self.loop.process.wait()
        deadline = time.monotonic() + 15
        while any(pid_alive(p) for p in children) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        outlived = [p for p in children if pid_alive(p)]
        if outlived:
            self.driver.violations.append(f"children outlived the launcher: {outlived}")
        started = time.monotonic()
        self.loop = await asyncio.to_thread(start_loop, self.var, REPO, None, self.ports, self.fast_group)
        return f"children gone, next launcher up in {time.monotonic() - started:.1f} s"

    async def poison(self) -> str:
        producer = AIOKafkaProducer(bootstrap_servers=self.loop.bootstrap, max_request_size=4 * 1024 * 1024)
        await producer.start()
        try:
            for topic in ("nps.responses.v1", "nps.scores.v1"):  # the topics the services consume
                for i, value in enumerate((b"not json {", b'{"type": "ResponseSubmitted"}', b"x" * 1_048_576)):
                    key = f"chaos-poison-{self.run}-{topic}-{i}".encode()
                    await producer.send_and_wait(topic, value=value, key=key)
                    self.poison_keys.append(key)
        finally:
            await producer.stop()
        return f"{len(self.poison_keys)} messages: not JSON, wrong shape, 1 MB"

    def faults(self, full: bool) -> list[tuple[str, Callable[[], Awaitable[str]]]]:
        hung = f"{self.hang_s:.0f} s"
        if not full:
            return [
                ("SIGKILL scoring", self.kill_service("scoring")),
                (f"PostgreSQL hung {hung}", self.hang_postgres),
                ("poison messages", self.poison),
            ]
        faults: list[tuple[str, Callable[[], Awaitable[str]]]] = []
        for name in ("scoring", "followup", "alerts"):
            faults += [(f"SIGKILL {name} ({i})", self.kill_service(name)) for i in (1, 2)]
        faults += [
            ("SIGKILL ingest", self.kill_service("ingest")),
            ("SIGSTOP the broker 10 s", self.stop_broker),
            (f"broker hung {hung} with consumers behind", self.hang_broker_behind),
            ("SIGKILL PostgreSQL's postmaster", self.kill_postmaster),
            (f"PostgreSQL hung {hung}", self.hang_postgres),
            ("SIGKILL the launcher, start it again", self.kill_launcher),
            ("poison messages", self.poison),
        ]
        return faults

    # -- checks ---------------------------------------------------------------------------------

    async def exact(self, phase: str) -> bool:
        """The phase's acknowledged responses, each counted once and routed once."""
        if self.driver.pending[phase]:
            self.mismatch = f"{self.driver.pending[phase]} responses still being retried"
            return False
        acked = self.driver.acked.get(phase, {})
        scores = list(acked.values())
        want = (len(scores), sum(s >= 9 for s in scores), sum(s <= 6 for s in scores))
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                reply = await client.get(
                    f"{self.loop.urls['scoring']}/v1/nps", params={"segment": f"phase:{phase}"}, headers=self.loop.auth
                )
        except httpx.TransportError:
            return False
        if reply.status_code != 200:
            self.mismatch = f"scoring answered {reply.status_code}"
            return False
        body = reply.json()
        if (body["n"], body["promoters"], body["detractors"]) != want:
            self.mismatch = f"scoring counts {body['n'], body['promoters'], body['detractors']}, acknowledged {want}"
            return False
        url = (self.var / "database-url").read_text().strip()
        conn = await asyncpg.connect(url)
        try:
            followups = await conn.fetchval(
                "SELECT count(*) FROM followup.followups WHERE response_id ~ $1", f"^{phase}-[0-9]+$"
            )
            tickets = await conn.fetchval(
                "SELECT count(*) FROM followup.tickets WHERE response_id ~ $1", f"^{phase}-[0-9]+$"
            )
        finally:
            await conn.close()
        self.mismatch = f"{followups} follow-ups and {tickets} tickets for {want[0]} responses, {want[2]} detractors"
        return bool(followups == want[0] and tickets == want[2])

    async def deadlettered(self) -> set[bytes]:
        records = await read_topic(self.loop.bootstrap, "nps.deadletter.v1", expect=None, timeout=5)
        return {r.key for r in records if r.key in self.poison_keys and dict(r.headers).get("nps-dlq-reason")}

    # -- the run --------------------------------------------------------------------------------

    async def execute(self, full: bool, warm_s: float, recover_s: float, min_acked: int = 0) -> list[Outcome]:
        """Each fault closes a phase: the responses acknowledged since the previous fault. The time to
        recover is from the fault until every one of them is counted and routed exactly once (the
        load goes on meanwhile, into the next phase, checked after the next fault or at the end).
        A phase lasts `warm_s`, and longer until `min_acked` responses were acknowledged in it: on a
        machine busy with other tests the load reaches fewer per second, not fewer per fault."""
        self.driver.phase = f"{self.run}-0"
        load = asyncio.create_task(self.driver.run())
        began = time.monotonic()
        try:
            for i, (name, fault) in enumerate(self.faults(full)):
                phase = f"{self.run}-{i}"
                await asyncio.sleep(warm_s)
                patience = time.monotonic() + recover_s
                while len(self.driver.acked.get(phase, {})) < min_acked and time.monotonic() < patience:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
                self.closing = phase
                self.driver.phase = f"{self.run}-{i + 1}"
                started = time.monotonic()
                detail = await fault()
                self.driver.urls.update(self.loop.urls)
                recovered = None
                while time.monotonic() - started < recover_s:
                    if await self.exact(phase):
                        recovered = time.monotonic() - started
                        break
                    await asyncio.sleep(0.5)
                acked = len(self.driver.acked.get(phase, {}))
                if recovered is None:
                    detail = f"{detail}; {self.mismatch}".strip("; ")
                    self.driver.violations.append(f"{name}: not exact within {recover_s:.0f} s: {self.mismatch}")
                meanwhile = self.driver.during(started, time.monotonic())
                slowest = max(meanwhile, key=lambda a: a.seconds, default=None)
                outcome = Outcome(
                    name,
                    acked,
                    recovered,
                    detail,
                    slowest_s=slowest.seconds if slowest else 0.0,
                    slowest=f"{slowest.what}: {slowest.status}" if slowest else "",
                    unavailable=sum(a.status == "503" for a in meanwhile),
                )
                self.outcomes.append(outcome)
                print(
                    f"  {name:<40} {acked:>6} acknowledged   {fmt(recovered)}   slowest answer "
                    f"{outcome.slowest_s:5.2f} s ({outcome.slowest}), {outcome.unavailable:,} 503s   {detail}",
                    flush=True,
                )
        finally:
            self.driver.stop()
            await load
            self.achieved_rate = self.driver.answers["202"] / (time.monotonic() - began)
        for phase in [f"{self.run}-{len(self.outcomes)}"]:  # the load after the last fault
            deadline = time.monotonic() + recover_s
            while not await self.exact(phase) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            if not await self.exact(phase):
                self.driver.violations.append(f"phase {phase}: not counted exactly once")
        if self.poison_keys:
            deadline = time.monotonic() + recover_s
            while len(await self.deadlettered()) < len(self.poison_keys) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(1)
            missing = len(self.poison_keys) - len(await self.deadlettered())
            if missing:
                self.driver.violations.append(f"{missing} poison messages not in the dead-letter topic with a reason")
        return self.outcomes

    def recompute_matches(self) -> bool:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
        env["NPS_VAR_DIR"] = str(self.var)
        done = subprocess.run(
            [sys.executable, "-m", "services", "scoring", "rebuild", "--check"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return done.returncode == 0

    def close(self) -> None:
        if self.loop.process.poll() is None:
            stop_loop(self.loop)


def fmt(seconds: float | None) -> str:
    return f"exact after {seconds:5.1f} s" if seconds is not None else "NOT RECOVERED"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


def broker_pid(launcher: int) -> int:
    for pid in children_of(launcher):
        with contextlib.suppress(OSError):
            if b"tansu" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    raise LookupError("no broker under the launcher")


__all__ = ["SERVICES", "Driver", "Outcome", "Scenario", "is_ready"]
