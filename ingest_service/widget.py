"""The web widget's scripts (clients/web), served as public static files: any page may load them
(`Access-Control-Allow-Origin: *`, no credentials, so `<script integrity=… crossorigin="anonymous">`
works from any origin; the API's origin rules are for the API, not for the script). Built once, at
import, from the widget's source (clients/web/build.py: plain text work, no toolchain).

- `/widget/nps.js`, `/widget/nps.mjs`: the current version, cached for 5 minutes.
- `/widget/<version>/nps.js` and `.mjs`: that version, cached for a year (`immutable`); only the
  version this ingest carries is served, so a page pinning a version with its integrity hash gets
  exactly those bytes or a 404."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from clients.web.build import SCRIPTS, build, version
from shared.problems import ProblemError

VERSION = version()
_BUILT = {name: data for name, data in build().items() if name in SCRIPTS}
_ETAGS = {name: '"' + hashlib.sha256(data).hexdigest()[:32] + '"' for name, data in _BUILT.items()}
SHORT, LONG = "public, max-age=300", "public, max-age=31536000, immutable"

router = APIRouter(include_in_schema=False)

ScriptName = Annotated[str, Path(pattern=r"^nps\.m?js$", max_length=8)]
Version = Annotated[str, Path(pattern=r"^\d{1,4}\.\d{1,4}\.\d{1,4}$", max_length=16)]


def _script(request: Request, name: str, cache: str) -> Response:
    headers = {
        "Cache-Control": cache,
        "ETag": _ETAGS[name],
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == _ETAGS[name]:
        return Response(status_code=304, headers=headers)
    return Response(_BUILT[name], media_type="text/javascript; charset=utf-8", headers=headers)


@router.get("/widget/{name}")
async def current(request: Request, name: ScriptName) -> Response:
    return _script(request, name, SHORT)


@router.get("/widget/{release}/{name}")
async def pinned(request: Request, release: Version, name: ScriptName) -> Response:
    if release != VERSION:
        raise ProblemError(404, "not_found", f"this ingest serves widget {VERSION}, not {release}")
    return _script(request, name, LONG)
