"""What ingest's routes depend on, as `Annotated` aliases: the use cases and the caller's key.
Both are coroutines on purpose: FastAPI runs a plain `def` dependency in a worker thread, and two
thread hand-offs per request cost more than the whole validation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from ingest_service.domain import RateLimiter, hash_api_key
from ingest_service.handlers import Ingest
from ingest_service.repository import KeyCache
from shared.http import ProblemError

bearer = HTTPBearer(auto_error=False, description="An API key made with `nps keys create NAME`.")


@dataclass
class Gate:
    """Who is calling: the name of the calling app's key, from an `Authorization` header; also
    enforces that key's rate limit. The raw routes and the framework routes both ask it."""

    keys: KeyCache
    limiter: RateLimiter

    def __call__(self, authorization: str | None) -> str:
        scheme, credentials = get_authorization_scheme_param(authorization)
        if not authorization or scheme.lower() != "bearer" or not credentials:
            raise ProblemError(
                401, "missing_api_key", "send 'Authorization: Bearer <api key>'", headers={"WWW-Authenticate": "Bearer"}
            )
        name = self.keys.name_of(hash_api_key(credentials))
        if name is None:
            raise ProblemError(
                401, "invalid_api_key", "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        wait = self.limiter.retry_after(name, time.monotonic())
        if wait:
            raise ProblemError(
                429,
                "rate_limited",
                f"rate limit of key '{name}' reached; retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )
        return name


async def ingest(request: Request) -> Ingest:
    handler: Ingest = request.app.state.ingest
    return handler


async def api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    gate: Gate = request.app.state.gate
    return gate(f"Bearer {credentials.credentials}" if credentials is not None else None)


Source = Annotated[str, Depends(api_key)]
Handler = Annotated[Ingest, Depends(ingest)]
