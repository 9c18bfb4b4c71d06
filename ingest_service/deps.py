"""What ingest's routes depend on, as `Annotated` aliases: the use cases, and the calling key
(checked for its scope by shared/auth.py's Gate). Coroutines on purpose: FastAPI runs a plain
`def` dependency in a worker thread, and two thread hand-offs per request cost more than the work."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ingest_service.handlers import Ingest
from shared.auth import requires


async def ingest(request: Request) -> Ingest:
    handler: Ingest = request.app.state.ingest
    return handler


Handler = Annotated[Ingest, Depends(ingest)]
Writer = Annotated[str, requires("responses:write")]  # the key's name: the events' `source`
Eraser = Annotated[str, requires("respondents:erase")]
Admin = Annotated[str, requires("admin")]
