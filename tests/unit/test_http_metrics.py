"""Request metrics are labelled by route template, health routes and nested routers included."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY
from pydantic import SecretStr

from followup_service.bootstrap import create_app
from followup_service.settings import FollowUpSettings
from shared.auth import Gate
from tests.helpers import TEST_PSEUDONYM_SECRET
from tests.unit.test_auth import FakeKeys

SECRET = SecretStr(TEST_PSEUDONYM_SECRET)


def requests(route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "nps_http_requests_total", {"service": "followup", "method": "GET", "route": route, "status": status}
    )
    return value or 0.0


async def test_routes_are_counted_by_their_template_never_as_unmatched_or_by_raw_path() -> None:
    app = create_app(FollowUpSettings(pseudonym_secret=SECRET))
    app.state.gate = Gate(FakeKeys({}))  # no keys: the lookup answers 401 without a database
    before = {r: requests(r, s) for r, s in (("/healthz", "2xx"), ("/v1/followups/{response_id}", "4xx"))}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://followup") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v1/followups/r-1")).status_code == 401
        assert (await client.get("/v1/followups/r-2")).status_code == 401
        assert (await client.get("/openapi.json")).status_code == 200
    assert requests("/healthz", "2xx") == before["/healthz"] + 1
    assert requests("/v1/followups/{response_id}", "4xx") == before["/v1/followups/{response_id}"] + 2
    assert requests("/openapi.json", "2xx") >= 1
    assert requests("/v1/followups/r-1", "4xx") == 0
