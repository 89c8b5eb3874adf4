"""Issue 31, "the interface is the only door": the server reaches its engine only through `engine/api.py`, so a
server over a `RemoteEngine` (a proxy, here on loopback in front of a served engine) answers as the engine behind
it does, and enforces the limits that engine gives (`about.limits`)."""

from __future__ import annotations

from pathlib import PurePosixPath

import httpx
import pytest

from engine.api import Limits
from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from tests.conftest import TOKEN, Server, line_sketch, png

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def proxy(server_engine):
    with Server(server_engine) as behind, Server(RemoteEngine(behind.url, TOKEN)) as front:
        yield front


def test_the_limits_are_an_operation_in_both_modes(server_engine, proxy):
    local = server_engine.about.limits()
    assert isinstance(local, Limits) and local.max_upload_bytes == 300_000
    assert local.max_per_client == server_engine.jobs.per_client
    assert RemoteEngine(proxy.url, TOKEN).about.limits() == local
    caps = server_engine.capabilities()
    assert caps.limits == local and "canny" in caps.controls and caps.modes == ["quality", "fast", "live"]


def test_a_proxy_answers_health_and_lists_styles_as_the_engine_behind_it(server_engine, proxy):
    with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=60) as http:
        health = http.get("/health")
        assert health.status_code == 200, health.text
        body = health.json()
        assert body["profile"] == "tiny" and body["remote"] is True
        assert body["limits"]["max_upload_bytes"] == 300_000
        styles = http.get("/styles")
        assert styles.status_code == 200, styles.text
    names = sorted(s.name for s in server_engine.styles.list())
    assert sorted(s["name"] for s in styles.json()) == names
    assert sorted(s.name for s in RemoteEngine(proxy.url, TOKEN).styles.list()) == names


def test_a_proxy_refuses_a_body_over_the_limit_of_the_engine_behind_it(proxy):
    with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=60) as http:
        resp = http.post(
            "/api/styles/add", data={"args": '{"name": "too big"}'}, files={"image": ("a.png", b"x" * 400_000)}
        )
    assert resp.status_code == 413 and resp.json()["error"] == "TooLarge", resp.text


def test_a_render_through_a_proxy_names_its_files_in_the_data_folder(server_engine, proxy):
    remote = RemoteEngine(proxy.url, TOKEN)
    request = GenerateRequest.build(prompt="a small hut", sketch=png(line_sketch()), size=64, steps=1, seed=3)
    result = remote.generate(request)
    assert result.png and len(result.files) == len(result.png)
    name = PurePosixPath(result.files[0])
    assert not name.is_absolute() and name.parts[0] == "outputs" and str(server_engine.data_dir) not in str(name)
    assert (server_engine.data_dir / name).read_bytes() == result.png[0]
