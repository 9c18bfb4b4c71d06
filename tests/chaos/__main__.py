"""`make chaos`: every fault of the scenario under ~500 responses/s; prints the table and writes
docs/reliability.md (the machine, the date, each fault's time to exact recovery). Exit 1 if a fault
was not recovered from exactly, or anything else went wrong (a 5xx but 503, a poison message lost)."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.common import machine
from tests.chaos.scenario import REPO, Outcome, Scenario


def report(outcomes: list[Outcome], scenario: Scenario, rate: float, recompute: bool) -> str:
    answers = ", ".join(f"{code}: {n:,}" for code, n in sorted(scenario.driver.answers.items()))
    lines = [
        "# Reliability",
        "",
        "Written by `make chaos` (`python -m tests.chaos`): the whole loop (`nps up`) under a steady load of",
        f"unique responses over HTTP (offered {rate:.0f}/s, {scenario.achieved_rate:.0f}/s acknowledged on average: the",
        "load generator, the six services, PostgreSQL and the broker share the machine's cores; a response",
        "is retried with its `response_id` until it gets 202, as clients should) while two more clients read",
        "every service's API without pause (scoring's NPS, follow-up's tickets, alerts, themes, webhooks), and,",
        "in turn, the faults below. After each fault, every response acknowledged since the previous fault must",
        "be counted exactly once by scoring (n, promoters, detractors), routed once by follow-up, with one",
        "ticket per detractor, and *exact after* is the time from the fault to that being true, while the load",
        "goes on (it includes the fault itself: 10 s for the stopped broker, the hang for a hung one); the load",
        "after the last fault is checked at the end. *Slowest answer* and *503s* are over every request asked",
        "from the fault until exact (clients wait as long as it takes: nothing is cut short). A hung dependency",
        "is SIGSTOPped: its sockets stay open and nothing answers, as in a partition or a server stuck on I/O.",
        "For the hung broker, posting pauses and the consumers are behind by a backlog published straight onto",
        "the topic (part of the phase that must be exact). The loop runs with the settings `make run` has (a",
        "10 s consumer session, static group membership: a killed consumer's partitions wait for its",
        "replacement; a 2 s database deadline, a 5 s batch deadline: see operations.md). `make test` runs a",
        "short version, with the tests' 2 s sessions (`tests/chaos/test_chaos.py`: SIGKILL scoring, PostgreSQL",
        "hung 5 s, poison messages, at 150/s).",
        "",
        f"Machine: {machine()}. Date: {datetime.now(UTC):%Y-%m-%d}.",
        "",
        "| fault | responses acknowledged before it | exact after | slowest answer meanwhile | 503s meanwhile | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        exact = f"{o.recovered_s:.1f} s" if o.recovered_s is not None else "**not recovered**"
        lines.append(
            f"| {o.fault} | {o.acknowledged:,} | {exact} | {o.slowest_s:.2f} s | {o.unavailable:,} | {o.detail} |"
        )
    lines += [
        "",
        f"Answers the load saw over the run: {answers}. Only 200 (the reads), 202, 503 (always with `Retry-After`) and",
        "connection errors while a process was down are allowed.",
        f"Scoring's aggregates equal a recompute at the end (`nps scoring rebuild --check`): {'yes' if recompute else '**no**'}.",
        f"Problems found: {'; '.join(scenario.driver.violations) if scenario.driver.violations else 'none'}.",
        "",
        "What each fault exercises: a SIGKILLed consumer redelivers its uncommitted batch (idempotent",
        "writes absorb it); a SIGKILLed ingest loses no acknowledged response (a 202 is sent after the",
        "broker's ack and the event log's commit); a stopped broker makes ingest answer 503 within its",
        "publish timeout, with the `response_id` to retry with; a killed postmaster is restarted by",
        "`nps up` while the services answer 503 and the consumers retry without committing; a hung",
        "PostgreSQL gets every request a 503 within the service's database deadline (2 s) instead of an",
        "answer after the hang, and each consumer abandons its batch at its deadline (5 s) and retries it; a",
        "hung broker leaves consumers behind not ready (the broker check) until it answers again; a killed",
        "launcher takes its children with it (`PR_SET_PDEATHSIG`), and the next one takes over PostgreSQL",
        'and replays into its new, empty broker what the consumers had not read (operations.md, "Nothing',
        'acknowledged is lost"); poison messages (not JSON, wrong shape, 1 MB) go to `nps.deadletter.v1`',
        "with the reason in a header.",
        "",
    ]
    return "\n".join(lines)


async def main(rate: float, write: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="nps-chaos-"))
    scenario = Scenario(work / "var", rate, fast_group=False)  # the consumer-group timings `make run` has
    try:
        print(f"chaos: {rate:.0f} responses/s, loop data in {work}", flush=True)
        outcomes = await scenario.execute(full=True, warm_s=8, recover_s=120)
        recompute = await asyncio.to_thread(scenario.recompute_matches)
    finally:
        scenario.close()
    text = report(outcomes, scenario, rate, recompute)
    print(text)
    if write:
        (REPO / "docs" / "reliability.md").write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    ok = recompute and not scenario.driver.violations and all(o.recovered_s is not None for o in outcomes)
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--rate", type=float, default=500, help="responses per second")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite docs/reliability.md")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.rate, not args.no_write)))
