"""`make run` twice on the same var/: what was counted and routed before is still there."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.embedded import free_ports, port_open
from tests.e2e.conftest import SERVICES, Loop, start_loop, stop_loop
from tests.helpers import eventually, signal_all

pytestmark = pytest.mark.e2e


def test_ctrl_c_during_startup_stops_everything_in_order(tmp_path: Path, repo_root_session: Path) -> None:
    *service_ports, broker_port = free_ports(len(SERVICES) + 1)
    ports = dict(zip(SERVICES, service_ports, strict=True))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(
        {
            "NPS_VAR_DIR": str(tmp_path / "var"),
            "NPS_BROKER_PORT": str(broker_port),
            **{f"NPS_{n.upper()}_PORT": str(p) for n, p in ports.items()},
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "services", "up"],
        cwd=repo_root_session,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # wait until the services are spawned, then Ctrl-C before they are ready
        if "started alerts" in line:
            process.send_signal(signal.SIGINT)
            break
    output = line + process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert "The NPS feedback loop is running" not in output
    for port in [*ports.values(), broker_port]:
        assert not port_open("127.0.0.1", port), f"something still listens on {port}:\n{output}"


def direct_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return f"pid {pid}"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_killed_postgresql_and_broker_come_back_and_a_launcher_killed_with_sigkill_leaves_nothing(
    tmp_path: Path, repo_root_session: Path
) -> None:
    """One loop through three faults (each used to need its own loop, ~15 s of start and stop):
    the launcher restarts a SIGKILLed PostgreSQL and broker and the loop works again by itself;
    then the launcher itself is SIGKILLed: nothing keeps holding a port, and the next `nps up` on
    the same var/ starts, refuses a third, and stops the PostgreSQL it took over."""
    var = tmp_path / "var"
    first = start_loop(var, repo_root_session, static_members=False)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for victim, said in (
                ("postgres", "the embedded PostgreSQL is back"),
                ("broker", "the embedded broker is back"),
            ):
                pid = postmaster_pid(var) if victim == "postgres" else broker_pid(first.process.pid)
                os.kill(pid, signal.SIGKILL)
                await eventually(lambda said=said: _logged(first.output, said), timeout=60, every=0.5)
                run = uuid.uuid4().hex[:8]

                async def counted(run: str = run) -> bool:
                    body = {"response_id": run, "respondent_id": f"u-{run}", "score": 9, "attributes": {"run": run}}
                    try:  # a service may be restarting meanwhile: not answering yet is not a failure
                        posted = await client.post(
                            f"{first.urls['ingest']}/v1/responses", json=body, headers=first.auth
                        )
                        if posted.status_code != 202:
                            return False
                        score = await client.get(
                            f"{first.urls['scoring']}/v1/nps", params={"segment": f"run:{run}"}, headers=first.auth
                        )
                    except httpx.TransportError:
                        return False
                    return score.status_code == 200 and score.json()["n"] == 1

                try:
                    await eventually(counted, timeout=60, every=1.0)  # the loop works again, by itself
                except AssertionError:
                    raise AssertionError(
                        f"not counted after the {victim} came back:\n{await _tasks_of(first)}"
                    ) from None
        log = await asyncio.to_thread(first.output.read_text)
        assert "is down" in log and "restarted EMPTY" in log

        children = direct_children(first.process.pid)  # the six services and the (restarted) broker
        ports = [int(u.rsplit(":", 1)[1]) for u in first.urls.values()] + [int(first.bootstrap.rsplit(":", 1)[1])]
        assert len(children) == 7, children
    except BaseException:
        stop_loop(first)
        raise
    first.process.kill()  # no clean-up runs in the launcher
    first.process.wait()

    async def all_gone() -> bool:
        return not any(alive(pid) for pid in children) and not any(port_open("127.0.0.1", p) for p in ports)

    try:
        await eventually(all_gone, timeout=45, every=0.5)
    except AssertionError as exc:  # say who stayed, for whoever reads the CI log
        left = [_cmdline(pid) for pid in children if alive(pid)]
        held = [p for p in ports if port_open("127.0.0.1", p)]
        raise AssertionError(f"{exc}: still running {left}, ports still open {held}") from None

    second = start_loop(
        var, repo_root_session, static_members=False
    )  # the same var/: the dead launcher's pid file is there
    try:
        assert "ended without stopping" in second.output.read_text()
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"respondent_id": "after-kill", "score": 9}
            reply = await client.post(f"{second.urls['ingest']}/v1/responses", json=body, headers=second.auth)
            assert reply.status_code == 202, reply.text
        refused = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services", "up"],
            cwd=repo_root_session,
            env={**os.environ, "NPS_VAR_DIR": str(var)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2 and "is running" in refused.stderr, refused.stderr
        postmaster = postmaster_pid(var)
    finally:
        stop_loop(second)
    # The PostgreSQL it took over stops with it too (the dead launcher's handle must not keep it alive).
    assert not pid_alive(postmaster), "the embedded PostgreSQL outlived the launcher that stopped"


async def _tasks_of(loop: Loop) -> str:
    """Each service's asyncio tasks and where they wait (SIGUSR2), from the launcher's log: when the
    loop does not work again, what each service was waiting for."""
    before = len(loop.output.read_text())
    services = [pid for pid in direct_children(loop.process.pid) if " -m services " in _cmdline(pid) + " "]
    signal_all(services, signal.SIGUSR2)  # not the embedded PostgreSQL or broker beside them
    await asyncio.sleep(2)
    return "\n".join(line for line in loop.output.read_text()[before:].splitlines() if "SIGUSR2" in line)


async def _logged(output: Path, text: str) -> bool:
    return text in await asyncio.to_thread(output.read_text)


def postmaster_pid(var: Path) -> int:
    return int((var / "pg" / "postmaster.pid").read_text().split()[0])


def broker_pid(launcher: int) -> int:
    [pid] = [p for p in direct_children(launcher) if b"tansu" in Path(f"/proc/{p}/cmdline").read_bytes()]
    return pid


async def _post_many(loop: Loop, run: str, n: int) -> dict[str, int]:
    """n unique responses through the batch API (100 a request); every one must be accepted.
    Returns how many of each score class were acknowledged."""
    scores = [i % 11 for i in range(n)]
    async with httpx.AsyncClient(timeout=30) as client:
        for start in range(0, n, 100):
            batch = [
                {
                    "response_id": f"{run}-{i}",
                    "respondent_id": f"{run}-person-{i}",  # one person each: one ticket per detractor
                    "score": scores[i],
                    "attributes": {"run": run},
                }
                for i in range(start, min(n, start + 100))
            ]
            reply = await client.post(
                f"{loop.urls['ingest']}/v1/responses/batch", json={"responses": batch}, headers=loop.auth
            )
            assert reply.status_code == 200, reply.text
            assert all(r["status"] == "accepted" for r in reply.json()["results"]), reply.text
    return {
        "n": n,
        "promoters": sum(s >= 9 for s in scores),
        "detractors": sum(s <= 6 for s in scores),
    }


async def _invite_many(loop: Loop, run: str, n: int) -> None:
    """n invitations of people who never answer (one request: at most 1,000)."""
    asked_at = datetime.now(UTC).isoformat()
    invitations = [
        {"invitation_id": f"{run}-i{i}", "respondent_id": f"{run}-invitee-{i}", "invited_at": asked_at,
         "attributes": {"run": run}}
        for i in range(n)
    ]  # fmt: skip
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(
            f"{loop.urls['ingest']}/v1/invitations", json={"invitations": invitations}, headers=loop.auth
        )
    assert reply.status_code == 202 and reply.json()["recorded"] == n, reply.text


async def _invited(loop: Loop, run: str, n: int) -> None:
    """Scoring's rates group counts exactly `n` invitations of the run."""

    async def counted() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.get(
                f"{loop.urls['scoring']}/v1/response-rates", params={"segment": f"run:{run}"}, headers=loop.auth
            )
        return reply.status_code == 200 and reply.json()["invited"] == n

    await eventually(counted, timeout=60, every=1.0)


