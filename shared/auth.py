"""API keys and scopes: one check for every service's API.

A key is 256 random bits shown once; only its SHA-256 is stored, in the `auth` schema every service
reads (auth.api_keys), with the scopes it grants. Each service keeps the active keys in memory
(`KeyCache`, reloaded every few seconds) and asks one `Gate` per request: who is calling (401
otherwise), may they (403), and are they within their rate (429). No service trusts another's
network position: every call carries its key."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import audit
from shared.http import report_worker_failure
from shared.problems import Problem, ProblemError, rate_limited
from shared.ratelimit import RateLimiter
from shared.sealed import Sealer
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

SCHEMA = "auth"
KEY_PREFIX = "nps_"
PUBLISHABLE_PREFIX = "nps_pk_"  # shown to people; the kind that counts is the one stored with the key
KeyKind = Literal["secret", "publishable"]

Scope = Literal[
    "responses:write",  # submit, validate, batch-import and revise responses
    "respondents:erase",  # erase a respondent everywhere
    "invitations:write",  # record who was asked: invitations, and prompts shown or dismissed
    "scores:read",  # scoring's queries
    "followups:read",  # follow-up's lookups, tickets included
    "tickets:write",  # change a ticket's status, assignee, note, resolution
    "contact:read",  # may a person be surveyed or contacted now (product apps ask before the prompt)
    "contact:write",  # opt a person out of follow-up messages, or back in
    "referrals:write",  # record a sign-up that came through a referral code
    "alerts:read",  # alerts, their explanations, silences
    "alerts:write",  # acknowledge an alert; create and delete silences
    "webhooks:read",  # webhook subscriptions and their deliveries
    "webhooks:write",  # create, change, test and delete webhook subscriptions; retry a delivery
    "admin",  # every scope
]
SCOPES: tuple[Scope, ...] = get_args(Scope)

# What every protected route may answer besides its own results (for the OpenAPI documents).
KEY_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or unknown API key"},
    403: {"model": Problem, "description": "the API key lacks the scope this call needs"},
    429: {"model": Problem, "description": "rate limit of this API key; retry after Retry-After seconds"},
}

bearer = HTTPBearer(auto_error=False, description="An API key made with `nps keys create NAME --scope …`.")


def new_api_key() -> str:
    """A secret key: never one that reads as publishable (`nps_pk_…`)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("pk_"):
            return KEY_PREFIX + token


def new_publishable_key() -> str:
    return PUBLISHABLE_PREFIX + secrets.token_urlsafe(32)


def new_identity_secret() -> str:
    """What an app's server hashes its respondent ids with for a publishable key (shown once)."""
    return "idsec_" + secrets.token_urlsafe(32)


ORIGIN = re.compile(r"^https?://[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$")


def parse_origin(text: str) -> str:
    """An origin a publishable key may be used from, as browsers send it: `https://app.example.com`
    (scheme, host, optional port; no path, no wildcard). ValueError says what is wrong."""
    origin = text.strip().lower()
    if not ORIGIN.match(origin):
        raise ValueError(
            f"{text!r} is not an origin: give scheme://host[:port] exactly as the browser sends it "
            "(https://app.example.com), no path, no trailing slash, no wildcard"
        )
    return origin


def identity_place(key_name: str) -> str:
    """What a key's sealed identity secret is bound to (shared/sealed.py)."""
    return f"{SCHEMA}.api_keys:{key_name}"


