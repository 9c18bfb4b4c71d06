"""Several processes behind one port: `nps ingest` with NPS_INGEST_WORKERS > 1.

The parent binds the port once and starts N copies of the service (`python -m services.cli ingest`),
each handed the listening socket (NPS_LISTEN_FD) and its index (NPS_WORKER_INDEX): the kernel spreads
connections over the processes that accept on it. They share nothing but PostgreSQL and the broker:
each has its own event loop, database pool and Kafka producer. Prometheus metrics are collected
across them (prometheus_client's multiprocess mode, in a directory the parent makes), so /metrics
answers the same totals whichever process it reaches. The parent restarts a worker that dies,
forwards SIGTERM/SIGINT to them all and waits for them to finish (each drains like a single
process), then exits 0 if all exited cleanly."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import FrameType

log = logging.getLogger(__name__)

LISTEN_FD = "NPS_LISTEN_FD"
WORKER_INDEX = "NPS_WORKER_INDEX"
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
RESTART_BACKOFF_S = 1.0


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def inherited_socket() -> socket.socket | None:
    """The listening socket a parent handed this worker, if any."""
    fd = os.environ.get(LISTEN_FD)
    return socket.socket(fileno=int(fd)) if fd else None


def is_first_worker() -> bool:
    """True in a single process, and in worker 0 of several: where once-per-service chores run."""
    return os.environ.get(WORKER_INDEX, "0") == "0"


def supervise(service: str, workers: int, host: str, port: int) -> int:
    from prometheus_client import multiprocess

    sock = listening_socket(host, port)
    metrics_dir = tempfile.mkdtemp(prefix=f"nps-{service}-metrics-")
    stopping: list[int] = []

    def start(index: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, LISTEN_FD: str(sock.fileno()), WORKER_INDEX: str(index), METRICS_DIR: metrics_dir}
        return subprocess.Popen([sys.executable, "-m", "services", service], env=env, pass_fds=(sock.fileno(),))

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        pass_on(signum, frame)

    children = [start(i) for i in range(workers)]
    started = [time.monotonic()] * workers
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # SIGUSR2 asks each worker for its tasks (shared/http.log_tasks); its default would end this parent.
    signal.signal(signal.SIGUSR2, pass_on)
    log.info("%s: %d workers on %s:%d (pids %s)", service, workers, host, port, [c.pid for c in children])
    codes: dict[int, int] = {}
    try:
        while True:
            for index, child in enumerate(children):
                code = child.poll()
                if code is None or index in codes:
                    continue
                multiprocess.mark_process_dead(child.pid, metrics_dir)  # type: ignore[no-untyped-call]
                if stopping:
                    codes[index] = code
                    continue
                log.error("%s worker %d (pid %d) exited with %s: starting another", service, index, child.pid, code)
                if time.monotonic() - started[index] < RESTART_BACKOFF_S * 5:
                    time.sleep(RESTART_BACKOFF_S)  # dying at start: do not spin
                children[index], started[index] = start(index), time.monotonic()
            if stopping and len(codes) == len(children):
                break
            time.sleep(0.1)
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    # A worker still starting when the stop came dies of the signal itself: that is a clean stop too.
    clean = {0, *(-signum for signum in stopping)}
    return 0 if all(code in clean for code in codes.values()) else 1