def _hold_consumers(loop: Loop) -> list[int]:
    """SIGSTOP scoring and follow-up: consumers as far behind as they can be."""
    held = [pid for name, pid in loop.children().items() if name in ("scoring", "followup")]
    assert len(held) == 2
    for pid in held:
        os.kill(pid, signal.SIGSTOP)
    return held


async def _stop_now(loop: Loop, held: list[int], fault: Callable[[], None] | None = None) -> None:
    """`fault` (if any), then Ctrl-C the launcher at once; the held consumers get their SIGTERM.
    They resume only once ingest has stopped: a consumer resumed at once may still read what a
    fetch had brought and commit it on its way out, ingest's watermark then rightly moves past it
    and the replay is smaller than what was posted while held (CI saw 720 of 920). Held until
    ingest is gone, the consumers' last commits cannot move the watermark, so the replay must
    bring back every event posted while they were held."""
    ingest = loop.children()["ingest"]

    async def ingest_gone() -> bool:
        return not alive(ingest)

    try:
        if fault is not None:
            fault()
    finally:
        loop.process.send_signal(signal.SIGINT)
        try:
            await eventually(ingest_gone, timeout=60, every=0.1)
        finally:
            for pid in held:
                os.kill(pid, signal.SIGCONT)
    await asyncio.to_thread(loop.process.wait, 90)


