"""The OpenAPI document is generated from the contract's models and lists exactly the API's routes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from app.contract import api as contract
from web import create_app
from web.openapi import spec

IMPLICIT = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Flask:
    monkeypatch_module.setenv("VAR_DIR", str(tmp_path_factory.mktemp("openapi")))
    return create_app()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_every_api_route_is_documented_and_every_documented_operation_is_a_route(app: Flask) -> None:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api.") and rule.rule != "/api/v1/openapi.json":
            path = rule.rule.removeprefix("/api/v1").replace("<int:", "<").replace("<", "{").replace(">", "}")
            routes |= {(path, m.lower()) for m in (rule.methods or set()) - IMPLICIT}
    with app.app_context():
        documented = {(path, method) for path, ops in spec()["paths"].items() for method in ops}
    assert routes == documented


def test_the_documents_schemas_are_the_contracts_models(app: Flask) -> None:
    with app.app_context():
        schemas = spec()["components"]["schemas"]
    for model in (*contract.REQUEST_MODELS, *contract.RESPONSE_MODELS):
        assert set(schemas[model.__name__]["properties"]) == set(model.model_fields), model.__name__
    # The fields the hand-written document had lost.
    assert {"waiting_reason", "routed_from", "total", "created_by"} <= set(schemas["Job"]["required"])
    assert {"duration_ms", "cost_usd", "max_attempts", "queue"} <= set(schemas["Item"]["required"])
    # This deployment's limits are written in.
    assert schemas["PresignFile"]["properties"]["size"]["maximum"] > 0


def test_every_operation_names_its_errors_and_its_success(app: Flask) -> None:
    with app.app_context():
        paths = spec()["paths"]
    for path, ops in paths.items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"401", "503"} <= codes, (method, path)
            assert any(c.startswith("2") for c in codes), (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if method != "get":
                assert "403" in codes, (method, path)


def test_the_document_needs_a_token_like_the_rest_of_the_api(app: Flask) -> None:
    r = app.test_client().get("/api/v1/openapi.json")
    assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
