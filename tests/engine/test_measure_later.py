"""A render queued through the Renders service is shown before it is measured: its job ends when the images are kept
(`"measured": false`), and a "measure" job (persistent, visible, over HTTP too) adds the numbers to the PNG, the
sidecar and the history row alike. Callers that need the numbers at once (the pipeline's default, sweeps, the CLI,
`Engine.generate`) still get them with the render."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.errors import NotFound
from engine.jobs import JobRunner
from engine.metadata import read_png
from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from tests.conftest import TOKEN, Server, make_data_dir, make_engine


def request(sketch: bytes | None = None, **kw) -> GenerateRequest:
    values = {"prompt": "a timber cabin at dusk", "sketch": sketch, "size": 64, "steps": 2, "seed": 7}
    return GenerateRequest.build(**{**values, **kw})


def three_places(engine, run_id: str) -> list[dict]:
    """What the history row, each PNG's text chunk and each sidecar say about a run (per output: PNG, sidecar)."""
    said = [engine.history.get(run_id).metadata]
    for path in sorted(Path(engine.settings.data_dir).glob(f"outputs/*/{run_id}-*.png")):  # the folder the test gave
        said += [read_png(path), json.loads(path.with_suffix(".json").read_text())]
    return said


@pytest.fixture(scope="module")
def eng(tmp_path_factory, tiny_models):
    engine = make_engine(make_data_dir(tmp_path_factory.mktemp("measure-data"), tiny_models, warm=True))
    engine.load()
    yield engine
    engine.close()


@pytest.fixture
def held(eng, monkeypatch):
    """Measure jobs wait until the test lets them go (set the event)."""
    go = threading.Event()
    measure = eng.jobs.handlers["measure"]

    def wait_then_measure(payload, ctx):
        go.wait(120)
        return measure(payload, ctx)

    monkeypatch.setitem(eng.jobs.handlers, "measure", wait_then_measure)
    yield go
    go.set()


def test_a_render_job_ends_before_its_numbers_which_then_reach_all_three_places(eng, held, sketch_bytes):
    job = eng.follow(eng.renders.submit(request(sketch_bytes, variations=2)))
    shown = eng.renders.result(job.id)
    assert len(shown.png) == 2 and not shown.measured and shown.measure_job
    assert shown.metadata["metrics"] == [{}, {}] and shown.metadata["measured"] is False
    assert "metrics" not in shown.metadata["timings"] and shown.metadata["timings"]["total"] > 0
    measure = eng.jobs.get(shown.measure_job)
    assert measure.kind == "measure" and measure.state in ("queued", "running")
    assert job.result["measure_job"] == measure.id
    # the three places say the same already: kept, not measured
    before = three_places(eng, shown.run_id)
    assert all(m["measured"] is False for m in before)
    assert before[0]["metrics"] == [{}, {}] and all(m["metrics"] == {} for m in before[1:])
    # not searchable until measured, and "more like this" says why
    with pytest.raises(NotFound, match="being measured"):
        eng.history.search(like_run=shown.run_id)

    held.set()
    done = eng.follow(eng.jobs.get(shown.measure_job))
    assert done.state == "done" and done.result["run_id"] == shown.run_id
    row, *files = three_places(eng, shown.run_id)
    assert row["measured"] is True and all(m["measured"] is True for m in files)
    assert [files[0]["metrics"], files[2]["metrics"]] == row["metrics"]  # each PNG carries its own output's
    assert files[0] == files[1] and files[2] == files[3]  # PNG and sidecar alike
    assert {k: v for k, v in files[0].items() if k not in ("index", "metrics")} == {
        k: v for k, v in row.items() if k != "metrics"
    }
    assert set(row["metrics"][0]) == {"clip_score", "style_similarity", "edge_f1", "edge_precision", "edge_recall",
                                      "chamfer"}  # fmt: skip
    assert row["timings"]["metrics"] > 0
    assert row["timings"]["total"] == shown.metadata["timings"]["total"]  # what the designer waited: no metrics
    again = eng.renders.result(job.id)
    assert again.measured and again.metadata == row and again.measure_job == shown.measure_job
    assert eng.history.search(like_run=shown.run_id)[0]["run_id"] == shown.run_id

    # the same numbers as measuring with the render (the pipeline's default): same pixels, same inputs
    # (measures an internal: the pipeline's inline measuring, which catalog rows use, against the measure job's)
    inline = eng.pipeline.generate(request(sketch_bytes, variations=2))
    assert inline.metadata["measured"] is True and inline.metadata["metrics"] == row["metrics"]


def test_a_live_frame_is_not_measured_and_has_no_measure_job(eng, sketch_bytes):
    job = eng.follow(eng.renders.submit(request(sketch_bytes, keep=False, mode="live", steps=1)))
    frame = eng.renders.result(job.id)
    assert frame.measure_job is None and "measure_job" not in job.result
    assert frame.metadata["metrics"] == [{}] and frame.metadata["measured"] is False


def test_with_the_queue_full_a_render_is_measured_before_its_job_ends(eng, sketch_bytes, monkeypatch):
    monkeypatch.setattr(eng.jobs, "max_queued", 1)  # the render itself fills it: no room for its measure job
    job = eng.follow(eng.renders.submit(request(sketch_bytes, seed=2)))
    result = eng.renders.result(job.id)
    assert result.measure_job is None and result.measured and result.metadata["metrics"][0]["clip_score"] is not None
    assert eng.history.search(like_run=result.run_id)[0]["run_id"] == result.run_id


