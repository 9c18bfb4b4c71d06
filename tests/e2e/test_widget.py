"""The web widget in a real browser (Debian's Chromium driven by Playwright) against the running
loop: the demo page `nps up` serves on another origin than the API, with its strict
Content-Security-Policy. Answers, keyboard use, dismissal, a person surveyed recently, an origin the
key does not list, a network that fails mid-submit, accessibility (axe-core), and screenshots."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    Request,
    Response,
    Route,
    async_playwright,
)

from clients.web.build import version
from ingest_service.public import identity_hash
from tests.e2e.conftest import Loop
from tests.helpers import eventually, nps_here

# A loop of their own on another worker (tests/scheduling.py): test_loop.py's is busy for minutes.
FIXTURE_COPY = "second"

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "widget"


# A page whose bytes a test serves through Playwright (page.route) has no address space Chromium can
# tell, so its requests to the loop on loopback meet Local Network Access checks a real page of
# that origin would not: such tests turn them off (CORS and everything else stay on).
LOCAL_PAGE = "--disable-features=LocalNetworkAccessChecks"


# One Playwright driver for the file, and one Chromium per set of flags, started when first asked
# for: a launch each test cost a node process and a browser start (seconds on a busy machine). Each
# test still gets a fresh context (its own storage, cookies and viewport). The file's tests share
# one event loop for it (pytestmark below).
_DRIVER: list[Playwright] = []
_LAUNCHED: dict[tuple[str, ...], Browser] = {}


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def _playwright() -> AsyncIterator[None]:
    async with async_playwright() as driver:
        _DRIVER.append(driver)
        try:
            yield
        finally:
            for launched in _LAUNCHED.values():
                await launched.close()
            _LAUNCHED.clear()
            _DRIVER.clear()


async def browser(*args: str) -> Browser:
    """The file's Chromium started with `args`, launched on first use."""
    if args not in _LAUNCHED:
        _LAUNCHED[args] = await _DRIVER[0].chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *args])
    return _LAUNCHED[args]


@asynccontextmanager
async def page_of(*args: str, **context: Any) -> AsyncIterator[tuple[Page, list[str]]]:
    """A new page (not yet anywhere), and every console error it will log."""
    ctx: BrowserContext = await (await browser(*args)).new_context(**context)
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page, errors
    finally:
        await ctx.close()


def demo(loop: Loop, person: str, plan: str) -> str:
    """The demo page for `person`, their answers counted under the segment plan:`plan`."""
    return f"{loop.demo}/?person={person}&plan={plan}"


