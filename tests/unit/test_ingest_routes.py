"""The hot POSTs are served raw, declared once, and documented from the same models."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ingest_service.api import _ANSWER, RAW_ROUTES, Accepted, BatchItem, BatchOut, post_response
from ingest_service.bootstrap import create_app
from ingest_service.handlers import ItemResult
from ingest_service.raw import RawRequest
from ingest_service.settings import IngestSettings
from shared.validation import FieldProblem

HOT = {
    ("POST", "/v1/responses"),
    ("POST", "/v1/responses/validate"),
    ("POST", "/v1/responses/batch"),
    ("POST", "/v1/invitations"),
    ("POST", "/v1/impressions"),
    ("GET", "/v1/prompt"),
}


def test_the_hot_posts_are_raw_routes_and_no_framework_route_serves_them() -> None:
    app = create_app(IngestSettings())
    assert {(route.method, route.path) for route in RAW_ROUTES} == HOT
    served = {(m, r.path) for r in app.routes for m in getattr(r, "methods", ())}
    assert not served & HOT


def test_every_raw_route_is_in_the_openapi_document() -> None:
    document = create_app(IngestSettings()).openapi()
    paths = document["paths"]
    assert {(method, path) for method, path in HOT if method.lower() in paths.get(path, {})} == HOT
    post = paths["/v1/responses"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SubmitResponse"
    }
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Accepted"
    }
    assert post["security"] == [{"HTTPBearer": []}]
    batch = paths["/v1/responses/batch"]["post"]
    assert batch["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchOut"
    }
    assert {"SubmitResponse", "BatchIn", "BatchOut", "BatchItem", "Problem"} <= set(document["components"]["schemas"])


async def test_deeply_nested_json_is_refused_by_the_parser_not_a_stack_overflow() -> None:
    from datetime import timedelta

    import httpx

    from ingest_service.domain import Limits
    from ingest_service.handlers import Ingest
    from shared.auth import Gate, Key
    from tests.unit.test_auth import FakeKeys

    app = create_app(IngestSettings())
    app.state.gate = Gate(FakeKeys({"nps_k": Key("k", frozenset({"responses:write"}))}))
    app.state.ingest = Ingest(
        publisher=None,  # type: ignore[arg-type]  # validation never publishes
        store=None,  # type: ignore[arg-type]
        topic="t",
        limits=Limits(timedelta(seconds=300), timedelta(days=1095)),
    )
    nested = "[" * 30_000 + "]" * 30_000  # 60 KB: under the body limit, far past any sane depth
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as client:
        for path, body in (
            ("/v1/responses/validate", '{"respondent_id":"u","score":5,"attributes":' + nested + "}"),
            ("/v1/responses/batch", '{"responses":[' + nested + "]}"),
        ):
            reply = await client.post(
                path, content=body, headers={"Authorization": "Bearer nps_k", "Content-Type": "application/json"}
            )
            assert reply.status_code == 422, (path, reply.text)
            assert "recursion limit" in reply.json()["errors"][0]["problem"]


def test_the_batch_answer_is_encoded_from_the_results_as_its_document_says() -> None:
    """post_batch encodes ItemResult structs as they are: their fields must be BatchItem's, in order,
    and a problem must come out as BatchItem's `errors` entries do."""
    assert tuple(ItemResult.__struct_fields__) == tuple(BatchItem.model_fields)
    problem = FieldProblem(field="score", problem="must be 0..10")
    results = [ItemResult(0, "accepted", "r-1"), ItemResult(1, "rejected", errors=(problem,))]
    encoded = _ANSWER.encode({"accepted": 1, "rejected": 1, "conflict": 0, "unavailable": 0, "results": results})
    assert json.loads(encoded) == BatchOut(
        accepted=1,
        rejected=1,
        conflict=0,
        unavailable=0,
        results=[
            BatchItem(index=0, status="accepted", response_id="r-1"),
            BatchItem(index=1, status="rejected", errors=[problem]),
        ],
    ).model_dump(mode="json")


@given(response_id=st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=64))
def test_an_accepted_post_answers_the_documented_model_byte_for_byte(response_id: str) -> None:
    """post_response encodes its answer from a dict, not from Accepted: the bytes must be the
    model's own, quotes, backslashes and any Unicode included, and the outcome counted."""

    class Submitting:
        async def submit(self, body: object, now: object, source: str, identity: str) -> SimpleNamespace:
            return SimpleNamespace(response_id=response_id)

    from shared.auth import Key

    secret = Key("key", frozenset({"responses:write"}))
    state = SimpleNamespace(gate=SimpleNamespace(key=lambda values, scope, public: secret), ingest=Submitting())
    request = RawRequest([], {}, b'{"respondent_id":"u","score":9}')
    before = accepted()
    answer = asyncio.run(post_response(state, request))  # type: ignore[arg-type]
    documented = Accepted(response_id=response_id)
    assert answer == documented.__pydantic_serializer__.to_json(documented)
    assert accepted() == before + 1


def accepted() -> float:
    return REGISTRY.get_sample_value("nps_ingest_responses_total", {"outcome": "accepted"}) or 0.0
