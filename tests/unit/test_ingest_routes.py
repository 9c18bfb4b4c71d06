"""Which routes serve the hot POSTs. Their behaviour is tested over HTTP, both ways, in
tests/integration/test_ingest_api.py; this says the switch between the two is real."""

from __future__ import annotations

from ingest_service.api import create_app
from ingest_service.settings import IngestSettings

HOT = {("POST", "/v1/responses"), ("POST", "/v1/responses/validate"), ("POST", "/v1/responses/batch")}


def test_raw_routes_serve_the_hot_posts_unless_turned_off() -> None:
    assert set(create_app(IngestSettings(raw_routes=True)).raw_routes) == HOT
    assert create_app(IngestSettings(raw_routes=False)).raw_routes == {}


def test_every_raw_route_is_also_declared_for_the_openapi_document() -> None:
    paths = create_app(IngestSettings(raw_routes=True)).openapi()["paths"]
    assert {(method, path) for method, path in HOT if method.lower() in paths.get(path, {})} == HOT