async def _counted_exactly(loop: Loop, run: str, posted: dict[str, int]) -> None:
    url = (loop.var_dir / "database-url").read_text().strip()

    async def exact() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            score = await client.get(
                f"{loop.urls['scoring']}/v1/nps", params={"segment": f"run:{run}"}, headers=loop.auth
            )
        if score.status_code != 200 or score.json()["n"] != posted["n"]:
            return False
        conn = await asyncpg.connect(url)
        try:
            followups = await conn.fetchval(
                "SELECT count(*) FROM followup.followups WHERE response_id LIKE $1", f"{run}-%"
            )
            tickets = await conn.fetchval("SELECT count(*) FROM followup.tickets WHERE response_id LIKE $1", f"{run}-%")
        finally:
            await conn.close()
        return bool(followups == posted["n"] and tickets == posted["detractors"])

    await eventually(exact, timeout=90, every=1.0)
    async with httpx.AsyncClient(timeout=10) as client:
        body = (
            await client.get(f"{loop.urls['scoring']}/v1/nps", params={"segment": f"run:{run}"}, headers=loop.auth)
        ).json()
    assert (body["n"], body["promoters"], body["detractors"]) == (
        posted["n"],
        posted["promoters"],
        posted["detractors"],
    )


async def test_nothing_acknowledged_is_lost_when_the_loop_stops_with_its_consumers_behind(
    tmp_path: Path, repo_root_session: Path
) -> None:
    """The embedded broker keeps topics in memory: stopping `make run` while consumers are behind
    used to lose every acknowledged response they had not read. Ingest's event log replays them.
    And what was counted before the stop is still there after it (the data lives under var/)."""
    var = tmp_path / "var"
    first = start_loop(var, repo_root_session, static_members=False)
    run, kept = uuid.uuid4().hex[:8], uuid.uuid4().hex[:8]
    settled = {"response_id": f"{kept}-1", "respondent_id": f"{kept}-u", "score": 4, "attributes": {"run": kept}}
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(f"{first.urls['ingest']}/v1/responses", json=settled, headers=first.auth)
            assert reply.status_code == 202, reply.text

            async def routed() -> bool:
                answer = await client.get(f"{first.urls['followup']}/v1/followups/{kept}-1", headers=first.auth)
                score = await client.get(
                    f"{first.urls['scoring']}/v1/nps", params={"segment": f"run:{kept}"}, headers=first.auth
                )
                return answer.status_code == 200 and score.json()["n"] == 1  # in the database before the stop

            await eventually(routed, timeout=20)
        held = _hold_consumers(first)
        posted = await _post_many(first, run, 800)
        await _invite_many(first, run, 120)  # the rates consumer (in scoring) held too
        await _stop_now(first, held)
    finally:
        if first.process.poll() is None:
            stop_loop(first)
    # only while the loop runs
    assert not (var / "database-url").exists() and not (var / "kafka-bootstrap").exists()
    second = start_loop(var, repo_root_session, static_members=False)
    assert second.api_key == first.api_key  # the development key is kept with the data
    try:
        replays = re.findall(r"replayed (\d+) accepted events", second.output.read_text())  # the log is appended to
        assert len(replays) == 2 and int(replays[-1]) >= 920, replays  # the responses and the invitations
        await _counted_exactly(second, run, posted)
        await _invited(second, run, 120)
        async with httpx.AsyncClient(timeout=10) as client:
            score = await client.get(
                f"{second.urls['scoring']}/v1/nps", params={"segment": f"run:{kept}"}, headers=second.auth
            )
            assert (score.json()["n"], score.json()["detractors"]) == (1, 1)
            followup = await client.get(f"{second.urls['followup']}/v1/followups/{kept}-1", headers=second.auth)
            assert followup.status_code == 200 and followup.json()["kind"] == "ticket"

        # The same when PostgreSQL's postmaster was killed too before the stop.
        again = uuid.uuid4().hex[:8]
        held = _hold_consumers(second)
        more = await _post_many(second, again, 400)
        await _stop_now(second, held, fault=lambda: os.kill(postmaster_pid(var), signal.SIGKILL))
    finally:
        if second.process.poll() is None:
            stop_loop(second)
    third = start_loop(var, repo_root_session, static_members=False)
    try:
        await _counted_exactly(third, again, more)
        await _counted_exactly(third, run, posted)
    finally:
        stop_loop(third)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
