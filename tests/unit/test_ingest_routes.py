"""The hot POSTs are served raw, declared once, and documented from the same models."""

from __future__ import annotations

from ingest_service.api import RAW_ROUTES
from ingest_service.bootstrap import create_app
from ingest_service.settings import IngestSettings

HOT = {("POST", "/v1/responses"), ("POST", "/v1/responses/validate"), ("POST", "/v1/responses/batch")}


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
