"""The whole loop as a user runs it: `nps up` (what `make run` calls), embedded PostgreSQL and
broker included, four service processes, on free ports and a scratch var/ directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from followup_service.routing.policy import DEFAULT_POLICY
from services.embedded import free_ports
from services.infra import is_ready
from tests.helpers import FAST_GROUP_ENV

SERVICES = ("ingest", "scoring", "followup", "alerts", "delivery", "themes")


@dataclass
class Loop:
    process: subprocess.Popen[bytes]
    urls: dict[str, str]
    bootstrap: str
    output: Path
    api_key: str
    var_dir: Path
    demo: str  # the demo page's address (another origin than the API's)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def children(self) -> dict[str, int]:
        """The launcher's service processes, by service name."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid and b"services" in cmdline:
                name = cmdline[-2].decode() if cmdline[-1] == b"" else cmdline[-1].decode()
                found[name] = int(entry.name)
        return found


def start_loop(
    var_dir: Path,
    cwd: Path,
    broker_port: int | None = None,
    ports: dict[str, int] | None = None,
    fast_group: bool = True,
    extra_env: dict[str, str] | None = None,
    static_members: bool = True,
) -> Loop:
    """`nps up` with its data in `var_dir`, on free ports (or these); returns once every service is
    ready. With `fast_group`, the tests' short consumer-group timings; else the product's defaults.
    Without `static_members` the consumers join as dynamic members, as `nps up` does not: a static
    member's first join waits ~6 s on the embedded broker, a dynamic one the rebalance timeout (1 s
    with `fast_group`). For tests that start loops and never restart one service alone."""
    *service_ports, spare, demo_port = free_ports(len(SERVICES) + 2)
    ports = ports or dict(zip(SERVICES, service_ports, strict=True))
    broker_port = broker_port or spare
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    if fast_group:
        env.update(FAST_GROUP_ENV)
    if not static_members:
        env.update({f"NPS_{name.upper()}_CONSUMER_INSTANCE_ID": "" for name in SERVICES})
    env.update(
        {
            "NPS_VAR_DIR": str(var_dir),
            "NPS_BROKER_PORT": str(broker_port),
            "NPS_DEMO_PORT": str(demo_port),
            "NPS_ALERTS_DROP_MIN_RESPONSES": "10",
            "NPS_ALERTS_EVALUATE_INTERVAL_S": "0.5",
            "NPS_ALERTS_FOR_EVALUATIONS": "2",
            "NPS_ALERTS_FOR_S": "0",
            "NPS_ALERTS_MIN_ROUND_GAP_S": "0.5",
            "NPS_ALERTS_CLEAR_S": "1",
            "NPS_INGEST_REPLAY_CHECK_S": "0.5",
            "NPS_INGEST_REPLAY_MARGIN_S": "1",
            # One token per 5 s per person for publishable keys (burst 5, as by default): the widget's
            # 429 test then has 5 s, not 1, between emptying a person's bucket and its Send.
            "NPS_INGEST_PUBLIC_RATE_PER_RESPONDENT_S": "0.2",
            # A key made or revoked by `nps keys` counts in every service within 1 s, not 5: tests that
            # make keys wait for it (up to 5 s each time otherwise).
            **{f"NPS_{name.upper()}_KEY_REFRESH_S": "1" for name in SERVICES},
            "NPS_FOLLOWUP_SLA_CHECK_S": "0.5",  # a 2 s SLA is seen missed at once; tests check it is published once
            **{f"NPS_{name.upper()}_PORT": str(port) for name, port in ports.items()},
            **(extra_env or {}),
        }
    )
    var_dir.mkdir(parents=True, exist_ok=True)
    output = var_dir / "launcher.log"
    with output.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services", "up"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    deadline = time.monotonic() + 120
    # Ready when every service answers /readyz and the launcher has printed its banner (as a user sees it).
    while not (all(is_ready(u) for u in urls.values()) and "Ctrl-C stops everything" in output.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"the loop did not start:\n{output.read_text()[-5000:]}")
        time.sleep(0.3)
    # `make run` prints the development key and leaves it in var/dev-api-key
    api_key = (var_dir / "dev-api-key").read_text().strip()
    assert api_key in output.read_text()
    return Loop(process, urls, f"127.0.0.1:{broker_port}", output, api_key, var_dir, f"http://127.0.0.1:{demo_port}")


def stop_loop(loop: Loop) -> None:
    """Ctrl-C, as a user stops `make run`; the launcher must exit 0."""
    loop.process.send_signal(signal.SIGINT)
    try:
        code = loop.process.wait(60)
    except subprocess.TimeoutExpired:
        loop.process.kill()
        raise
    assert code == 0, loop.output.read_text()[-5000:]


# Package scope: stopped after the last end-to-end test, not at the end of the session. Idle, the
# loop still takes ~0.14 of a core (consumers polling, alert rounds twice a second), which the
# integration tests after it would otherwise share for ten minutes.
@pytest.fixture(scope="package")
def loop(tmp_path_factory: pytest.TempPathFactory, repo_root_session: Path) -> Iterator[Loop]:
    var_dir = tmp_path_factory.mktemp("var")
    # Follow-up runs a copy of the default policy, so a test can reload another and back.
    policy = var_dir / "followup-policy.yaml"
    shutil.copyfile(DEFAULT_POLICY, policy)
    running = start_loop(var_dir, repo_root_session, extra_env={"NPS_FOLLOWUP_POLICY": str(policy)})
    yield running
    stop_loop(running)


@pytest.fixture(scope="session")
def repo_root_session() -> Path:
    return Path(__file__).resolve().parents[2]