async def counted(loop: Loop, plan: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        reply = await client.get(
            f"{loop.urls['scoring']}/v1/nps", params={"segment": f"plan:{plan}", "window": "7d"}, headers=loop.auth
        )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def sent_bodies(page: Page, path: str) -> list[dict[str, Any]]:
    """The JSON bodies the page POSTs to `path` (filled as they go out)."""
    bodies: list[dict[str, Any]] = []

    def seen(request: Request) -> None:
        if request.method == "POST" and request.url.endswith(path) and request.post_data:
            bodies.append(json.loads(request.post_data))

    page.on("request", seen)
    return bodies


async def test_a_detractor_answers_with_a_comment_counted_once_and_a_ticket_opens(loop: Loop) -> None:
    run = uuid.uuid4().hex[:8]
    async with page_of() as (page, errors):
        answers = sent_bodies(page, "/v1/responses")
        opened = await page.goto(demo(loop, f"w-{run}", run))
        assert opened is not None and "default-src 'none'" in opened.headers["content-security-policy"]
        dialog = page.get_by_role("dialog", name="Quick question")
        await dialog.wait_for()
        await page.get_by_role("radio", name="3", exact=True).check()
        await page.get_by_label("We are sorry. What went wrong?").fill("The export keeps failing")
        async with page.expect_response(lambda r: r.url.endswith("/v1/responses")) as replied:
            await page.get_by_role("button", name="Send").click()
        assert (await replied.value).status == 202
        await page.get_by_text("Thank you! Your answer helps us improve.").wait_for()
        assert errors == []  # no CSP violation, no script error
    [answer] = answers
    assert (answer["score"], answer["comment"], answer["respondent_id"]) == (3, "The export keeps failing", f"w-{run}")
    assert answer["invitation_id"] and len(answer["respondent_hash"]) == 64

    async def scored() -> bool:
        return (await counted(loop, run))["n"] == 1

    await eventually(scored, timeout=20)
    async with httpx.AsyncClient(timeout=10) as client:

        async def ticketed() -> bool:
            reply = await client.get(f"{loop.urls['followup']}/v1/followups/{answer['response_id']}", headers=loop.auth)
            return reply.status_code == 200 and reply.json()["kind"] == "ticket"

        await eventually(ticketed, timeout=20)
    await asyncio.sleep(1)
    assert (await counted(loop, run))["detractors"] == 1  # once

    # The same person on the next page load: surveyed just now, so nothing is shown.
    async with page_of() as (page, _):
        async with page.expect_response(lambda r: "/v1/prompt?" in r.url) as asked:
            await page.goto(demo(loop, f"w-{run}", run))
        decision = await (await asked.value).json()
        assert decision["show"] is False and decision["reason"] == "surveyed_recently"
        assert await page.get_by_role("dialog").count() == 0


async def test_keyboard_only_from_the_scale_to_send(loop: Loop) -> None:
    run = uuid.uuid4().hex[:8]
    async with page_of() as (page, _):
        answers = sent_bodies(page, "/v1/responses")
        await page.goto(demo(loop, f"k-{run}", run))
        await page.get_by_role("dialog").wait_for()
        first = page.get_by_role("radio", name="0", exact=True)
        assert await first.evaluate("node => node.getRootNode().activeElement === node")  # focus moved into it
        for _ in range(9):
            await page.keyboard.press("ArrowRight")
        await page.keyboard.press("Enter")  # on to the comment
        await page.keyboard.type("Fast and simple")
        await page.keyboard.press("Tab")  # the Send button
        async with page.expect_response(lambda r: r.url.endswith("/v1/responses")) as replied:
            await page.keyboard.press("Enter")
        assert (await replied.value).status == 202
        # focus stays inside the prompt: Tab from the last stop comes round to the first
        for _ in range(4):
            await page.keyboard.press("Tab")
            inside = await page.evaluate("() => document.activeElement?.hasAttribute('data-nps-widget') ?? false")
            assert inside or await page.get_by_role("dialog").count() == 0
    assert [(a["score"], a["comment"]) for a in answers] == [(9, "Fast and simple")]


async def test_escape_records_a_dismissal_and_gives_focus_back(loop: Loop) -> None:
    run = uuid.uuid4().hex[:8]
    async with page_of() as (page, _):
        impressions = sent_bodies(page, "/v1/impressions")
        await page.goto(demo(loop, f"e-{run}", run))
        await page.get_by_role("dialog").wait_for()
        async with page.expect_response(lambda r: r.url.endswith("/v1/impressions") and r.request.post_data is not None
                                        and '"dismissed"' in r.request.post_data) as dismissed:  # fmt: skip
            await page.keyboard.press("Escape")
        assert (await dismissed.value).status == 202
        assert await page.get_by_role("dialog").count() == 0
        assert await page.evaluate("() => document.activeElement === document.body")  # where focus was before
    assert [i["action"] for i in impressions] == ["shown", "dismissed"]
    assert impressions[0]["impression_id"] == impressions[1]["impression_id"]
    assert (await counted(loop, run))["n"] == 0


async def test_an_origin_the_key_does_not_list_gets_nothing_past_the_preflight(loop: Loop) -> None:
    """The demo page itself, reached as http://localhost:<port>: another origin than the one its key
    lists (http://127.0.0.1:<port>). The browser's preflight is refused, so no prompt shows and
    nothing is sent or stored."""
    run = uuid.uuid4().hex[:8]
    elsewhere = loop.demo.replace("127.0.0.1", "localhost")
    async with page_of() as (page, errors):
        failed: list[str] = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        await page.goto(f"{elsewhere}/?person=x-{run}&plan={run}")
        await eventually(lambda: _some(failed, "/v1/prompt?"), timeout=10)
        await asyncio.sleep(0.5)
        assert await page.get_by_role("dialog").count() == 0
        assert any("blocked by CORS policy" in e for e in errors), errors
    conn = await asyncpg.connect((loop.var_dir / "database-url").read_text().strip())
    try:
        stored = await conn.fetchval(
            "SELECT (SELECT count(*) FROM ingest.invitations WHERE respondent_id = $1)"
            " + (SELECT count(*) FROM ingest.events WHERE respondent_id = $1)",
            f"x-{run}",
        )
    finally:
        await conn.close()
    assert stored == 0


async def _some(urls: list[str], part: str) -> bool:
    return any(part in u for u in urls)


async def test_an_answer_lost_on_the_network_is_sent_again_on_the_next_page_load_and_counted_once(
    loop: Loop,
) -> None:
    """The loop takes the first POST but the browser never hears back (the connection drops): the
    widget keeps the answer; the next page load sends it again with the same id; it counts once."""
    run = uuid.uuid4().hex[:8]
    chromium = await browser()
    ctx = await chromium.new_context()
    page = await ctx.new_page()
    answers = sent_bodies(page, "/v1/responses")
    taken: list[int] = []

    async def drop_after_sending(route: Route) -> None:
        if route.request.method == "POST":
            reply = await route.fetch()  # it reaches the loop...
            taken.append(reply.status)
        await route.abort("connectionreset")  # ...and the answer never reaches the page

    await page.route("**/v1/responses", drop_after_sending)
    await page.goto(demo(loop, f"n-{run}", run))
    await page.get_by_role("radio", name="10", exact=True).check()
    await page.get_by_role("button", name="Send").click()
    await eventually(lambda: _len_at_least(taken, 1), timeout=10)
    kept = await page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('nps-widget:pending'))")
    assert kept, "the answer is kept for the next page load"
    # The next page load, in a new tab of the same browser: the page that lost its answer is
    # closed first, so none of its own retries (still dropped) can succeed in between.
    await page.close()
    page = await ctx.new_page()
    again = sent_bodies(page, "/v1/responses")
    async with page.expect_response(lambda r: r.url.endswith("/v1/responses") and r.status == 202):
        await page.goto(demo(loop, f"n-{run}", run))
    left = await page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('nps-widget:pending'))")
    assert left == []
    await ctx.close()
    assert again and taken[0] == 202 and len({a["response_id"] for a in answers + again}) == 1  # one id throughout

    async def once() -> bool:
        return (await counted(loop, run))["n"] == 1

    await eventually(once, timeout=20)
    await asyncio.sleep(1)
    assert (await counted(loop, run))["n"] == 1


