"""SAM2 prompts checked the same way on every route: the engine interface, `/api/renders/segment` and the legacy
`/segment` form refuse malformed points, labels and boxes with one line (a 4xx over HTTP, never a 500), and cap the
number of points (100k points once took 20 s)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from engine.errors import BadInput
from engine.masks import MAX_POINTS
from engine.remote import RemoteEngine
from tests.conftest import TOKEN, Server, line_sketch, png

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MANY = [[10, 10]] * (MAX_POINTS + 1)

BAD = [
    ({"points": [[1]]}, "[x, y] pairs"),
    ({"points": [[1, 2, 3]]}, "[x, y] pairs"),
    ({"points": [["a", "b"]]}, "[x, y] pairs"),
    ({"points": [10, 10]}, "[x, y] pairs"),
    ({"points": MANY}, f"at most {MAX_POINTS}"),
    ({"points": [[10, 10]], "labels": [1, 0]}, "one label per point"),
    ({"points": [[10, 10]], "labels": [2]}, "label"),
    ({"box": [1, 2, 3]}, "box"),
    ({"box": ["a", 1, 2, 3]}, "box"),
    ({}, "a point or a box"),
]


@pytest.fixture(scope="module")
def server(server_engine):
    with Server(server_engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def image() -> bytes:
    return png(line_sketch(200, 150))


@pytest.mark.parametrize(("args", "says"), BAD)
def test_the_interface_refuses_malformed_prompts_with_one_line(server_engine, image, args, says):
    with pytest.raises(BadInput) as refused:
        server_engine.renders.segment(image, **args)
    line = str(refused.value)
    assert says in line and "\n" not in line and len(line) < 300, line


@pytest.mark.parametrize(("args", "says"), BAD)
def test_api_renders_segment_answers_malformed_prompts_with_a_422_line(server, image, args, says):
    started = time.monotonic()
    resp = httpx.post(f"{server.url}/api/renders/segment", headers=AUTH, timeout=60,
                      files={"image": ("s.png", image, "image/png")}, data={"args": json.dumps(args)})  # fmt: skip
    assert resp.status_code == 422, (resp.status_code, resp.text[:300])
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 300, detail
    assert time.monotonic() - started < 5


def test_a_hundred_thousand_points_are_refused_at_once_on_both_routes(server, image):
    points = json.dumps([[10, 10]] * 100_000)
    for path, files, data in (
        ("/api/renders/segment", {"image": ("s.png", image)}, {"args": json.dumps({"points": [[10, 10]] * 100_000})}),
        ("/segment", {"file": ("s.png", image)}, {"points": points[:99_990] + "]]"}),
    ):
        started = time.monotonic()
        resp = httpx.post(f"{server.url}{path}", headers=AUTH, files=files, data=data, timeout=60)
        assert resp.status_code in (413, 422), (path, resp.status_code, resp.text[:300])
        assert "\n" not in resp.json()["detail"]
        assert time.monotonic() - started < 5, path


def test_the_legacy_form_caps_points_too(server, image):
    resp = httpx.post(f"{server.url}/segment", headers=AUTH, files={"file": ("s.png", image)},
                      data={"points": json.dumps(MANY)}, timeout=60)  # fmt: skip
    assert resp.status_code == 422 and f"at most {MAX_POINTS}" in resp.json()["detail"]


def test_good_prompts_still_segment_on_every_route(server, server_engine, image):
    local = server_engine.renders.segment(image, points=[[100, 75]], labels=[1], box=[20, 20, 180, 140])
    remote = RemoteEngine(server.url, TOKEN).renders.segment(image, points=[[100, 75]], labels=[1],
                                                             box=[20, 20, 180, 140])  # fmt: skip
    assert local.mask_png and remote.mask_png and remote.bbox == local.bbox
    with pytest.raises(BadInput, match="at most 64"):  # the remote engine refuses it before sending, in one line
        RemoteEngine(server.url, TOKEN).renders.segment(image, points=MANY)
