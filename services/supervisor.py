"""Runs the six services as separate processes, restarts one that dies, stops them in order."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: Mapping[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        # Own session: a terminal's Ctrl-C reaches only the launcher, which stops children in order.
        # And it dies with the launcher, however the launcher dies (SIGKILL included).
        self.process = subprocess.Popen(
            self.argv, env=dict(self.env), start_new_session=True, preexec_fn=die_with(os.getpid())
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)


@dataclass
class Dependency:
    """Something the services need that the launcher runs itself (the embedded PostgreSQL and
    broker): watched like a child, restarted with a back-off, loudly."""

    name: str
    running: Callable[[], bool]
    restart: Callable[[], None]
    failures: int = 0
    next_try: float = 0.0
    down_since: float | None = None


class Supervisor:
    def __init__(self, children: list[Child], max_backoff: float = 10.0) -> None:
        self.children = children
        self.dependencies: list[Dependency] = []
        self.max_backoff = max_backoff
        self._stopping = False

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def handle_signals(self, forward: Mapping[signal.Signals, str] | None = None) -> None:
        """SIGINT (Ctrl-C) and SIGTERM only set a flag: startup steps and the watch loop check it, so
        a stop at any moment, even mid-startup, ends in an orderly shutdown, never an orphaned child.
        Signals in `forward` are passed on to the child of that name (SIGHUP: reload its policy)."""
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        for sig, name in (forward or {}).items():
            signal.signal(sig, self._forwarder(name))

    def _forwarder(self, name: str) -> Callable[[int, object], None]:
        def handler(number: int, _frame: object) -> None:
            self.forward(signal.Signals(number), name)

        return handler

    def forward(self, sig: signal.Signals, name: str) -> None:
        for child in self.children:
            if child.name == name and child.process is not None and child.process.poll() is None:
                child.process.send_signal(sig)
                log.info("passed %s on to %s (pid %d)", sig.name, name, child.process.pid)

    def start_all(self) -> None:
        for child in self.children:
            if not self._stopping:
                child.start()

    def watch(self) -> None:
        """Restart children that exit, until asked to stop."""
        while not self._stopping:
            now = time.monotonic()
            for child in self.children:
                proc = child.process
                if proc is not None and proc.poll() is not None:
                    # Back off when a child dies young (a crash loop), not when it ran a while.
                    lived = now - child.started_at
                    child.restarts = 0 if lived > 60 else child.restarts + 1
                    delay = min(self.max_backoff, 0.5 * 2 ** max(0, child.restarts - 1))
                    log.warning("%s exited with code %s; restarting in %.1fs", child.name, proc.returncode, delay)
                    child.process = None
                    child.next_start = now + delay
                elif proc is None and now >= child.next_start:
                    child.start()
            for dependency in self.dependencies:
                self._tend(dependency, now)
            time.sleep(0.2)

    def _tend(self, dependency: Dependency, now: float) -> None:
        if dependency.down_since is None:
            if dependency.running():
                return
            dependency.down_since, dependency.failures, dependency.next_try = now, 0, now
            log.error("%s is down; the services answer 503 and retry meanwhile; restarting it", dependency.name)
        if now < dependency.next_try:
            return
        try:
            dependency.restart()
        except Exception as exc:
            dependency.failures += 1
            delay = min(self.max_backoff, 0.5 * 2**dependency.failures)
            dependency.next_try = now + delay
            log.error("%s did not restart (%s); trying again in %.1fs", dependency.name, type(exc).__name__, delay)
            return
        log.warning("%s is back after %.1fs", dependency.name, time.monotonic() - dependency.down_since)
        dependency.down_since = None

    def stop_all(self, timeout: float = 30.0) -> None:
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", child.name, timeout)
                child.process.kill()
                child.process.wait()
        log.info("all services stopped")


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with(parent: int) -> Callable[[], None] | None:
    """For Popen's preexec_fn: the child gets SIGTERM when `parent` dies, so a launcher killed with
    SIGKILL leaves no service or broker behind holding its port (they stop gracefully, committing
    their batch). Linux only (prctl); elsewhere children outlive a killed launcher."""
    if not sys.platform.startswith("linux"):
        return None

    def in_child() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def python_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "services", *args]


def child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env
