"""py-spy, sampling a service process during a run: where the time goes (`--profile DIR`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path


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
