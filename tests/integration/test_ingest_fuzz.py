"""Schema-driven fuzzing of ingest's OpenAPI document: whatever a client sends, never a 5xx, and
every answer matches what the document promises."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import fuzz_openapi
from tests.integration.conftest import LiveIngest

pytestmark = pytest.mark.integration


async def test_ingest_never_answers_5xx_and_keeps_its_documented_promises(ingest: LiveIngest) -> None:
    operations = await asyncio.to_thread(fuzz_openapi, ingest.url, ingest.auth, 40)
    assert operations == 8  # the six /v1 operations, /healthz and /readyz


async def test_without_a_key_ingest_still_never_answers_5xx(ingest: LiveIngest) -> None:
    await asyncio.to_thread(fuzz_openapi, ingest.url, None, 15)