def hash_api_key(key: str) -> str:
    # The keys are 256 random bits, so a fast hash is enough (no password-style stretching).
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(names: Sequence[str]) -> tuple[Scope, ...]:
    """Scopes as a client or operator wrote them; ValueError names an unknown one."""
    unknown = sorted(set(names) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; scopes are {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in names)


@dataclass(frozen=True, slots=True)
class Publishable:
    """What a publishable key is bound to: the origins of the pages that may use it (none: a native
    app's, which sends no Origin, and then `native` must be set), the surveys it may answer (none:
    any), the channel it sets on every response (None: the client's own)."""

    origins: frozenset[str] = frozenset()
    surveys: frozenset[str] = frozenset()
    channel: str | None = None
    native: bool = False
    # No identity: the client makes a random respondent id, and no follow-up reaches the person by
    # default (the policy sees `identity: anonymous`).
    anonymous: bool = False
    # GET /v1/prompt shows the prompt to this share of people (None: the survey's configured share, or all).
    sample: float | None = None


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    scopes: frozenset[str]
    kind: KeyKind = "secret"
    bound: Publishable = field(default_factory=Publishable)
    identity: tuple[str, ...] = ()  # sealed identity secrets that verify now: the current one first

    @property
    def publishable(self) -> bool:
        return self.kind == "publishable"

    def allows(self, scope: Scope) -> bool:
        """A secret key's scopes; a publishable key has none (it may only do the public operations)."""
        return not self.publishable and (scope in self.scopes or "admin" in self.scopes)


class KeyExists(Exception):
    pass


@dataclass(frozen=True, slots=True)
class KeyInfo:
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyStore:
    """The SQL of auth.api_keys. Each method is its own transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self,
        name: str,
        key_hash: str,
        scopes: Sequence[Scope],
        actor: str,
        publishable: Publishable | None = None,
        identity_sealed: str | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            existing = (
                await conn.execute(sa.text(f"SELECT revoked_at FROM {SCHEMA}.api_keys WHERE name = :n"), {"n": name})
            ).first()
            if existing is not None and existing.revoked_at is None:
                raise KeyExists(name)
            bound = publishable or Publishable()
            await conn.execute(
                sa.text(
                    f"INSERT INTO {SCHEMA}.api_keys (name, key_hash, scopes, kind, origins, surveys, channel, native, "
                    "anonymous, sample, identity_secret) VALUES (:n, :h, :s, :kind, :origins, :surveys, :channel, "
                    ":native, :anonymous, :sample, :identity) "
                    "ON CONFLICT (name) DO UPDATE SET key_hash = EXCLUDED.key_hash, scopes = EXCLUDED.scopes, "
                    "kind = EXCLUDED.kind, origins = EXCLUDED.origins, surveys = EXCLUDED.surveys, "
                    "channel = EXCLUDED.channel, native = EXCLUDED.native, anonymous = EXCLUDED.anonymous, "
                    "sample = EXCLUDED.sample, identity_secret = EXCLUDED.identity_secret, "
                    "identity_previous = NULL, identity_previous_until = NULL, created_at = now(), revoked_at = NULL, "
                    "last_used_at = NULL"
                ),
                {
                    "n": name,
                    "h": key_hash,
                    "s": list(scopes),
                    "kind": "publishable" if publishable is not None else "secret",
                    "origins": sorted(bound.origins),
                    "surveys": sorted(bound.surveys),
                    "channel": bound.channel,
                    "native": bound.native,
                    "anonymous": bound.anonymous,
                    "sample": bound.sample,
                    "identity": identity_sealed,
                },
            )
            detail: dict[str, Any] = {"scopes": list(scopes)}
            if publishable is not None:
                detail = {"kind": "publishable", "origins": sorted(bound.origins), "surveys": sorted(bound.surveys),
                          "channel": bound.channel, "native": bound.native, "anonymous": bound.anonymous,
                          "sample": bound.sample}  # fmt: skip
            await audit.record(conn, actor, "key.created", name, detail)

    async def create_publishable(
        self, name: str, bound: Publishable, sealer: Sealer | None, actor: str
    ) -> tuple[str, str | None]:
        """A new publishable key bound to `bound`, and (unless it is anonymous) its identity secret,
        stored sealed under `sealer` (both shown only to the caller). KeyExists if `name` is active."""
        key = new_publishable_key()
        identity = None if bound.anonymous else new_identity_secret()
        if identity is not None and sealer is None:
            raise ValueError("an identity secret is stored sealed: NPS_SECRETS_KEY is needed")
        sealed = None if identity is None or sealer is None else sealer.seal(identity, identity_place(name))
        await self.create(name, hash_api_key(key), (), actor, bound, sealed)
        return key, identity

    async def revoke(self, name: str, actor: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.text(f"UPDATE {SCHEMA}.api_keys SET revoked_at = now() WHERE name = :n AND revoked_at IS NULL"),
                {"n": name},
            )
            if result.rowcount:
                await audit.record(conn, actor, "key.revoked", name)
        return bool(result.rowcount)

    async def list(self) -> list[KeyInfo]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    f"SELECT name, scopes, created_at, revoked_at, last_used_at FROM {SCHEMA}.api_keys ORDER BY name"
                )
            )
            return [KeyInfo(r.name, tuple(r.scopes), r.created_at, r.revoked_at, r.last_used_at) for r in rows]

    async def active(self) -> dict[str, Key]:
        """{key hash: key} of every key not revoked."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    f"SELECT key_hash, name, scopes, kind, origins, surveys, channel, native, anonymous, sample, "
                    "identity_secret, "
                    f"CASE WHEN identity_previous_until > now() THEN identity_previous END AS identity_previous "
                    f"FROM {SCHEMA}.api_keys WHERE revoked_at IS NULL"
                )
            )
            return {
                r.key_hash: Key(
                    r.name,
                    frozenset(r.scopes),
                    r.kind,
                    Publishable(frozenset(r.origins), frozenset(r.surveys), r.channel, r.native, r.anonymous, r.sample),
                    tuple(s for s in (r.identity_secret, r.identity_previous) if s is not None),
                )
                for r in rows
            }

    @staticmethod
    async def sealed_identities(conn: AsyncConnection) -> Sequence[tuple[str, str, str | None]]:
        """Every key's (name, sealed identity secret, sealed previous one), locked: for a key rotation."""
        rows = await conn.execute(
            sa.text(
                f"SELECT name, identity_secret, identity_previous FROM {SCHEMA}.api_keys "
                "WHERE identity_secret IS NOT NULL FOR UPDATE"
            )
        )
        return [(r[0], r[1], r[2]) for r in rows]

    @staticmethod
    async def reseal_identity(conn: AsyncConnection, name: str, secret: str, previous: str | None) -> None:
        await conn.execute(
            sa.text(f"UPDATE {SCHEMA}.api_keys SET identity_secret = :s, identity_previous = :p WHERE name = :n"),
            {"s": secret, "p": previous, "n": name},
        )

    async def rotate_identity(self, name: str, sealed: str, overlap_s: float, actor: str) -> bool:
        """A new identity secret for a publishable key; the current one keeps verifying beside it for
        `overlap_s` (the app's servers switch meanwhile). False: no such active publishable key with one."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.text(
                    f"UPDATE {SCHEMA}.api_keys SET identity_previous = identity_secret, identity_secret = :s, "
                    "identity_previous_until = now() + make_interval(secs => :overlap) "
                    "WHERE name = :n AND kind = 'publishable' AND identity_secret IS NOT NULL AND revoked_at IS NULL"
                ),
                {"s": sealed, "overlap": overlap_s, "n": name},
            )
            if result.rowcount:
                await audit.record(conn, actor, "key.identity_rotated", name, {"overlap_s": overlap_s})
        return bool(result.rowcount)

    async def mark_used(self, names: Sequence[str]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sa.text(f"UPDATE {SCHEMA}.api_keys SET last_used_at = now() WHERE name = ANY(CAST(:n AS text[]))"),
                {"n": sorted(names)},
            )


class KeyCache:
    """Active keys, reloaded every `refresh_s`: a new or revoked key takes effect within that time,
    and no request waits on the database to be authenticated. Last use is written back in the
    same rhythm (one UPDATE per refresh, not one per request)."""

    def __init__(self, store: KeyStore, refresh_s: float) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._keys: dict[str, Key] = {}
        self._origins: frozenset[str] = frozenset()
        self._used: set[str] = set()

    def publishable_origins(self) -> frozenset[str]:
        """Every origin an active publishable key lists (a preflight carries no key)."""
        return self._origins

    def find(self, key_hash: str) -> Key | None:
        key = self._keys.get(key_hash)
        if key is not None:
            self._used.add(key.name)
        return key

    async def load(self) -> None:
        self._keys = await self._store.active()
        self._origins = frozenset(o for k in self._keys.values() if k.publishable for o in k.bound.origins)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                used, self._used = self._used, set()
                if used:
                    await self._store.mark_used(sorted(used))
                await self.load()
            except Exception as exc:  # keep the last good set; the database may be back soon
                log.warning("could not reload API keys (%s); keeping the %d known", type(exc).__name__, len(self._keys))


def _unauthorized(code: str, message: str) -> ProblemError:
    return ProblemError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


@dataclass
class Gate:
    """Who is calling, from an `Authorization` header: the key's name, if the key is known, grants
    `scope`, and is within its rate limit. Raw routes and framework routes both ask it."""

    keys: KeyCache
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0, 1))

    def __call__(self, authorization: Sequence[str] | str | None, scope: Scope) -> str:
        """The calling key's name (`key`); no publishable key is let through."""
        return self.key(authorization, scope).name

    def key(self, authorization: Sequence[str] | str | None, scope: Scope, public: bool = False) -> Key:
        """`authorization`: every Authorization header the request carried. More than one is
        refused, whichever way a proxy or framework would have picked one. `public`: the operation
        is one a publishable key may call (post a response, record an impression, ask for the
        prompt); the caller then checks what the key is bound to, and its own limits apply."""
        values = [authorization] if isinstance(authorization, str) else list(authorization or ())
        if len(values) > 1:
            raise _unauthorized("duplicate_authorization", "send exactly one Authorization header")
        scheme, credentials = get_authorization_scheme_param(values[0] if values else None)
        if not values or scheme.lower() != "bearer" or not credentials:
            raise _unauthorized("missing_api_key", "send 'Authorization: Bearer <api key>'")
        key = self.keys.find(hash_api_key(credentials))
        if key is None:
            raise _unauthorized("invalid_api_key", "unknown or revoked API key")
        if key.publishable:
            if not public:
                raise ProblemError(
                    403,
                    "insufficient_scope",
                    f"key '{key.name}' is publishable: it may only post a response, record an impression and ask "
                    "whether to show the prompt",
                )
            return key  # its limits are per client address and per person, not per key
        if not key.allows(scope):
            raise ProblemError(403, "insufficient_scope", f"key '{key.name}' lacks the scope '{scope}'")
        wait = self.limiter.retry_after(key.name, time.monotonic())
        if wait:
            raise rate_limited(f"key '{key.name}'", wait)
        return key