async def _len_at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


@pytest.mark.parametrize(
    ("name", "context"),
    [
        ("light", {"color_scheme": "light", "viewport": {"width": 1024, "height": 640}}),
        ("dark", {"color_scheme": "dark", "viewport": {"width": 1024, "height": 640}}),
        ("narrow", {"color_scheme": "light", "viewport": {"width": 320, "height": 640}}),
    ],
)
async def test_the_open_prompt_has_no_accessibility_violations_and_fits(
    loop: Loop, name: str, context: dict[str, Any]
) -> None:
    from axe_playwright_python.async_playwright import Axe

    run = uuid.uuid4().hex[:8]
    async with page_of(**context) as (page, errors):
        await page.goto(demo(loop, f"a-{run}", run))
        dialog = page.get_by_role("dialog")
        await dialog.wait_for()
        await page.get_by_role("radio", name="6", exact=True).check()  # the comment box open too
        results = await Axe().run(page, context={"include": [["[data-nps-widget]"]]})
        assert results.violations_count == 0, results.generate_report()
        box = await dialog.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= context["viewport"]["width"]
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SHOTS / f"prompt-{name}.png")
        assert errors == []


async def known_to_ingest(loop: Loop, key: str) -> None:
    """Until ingest has loaded a new key (it reloads its keys every few seconds)."""
    async with httpx.AsyncClient(timeout=10) as client:

        async def known() -> bool:
            reply = await client.get(
                f"{loop.urls['ingest']}/v1/prompt",
                params={"respondent_id": str(uuid.uuid4()), "survey_id": "demo"},
                headers={"Authorization": f"Bearer {key}", "Origin": loop.demo},
            )
            return reply.status_code != 401

        await eventually(known, timeout=30, every=0.3)


