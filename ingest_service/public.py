"""What a publishable key (`nps_pk_…`, shipped inside a web page or an app) may post, checked before
the response is taken like any other: its origin (and the CORS answer a browser needs), a smaller
body, the surveys and channel it was made for, no email, and the person's identity, proven by the
app's server (`respondent_hash` = hex HMAC-SHA256(the key's identity secret, respondent_id)).

A leaked publishable key lets its holder post answers only from the key's origins' pages (a
browser enforces that; a script can forge an Origin, which is why the identity check exists), only
for people whose hash the app's server computed, only to the key's surveys. It reads nothing,
revises nothing, erases nothing (every other operation answers 403: shared/auth.Gate)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Iterable

from ingest_service.domain import SubmitResponse
from ingest_service.raw import RawRequest, cors_headers
from shared.auth import Key, identity_place
from shared.problems import ProblemError, invalid_field, rate_limited, too_large
from shared.ratelimit import RateLimiter
from shared.sealed import CannotOpen, Sealer

log = logging.getLogger(__name__)

PUBLIC_BODY_LIMIT = 8 * 1024
RANDOM_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# The operations a publishable key may call, with their methods (a browser's preflight asks).
PUBLIC_PATHS = {"/v1/responses": "POST", "/v1/impressions": "POST", "/v1/prompt": "GET"}


def identity_hash(secret: str, respondent_id: str) -> str:
    """What an app's server sends as `respondent_hash` (docs/collect.md)."""
    return hmac.new(secret.encode(), respondent_id.encode(), hashlib.sha256).hexdigest()


class PublicCalls:
    """The checks of the public operations for publishable keys. `sealer`: opens the keys' identity
    secrets (None: NPS_SECRETS_KEY is not set, and no identity can be verified)."""

    def __init__(
        self, sealer: Sealer | None, per_address: RateLimiter | None = None, per_respondent: RateLimiter | None = None
    ) -> None:
        self._sealer = sealer
        self._opened: dict[tuple[str, str], str] = {}  # (key name, sealed) -> identity secret
        self._per_address = per_address or RateLimiter(0, 1)
        self._per_respondent = per_respondent or RateLimiter(0, 1)

    def admit_request(self, key: Key, request: RawRequest) -> None:
        """Before the body is read as a response: the origin (first, so that an error the page may
        read carries its CORS headers), the client address's rate (a page's key serves a whole
        site: no per-key limit), the smaller body."""
        self.admit_origin(key, request)
        self._limit(self._per_address, f"address {request.client}", "this address")
        if len(request.body) > PUBLIC_BODY_LIMIT:
            raise too_large(PUBLIC_BODY_LIMIT)

    def _limit(self, limiter: RateLimiter, name: str, whose: str) -> None:
        wait = limiter.retry_after(name, time.monotonic())
        if wait:
            raise rate_limited(whose, wait)

    def admit_origin(self, key: Key, request: RawRequest) -> None:
        """A web key answers only its origins (and, with CORS headers, lets the page read the answer);
        a request without Origin (a native app) only if the key was made for apps."""
        origin = request.header(b"origin")
        if origin is None:
            if not key.bound.native:
                raise ProblemError(
                    403, "origin_required", f"key '{key.name}' is for web pages: a browser sends their Origin"
                )
            return
        if origin.lower() not in key.bound.origins:
            raise ProblemError(403, "origin_not_allowed", f"key '{key.name}' is not for pages of {origin[:200]}")
        request.reply_headers.extend(cors_headers(origin))

    def admit(self, key: Key, request: RawRequest, body: SubmitResponse) -> SubmitResponse:
        """The response as the key may post it (its channel set by the server), or the error."""
        if body.email is not None:
            raise invalid_field("email", "not accepted with a publishable key (a page must not hold people's emails)")
        channel = self.admit_person(key, body.respondent_id, body.respondent_hash, body.survey_id, body.channel)
        return body.model_copy(update={"channel": channel, "respondent_hash": None})

    def admit_person(
        self,
        key: Key,
        respondent_id: str,
        respondent_hash: str | None,
        survey_id: str | None,
        channel: str | None,
        limit: bool = True,
    ) -> str | None:
        """Whether the key may speak for this person about this survey (every public operation asks
        it): their identity proven (or, for an anonymous key, an id nobody else has), the survey and
        channel the key names, the person's rate. Returns the channel the server sets."""
        bound = key.bound
        if bound.anonymous:
            self._anonymous(respondent_id, respondent_hash)
        else:
            self._verify(key, respondent_id, respondent_hash)  # who, before what they may answer
        if bound.surveys and survey_id not in bound.surveys:
            raise ProblemError(
                403,
                "survey_not_allowed",
                f"key '{key.name}' answers only the surveys {', '.join(sorted(bound.surveys))}",
            )
        if bound.channel is not None and channel not in (None, bound.channel):
            raise ProblemError(403, "channel_not_allowed", f"key '{key.name}' posts to the channel {bound.channel!r}")
        if limit:  # (asking whether to show the prompt reads; a page may ask on every load)
            self._limit(self._per_respondent, f"{key.name}/{respondent_id}", "this respondent")
        return bound.channel or channel

    @staticmethod
    def _anonymous(respondent_id: str, respondent_hash: str | None) -> None:
        """An anonymous key vouches for nobody: the respondent id is the random one the client made
        (a UUID, as `crypto.randomUUID()` makes), so it cannot name a known person."""
        if respondent_hash is not None:
            raise invalid_field("respondent_hash", "an anonymous key takes no respondent_hash")
        if not RANDOM_ID.match(respondent_id):
            raise invalid_field(
                "respondent_id",
                "an anonymous key takes a random id the client made: a version 4 UUID (crypto.randomUUID()), kept "
                "by the client for this person",
            )

    def _verify(self, key: Key, respondent_id: str, given: str | None) -> None:
        if given is None:
            raise ProblemError(
                401,
                "identity_unverified",
                "send respondent_hash: hex HMAC-SHA256 of respondent_id under the key's identity secret, computed "
                "by your server",
            )
        expected = [identity_hash(secret, respondent_id) for secret in self._secrets(key)]
        # Compared with every secret that verifies now (a rotation's overlap), in constant time each.
        if not any(hmac.compare_digest(given.lower().encode(), e.encode()) for e in expected):
            raise ProblemError(401, "identity_unverified", "respondent_hash does not match respondent_id")

    def _secrets(self, key: Key) -> Iterable[str]:
        if self._sealer is None:
            log.error("a publishable key was used, but NPS_INGEST runs without NPS_SECRETS_KEY: no identity verifies")
            raise ProblemError(
                503,
                "identity_unavailable",
                "this ingest cannot verify identities (its NPS_SECRETS_KEY is not set)",
                headers={"Retry-After": "60"},
            )
        for sealed in key.identity:
            opened = self._opened.get((key.name, sealed))
            if opened is None:
                try:
                    opened = self._sealer.open(sealed, identity_place(key.name))
                except CannotOpen as exc:
                    log.error("the identity secret of key %s does not open: %s", key.name, exc)
                    continue
                self._opened[(key.name, sealed)] = opened
            yield opened
