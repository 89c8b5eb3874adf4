"""The engine over HTTP: a real uvicorn on 127.0.0.1 with the tiny profile."""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from engine.errors import Cancelled
from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from tests.conftest import TOKEN, Server, free_port, line_sketch, make_data_dir, make_engine, png


@pytest.fixture(scope="module")
def server_engine(tmp_path_factory, tiny_models):
    engine = make_engine(
        make_data_dir(tmp_path_factory.mktemp("server-data"), tiny_models, warm=True), max_upload_bytes=300_000
    )
    engine.load()
    return engine


@pytest.fixture(scope="module")
def server(server_engine):
    with Server(server_engine) as srv:
        yield srv


def client(server, token=TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def request(**kw) -> GenerateRequest:
    values = {"prompt": "a concrete pavilion", "sketch": png(line_sketch()), "size": 64, "steps": 2, "seed": 3}
    return GenerateRequest.build(**{**values, **kw})


def test_round_trip_gives_the_same_pixels_as_the_in_process_engine(server, engine):
    remote = RemoteEngine(server.url, TOKEN)
    steps = []
    over_http = remote.generate(request(seed=21), on_progress=steps.append)
    local = engine.generate(request(seed=21))
    assert np.array_equal(np.asarray(over_http.images()[0]), np.asarray(local.images()[0]))
    assert over_http.seeds == [21] and over_http.metadata["prompt"] == "a concrete pavilion"
    assert [s.name for s in over_http.styles] == [s.name for s in local.styles]
    assert steps and steps[-1].stage in ("queued", "denoise")


def test_the_token_is_required(server):
    for token in (None, "wrong-token"):
        assert client(server, token).get("/health").status_code == 401
    assert client(server).get("/health").json()["profile"] == "tiny"
    with pytest.raises(Exception, match="refused the token"):
        RemoteEngine(server.url, "nope").capabilities()


def test_the_seed_clients_request_works_unchanged(server):
    # the seed UI: multipart `file` + form `prompt`, the ngrok header, a PNG back with the style in a header
    resp = client(server).post(
        "/generate",
        files={"file": ("sketch.png", png(line_sketch()), "image/png")},
        data={"prompt": "cyberpunk city", "options": json.dumps({"size": 64, "steps": 2, "seed": 4})},
        headers={"ngrok-skip-browser-warning": "true"},
    )
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert resp.headers["X-Retrieved-Style"] and resp.headers["X-Seed"] == "4"
    with Image.open(io.BytesIO(resp.content)) as im:
        assert im.size == (96, 64) and "Seed: 4" in im.text["parameters"]


@pytest.mark.parametrize(
    ("files", "data", "status", "detail"),
    [
        ({"file": ("big.png", b"\x89PNG" + b"0" * 400_000, "image/png")}, {"prompt": "x"}, 413, "limit"),
        ({"file": ("notes.png", b"just some words", "image/png")}, {"prompt": "x"}, 415, "is not an image"),
        ({"file": ("cut.png", png(line_sketch())[:300], "image/png")}, {"prompt": "x"}, 415, "truncated"),
        (None, {"prompt": "x", "options": "{not json"}, 422, "options must be a JSON object"),
        (None, {"prompt": "x", "options": '{"steps": 0}'}, 422, "steps: must be between 1 and 150"),
        (None, {"prompt": "x", "options": '{"style": "Velvet"}'}, 422, "unknown style 'Velvet'"),
        (None, {"prompt": "   "}, 422, "the prompt is empty"),
        (None, {}, 422, None),
    ],
)
def test_bad_requests_get_4xx_never_500(server, files, data, status, detail):
    for path in ("/jobs", "/generate"):
        resp = client(server).post(path, files=files, data=data)
        assert resp.status_code == status, (path, resp.text)
        if detail:
            assert detail in resp.json()["detail"]


def test_progress_events_arrive_in_order_and_cancel_works(server):
    c = client(server)
    options = json.dumps({"size": 64, "steps": 6, "seed": 1})
    job = c.post("/jobs", data={"prompt": "a long one", "options": options}).json()
    assert job["state"] in ("queued", "running")
    events = []
    with c.stream("GET", f"/jobs/{job['id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    steps = [e["step"] for e in events]
    assert steps == sorted(steps) and events[-1]["state"] == "done" and events[-1]["step"] == 6
    result = c.get(f"/jobs/{job['id']}/result").json()
    assert result["metadata"]["seed"] == 1 and len(result["images"]) == 1

    remote = RemoteEngine(server.url, TOKEN)
    cancel = threading.Event()

    def stop_early(p):
        if p.stage == "denoise":
            cancel.set()

    with pytest.raises(Cancelled):
        remote.generate(request(steps=150, size=256), on_progress=stop_early, cancel=cancel)


def test_a_full_queue_answers_429(server_engine):
    with Server(server_engine, max_queued=2) as srv:
        c = client(srv)
        with server_engine.executor.queue.slot():  # the GPU is busy: nothing finishes
            ids = [
                c.post("/jobs", data={"prompt": f"job {i}", "options": '{"size": 64, "steps": 1}'}) for i in range(2)
            ]
            assert [r.status_code for r in ids] == [202, 202]
            third = c.post("/jobs", data={"prompt": "one too many"})
            assert third.status_code == 429 and "the queue holds 2" in third.json()["detail"]
            # both plan and retrieve at once, then wait for the GPU one behind the other (whichever planned first)
            deadline = time.time() + 60

            def positions():
                return sorted(c.get(f"/jobs/{r.json()['id']}").json()["position"] for r in ids)

            while positions() != [0, 1] and time.time() < deadline:
                time.sleep(0.05)
            assert positions() == [0, 1]
        deadline = time.time() + 60
        while time.time() < deadline and any(c.get(f"/jobs/{r.json()['id']}").json()["state"] != "done" for r in ids):
            time.sleep(0.1)
        assert all(c.get(f"/jobs/{r.json()['id']}").json()["state"] == "done" for r in ids)


def test_analyze_scores_concepts(server):
    resp = client(server).post(
        "/analyze",
        files={"file": ("photo.png", png(line_sketch()), "image/png")},
        data={"concepts": "a house,a cat,a car", "k": "3"},
    )
    found = resp.json()["concepts"]
    assert [set(f) for f in found] == [{"concept", "confidence"}] * 3
    assert {f["concept"] for f in found} == {"a house", "a cat", "a car"}
    assert sum(f["confidence"] for f in found) == pytest.approx(1.0, abs=1e-3)


def test_styles_over_http(server):
    remote = RemoteEngine(server.url, TOKEN)
    added = remote.styles.add(png(Image.new("RGB", (64, 64), (90, 60, 30))), "Umber", tags=["brown"])
    assert "Umber" in [s.name for s in remote.styles.list()]
    with Image.open(io.BytesIO(remote.styles.image("Umber"))) as im:
        assert im.size == (64, 64)
    assert remote.styles.search(text="umber brown", k=20)
    assert remote.styles.remove(added.id).name == "Umber"
    assert "Umber" not in [s.name for s in remote.styles.list()]


def test_the_studio_in_remote_mode_generates_through_the_server(server, server_engine, tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO
    from tests.pages.conftest import ok
    from tests.pages.test_app import generate

    # the laptop's own engine would need weights it does not have: remote mode must not touch it
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(tmp_path / "laptop"))
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["engine_mode"] = "Remote"
    at.session_state["remote_url"] = server.url
    at.session_state["remote_token"] = TOKEN
    at.run()
    assert not at.exception and not at.error
    assert any("Remote engine: device" in c.value for c in at.sidebar.caption)
    at.session_state["prompt"] = "a remote lamp"
    for key, value in {"steps": 2, "size": 256, "seed_locked": True, "seed": 12}.items():
        at.session_state[key] = value
    ok(generate(at.run()))  # the page after the remote result: no exception, no error line
    st.cache_resource.clear()
    result = at.session_state["result"]
    assert result.seeds == [12] and result.metadata["prompt"] == "a remote lamp"
    assert server_engine.history.get(result.run_id).metadata["seed"] == 12  # it ran on the server
    assert not (tmp_path / "laptop").exists()


def test_a_wrong_server_url_is_one_banner(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["engine_mode"] = "Remote"
    at.session_state["remote_url"] = f"http://127.0.0.1:{free_port()}"
    at.run()
    st.cache_resource.clear()
    assert not at.exception and not at.error  # never connected: "not connected yet", with the reason
    assert "not connected yet" in at.info[0].value and any("cannot reach the engine" in c.value for c in at.caption)
    assert at.segmented_control(key="engine_mode").value == "Remote"  # the switch stays usable


def test_the_cli_generates_through_a_remote_engine(server, tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "remote.png"
    code = main(["generate", "--remote", server.url, "--token", TOKEN, "--prompt", "a remote stool",
                 "--size", "64", "--steps", "2", "--seed", "8", "--out", str(out)])  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["seed"] == 8 and report["output"] == str(out) and report["profile"] == "tiny"
    with Image.open(out) as im:
        assert "Seed: 8" in im.text["parameters"]  # the server's file, metadata and all

    code = main(["styles", "list", "--remote", server.url, "--token", "wrong"])
    _, stderr = capsys.readouterr()
    assert code == 1 and stderr.count("\n") == 1 and "refused the token" in stderr


def test_a_job_nobody_polls_is_cancelled(server_engine):
    with Server(server_engine, abandon_after=0.5) as srv:
        c = client(srv)
        with server_engine.executor.queue.slot():  # the GPU is busy, so the second job waits in the queue
            first = c.post("/jobs", data={"prompt": "watched", "options": '{"size": 64, "steps": 2}'}).json()
            second = c.post("/jobs", data={"prompt": "forgotten", "options": '{"size": 64, "steps": 2}'}).json()
            deadline = time.time() + 3
            while time.time() < deadline:  # only the first one is polled
                c.get(f"/jobs/{first['id']}")
                time.sleep(0.1)
        while c.get(f"/jobs/{first['id']}").json()["state"] not in ("done", "failed", "cancelled"):
            time.sleep(0.1)
        assert c.get(f"/jobs/{first['id']}").json()["state"] == "done"
        time.sleep(1.0)  # the worker moves on to the next job (asking about it now would count as a poll)
        forgotten = c.get(f"/jobs/{second['id']}").json()
        assert forgotten["state"] == "cancelled" and "nobody asked for it" in forgotten["error"]


def test_a_slow_one_call_render_times_out_with_504_and_the_engine_goes_on(server_engine):
    with Server(server_engine, request_timeout=0.5) as srv:
        c = client(srv)
        slow = c.post("/generate", data={"prompt": "slow", "options": '{"size": 256, "steps": 150}'})
        assert slow.status_code == 504 and "use POST /jobs" in slow.json()["detail"]
        quick = RemoteEngine(srv.url, TOKEN).generate(request())
        assert quick.images()[0].size == (96, 64)


def test_analyze_adds_the_segmentation_as_the_seed_service_did(server):
    resp = client(server).post(
        "/analyze",
        files={"file": ("photo.png", png(line_sketch(200, 150)), "image/png")},
        data={"concepts": "a house,a tree", "k": "2", "grid": "4"},
    )
    assert resp.status_code == 200, resp.text
    seg = resp.json()["segmentation"]
    assert (seg["width"], seg["height"]) == (200, 150)
    for m in seg["masks"]:
        assert {"score", "area", "bbox", "polygons", "rle", "concepts"} <= set(m)
        assert m["rle"]["size"] == [150, 200] and sum(m["rle"]["counts"]) == 150 * 200
    off = client(server).post(
        "/analyze", files={"file": ("p.png", png(line_sketch()), "image/png")}, data={"segment": "false"}
    )
    assert "segmentation" not in off.json()


def test_segment_endpoint_returns_a_png_mask_and_polygons(server):
    import base64

    resp = client(server).post(
        "/segment",
        files={"file": ("sketch.png", png(line_sketch(200, 150)), "image/png")},
        data={"points": "[[60, 80]]", "labels": "[1]"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    with Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))) as im:
        assert im.size == (200, 150)
    assert body["polygons"] and 0 < body["area"] <= 1
    # the remote engine gives the Studio the same mask as the local one
    remote = RemoteEngine(server.url, TOKEN).renders.segment(png(line_sketch(200, 150)), [[60, 80]])
    local = server.engine.renders.segment(png(line_sketch(200, 150)), [[60, 80]])
    assert np.array_equal(remote.mask(), local.mask())


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ({"points": "[[900, 10]]"}, "the point (900, 10) is outside the image, which is 200×150; click inside it"),
        ({"points": "[[1, 2, 3]]"}, "points must be a JSON list of [x, y] pairs, e.g. [[120, 80], [200, 90]]"),
        ({"points": "not json"}, "points must be JSON, e.g. [[120, 80], [200, 90]]"),
        ({"box": "[1, 2]"}, "box must be a JSON list, e.g. [10, 20, 200, 180]"),
        ({}, "segmenting needs a point or a box on the image"),
    ],
)
def test_segment_bad_prompts_are_422_with_one_line(server, data, detail):
    resp = client(server).post(
        "/segment", files={"file": ("s.png", png(line_sketch(200, 150)), "image/png")}, data=data
    )
    assert resp.status_code == 422
    assert resp.json()["detail"] == detail


def test_segment_needs_the_token_and_an_image(server):
    files = {"file": ("s.png", png(line_sketch(200, 150)), "image/png")}
    assert client(server, token=None).post("/segment", files=files, data={"points": "[[5, 5]]"}).status_code == 401
    bad = client(server).post(
        "/segment", files={"file": ("s.png", b"plain text", "image/png")}, data={"points": "[[5, 5]]"}
    )
    assert bad.status_code in (415, 422) and "\n" not in bad.json()["detail"]


@pytest.mark.parametrize("path", ["/generate", "/jobs"])
@pytest.mark.parametrize(
    ("mask", "detail"),
    [
        (np.ones((5, 5), bool), "region 1's mask is 5×5 but must be"),
        (np.zeros((64, 96), bool), "region 1's mask is empty (no white pixels)"),
    ],
)
def test_bad_region_masks_are_422_before_any_queue(server, path, mask, detail):
    options = {"regions": [{"mask": base64_png(mask), "words": "oak"}], "steps": 1, "size": 64}
    resp = client(server).post(
        path,
        files={"file": ("s.png", png(line_sketch()), "image/png")},
        data={"prompt": "a chair", "options": json.dumps(options)},
    )
    assert resp.status_code == 422
    assert resp.json()["detail"].startswith(detail)


def base64_png(mask) -> str:
    import base64

    from engine.masks import mask_png

    return base64.b64encode(mask_png(mask)).decode()
