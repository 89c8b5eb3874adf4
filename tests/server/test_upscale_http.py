"""Upscaling over HTTP (issue 32): the remote engine and the raw route against a real uvicorn on 127.0.0.1 with the
tiny profile; the new run and its files live on the server."""

from __future__ import annotations

import httpx
import pytest
from PIL import Image

from engine.errors import BadInput, NotFound
from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from tests.conftest import TOKEN, Server

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(server_engine):
    with Server(server_engine) as srv:
        yield srv


def test_an_upscale_over_http_is_a_new_run_on_the_server(server, server_engine):
    remote = RemoteEngine(server.url, TOKEN)
    request = GenerateRequest.build(prompt="a brass lamp", size=64, steps=2, seed=8, use_style=False)
    source = remote.generate(request)
    job = remote.follow(remote.renders.upscale(source.run_id, 0, 2))
    assert job.kind == "upscale" and job.result["run_id"] != source.run_id
    made = remote.measured(job.id)
    assert made.images()[0].size == (128, 128) and made.metadata["upscale"]["source"]["run_id"] == source.run_id
    kept = server_engine.history.get(made.run_id)  # the engine behind the server has the run and its file
    assert kept.metadata["upscale"]["factor"] == 2
    assert (server_engine.data_dir / made.files[0]).is_file()
    with Image.open(server_engine.data_dir / made.files[0]) as im:
        assert im.size == (128, 128)

    # the route as any client calls it: a job at once, then the render's result
    resp = httpx.post(f"{server.url}/api/renders/upscale", headers=AUTH, json={"run_id": source.run_id, "factor": 4})
    assert resp.status_code == 200, resp.text
    job = remote.follow(remote.jobs.get(resp.json()["id"]))
    assert remote.renders.result(job.id).images()[0].size == (256, 256)

    # refusals: one line and a 4xx
    with pytest.raises(NotFound, match="no run 'nope'"):
        remote.renders.upscale("nope", 0, 2)
    with pytest.raises(BadInput, match="there is no image 5"):
        remote.renders.upscale(source.run_id, 5, 2)
    resp = httpx.post(f"{server.url}/api/renders/upscale", headers=AUTH, json={"run_id": source.run_id, "factor": 3})
    assert resp.status_code == 422 and "factor" in resp.json()["detail"] and "\n" not in resp.json()["detail"]
    assert httpx.post(f"{server.url}/api/renders/upscale", json={"run_id": "x"}).status_code == 401