def requires(scope: Scope) -> Any:
    """A dependency: the calling key's name, once the Gate let it through for `scope`. A coroutine
    on purpose: FastAPI runs a plain `def` dependency in a worker thread, and two thread hand-offs
    per request cost more than the check."""

    async def caller(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        # `bearer` declares the scheme in the OpenAPI document; the Gate reads every header itself.
        gate: Gate = request.app.state.gate
        return gate(request.headers.getlist("authorization"), scope)

    return Depends(caller)


async def start_gate(engine: AsyncEngine, refresh_s: float, limiter: RateLimiter) -> tuple[Gate, KeyCache]:
    """The Gate of one service, its keys loaded; run the cache's `run()` beside the service."""
    keys = KeyCache(KeyStore(engine), refresh_s)
    await keys.load()
    return Gate(keys, limiter), keys


@asynccontextmanager
async def gate_for(app: FastAPI, engine: AsyncEngine, settings: ServiceSettings) -> AsyncIterator[Gate]:
    """What every service's lifespan enters: its Gate in `app.state.gate`, the keys reloaded
    beside it for as long as the app runs (a reloader that dies takes the process down)."""
    limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.gate, keys = await start_gate(engine, settings.key_refresh_s, limiter)
    reloader = asyncio.create_task(keys.run(), name="keys")
    reloader.add_done_callback(lambda task: report_worker_failure(app, task))
    try:
        yield app.state.gate
    finally:
        reloader.cancel()


__all__ = ["SCOPES", "Gate", "KeyCache", "KeyStore", "Scope", "requires"]
