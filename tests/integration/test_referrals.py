"""Referral codes through follow-up's real loop, API and database: each promoter's referral
follow-up carries an unguessable code (in its message too), sign-ups are recorded once per
conversion id, and the stats give the conversion rate per segment."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from followup_service.bootstrap import create_app, spec
from shared.events import FollowUpCreated, followup_events
from tests.helpers import Run, create_topics, read_topic, served
from tests.integration.test_followup import settings_for

pytestmark = pytest.mark.integration
CODE = re.compile(r"^r[a-z2-7]{16}$")


async def test_referral_codes_are_issued_converted_once_and_counted(
    bootstrap: str, database_url: str, namespace: str
) -> None:
    settings = settings_for(bootstrap, database_url, namespace)
    await create_topics(settings)
    run = Run()
    now = run.now
    sent = [
        run.submitted("p1", 10, channel="web"),
        run.submitted("p2", 9, channel="email"),
        run.submitted("n1", 7, channel="web"),
    ]
    app = create_app(settings)
    async with served(app, settings, spec(settings, app.state.policy)) as service:
        reader = await service.key(["followups:read"])
        await service.publish(settings.topics.responses, sent)
        records = await read_topic(bootstrap, settings.topics.followups, expect=3)
        created = {
            e.response_id.removeprefix(f"{run.id}-"): e
            for e in map(followup_events.validate_json, (r.value for r in records))
        }
        assert all(isinstance(e, FollowUpCreated) for e in created.values())
        codes = {rid: e.referral_code for rid, e in created.items()}
        assert CODE.match(codes["p1"] or "") and CODE.match(codes["p2"] or "") and codes["n1"] is None
        assert codes["p1"] != codes["p2"]
        assert f"Your referral code: {codes['p1']}" in (created["p1"].body_text or "")
        for rid, code in codes.items():  # support looks a promoter's code up by the response
            shown = await service.client.get(f"/v1/followups/{run.of(rid)}")
            assert shown.json()["referral_code"] == code

        client = service.client
        path = f"/v1/referrals/{codes['p1']}/conversions"
        first = await client.post(path, json={"conversion_id": f"{run.id}-signup-1"})
        assert first.status_code == 201 and first.json()["recorded"] is True
        again = await client.post(path, json={"conversion_id": f"{run.id}-signup-1"})
        assert again.status_code == 200 and again.json()["recorded"] is False
        elsewhere = await client.post(
            f"/v1/referrals/{codes['p2']}/conversions", json={"conversion_id": f"{run.id}-signup-1"}
        )
        assert elsewhere.status_code == 409 and elsewhere.json()["code"] == "conversion_conflict"
        unknown = await client.post(f"/v1/referrals/r{'a' * 16}/conversions", json={"conversion_id": "x"})
        assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_referral_code"
        for bad_path, body in (
            ("/v1/referrals/NOTACODE/conversions", {"conversion_id": "x"}),
            (path, {"conversion_id": "x", "converted_at": (now + timedelta(days=2)).isoformat()}),
            (path, {"conversion_id": "x", "converted_at": "2026-11-26T10:00:00"}),
            (path, {}),
        ):
            refused = await client.post(bad_path, json=body)
            assert refused.status_code == 422 and refused.json()["code"] == "invalid_request", refused.text
        assert (await client.post(path, json={"conversion_id": "y"}, headers=reader)).status_code == 403

        stats = (await client.get("/v1/referrals/stats", params={"window": "7d"})).json()
        assert (
            stats["codes_issued"],
            stats["conversions"],
            stats["converting_codes"],
            stats["conversion_rate"],
        ) == (
            2,
            1,
            1,
            0.5,
        )
        web = (await client.get("/v1/referrals/stats", params={"segment": "channel:web"})).json()
        assert (web["codes_issued"], web["conversion_rate"]) == (1, 1.0)
        for params in ({"window": "0d"}, {"window": "7"}, {"segment": "plan:pro"}, {"segment": "channel:"}):
            assert (await client.get("/v1/referrals/stats", params=params)).status_code == 422
