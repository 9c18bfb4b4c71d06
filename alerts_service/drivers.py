"""A fired drop alert's drivers: the themes whose share among the segment's commenting detractors
rose most, asked of the themes service (`GET /v1/themes/drivers`, scope `scores:read`) for the
same windows the drop rule compared. Its HTTP API is how one service asks another: alerts never
reads scoring's tables. An answer that does not come in `timeout_s`, or an error, leaves the alert
without drivers (logged, counted): an alert never waits long on themes, and never fails for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

import aiohttp
from pydantic import BaseModel

from alerts_service import metrics
from shared.events import AlertDriver

log = logging.getLogger(__name__)


class _Driver(BaseModel):  # the fields of the themes API's answer this reads
    theme: str
    label: str
    detractor_share_now: float | None
    detractor_share_before: float | None
    rise_points: float | None
    p_value: float | None


class _Answer(BaseModel):
    drivers: list[_Driver]


# What EvaluateRounds calls: (segment, current days, baseline days, as of) -> the top drivers.
Drivers = Callable[[str, int, int, date], Awaitable[list[AlertDriver]]]
# GET path with params -> (status, body). Production: aiohttp (delivery's client); tests may serve
# the themes app in-process instead.
Get = Callable[[str, Mapping[str, str]], Awaitable[tuple[int, bytes]]]


@dataclass
class ThemeDrivers:
    url: str  # the themes service, e.g. http://127.0.0.1:8005
    api_key: str | None
    top: int = 3
    timeout_s: float = 2.0
    get: Get | None = None
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def _get(self, path: str, params: Mapping[str, str]) -> tuple[int, bytes]:
        if self.get is not None:
            return await self.get(path, params)
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        async with self._session.get(self.url.rstrip("/") + path, params=dict(params)) as reply:
            return reply.status, await reply.read()

    async def __call__(self, segment: str, current_days: int, baseline_days: int, as_of: date) -> list[AlertDriver]:
        """The top drivers (a share that rose), best first; [] when none rose or themes did not answer."""
        params = {
            "segment": segment,
            "window": f"{current_days}d",
            "baseline": f"{baseline_days}d",
            "as_of": as_of.isoformat(),
        }
        try:
            status, body = await asyncio.wait_for(self._get("/v1/themes/drivers", params), self.timeout_s)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            answer = _Answer.model_validate_json(body)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:  # ValidationError is a ValueError
            metrics.DRIVERS.labels("failed").inc()
            reason = str(exc) if isinstance(exc, ValueError) and str(exc).startswith("HTTP") else type(exc).__name__
            log.warning("drivers of a drop alert: the themes service did not answer (%s)", reason)
            return []
        metrics.DRIVERS.labels("attached").inc()
        rose = [d for d in answer.drivers if d.rise_points is not None and d.rise_points > 0]
        rose.sort(key=lambda d: (-(d.rise_points or 0.0), d.theme))
        return [
            AlertDriver(
                theme=d.theme,
                label=d.label,
                share_before=d.detractor_share_before,
                share_now=d.detractor_share_now,
                rise_points=d.rise_points or 0.0,
                p_value=d.p_value,
            )
            for d in rose[: self.top]
        ]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def describe(drivers: list[AlertDriver]) -> str:
    """'delivery: 4% -> 19% of detractor comments; price: …' for the alert's summary."""
    parts = []
    for d in drivers:
        before = "n/a" if d.share_before is None else f"{100 * d.share_before:.0f}%"
        now = "n/a" if d.share_now is None else f"{100 * d.share_now:.0f}%"
        parts.append(f"{d.theme}: {before} \u2192 {now} of detractor comments")
    return "; ".join(parts)