MODULE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>module</title>
<script type="module">
import {{ prompt, VERSION }} from "{api}/widget/nps.mjs";
window.version = VERSION;
window.result = prompt({{ key: "{key}", survey: "demo", api: "{api}", attributes: {{ plan: "{plan}" }}, thanksMs: 200 }});
</script></head><body><h1>module</h1></body></html>"""


async def test_the_module_with_an_anonymous_key_makes_and_keeps_a_random_person(loop: Loop) -> None:
    """`import { prompt }` from ingest's nps.mjs on a page of the key's origin; an anonymous key: the
    widget makes a random respondent id, keeps it in localStorage, and answers as that person."""
    run = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"NPS_VAR_DIR": str(loop.var_dir)}
    made = nps_here("keys", "create", f"anon-{run}", "--publishable", "--anonymous", "--origin", loop.demo,
                    "--survey", "demo", env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.split()[0]
    page_url = f"{loop.demo}/module-{run}"  # the demo page's origin; this page is the test's own
    html = MODULE_PAGE.format(api=loop.urls["ingest"], key=key, plan=run)
    async with page_of(LOCAL_PAGE) as (page, errors):
        await page.route(page_url, lambda route: route.fulfill(body=html, content_type="text/html"))
        answers = sent_bodies(page, "/v1/responses")
        await known_to_ingest(loop, key)
        await page.goto(page_url)
        await page.get_by_role("dialog").wait_for()
        await page.get_by_role("radio", name="8", exact=True).check()
        async with page.expect_response(lambda r: r.url.endswith("/v1/responses")) as replied:
            await page.get_by_role("button", name="Send").click()
        assert (await replied.value).status == 202
        result = await page.evaluate("() => window.result")
        kept = await page.evaluate("() => localStorage.getItem('nps-widget:anonymous-id')")
        assert await page.evaluate("() => window.version") == version()
        assert errors == []
    assert result == {"shown": True, "answered": True, "score": 8}
    [answer] = answers
    assert answer["respondent_id"] == kept and uuid.UUID(kept).version == 4 and "respondent_hash" not in answer

    async def scored() -> bool:
        return (await counted(loop, run))["passives"] == 1

    await eventually(scored, timeout=20)


Answer = tuple[float, float, int, str | None, str]  # began, answer began, status, Retry-After, response id


async def _send_with_the_person_s_bucket_empty(loop: Loop, person: str, run: str) -> list[Answer]:
    """The demo page's Send, the person's rate at ingest used up just before it and kept used up
    (their other tabs, say: an impression every 0.1 s, well inside the address's own limit) until
    the page's first answer arrives; every /v1/responses answer the page then gets, until a 202."""
    demo_key = json.loads((loop.var_dir / "demo-key.json").read_text())
    who = {"respondent_id": person, "respondent_hash": identity_hash(demo_key["identity"], person), "survey_id": "demo"}
    headers = {"Authorization": f"Bearer {demo_key['key']}", "Origin": loop.demo}
    answers: list[Answer] = []
    async with page_of() as (page, console), httpx.AsyncClient(timeout=10) as client:

        async def seen(response: Response) -> None:
            request = response.request
            if request.method == "POST" and request.url.endswith("/v1/responses"):
                sent = json.loads(request.post_data or "{}")["response_id"]
                # The browser's own clock: when the request left and when its answer began to arrive
                # (the test's event handler can run late on a busy machine, the browser's stamps do not).
                timing = request.timing
                began, answered = timing["startTime"] / 1000, (timing["startTime"] + timing["responseStart"]) / 1000
                retry_after = await response.header_value("retry-after")
                answers.append((began, answered, response.status, retry_after, sent))

        async def impression() -> int:
            body = {**who, "impression_id": str(uuid.uuid4()), "action": "shown"}
            return (await client.post(f"{loop.urls['ingest']}/v1/impressions", json=body, headers=headers)).status_code

        async def keep_empty() -> None:
            while not answers:
                await impression()
                await asyncio.sleep(0.1)

        page.on("response", seen)
        await page.goto(demo(loop, person, run))
        await page.get_by_role("radio", name="10", exact=True).check()
        for _ in range(10):
            if await impression() == 429:
                break
        else:
            raise AssertionError("the per-respondent limit never answered 429")
        emptying = asyncio.create_task(keep_empty())
        try:
            await page.get_by_role("button", name="Send").click()
            await eventually(lambda: _any_accepted(answers), timeout=20)
        except AssertionError:
            raise AssertionError(f"answers: {answers}, console: {console}") from None
        finally:
            emptying.cancel()
    return answers


async def _any_accepted(answers: list[Answer]) -> bool:
    return any(status == 202 for _, _, status, _, _ in answers)


async def test_a_429_s_retry_after_is_waited_for_and_the_answer_sent_again_with_the_same_id(loop: Loop) -> None:
    """The person's rate at ingest used up (a publishable key's per-respondent limit) at Send: the
    loop answers 429 with Retry-After, readable across origins; the widget waits that long and sends
    the same response id again, which the loop takes. A token can still come back between the
    bucket's last emptying and the Send's arrival (a 0.1 s window in each 5 s): the page's first
    answer is then a 202, and the scenario runs again for another person, at most three times."""
    for _ in range(3):
        run, person = uuid.uuid4().hex[:8], f"r-{uuid.uuid4().hex[:8]}"
        answers = await _send_with_the_person_s_bucket_empty(loop, person, run)
        if answers[0][2] != 202:
            break
    else:
        raise AssertionError(f"three Sends met a refilled bucket; the last got {answers}")
    (_, refused_at, status, wait, first_id) = answers[0]
    assert status == 429 and wait is not None, answers
    accepted = next(a for a in answers if a[2] == 202)
    assert {a[4] for a in answers} == {first_id}  # every attempt the same response id
    sent_again_at = accepted[0]
    assert sent_again_at - refused_at >= float(wait) - 0.1  # not the 0.5 s of the widget's own first backoff

    async def scored() -> bool:
        return (await counted(loop, run))["promoters"] == 1

    await eventually(scored, timeout=20)
