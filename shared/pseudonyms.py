"""Pseudonyms for personal ids: the key a service keeps to recognise a person later without
keeping who they are. The lowest floor of erasure: it imports no database code, so settings and
migrations can use it."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime

from shared.events import RespondentErased
from shared.wire import Erased

MIN_SECRET_LENGTH = 32


class Pseudonyms:
    """The key a service keeps for a respondent id: HMAC-SHA256, under the deployment's secret
    (`NPS_PSEUDONYM_SECRET`), of the id's SHA-256 in hex. Without the secret a guessable id
    (an email, a user number) cannot be tested against a stored key. The inner SHA-256 is what
    keys were before the secret existed, so migrations convert stored keys without the ids
    (`rekey`). Every service must use the same secret, and it must never change."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the pseudonym secret must be at least {MIN_SECRET_LENGTH} characters")
        self._mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        # A respondent's events arrive together (one partition): a small cache saves most hashes.
        self.key = functools.lru_cache(maxsize=65_536)(self._key)

    def _key(self, respondent_id: str) -> str:
        return self.rekey(hashlib.sha256(respondent_id.encode()).hexdigest())

    def token(self, purpose: str, value: str) -> bytes:
        """An unguessable, stable value derived from `value` for `purpose` (e.g. a referral code):
        HMAC under the same secret, kept apart from respondent keys by the purpose label."""
        mac = self._mac.copy()
        mac.update(f"{purpose}\0{value}".encode())
        return mac.digest()

    def rekey(self, unkeyed: str) -> str:
        """The key for a stored unkeyed one (the plain SHA-256 hex of an id)."""
        mac = self._mac.copy()
        mac.update(unkeyed.encode())
        return mac.hexdigest()

    def latest_requests(self, events: Iterable[object]) -> dict[str, datetime]:
        """The latest erasure request per respondent key among a batch's events."""
        requested: dict[str, datetime] = {}
        for event in events:
            if isinstance(event, RespondentErased | Erased):
                key = self.key(event.respondent_id)
                requested[key] = max(requested.get(key, event.requested_at), event.requested_at)
        return requested
