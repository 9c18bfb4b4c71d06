"""A fired drop alert's drivers, as alerts reads them from the themes service's answer: the shares
that rose, best first, at most `top`; no answer (an error, a timeout, a bad body) means no drivers,
counted, never an exception. The real themes service answers in tests/integration/test_themes.py
and end to end in tests/e2e/test_loop.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import date
from typing import Any

import pytest
from prometheus_client import REGISTRY

from alerts_service.drivers import ThemeDrivers, describe

AS_OF = date(2026, 11, 26)


def driver(theme: str, before: float | None, now: float | None, p: float | None = 0.01) -> dict[str, Any]:
    rise = None if before is None or now is None else round(100 * (now - before), 2)
    return {
        "theme": theme, "label": theme.title(), "detractor_share_now": now, "detractor_share_before": before,
        "rise_points": rise, "z": 2.0, "p_value": p, "overall_share_now": 0.1, "overall_share_before": 0.1,
    }  # fmt: skip


def answering(status: int, body: bytes, seen: list[tuple[str, Mapping[str, str]]] | None = None) -> Any:
    async def get(path: str, params: Mapping[str, str]) -> tuple[int, bytes]:
        if seen is not None:
            seen.append((path, params))
        return status, body

    return get


def failed() -> float:
    return REGISTRY.get_sample_value("nps_alerts_drivers_total", {"outcome": "failed"}) or 0.0


async def test_the_shares_that_rose_best_first_at_most_top() -> None:
    body = json.dumps(
        {
            "drivers": [
                driver("price", 0.10, 0.12),
                driver("delivery", 0.04, 0.19),
                driver("support", 0.30, 0.20),  # fell: not a driver
                driver("bugs", None, 0.5),  # no baseline comments: no rise to speak of
                driver("onboarding", 0.01, 0.06),
            ]
        }
    ).encode()
    seen: list[tuple[str, Mapping[str, str]]] = []
    drivers = ThemeDrivers("http://themes", "key", top=2, get=answering(200, body, seen))
    found = await drivers("region:eu", 7, 28, AS_OF)
    assert [d.theme for d in found] == ["delivery", "onboarding"]
    assert found[0].rise_points == pytest.approx(15.0) and found[0].share_before == pytest.approx(0.04)
    assert seen == [
        ("/v1/themes/drivers", {"segment": "region:eu", "window": "7d", "baseline": "28d", "as_of": "2026-11-26"})
    ]
    assert describe(found) == (
        "delivery: 4% \u2192 19% of detractor comments; onboarding: 1% \u2192 6% of detractor comments"
    )


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, b"{}"), (401, b'{"title": "no key"}'), (200, b"not json"), (200, b'{"drivers": [{"theme": 1}]}')],
)
async def test_no_answer_means_no_drivers_counted(status: int, body: bytes) -> None:
    before = failed()
    assert await ThemeDrivers("http://themes", None, get=answering(status, body))("all", 7, 28, AS_OF) == []
    assert failed() == before + 1


async def test_a_slow_themes_service_is_not_waited_for() -> None:
    async def slow(path: str, params: Mapping[str, str]) -> tuple[int, bytes]:
        await asyncio.sleep(5)
        return 200, b'{"drivers": []}'

    before = failed()
    assert await ThemeDrivers("http://themes", None, timeout_s=0.05, get=slow)("all", 7, 28, AS_OF) == []
    assert failed() == before + 1


async def test_an_unreachable_themes_service_over_real_http() -> None:
    """aiohttp, the production path: nothing listens on that port."""
    drivers = ThemeDrivers("http://127.0.0.1:9", None, timeout_s=1.0)
    before = failed()
    try:
        assert await drivers("all", 7, 28, AS_OF) == []
    finally:
        await drivers.close()
    assert failed() == before + 1
