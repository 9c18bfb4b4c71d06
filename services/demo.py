"""The demo page `make run` serves: an NPS prompt on a page of another origin than the API (so the
browser's CORS checks and the key's origin binding are real), with a person identified by the
page's own small server side, as an app's backend would: it computes the identity hash.

- `GET /` the page (a strict Content-Security-Policy: scripts only from itself and ingest, requests
  only to itself and ingest, no inline script or style), `GET /demo.js` its script,
- `GET /whoami?person=…` the page's backend: `{respondentId, respondentHash}` for that person
  (default: one made for this browser by the page), the hash from the key's identity secret.

The key (publishable, bound to this origin and the survey `demo`, channel `web`) is made by `nps
up` and kept with its identity secret in var/demo-key.json (0600); it runs in a thread of the
launcher: nothing to start, and it stops with it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ingest_service.public import identity_hash

log = logging.getLogger(__name__)

SURVEY = "demo"
KEY_FILE = "demo-key.json"
KEY_NAME = "demo-page"
PERSON = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>NPS feedback loop: demo page</title>
<script src="/demo.js" defer></script>
<script src="{api}/widget/nps.js" data-key="{key}" data-survey="{survey}" async></script>
</head>
<body>
<main>
<h1>Your app</h1>
<p>This page stands for your web app, served from another origin than the NPS API. The prompt in the
corner comes from the loop's widget; this page's server says who is signed in.</p>
<p id="who">Signed in as: <output id="person">…</output></p>
</main>
</body>
</html>
"""

SCRIPT = """// The page's own script: the stub that keeps calls made before the widget loads, then who is signed in.
window.NPS = window.NPS || { q: [], identify: function () { window.NPS.q.push(arguments); } };
(function () {
  var params = new URLSearchParams(location.search);
  var asked = params.get("person");
  var person = asked || localStorage.getItem("demo-person");
  if (!person) {
    person = "demo-" + crypto.randomUUID().slice(0, 8);
    localStorage.setItem("demo-person", person);
  }
  fetch("/whoami?person=" + encodeURIComponent(person)).then(function (reply) { return reply.json(); })
    .then(function (me) {
      document.getElementById("person").textContent = me.respondentId;
      window.NPS.identify({ respondentId: me.respondentId, respondentHash: me.respondentHash,
                            attributes: { plan: params.get("plan") || "demo" } });
    });
})();
"""


def csp(api: str) -> str:
    return (
        f"default-src 'none'; script-src 'self' {api}; connect-src 'self' {api}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class DemoPage:
    """The page's server: a thread of the launcher."""

    def __init__(self, host: str, port: int, api: str, key: str, identity: str) -> None:
        page, script, policy = PAGE.format(api=api, key=key, survey=SURVEY).encode(), SCRIPT.encode(), csp(api)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the standard library's name
                parts = urlsplit(self.path)
                if parts.path == "/":
                    self._send(HTTPStatus.OK, "text/html; charset=utf-8", page)
                elif parts.path == "/demo.js":
                    self._send(HTTPStatus.OK, "text/javascript; charset=utf-8", script)
                elif parts.path == "/whoami":
                    person = parse_qs(parts.query).get("person", [""])[0]
                    if not PERSON.fullmatch(person):
                        problem = {"code": "invalid_person", "message": "person: 1-64 of A-Z a-z 0-9 . _ : -"}
                        self._send(HTTPStatus.UNPROCESSABLE_ENTITY, "application/json", _json(problem))
                        return
                    me = {"respondentId": person, "respondentHash": identity_hash(identity, person)}
                    self._send(HTTPStatus.OK, "application/json", _json(me))
                else:
                    problem = {"code": "not_found", "message": f"no {parts.path} here"}
                    self._send(HTTPStatus.NOT_FOUND, "application/json", _json(problem))

            def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Security-Policy", policy)
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("demo page: " + format, *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="demo-page", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def ensure_demo_key(database_url: str, var_dir: Path, origin: str, secrets_key: str) -> tuple[str, str]:
    """The demo page's publishable key and identity secret: the ones in var/demo-key.json while that
    key is still active for this origin, else new ones (the old key revoked)."""
    from shared.auth import KeyStore, Publishable, hash_api_key
    from shared.db import make_engine
    from shared.sealed import Sealer

    path = var_dir / KEY_FILE
    kept = json.loads(path.read_text()) if path.exists() else {}

    async def ensure() -> tuple[str, str]:
        engine = make_engine(database_url)
        try:
            keys = KeyStore(engine)
            active = await keys.active()
            known = active.get(hash_api_key(kept.get("key", "")))
            if known is not None and kept.get("origin") == origin and origin in known.bound.origins:
                return kept["key"], kept["identity"]
            await keys.revoke(KEY_NAME, actor="nps up")
            bound = Publishable(frozenset({origin}), frozenset({SURVEY}), "web")
            key, identity = await keys.create_publishable(KEY_NAME, bound, Sealer.of(secrets_key), "nps up")
            assert identity is not None  # not anonymous
            return key, identity
        finally:
            await engine.dispose()

    key, identity = asyncio.run(ensure())
    if kept.get("key") != key:
        path.touch(mode=0o600)
        path.write_text(json.dumps({"key": key, "identity": identity, "origin": origin}) + "\n")
        path.chmod(0o600)
    return key, identity
