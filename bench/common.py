"""What every benchmark shares: starting a service process (pinned to a core, waited for), and
docs/benchmarks.md (one generated section per benchmark, the machine and the date on each)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.infra import Private, pin, private_infrastructure, wait_ready
from shared.kafka import group_committed

ROOT = Path(__file__).resolve().parents[1]
# The pseudonym secret of the services the benchmarks start (NPS_PSEUDONYM_SECRET).
BENCH_SECRET = "bench-pseudonym-secret-0123456789abcdef"
# The key that seals the secrets delivery keeps (NPS_SECRETS_KEY): 32 bytes, base64url.
BENCH_SECRETS_KEY = "YmVuY2gtc2VjcmV0cy1rZXktMDEyMzQ1Njc4OWFiY2Q="

HEADER = [
    "# Benchmarks",
    "",
    "Written by `make bench` (`python -m bench`); numbers from the last run on the machine below.",
    "Targets are the product's performance bars, on one worker core. Timed assertions never appear in the tests.",
    "",
]


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


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


def cpu_seconds(pid: int | str) -> float:
    """The user and system CPU seconds process `pid` has used so far (/proc/PID/stat; OSError once gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(values: Sequence[float], form: str = "{:,.0f}") -> str:
    """The median, and the range when there are several runs: `43,100 (40,200 to 48,300)`."""
    median = form.format(statistics.median(values))
    if len(values) < 2:
        return median
    return f"{median} ({form.format(min(values))} to {form.format(max(values))})"


def write_section(name: str, lines: list[str]) -> Path:
    """Replace one generated section of docs/benchmarks.md (the others, and the notes, stay)."""
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


def pinned(command: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *command] if cpu is not None and shutil.which("taskset") else command


def start_service(name: str, env: Mapping[str, str], log: Path, cpu: str | None = None) -> subprocess.Popen[bytes]:
    """`nps <name>` with `env` (its port included), on core `cpu` if given; returns once ready."""
    port = env[f"NPS_{name.upper()}_PORT"]
    process = subprocess.Popen(
        pinned([sys.executable, "-m", "services", name], cpu),
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    if wait_ready({name: f"http://127.0.0.1:{port}"}, 60, give_up=lambda: process.poll() is not None):
        process.kill()
        raise RuntimeError(f"{name} did not become ready:\n{log.read_text()[-3000:]}")
    return process


def catch_up(
    name: str, bootstrap: str, group: str, topic: str, n: int, log: Path, limit_s: float, cpu: int | None = 1
) -> tuple[int, float]:
    """Wait for `group` to commit `n` messages of `topic`; returns (messages, seconds) from its first
    commit to its last, so the service's start-up is not counted. Meanwhile this process (a Kafka
    client every 0.25 s) stays on core `cpu`, with the infrastructure, off the measured service's."""
    with on_core(cpu):
        return _catch_up(name, bootstrap, group, topic, n, log, limit_s)


@dataclass
class Stack:
    """A bench run's embedded PostgreSQL and broker, its work directory, and the services it started."""

    work: Path
    infra: Private
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, env: Mapping[str, str], cpu: str | None = None) -> subprocess.Popen[bytes]:
        """`nps <name>`, logging to `<work>/<name>.log`; stopped when the stack is."""
        process = start_service(name, env, self.work / f"{name}.log", cpu)
        self.children.append(process)
        return process


@contextlib.contextmanager
def bench_stack(prefix: str) -> Iterator[Stack]:
    """PostgreSQL and the broker (namespace `bench`) in a new work directory, on core 1; on the way
    out, the services started on it get SIGTERM (SIGKILL after 30 s), then the infrastructure stops
    and the directory goes."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    stack: Stack | None = None
    try:
        with private_infrastructure(work, namespace="bench") as infra:
            pin(infra.pids, 1)
            stack = Stack(work, infra)
            try:
                yield stack
            finally:
                for child in stack.children:
                    child.terminate()
                for child in stack.children:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.wait(30)
    finally:
        for child in stack.children if stack is not None else ():
            if child.poll() is None:
                child.kill()
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def on_core(cpu: int | None) -> Iterator[None]:
    """This process on one core for a while (where the platform allows), then back where it was."""
    if cpu is None or not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _catch_up(
    name: str, bootstrap: str, group: str, topic: str, n: int, log: Path, limit_s: float
) -> tuple[int, float]:
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + limit_s
    while True:
        committed = asyncio.run(group_committed(bootstrap, group, topic))
        now = time.monotonic()
        if first is None and committed > 0:
            first = (now, committed)
        if committed >= n or now > deadline:
            break
        time.sleep(0.25)
    if first is None or committed < n:
        raise RuntimeError(f"{name} did not catch up: {committed} of {n}\n{log.read_text()[-3000:]}")
    return n - first[1], now - first[0]
