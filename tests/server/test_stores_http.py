"""The stores over HTTP against careless or hostile clients (issue 30, findings 3, 5, 6, 7): a real uvicorn on
127.0.0.1 with the tiny profile, raw routes and the remote engine alike."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from PIL import Image

from engine.api import JobInfo
from engine.errors import BadInput
from engine.remote import RemoteEngine
from tests.conftest import TOKEN, Server, at_once, png
from tests.engine.test_measure_later import request, three_places
from tests.engine.test_stores_history import spellings
from tests.engine.test_stores_models import lora_bytes

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(server_engine):
    with Server(server_engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def run_id(server_engine) -> str:
    job = server_engine.follow(server_engine.renders.submit(request()))
    shown = server_engine.renders.result(job.id)
    server_engine.follow(server_engine.jobs.get(shown.measure_job))
    return shown.run_id


def post(server, path: str, timeout: float = 120, **kw) -> httpx.Response:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=timeout) as client:
        return client.post(path, **kw)


def one_line_4xx(resp: httpx.Response, status: int, says: str) -> None:
    assert resp.status_code == status, resp.text[:300]
    detail = resp.json()["detail"]
    assert says in detail and "\n" not in detail and "Traceback" not in detail


def test_three_hundred_spellings_of_one_ref_are_one_thumbnail_in_a_small_reply(server, run_id):
    refs = spellings(run_id)
    resp = post(server, "/api/history/thumbnails", json={"refs": refs, "px": 96})
    assert resp.status_code == 200 and list(resp.json()) == [f"{run_id}#0"]
    assert len(resp.content) < 30_000  # was 300 full PNGs: 242 MB for 32 KB asked at full size
    assert list(RemoteEngine(server.url, TOKEN).history.thumbnails(refs, 64)) == [f"{run_id}#0"]
    one_line_4xx(post(server, "/api/history/thumbnails", json={"refs": [f"{run_id}#0"] * 501}), 422, "500")
    one_line_4xx(post(server, "/api/history/thumbnails", json={"refs": [f"{run_id}#0"], "px": 0}), 422, "px")


def test_six_parallel_remeasures_of_one_run_over_http_are_jobs_that_end_well(server, server_engine, run_id):
    got = at_once([lambda: post(server, "/api/history/remeasure", json={"run_ids": [run_id]}) for _ in range(6)])
    assert [r.status_code for r in got] == [200] * 6, [r.text[:200] for r in got]
    remote = RemoteEngine(server.url, TOKEN)
    for r in got:
        job = JobInfo.model_validate(r.json())
        assert job.kind == "remeasure"
        assert remote.follow(job).result == {"remeasured": 1, "missing": 0, "runs": 1}
    said = three_places(server_engine, run_id)
    assert said[0]["measured"] is True and all(m["metrics"] == said[0]["metrics"][m["index"]] for m in said[1:])
    with Image.open(server_engine.history_store.get(run_id)["outputs"][0]) as im:
        im.verify()


def test_remeasure_lists_over_http_are_bounded_and_deduplicated(server, run_id):
    remote = RemoteEngine(server.url, TOKEN)
    job = remote.follow(remote.history.remeasure([run_id] * 50))
    assert job.result["runs"] == 1
    too_many = json.dumps({"run_ids": [run_id] * 10_001})
    one_line_4xx(post(server, "/api/history/remeasure", content=too_many, headers={"Content-Type": "application/json"}),
                 422, "run_ids")  # fmt: skip
    one_line_4xx(post(server, "/api/history/remeasure", json={"run_ids": ["no-such-run"]}), 404, "no run")


def test_parallel_uploads_under_one_name_over_http_store_the_one_reported_added(server, server_engine):
    blobs = [lora_bytes(500 + i) for i in range(6)]

    def upload(blob: bytes) -> Callable[[], httpx.Response]:
        return lambda: post(
            server, "/api/renders/add_model", files={"data": ("m.safetensors", blob)},
            data={"args": json.dumps({"kind": "lora", "name": "pine"})},
        )  # fmt: skip

    got = at_once([upload(b) for b in blobs])
    codes = sorted(r.status_code for r in got)
    assert codes == [200] + [409] * 5, [(r.status_code, r.text[:200]) for r in got]
    winner = next(i for i, r in enumerate(got) if r.status_code == 200)
    assert got[winner].json()["added"] is True
    for r in got:
        if r.status_code == 409:  # the name is taken: a conflict, not a bad request
            one_line_4xx(r, 409, "a different lora named 'pine' is already on the engine")
    # the file kept is the winner's: it again is the same file, a loser's is still refused
    assert server_engine.renders.add_model("lora", "pine", blobs[winner])["added"] is False
    with pytest.raises(BadInput, match="a different lora named 'pine'"):
        server_engine.renders.add_model("lora", "pine", blobs[(winner + 1) % len(blobs)])


def test_parallel_adds_of_one_style_name_over_http_are_one_style_and_one_line_409s(server, server_engine):
    def add(i: int) -> Callable[[], httpx.Response]:
        swatch = png(Image.new("RGB", (64, 64), (30 * i, 90, 200 - 20 * i)))
        return lambda: post(
            server, "/api/styles/add", files={"image": ("s.png", swatch, "image/png")},
            data={"args": '{"name": "Oak veneer"}'},
        )  # fmt: skip

    got = at_once([add(i) for i in range(8)])
    assert sorted(r.status_code for r in got) == [200] + [409] * 7, [(r.status_code, r.text[:200]) for r in got]
    for r in got:
        if r.status_code == 409:
            one_line_4xx(r, 409, "a style named 'Oak veneer' already exists")
    assert [s.name for s in server_engine.styles.list(include_hidden=True)].count("Oak veneer") == 1
