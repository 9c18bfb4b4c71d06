"""Schema-driven fuzzing of ingest's OpenAPI document: whatever a client sends, never a 5xx, and
every answer matches what the document promises."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.helpers import fuzz_openapi, nps_here
from tests.integration.conftest import LiveIngest

pytestmark = pytest.mark.integration


async def test_ingest_never_answers_5xx_and_keeps_its_documented_promises(ingest: LiveIngest) -> None:
    scopes = "responses:write,respondents:erase,invitations:write,admin"
    made = nps_here("keys", "create", f"fuzz-{uuid.uuid4().hex[:6]}", "--scope", scopes, env=ingest.env)
    assert made.returncode == 0, made.stderr
    await asyncio.sleep(0.5)  # ingest reloads its keys every 0.2 s here
    operations = await asyncio.to_thread(
        fuzz_openapi, ingest.url, {"Authorization": f"Bearer {made.stdout.strip()}"}, 10
    )
    assert operations == 11  # the nine /v1 operations, /healthz and /readyz


async def test_without_a_key_ingest_still_never_answers_5xx(ingest: LiveIngest) -> None:
    await asyncio.to_thread(fuzz_openapi, ingest.url, None, 8)
