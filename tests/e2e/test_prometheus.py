"""The monitoring works, not only parses: Debian's real `prometheus` scrapes the running loop with
the project's own alert rules, every series a rule reads and every Grafana panel's query returns
data, and a service that stops answering fires NpsServiceDown in Prometheus's own alerts API.

Runs after test_experiment_loop.py and test_loop.py (file order), on the same loop (the files that
set FIXTURE_COPY have another), so every kind of event has happened once.
The rules are the shipped file with each `for:` shortened to FOR_S: the expressions, labels and
annotations are exactly what production loads; only the waiting is scaled down."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.embedded import free_port
from services.infra import is_ready
from tests.e2e.conftest import Loop
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
FOR_S = 4
SCRAPE_S = 1
# A dashboard's $__rate_interval is at least four scrape intervals in Grafana; a minute holds plenty.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "1h", "$segment": ".+"}
# A series selector in PromQL: a metric of ours (or `up`) and its optional matchers.
SELECTOR = re.compile(r"\b(nps_[a-z0-9_]+|up)\b(\{[^}]*\})?")


def panel_queries() -> list[tuple[str, str]]:
    """(dashboard: panel title, expression) of every target of every provisioned dashboard."""
    queries = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for name, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(name, value)
                queries.append((f"{path.stem}: {panel['title']}", expr))
    return queries


def rule_selectors() -> list[tuple[str, str]]:
    """(alert, series selector) of every series every shipped rule reads."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    found = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name, matchers in SELECTOR.findall(rule["expr"]):
                found.append((rule["alert"], name + matchers))
    return sorted(set(found))


def shortened_rules(into: Path) -> Path:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = f"{FOR_S}s"
    path = into / "rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def prometheus(loop: Loop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:  # `make test` installs Debian's prometheus package (promtool's) first
        pytest.fail("no prometheus binary: run `make promtool` (Debian's prometheus package)")
    home = tmp_path_factory.mktemp("prometheus")
    rules = shortened_rules(home)
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": "800ms", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "nps-loop",  # the job and `service` label the rules and dashboards use
                "static_configs": [
                    {"targets": [url.removeprefix("http://")], "labels": {"service": name}}
                    for name, url in loop.urls.items()
                ],
            }
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (home / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"{url}/-/ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start:\n{(home / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def query(client: httpx.AsyncClient, prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = await client.get(f"{prometheus}/api/v1/query", params={"query": expr})
    assert answer.status_code == 200, f"{expr}: {answer.text}"
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


async def test_every_rule_s_series_and_every_panel_s_query_return_data(loop: Loop, prometheus: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:

        async def all_up_twice() -> bool:  # two scrapes of each: rate() and increase() have their pair
            ups = await query(client, prometheus, "count_over_time(up[1m])")
            return len(ups) == len(loop.urls) and all(int(u["value"][1]) >= 3 for u in ups)

        await eventually(all_up_twice, timeout=30, every=0.5)
        assert {u["metric"]["service"] for u in await query(client, prometheus, "up == 1")} == set(loop.urls)

        empty = [
            f"{alert}: {selector}"
            for alert, selector in rule_selectors()
            if not await query(client, prometheus, selector)
        ]
        empty += [f"{panel}: {expr}" for panel, expr in panel_queries() if not await query(client, prometheus, expr)]
        # On a loop nothing has happened to, event-driven series (follow-ups, alert transitions, webhook
        # attempts, ticket timings) are rightly empty: this runs after test_loop.py drove them all.
        assert empty == [], "no data for (run after tests/e2e/test_loop.py):\n" + "\n".join(empty)

        rules = (await client.get(f"{prometheus}/api/v1/rules")).json()["data"]["groups"]
        evaluated = [r for group in rules for r in group["rules"]]
        assert len(evaluated) == len({a for a, _ in rule_selectors()}) and len(evaluated) >= 15
        assert [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"] == []


async def test_a_service_that_stops_answering_fires_nps_service_down_within_its_for(
    loop: Loop, prometheus: str
) -> None:
    """Frozen (SIGSTOP), not killed: the launcher restarts a killed service within a second, as
    Kubernetes would; a hung one is what only monitoring sees."""
    pid = loop.children()["themes"]
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def firing() -> bool:
                alerts = (await client.get(f"{prometheus}/api/v1/alerts")).json()["data"]["alerts"]
                return any(
                    a["labels"]["alertname"] == "NpsServiceDown"
                    and a["labels"]["service"] == "themes"
                    and a["state"] == "firing"
                    for a in alerts
                )

            # The rule's `for`, plus a scrape to see it down and an evaluation to notice each step.
            await eventually(firing, timeout=FOR_S + 4 * SCRAPE_S + 4, every=0.25)
            assert time.monotonic() - stopped_at >= FOR_S  # not before its `for`
    finally:
        os.kill(pid, signal.SIGCONT)

    async def answers_again() -> bool:
        return is_ready(loop.urls["themes"])

    await eventually(answers_again, timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
