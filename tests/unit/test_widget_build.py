"""The web widget's build (clients/web/build.py) and how ingest serves it: each script under its
8 KiB gzipped budget, the module exporting what its declarations say, nothing a strict
Content-Security-Policy would block, and the static files' headers (any origin may load them)."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import httpx
import pytest
from fastapi import FastAPI

from clients.web.build import BUDGET_GZIPPED, HERE, SCRIPTS, build, gzipped, integrity, version
from shared.http import install_error_handlers

BUILT = build()


def test_each_script_is_under_its_gzipped_budget() -> None:
    for name in SCRIPTS:
        assert 0 < gzipped(BUILT[name]) <= BUDGET_GZIPPED, name


def test_the_module_exports_what_its_declarations_declare_and_the_classic_script_exports_nothing() -> None:
    module, classic = BUILT["nps.mjs"].decode(), BUILT["nps.js"].decode()
    assert module.rstrip().endswith("export { prompt, VERSION };")
    declared = set(re.findall(r"^export declare (?:function|const) (\w+)", BUILT["nps.d.ts"].decode(), re.M))
    assert declared == {"prompt", "VERSION"}
    assert classic.startswith("/*! NPS feedback loop widget") and '(function(){"use strict";' in classic
    assert classic.rstrip().endswith("})();") and "export {" not in classic and "import " not in classic
    assert "window.NPS = NPS" in classic and "window.NPS" not in module


def test_nothing_a_strict_content_security_policy_blocks() -> None:
    """No eval, no inline styles (a style attribute or a <style> element): the prompt is styled by
    a constructable stylesheet adopted by its shadow root."""
    for name in SCRIPTS:
        source = BUILT[name].decode()
        for banned in (
            "eval(",
            "new Function",
            "innerHTML",
            ".style.",
            '"style"',
            "<style",
            'setTimeout("',
            "document.write",
        ):
            assert banned not in source, (name, banned)
        assert "adoptedStyleSheets" in source and "attachShadow" in source


def test_one_version_everywhere_and_the_integrity_hash_is_sha384_of_the_bytes() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", version())
    assert json.loads((HERE / "package.json").read_text())["version"] == version()
    data = BUILT["nps.js"]
    assert integrity(data) == "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


@pytest.fixture
def served() -> httpx.AsyncClient:
    from ingest_service.widget import router

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")


async def test_ingest_serves_the_scripts_to_any_page(served: httpx.AsyncClient) -> None:
    async with served as client:
        for name, cache in (("nps.js", "max-age=300"), ("nps.mjs", "max-age=300")):
            reply = await client.get(f"/widget/{name}", headers={"Origin": "https://anywhere.example"})
            assert reply.status_code == 200 and reply.content == BUILT[name]
            assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
            assert reply.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in reply.headers
            assert cache in reply.headers["cache-control"] and reply.headers["x-content-type-options"] == "nosniff"
            again = await client.get(f"/widget/{name}", headers={"If-None-Match": reply.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        pinned = await client.get(f"/widget/{version()}/nps.js")
        assert pinned.status_code == 200 and "immutable" in pinned.headers["cache-control"]
        assert pinned.content == BUILT["nps.js"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/widget/0.0.1/nps.js", 404),  # a version this ingest does not carry: never other bytes
        ("/widget/nps.css", 422),
        ("/widget/..%2Fsettings.py", 422),
        ("/widget/nps.d.ts", 422),
        ("/widget/1.0/nps.js", 422),
        ("/widget/" + "9" * 20 + "/nps.js", 422),
    ],
)
async def test_anything_else_under_widget_is_a_problem(served: httpx.AsyncClient, path: str, status: int) -> None:
    async with served as client:
        reply = await client.get(path)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json") and reply.json()["code"], reply.text


def test_docs_widget_md_lists_this_build_s_sizes_and_integrity_hashes() -> None:
    from clients.web.build import DOC, documented

    doc = DOC.read_text()
    assert documented(doc, BUILT) == doc, "run `make widget` to update docs/widget.md"
