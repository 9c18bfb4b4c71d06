"""Delivery's rules, free of I/O: which subscriptions an event goes to, the body and its Standard
Webhooks signature, what an attempt's answer means (delivered, retry when, failed, gone), and
which URLs and addresses may be called."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, get_args
from urllib.parse import urlsplit

from shared.events import (
    AboutAFollowUp,
    AlertAcknowledged,
    AlertFired,
    AlertResolved,
    FollowUpCreated,
    FollowUpHeldOut,
    TicketOpened,
    TicketSlaBreached,
    TicketUpdated,
)

Outgoing = (
    FollowUpCreated
    | FollowUpHeldOut
    | TicketOpened
    | TicketUpdated
    | TicketSlaBreached
    | AlertFired
    | AlertResolved
    | AlertAcknowledged
)
EventType = Literal[
    "FollowUpCreated",
    "FollowUpHeldOut",
    "TicketOpened",
    "TicketUpdated",
    "TicketSlaBreached",
    "AlertFired",
    "AlertResolved",
    "AlertAcknowledged",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
TEST_EVENT = "WebhookTest"  # what POST /v1/webhooks/{id}/test sends
Format = Literal["standard", "slack"]
SECRET_PREFIX = "whsec_"


# --- subscriptions and matching ---


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: str
    url: str
    events: frozenset[str]
    kinds: frozenset[str] | None  # follow-up kinds (FollowUpCreated only); None: all
    segments: frozenset[str] | None  # `all`, `channel:web`, `survey_id:q3`, an alert's segment; None: all
    format: Format
    status: Literal["active", "paused", "disabled"]


def segments_of(event: Outgoing) -> frozenset[str]:
    """The segments an event belongs to, as subscriptions name them."""
    if isinstance(event, AlertFired | AlertResolved | AlertAcknowledged):
        return frozenset({event.segment})
    found = {"all"}
    channel = getattr(event, "channel", None)
    survey = getattr(event, "survey_id", None)
    if channel:
        found.add(f"channel:{channel}")
    if survey:
        found.add(f"survey_id:{survey}")
    return frozenset(found)


def wants(subscription: Subscription, event: Outgoing) -> bool:
    if event.type not in subscription.events:
        return False
    if subscription.kinds is not None and isinstance(event, AboutAFollowUp) and event.kind not in subscription.kinds:
        return False
    return subscription.segments is None or not subscription.segments.isdisjoint(segments_of(event))


def order_key(event: Outgoing) -> str:
    """What an endpoint receives in order: one ticket's events, one alert's, one follow-up."""
    if isinstance(event, AboutAFollowUp):
        return event.followup_id
    if isinstance(event, AlertFired | AlertResolved | AlertAcknowledged):
        return event.alert_id
    return event.ticket_id


def occurred_at(event: Outgoing) -> datetime:
    if isinstance(event, TicketUpdated):
        return event.updated_at
    if isinstance(event, TicketSlaBreached):
        return event.detected_at
    if isinstance(event, AlertFired):
        return event.fired_at
    if isinstance(event, AlertResolved):
        return event.resolved_at
    if isinstance(event, AlertAcknowledged):
        return event.acknowledged_at
    return event.created_at


def respondent_of(event: Outgoing) -> str | None:
    """The person an event's payload names (null once follow-up redacted it)."""
    return getattr(event, "respondent_id", None)


def webhook_id(subscription_id: str, event_key: bytes) -> str:
    """Stable per (subscription, event): a receiver deduplicates redeliveries by it."""
    return "msg_" + hashlib.sha256(subscription_id.encode() + b"\0" + event_key).hexdigest()[:32]


def event_key(raw: bytes) -> bytes:
    """An event's identity: its bytes on the topic (a redelivered or replayed event is byte-identical)."""
    return hashlib.sha256(raw).digest()


# --- bodies and signatures ---


def standard_body(event_type: str, at: datetime, data: bytes) -> bytes:
    """Standard Webhooks' envelope: `{"type", "timestamp", "data"}`, `data` the event as on its topic."""
    stamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return b'{"type":"' + event_type.encode() + b'","timestamp":"' + stamp.encode() + b'","data":' + data + b"}"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per
    secret (during a rotation's overlap the old secret signs too), space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_bytes(s), signed, hashlib.sha256).digest()).decode() for s in secrets_
    )


def headers_for(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "nps-loop-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets_, msg_id, timestamp, body),
    }


# --- outcomes ---

Outcome = Literal["delivered", "retry", "failed", "gone"]
RETRYABLE_4XX = frozenset({408, 409, 429})
JITTER = 0.2
MAX_RETRY_AFTER_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    retry_in_s: float | None = None
    reason: str | None = None


def verdict(
    status: int | None,
    error: str | None,
    attempts_made: int,
    schedule: Sequence[float],
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> Verdict:
    """What an attempt's answer means. 2xx: delivered. 410: gone (the subscription is disabled).
    Timeouts, connection errors, 5xx, 408, 409 and 429: retry after the schedule's next delay
    (±20%) or the endpoint's Retry-After, until the schedule runs out. Anything else (3xx: redirects
    are not followed; other 4xx): failed at once."""
    if status is not None and 200 <= status < 300:
        return Verdict("delivered")
    if status == 410:
        return Verdict("gone", reason="410 Gone: the endpoint asked to be unsubscribed")
    retryable = status is None or status >= 500 or status in RETRYABLE_4XX
    reason = error if status is None else f"HTTP {status}"
    if not retryable:
        return Verdict(
            "failed", reason=reason if status is None or status >= 400 else f"{reason} (redirects are not followed)"
        )
    if attempts_made > len(schedule):
        return Verdict("failed", reason=f"{reason}; gave up after {attempts_made} attempts")
    if retry_after_s is not None:
        return Verdict("retry", min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S), reason)
    delay = schedule[attempts_made - 1] * (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return Verdict("retry", delay, reason)


def retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


# --- where we may connect ---


def address_allowed(address: str, allow_private: bool) -> bool:
    """Only public unicast addresses, unless private ones are allowed: never loopback, private,
    link-local (cloud metadata at 169.254.169.254), shared, multicast or reserved ranges."""
    if allow_private:
        return True
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why this URL cannot be a subscription's endpoint, or None. Names are checked again at every
    connection (their addresses can change); an address written in the URL is checked here."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in (("https", "http") if allow_private else ("https",)):
        return "the URL must be https://" if not allow_private else "the URL must be http:// or https://"
    if not host:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL are not allowed (they would be stored and shown): put a token in the path"
    if parts.fragment:
        return "the URL has a #fragment, which is never sent"
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if not allow_private and (host == "localhost" or host.endswith((".localhost", ".local", ".internal"))):
            return f"{host} is a local name"
        return None
    if not address_allowed(str(literal), allow_private):
        return f"{host} is not a public address"
    return None


def host_of(url: str) -> str:
    """What logs and answers may say about an endpoint (a URL's path can hold a token)."""
    return urlsplit(url).hostname or "?"
