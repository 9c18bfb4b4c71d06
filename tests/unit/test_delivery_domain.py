"""Delivery's pure rules: signatures (checked by `standardwebhooks`, not by us), matching, what an
answer means, Retry-After, which URLs and addresses may be called, the Slack message."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from delivery_service.domain import (
    Subscription,
    address_allowed,
    headers_for,
    new_secret,
    order_key,
    retry_after,
    segments_of,
    standard_body,
    url_problem,
    verdict,
    wants,
    webhook_id,
)
from delivery_service.slack import slack_body
from delivery_service.worker import BlockedAddress, VettingResolver
from shared.events import FollowUpCreated, FollowUpHeldOut, TicketOpened
from tests.helpers import fired_alert

T0 = datetime(2026, 11, 26, 9, tzinfo=UTC)
SCHEDULE = [5.0, 300.0, 1_800.0]


def ticket(channel: str | None = "web") -> TicketOpened:
    return TicketOpened(
        ticket_id="tk_1", response_id="r1", respondent_id="u1", score=3, channel=channel, survey_id="q3",
        answered_at=T0, created_at=T0,
    )  # fmt: skip


def followup(kind: str) -> FollowUpCreated:
    return FollowUpCreated(followup_id="f1", kind=kind, response_id="r1", respondent_id="u1", score=10, created_at=T0)


def subscription(events: set[str], kinds: set[str] | None = None, segments: set[str] | None = None) -> Subscription:
    return Subscription(
        "wh_1", "https://x.example", frozenset(events), None if kinds is None else frozenset(kinds),
        None if segments is None else frozenset(segments), "standard", "active",
    )  # fmt: skip


@given(body=st.text(max_size=500).map(str.encode), msg=st.text(alphabet="abcdef0123456789", min_size=1, max_size=40))
def test_the_reference_library_verifies_our_signatures(body: bytes, msg: str) -> None:
    secret = new_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = headers_for([secret], f"msg_{msg}", now, body)
    Webhook(secret).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):  # a body changed on the way
        Webhook(secret).verify(body + b" ", headers, json_parse=False)


def test_during_a_rotation_both_secrets_sign() -> None:
    old, new = new_secret(), new_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = headers_for([new, old], "msg_1", now, b"{}")
    assert headers["webhook-signature"].count("v1,") == 2
    Webhook(old).verify(b"{}", headers)
    Webhook(new).verify(b"{}", headers)


def test_webhook_ids_are_stable_per_subscription_and_event() -> None:
    assert webhook_id("wh_a", b"e1") == webhook_id("wh_a", b"e1")
    assert len({webhook_id("wh_a", b"e1"), webhook_id("wh_b", b"e1"), webhook_id("wh_a", b"e2")}) == 3
    assert webhook_id("wh_a", b"e1").startswith("msg_") and len(webhook_id("wh_a", b"e1")) == 36


def test_the_body_is_the_standard_envelope_around_the_event_as_published() -> None:
    event = ticket()
    body = json.loads(standard_body("TicketOpened", T0, event.to_bytes()))
    assert body == {"type": "TicketOpened", "timestamp": "2026-11-26T09:00:00Z", "data": json.loads(event.to_bytes())}


def test_subscriptions_match_by_type_kind_and_segment() -> None:
    assert wants(subscription({"TicketOpened"}), ticket())
    assert not wants(subscription({"TicketUpdated"}), ticket())
    assert wants(subscription({"FollowUpCreated"}, kinds={"referral"}), followup("referral"))
    assert not wants(subscription({"FollowUpCreated"}, kinds={"referral"}), followup("education"))
    assert wants(subscription({"TicketOpened"}, kinds={"referral"}), ticket())  # kinds are follow-ups'
    assert wants(subscription({"TicketOpened"}, segments={"channel:web"}), ticket())
    assert wants(subscription({"TicketOpened"}, segments={"survey_id:q3"}), ticket())
    assert not wants(subscription({"TicketOpened"}, segments={"channel:email"}), ticket())
    assert segments_of(ticket(channel=None)) == {"all", "survey_id:q3"}
    drop = fired_alert("a1", "region:eu", T0)
    assert wants(subscription({"AlertFired"}, segments={"region:eu"}), drop)
    assert not wants(subscription({"AlertFired"}, segments={"all"}), drop)
    assert order_key(drop) == "a1" and order_key(ticket()) == "tk_1" and order_key(followup("x")) == "f1"
    held = held_out("ticket")
    assert wants(subscription({"FollowUpHeldOut"}, kinds={"ticket"}), held) and order_key(held) == "f2"
    assert not wants(subscription({"FollowUpHeldOut"}, kinds={"referral"}), held)
    assert not wants(subscription({"FollowUpCreated"}), held)  # its own event type, subscribed to by name


def held_out(kind: str) -> FollowUpHeldOut:
    return FollowUpHeldOut(followup_id="f2", kind=kind, response_id="r2", respondent_id="u2", score=3, created_at=T0,
                           rule="detractors", experiment_id="tickets-27", arm="held_out")  # fmt: skip


def test_a_held_out_follow_up_s_slack_message_names_the_experiment() -> None:
    body = json.loads(slack_body(held_out("ticket"), "https://nps.example.com/"))
    assert "held out" in body["text"] and "tickets-27" in body["text"] and "arm held_out" in body["text"]
    assert "https://nps.example.com/v1/experiments/tickets-27" in json.dumps(body["blocks"][-1])


@pytest.mark.parametrize(
    ("status", "error", "attempt", "outcome"),
    [
        (200, None, 1, "delivered"),
        (204, None, 8, "delivered"),
        (410, None, 1, "gone"),
        (500, None, 1, "retry"),
        (503, None, 3, "retry"),
        (429, None, 1, "retry"),
        (408, None, 1, "retry"),
        (409, None, 1, "retry"),
        (None, "timed out", 2, "retry"),
        (500, None, 4, "failed"),  # the schedule's three retries are spent
        (400, None, 1, "failed"),
        (401, None, 1, "failed"),
        (404, None, 1, "failed"),
        (301, None, 1, "failed"),
    ],
)
def test_what_an_answer_means(status: int | None, error: str | None, attempt: int, outcome: str) -> None:
    assert verdict(status, error, attempt, SCHEDULE).outcome == outcome


def test_retries_follow_the_schedule_with_jitter_or_retry_after() -> None:
    rng = random.Random(7)
    delays = [verdict(500, None, n, SCHEDULE, rng=rng).retry_in_s for n in (1, 2, 3)]
    for delay, planned in zip(delays, SCHEDULE, strict=True):
        assert delay is not None and planned * 0.8 <= delay <= planned * 1.2
    assert verdict(429, None, 1, SCHEDULE, retry_after_s=42).retry_in_s == 42
    assert verdict(429, None, 1, SCHEDULE, retry_after_s=10**9).retry_in_s == 86_400  # capped at a day
    assert "redirects" in (verdict(302, None, 1, SCHEDULE).reason or "")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("120", T0) == 120
    assert retry_after("Thu, 26 Nov 2026 09:01:00 GMT", T0) == 60
    assert retry_after("Thu, 26 Nov 2026 08:00:00 GMT", T0) == 0
    assert retry_after("soon", T0) is None and retry_after(None, T0) is None


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1",
     "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "224.0.0.1", "240.0.0.1"],
)  # fmt: skip
def test_private_and_special_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address, allow_private=False)
    assert address_allowed(address, allow_private=True)


def test_public_addresses_are_allowed() -> None:
    assert address_allowed("93.184.216.34", allow_private=False)
    assert address_allowed("2606:2800:220:1:248:1893:25c8:1946", allow_private=False)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example.com/x", "https"),
        ("https://127.0.0.1/x", "not a public address"),
        ("https://[::1]:8443/x", "not a public address"),
        ("https://localhost/x", "local name"),
        ("https://svc.internal/x", "local name"),
        ("https://u:p@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https:///x", "no host"),
        ("ftp://hooks.example.com/x", "https"),
    ],
)
def test_urls_that_may_not_receive_webhooks(url: str, problem: str) -> None:
    assert problem in (url_problem(url, allow_private=False) or "")


def test_urls_that_may() -> None:
    assert url_problem("https://hooks.slack.com/services/T0/B0/xyz", allow_private=False) is None
    assert url_problem("http://127.0.0.1:9000/hook", allow_private=True) is None


async def test_a_name_resolving_to_a_private_address_is_refused_at_connection() -> None:
    # The system resolver (/etc/hosts), not a stand-in: `localhost` is 127.0.0.1 / ::1.
    resolver = VettingResolver(allow_private=False)
    try:
        with pytest.raises(BlockedAddress):
            await resolver.resolve("localhost", 443)
    finally:
        await resolver.close()
    allowing = VettingResolver(allow_private=True)
    try:
        assert await allowing.resolve("localhost", 443)
    finally:
        await allowing.close()


def test_slack_messages_say_what_happened_and_link_to_it() -> None:
    body = json.loads(slack_body(ticket(), "https://nps.example.com/"))
    assert "tk_1" in body["text"]
    fields = [f["text"] for f in body["blocks"][1]["fields"]]
    assert "*Score*\n3" in fields and "*Channel*\nweb" in fields
    assert "https://nps.example.com/v1/tickets/tk_1" in json.dumps(body["blocks"][-1])
    drop = fired_alert("a1", "region:eu", T0 + timedelta(hours=1))
    alert = json.loads(slack_body(drop, None))
    assert "region:eu" in alert["text"] and "20.0 points" in alert["text"]
    alert_fields = [f["text"] for f in alert["blocks"][1]["fields"]]
    assert "*Most of it*\nproduct:atlas (-15.0)" in alert_fields and "*p / q*\n0.004 / 0.01" in alert_fields
    assert len(alert["blocks"]) == 2  # no link without a public API URL
    hostile = TicketOpened(**{**ticket().model_dump(), "comment": "<!channel> & <http://evil|click>"})
    assert "<!channel>" not in json.dumps(json.loads(slack_body(hostile, None))["blocks"])
