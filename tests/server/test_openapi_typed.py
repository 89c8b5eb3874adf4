"""Issue 30, finding 11: the OpenAPI says what every route takes and answers, as the engine checks and answers it.
Errors are one line in `detail` on every route (not FastAPI's list of validation errors); file parts are files of
the kinds they take; "one of these" and "this value needs those" are in the schema; no engine path in /health."""

from __future__ import annotations

import httpx

from engine.server import create_app
from tests.conftest import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def schema_of(engine) -> dict:
    return create_app(engine, TOKEN).openapi()


def test_every_route_documents_its_one_line_errors(engine):
    schema = schema_of(engine)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["detail"] and error["properties"]["detail"]["type"] == "string"
    for path, item in schema["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"4XX", "5XX"} <= codes and "422" not in codes, (method, path, codes)


def test_file_parts_say_their_kind_and_one_of_is_in_the_schema(engine):
    paths = schema_of(engine)["paths"]
    form = paths["/api/renders/add_model"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["encoding"]["data"]["contentType"] == "application/vnd.safetensors"
    assert form["schema"]["properties"]["data"] == {"type": "string", "format": "binary"}
    sheet = paths["/api/catalog/inspect"]["post"]["requestBody"]["content"]["multipart/form-data"]["encoding"]
    assert sheet["sheet"]["contentType"].startswith("text/csv")
    segment = paths["/api/renders/segment"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    wanted = [b["properties"]["args"]["required"] for b in segment["anyOf"]]
    assert wanted == [["points"], ["box"]]
    search = paths["/api/history/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [b["required"] for b in search["anyOf"]] == [["text"], ["like_run"]]
    prepare = paths["/api/tuning/prepare"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    by_source = {b["properties"]["source"]["const"]: b["required"] for b in prepare["anyOf"]}
    assert by_source == {"library": ["source"], "tagging": ["source", "tagging_run"]}  # an upload needs a form
    legacy = paths["/styles"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert legacy["encoding"]["file"]["contentType"].startswith("image/png")


def test_health_and_records_name_no_engine_folder(server_engine):
    data_dir = str(server_engine.settings.data_dir)
    with Server(server_engine) as srv:
        health = httpx.get(f"{srv.url}/health", headers=AUTH, timeout=30)
    assert health.status_code == 200
    assert data_dir not in health.text and "models/tiny/stable-diffusion-v1-5" in health.text
