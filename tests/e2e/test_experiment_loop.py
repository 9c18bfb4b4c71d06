"""An experiment end to end (issue 38), as a team runs one: a policy with a holdout reloaded into the
running loop, answers and answers again over HTTP, the arms recorded on each follow-up, and the
results over HTTP agreeing with what the answers say."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from followup_service.routing.policy import DEFAULT_POLICY
from tests.e2e.conftest import Loop
from tests.helpers import eventually
from tests.helpers import nps as nps_command


def contribution(score: int) -> int:
    return 100 if score >= 9 else -100 if score <= 6 else 0


async def test_a_holdout_from_policy_to_results_over_http(loop: Loop) -> None:
    run = uuid.uuid4().hex[:8]
    experiment = f"e2e-{run}"
    version = f"e2e-exp-{run}"
    rule = (
        "  - name: experiment-probe\n"
        f"    when: {{category: detractor, attributes: {{probe: '{run}'}}}}\n"
        "    action: ticket\n"
        "    template: detractor_reply\n"
        f"    holdout: {{share: 0.5, id: {experiment}}}\n"
    )
    policy = loop.var_dir / "followup-policy.yaml"
    default = DEFAULT_POLICY.read_text()
    policy.write_text(
        default.replace("version: default-1\n", f"version: {version}\n").replace("rules:\n", f"rules:\n{rule}", 1)
    )
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"NPS_VAR_DIR": str(loop.var_dir)}

    async def running(name: str) -> bool:
        output = await asyncio.to_thread(loop.output.read_text)
        reloads = [line for line in output.splitlines() if "policy reloaded from" in line]
        return bool(reloads) and f"version {name}," in reloads[-1]

    people = [f"{run}-p{i}" for i in range(24)]
    first = {who: i % 7 for i, who in enumerate(people)}
    second = {who: (i * 5) % 11 for i, who in enumerate(people[:18])}
    now = datetime.now(UTC)
    try:
        assert nps_command("followup", "policy", "reload", env=env).returncode == 0
        await eventually(lambda: running(version), timeout=10)
        async with httpx.AsyncClient(timeout=10, headers=loop.auth) as client:

            async def answer(who: str, n: int, score: int, at: datetime) -> None:
                body: dict[str, Any] = {"response_id": f"{who}-{n}", "respondent_id": who, "score": score,
                                        "channel": "web", "answered_at": at.isoformat(),
                                        "attributes": {"probe": run}}  # fmt: skip
                reply = await client.post(f"{loop.urls['ingest']}/v1/responses", json=body)
                assert reply.status_code == 202, reply.text

            for who, score in first.items():
                await answer(who, 1, score, now - timedelta(hours=2))
            followups: dict[str, dict[str, Any]] = {}

            async def routed() -> bool:
                for who in set(people) - followups.keys():
                    reply = await client.get(f"{loop.urls['followup']}/v1/followups/{who}-1")
                    if reply.status_code == 200:
                        followups[who] = reply.json()
                return len(followups) == len(people)

            await eventually(routed, timeout=30)
            arm = {who: f["arm"] for who, f in followups.items()}
            assert {f["experiment_id"] for f in followups.values()} == {experiment}
            assert set(arm.values()) == {"treated", "held_out"}  # 24 people: both arms, but for 2^-23
            for f in followups.values():
                held = f["arm"] == "held_out"
                assert (f["status"], f["ticket_id"] is None) == (("held_out", True) if held else ("created", False))

            for who, score in second.items():
                await answer(who, 2, score, now - timedelta(minutes=5))
            url = f"{loop.urls['followup']}/v1/experiments/{experiment}"

            async def resurveyed() -> bool:
                reply = await client.get(url)
                return reply.status_code == 200 and sum(a["resurveyed"] for a in reply.json()["arms"]) == len(second)

            await eventually(resurveyed, timeout=30)
            result = (await client.get(url)).json()
        assert (result["running"], result["policy_version"], result["control"]) == (True, version, "held_out")
        for a in result["arms"]:
            mine = [who for who in people if arm[who] == a["arm"]]
            changes = [contribution(second[who]) - contribution(first[who]) for who in mine if who in second]
            assert (a["assigned"], a["resurveyed"]) == (len(mine), len(changes))
            if len(changes) >= 2:
                assert a["nps_change"]["points"] == round(statistics.fmean(changes), 2)
        [effect] = result["effects"]
        assert effect["decided"] is False and effect["verdict"].startswith("not yet decided")
    finally:
        shutil.copyfile(DEFAULT_POLICY, policy)
        assert nps_command("followup", "policy", "reload", env=env).returncode == 0
        await eventually(lambda: running("default-1"), timeout=10)
