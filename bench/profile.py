"""py-spy, sampling a service process during a run: where the time goes (`--profile DIR`); and
`sampling`, PostgreSQL's side of the same run (bench/pgsample.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.pgsample import PgSampler


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
            if not count.isdigit():  # a stack py-spy cut short (the process ended mid-sample)
                continue
            leaf = re.sub(r":\d+\)$", ")", stack.split(";")[-1])
            total += int(count)
            own[leaf] = own.get(leaf, 0) + int(count)
        rows = sorted(own.items(), key=lambda kv: -kv[1])[:top]
        header = f"{total} samples: the process was busy {total / (self.RATE * seconds):.0%} of the run"
        return "\n".join([header, *(f"{count / total:6.1%}  {frame}" for frame, count in rows)])

    def phases(self, name: str, seconds: int, phases: list[tuple[str, list[str]]], per_item_us: float) -> str:
        """Every sample charged to one phase: the innermost frame of its stack that names one of
        the phase's functions (`phases`, in order of precedence within a frame); the rest is
        "other". Each phase's share of the busy samples, and its microseconds per item at the
        run's rate (`per_item_us`: 1e6 / items per second), the idle share included."""
        charged: dict[str, int] = {}
        total = 0
        for line in (self.directory / f"{name}.txt").read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            total += int(count)
            label = "other: the event loop itself, asyncio, the collector"
            for frame in reversed(stack.split(";")):
                found = next((phase for phase, keys in phases if any(k in frame for k in keys)), None)
                if found is not None:
                    label = found
                    break
            charged[label] = charged.get(label, 0) + int(count)
        busy = total / (self.RATE * seconds)
        rows = [
            f"| {phase} | {count / total:.1%} | {count / total * busy * per_item_us:.1f} |"
            for phase, count in sorted(charged.items(), key=lambda kv: -kv[1])
        ]
        idle = f"| idle: waiting on PostgreSQL and the broker | {1 - busy:.0%} of the run | {(1 - busy) * per_item_us:.1f} |"
        return "\n".join(["| phase | share of busy samples | µs per item |", "|---|---|---|", *rows, idle])


@contextmanager
def sampling(database_url: str, profile_dir: Path | None, name: str) -> Iterator[None]:
    """When profiling (`profile_dir`), PostgreSQL sampled for as long as the block runs; its summary
    printed and written to `profile_dir`/`name`-postgresql.txt."""
    if profile_dir is None:
        yield
        return
    with PgSampler(database_url) as sampler:
        yield
    print(sampler.write(profile_dir / f"{name}-postgresql.txt"), flush=True)
