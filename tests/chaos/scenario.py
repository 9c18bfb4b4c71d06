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
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from services.infra import is_ready
from tests.e2e.conftest import SERVICES, Loop, start_loop, stop_loop
from tests.helpers import read_topic

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Driver:
    """Posts unique responses at `rate` per second. A response is retried with its response_id
    until it gets 202 (what the README tells clients to do), so every response ends up acknowledged
    once; what each answer was is recorded."""

    urls: dict[str, str]
    auth: dict[str, str]
    rate: float
    workers: int = 64  # each waits for its answer: enough of them that latency does not cap the rate
    phase: str = "warmup"
    acked: dict[str, dict[str, int]] = field(default_factory=dict)  # phase -> response_id -> score
    pending: Counter[str] = field(default_factory=Counter)  # phase -> responses not yet acknowledged
    answers: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _seq: int = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_connections=self.workers)) as client:
            await asyncio.gather(*(self._worker(client, w) for w in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()

    async def _worker(self, client: httpx.AsyncClient, w: int) -> None:
        interval = self.workers / self.rate
        next_at = time.monotonic() + w * interval / self.workers
        while not self._stop.is_set():
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
            try:
                reply = await client.post(f"{self.urls['ingest']}/v1/responses", json=body, headers=self.auth)
            except httpx.TransportError as exc:
                self.answers[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            self.answers[str(reply.status_code)] += 1
            if reply.status_code == 202:
                return
            if reply.status_code == 503:
                if "retry-after" not in reply.headers:
                    self.violations.append(f"503 without Retry-After: {reply.text[:200]}")
            elif reply.status_code == 429:
                pass
            else:
                self.violations.append(f"{reply.status_code} for {body['response_id']}: {reply.text[:200]}")
            await asyncio.sleep(0.2)


@dataclass
class Outcome:
    fault: str
    acknowledged: int
    recovered_s: float | None
    detail: str = ""


class Scenario:
    def __init__(self, var: Path, rate: float, fast_group: bool = True) -> None:
        self.var = var
        self.rate = rate
        self.fast_group = fast_group
        self.run = uuid.uuid4().hex[:6]
        self.loop: Loop = start_loop(var, REPO, fast_group=fast_group)
        self.ports = {name: int(url.rsplit(":", 1)[1]) for name, url in self.loop.urls.items()}
        self.driver = Driver(dict(self.loop.urls), self.loop.auth, rate)
        self.outcomes: list[Outcome] = []
        self.poison_keys: list[bytes] = []
        self.mismatch = ""
        self.achieved_rate = 0.0

    # -- faults ---------------------------------------------------------------------------------

    def kill_service(self, name: str) -> Callable[[], Awaitable[str]]:
        async def fault() -> str:
            os.kill(self.loop.children()[name], signal.SIGKILL)
            return ""

        return fault

    async def stop_broker(self) -> str:
        pid = broker_pid(self.loop.process.pid)
        os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(10)
        os.kill(pid, signal.SIGCONT)
        return "SIGSTOP for 10 s"

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
        if not full:
            return [("SIGKILL scoring", self.kill_service("scoring")), ("poison messages", self.poison)]
        faults: list[tuple[str, Callable[[], Awaitable[str]]]] = []
        for name in ("scoring", "followup", "alerts"):
            faults += [(f"SIGKILL {name} ({i})", self.kill_service(name)) for i in (1, 2)]
        faults += [
            ("SIGKILL ingest", self.kill_service("ingest")),
            ("SIGSTOP the broker 10 s", self.stop_broker),
            ("SIGKILL PostgreSQL's postmaster", self.kill_postmaster),
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
                self.outcomes.append(Outcome(name, acked, recovered, detail))
                print(f"  {name:<40} {acked:>6} acknowledged   {fmt(recovered)}   {detail}", flush=True)
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
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == launcher and b"tansu" in (entry / "cmdline").read_bytes():
                return int(entry.name)
    raise LookupError("no broker under the launcher")


__all__ = ["SERVICES", "Driver", "Outcome", "Scenario", "is_ready"]
