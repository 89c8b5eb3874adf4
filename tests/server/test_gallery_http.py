"""History's star and filters over HTTP: a real uvicorn on 127.0.0.1 with the tiny profile, the remote engine and
the raw route alike."""

from __future__ import annotations

import httpx
import pytest

from engine.errors import NotFound
from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from tests.conftest import TOKEN, Server, make_engine

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(server_engine):
    with Server(server_engine) as srv:
        yield srv


def render(engine, prompt: str, **kw) -> str:
    values = {"prompt": prompt, "size": 64, "steps": 2, "seed": 4, "use_style": False}
    return engine.generate(GenerateRequest.build(**{**values, **kw})).run_id


def test_a_star_set_over_http_is_kept_on_the_server(server, server_engine):
    remote = RemoteEngine(server.url, TOKEN)
    kept = render(remote, "a cedar bench", batch="http-stars")
    other = render(remote, "a cedar shelf", batch="http-stars")
    assert remote.history.get(kept).starred is False
    record = remote.history.star(kept)
    assert record.id == kept and record.starred is True
    assert server_engine.history.get(kept).starred is True  # the engine behind the server has it
    assert make_engine(server_engine.data_dir).history.get(kept).starred is True  # and so does its data folder
    assert [r.id for r in remote.history.list(batch="http-stars", starred=True)] == [kept]
    assert [r.id for r in remote.history.list(batch="http-stars", text="SHELF")] == [other]
    assert "http-stars" in remote.history.facets()["batches"]

    # the route as any client calls it
    resp = httpx.post(f"{server.url}/api/history/star", headers=AUTH, json={"run_id": kept, "starred": False})
    assert resp.status_code == 200 and resp.json()["starred"] is False and resp.json()["id"] == kept
    assert server_engine.history.get(kept).starred is False
    resp = httpx.post(f"{server.url}/api/history/list", headers=AUTH, json={"starred": True, "batch": "http-stars"})
    assert resp.status_code == 200 and resp.json() == []

    with pytest.raises(NotFound, match="no run 'nope'"):
        remote.history.star("nope")
    resp = httpx.post(f"{server.url}/api/history/star", headers=AUTH, json={"run_id": kept, "starred": "maybe"})
    assert resp.status_code == 422
    assert httpx.post(f"{server.url}/api/history/star", json={"run_id": kept}).status_code == 401