def test_engine_generate_and_the_pipeline_give_the_numbers_with_the_render(eng, sketch_bytes):
    result = eng.generate(request(sketch_bytes, seed=3))
    assert result.measured and result.measure_job and result.metadata["metrics"][0]["clip_score"] is not None
    assert read_png_bytes(result.png[0])["metrics"] == result.metadata["metrics"][0]
    kept = eng.pipeline.generate(  # measures an internal: the pipeline measures inline by default (catalog rows)
        request(sketch_bytes, seed=4)
    )
    assert kept.metadata["measured"] is True and kept.metadata["metrics"][0]["edge_f1"] is not None
    assert "metrics" in kept.metadata["timings"]


def test_over_http_the_result_names_its_measure_job_and_waiting_on_it_brings_the_numbers(eng, sketch_bytes):
    with Server(eng) as server:
        remote = RemoteEngine(server.url, TOKEN)
        job = remote.follow(remote.renders.submit(request(sketch_bytes, seed=5)))
        shown = remote.renders.result(job.id)
        assert shown.measure_job and remote.jobs.get(shown.measure_job).kind == "measure"
        remote.follow(remote.jobs.get(shown.measure_job))
        measured = remote.renders.result(job.id)
        assert measured.measured and measured.measure_job == shown.measure_job
        assert measured.metadata == eng.history.get(shown.run_id).metadata
        assert read_png_bytes(measured.png[0])["metrics"] == measured.metadata["metrics"][0]


def read_png_bytes(data: bytes) -> dict:
    import io

    from PIL import Image

    from engine.metadata import CHUNK

    with Image.open(io.BytesIO(data)) as im:
        return json.loads(im.text[CHUNK])


def dead_owner() -> str:
    """A job runner's owner whose process has ended, as after a crash."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:gone"


def test_a_measure_job_queued_when_the_engine_stopped_runs_at_the_next_start(tmp_path, tiny_models, sketch_bytes):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    first = make_engine(data)
    # measures an internal: a run kept unmeasured and its measure job queued by hand, as a crashed engine leaves them
    kept = first.pipeline.generate(request(sketch_bytes), measure=False)
    assert kept.metadata["measured"] is False
    first.jobs.stop()
    first.jobs.start = lambda: None  # the engine stops before any worker takes the job…
    first.jobs.owner = dead_owner()  # …and its process is gone
    job_id = first.renders.measure_later(kept.run_id)
    assert first.jobs.get(job_id).state == "queued"

    second = make_engine(data)
    try:
        second.jobs.start()
        done = second.follow(second.jobs.get(job_id))
        assert done.state == "done"
        row, png_meta, sidecar = three_places(second, kept.run_id)
        assert row["measured"] is png_meta["measured"] is sidecar["measured"] is True
        assert png_meta["metrics"] == sidecar["metrics"] == row["metrics"][0] and row["metrics"][0]["clip_score"]
    finally:
        second.close()


def test_a_measure_job_nobody_follows_still_runs(tmp_path):
    """Jobs nobody asks about are cancelled (their caller is gone), but not a render's measuring: the history wants
    its numbers whoever asked for the render."""
    go = threading.Event()
    runner = JobRunner(
        tmp_path / "jobs.sqlite",
        {"hold": lambda p, ctx: go.wait(30) and {}, "other": lambda p, ctx: {}, "measure": lambda p, ctx: {"ok": 1}},
        workers=1,
        abandon_after=0.5,
    )
    try:
        runner.submit("hold", {})
        other, measure = runner.submit("other", {}), runner.submit("measure", {})
        time.sleep(1.0)  # nobody asks about either (runner.get would count as asking)
        go.set()
        deadline = time.time() + 20
        states = {}
        while time.time() < deadline:
            with sqlite3.connect(runner.path) as db:
                states = dict(db.execute("SELECT id, state FROM job WHERE id IN (?, ?)", (other.id, measure.id)))
            if states.get(measure.id) in ("done", "cancelled", "failed") and states.get(other.id) != "queued":
                break
            time.sleep(0.1)
        assert states == {other.id: "cancelled", measure.id: "done"}
    finally:
        runner.stop()


def test_a_remeasure_while_the_measure_job_runs_never_fails_and_leaves_one_story(eng, sketch_bytes):
    """A designer's "measure again" (or an API client's) can meet a render's own measure job on the same files: both
    finish, nothing answers an internal error, and the PNGs, sidecars and row agree at the end."""
    shown = eng.renders.result(eng.follow(eng.renders.submit(request(sketch_bytes))).id)
    errors: list[BaseException] = []

    def again() -> None:
        try:
            eng.history.remeasure([shown.run_id])
        except BaseException as exc:  # noqa: BLE001 (collected for the assertion)
            errors.append(exc)

    threads = [threading.Thread(target=again) for _ in range(3)]
    for t in threads:
        t.start()
    eng.follow(eng.jobs.get(shown.measure_job))
    for t in threads:
        t.join(60)
    assert not errors, errors
    said = three_places(eng, shown.run_id)
    row, files = said[0], said[1:]  # the row holds every output's numbers, each PNG and sidecar its own
    assert row["measured"] is True and len(row["metrics"]) == 1 and row["metrics"][0]
    assert all(m["measured"] is True and m["metrics"] == row["metrics"][m["index"]] for m in files)
