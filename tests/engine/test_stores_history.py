"""The History's bulk operations bounded by request (issue 30, findings 3 and 7): thumbnails count each output once
however its ref is spelled and are never the full PNG; remeasure is a cancellable job over each named run once, and
parallel remeasures of one run all end well with whole files."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import BadInput, NotFound
from engine.metadata import read_png
from engine.services import history as history_service
from tests.conftest import make_data_dir, make_engine
from tests.engine.test_measure_later import request, three_places


@pytest.fixture(scope="module")
def eng(tmp_path_factory, tiny_models):
    engine = make_engine(make_data_dir(tmp_path_factory.mktemp("stores-history"), tiny_models, warm=True))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def run_id(eng) -> str:
    """A kept render of two outputs, measured."""
    job = eng.follow(eng.renders.submit(request(variations=2, size=128)))
    shown = eng.renders.result(job.id)
    eng.follow(eng.jobs.get(shown.measure_job))
    return shown.run_id


def spellings(run_id: str, n: int = 300) -> list[str]:
    """`n` ways to write output 0 of a run: the canonical one, zero-padded ones and near misses."""
    forms = [f"{run_id}#0", f"{run_id}#00", f"{run_id}#000"]
    junk = [" 0", "+0", "0 ", "٠", "-0", "0.0", "0x0", "\t0", "0\n", "#0", "0#"]
    i = 0
    while len(forms) < n:
        forms.append(f"{run_id}#{junk[i % len(junk)]}{' ' * (i // len(junk))}")
        i += 1
    return forms[:n]


def test_three_hundred_spellings_of_one_output_are_one_small_thumbnail(eng, run_id):
    got = eng.history.thumbnails(spellings(run_id), px=96)
    assert list(got) == [f"{run_id}#0"]
    with Image.open(io.BytesIO(got[f"{run_id}#0"])) as im:
        assert im.format == "JPEG" and max(im.size) <= 96
    assert len(got[f"{run_id}#0"]) < 20_000


def test_thumbnails_are_bounded_in_count_size_and_reply(eng, run_id, monkeypatch):
    both = eng.history.thumbnails([f"{run_id}#1", f"{run_id}#0", f"{run_id}#7", "nope#0"], px=32)
    assert list(both) == [f"{run_id}#1", f"{run_id}#0"]  # the asked order; unknown outputs and runs left out
    with pytest.raises(BadInput, match=r"^at most 500 thumbnails at once \(got 501\)") as err:
        eng.history.thumbnails([f"{run_id}#0"] * 501)
    assert "\n" not in str(err.value)
    for px in (0, 8, 513, 4096):  # px 0 meant "the PNG as it is": never here
        with pytest.raises(BadInput, match="px must be between 16 and 512"):
            eng.history.thumbnails([f"{run_id}#0"], px=px)
    first = len(both[f"{run_id}#1"])
    monkeypatch.setattr(history_service, "THUMBNAIL_BUDGET", first + 10)  # room for one
    assert list(eng.history.thumbnails([f"{run_id}#1", f"{run_id}#0"], px=32)) == [f"{run_id}#1"]


def test_six_parallel_remeasures_of_one_run_all_end_with_whole_files(eng, run_id):
    jobs: list = []
    errors: list[BaseException] = []

    def again() -> None:
        try:
            jobs.append(eng.follow(eng.history.remeasure([run_id])))
        except BaseException as exc:  # noqa: BLE001 (collected for the assertion)
            errors.append(exc)

    threads = [threading.Thread(target=again) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert len(jobs) == 6 and all(j.state == "done" and j.kind == "remeasure" for j in jobs)
    assert all(j.result == {"remeasured": 1, "missing": 0, "runs": 1} for j in jobs)
    said = three_places(eng, run_id)  # every PNG reads, every sidecar parses, all say the same
    row, files = said[0], said[1:]
    assert row["measured"] is True and all(m["metrics"] == row["metrics"][m["index"]] for m in files)
    folder = Path(eng.history_store.get(run_id)["outputs"][0]).parent
    assert sorted(p.name for p in folder.iterdir() if ".tmp" in p.name) == []  # no temporary file left behind


def test_remeasure_counts_each_run_once_and_refuses_what_it_cannot_do_in_one_line(eng, run_id):
    job = eng.follow(eng.history.remeasure([run_id, run_id, run_id]))
    assert job.result == {"remeasured": 1, "missing": 0, "runs": 1} and job.total == 1
    with pytest.raises(BadInput, match=r"^at most 10000 runs at once \(got 10001\)"):
        eng.history.remeasure([run_id] * 10_001)
    with pytest.raises(BadInput, match="name at least one run"):
        eng.history.remeasure([])
    with pytest.raises(NotFound, match=r"^no run 'gone-1' in the history \(and 1 more\)$"):
        eng.history.remeasure([run_id, "gone-1", "gone-2"])
    with pytest.raises(BadInput, match="is not a run id"):
        eng.history.remeasure(["../../etc"])
    every = eng.follow(eng.history.remeasure())
    assert every.result["runs"] == len(eng.history_store.ids()) and every.result["missing"] == 0


def test_a_long_remeasure_is_a_job_that_a_cancel_stops_between_runs(eng, run_id, monkeypatch):
    """The request only queues it: the runs are measured by the job, which reports progress and stops when told."""
    more = [eng.follow(eng.renders.submit(request(seed=s))).result["run_id"] for s in (11, 12)]
    entered, go = threading.Event(), threading.Event()
    recorder = eng.core.recorder  # measures an internal: each run's remeasure is held, to cancel between two runs
    remeasure = recorder.remeasure

    def slow(run):
        entered.set()
        go.wait(60)
        return remeasure(run)

    monkeypatch.setattr(recorder, "remeasure", slow)
    job = eng.history.remeasure([run_id, *more])
    assert job.kind == "remeasure" and job.state in ("queued", "running")
    assert entered.wait(60)
    eng.jobs.cancel(job.id)
    go.set()
    ended = eng.jobs.wait(job.id, 20)
    for _ in range(10):
        if ended.done:
            break
        ended = eng.jobs.wait(job.id, 20)
    assert ended.state == "cancelled" and ended.total == 3 and ended.step <= 1


def test_the_png_and_sidecar_read_after_a_remeasure(eng, run_id):
    path = Path(eng.history_store.get(run_id)["outputs"][0])
    eng.follow(eng.history.remeasure([run_id]))
    assert read_png(path)["run_id"] == run_id
    assert json.loads(path.with_suffix(".json").read_text())["run_id"] == run_id
    with Image.open(path) as im:
        im.verify()


def test_the_cli_measures_again_through_the_job(eng, run_id, capsys):
    from engine.cli import main

    args = ["metrics", "--profile", "tiny", "--data-dir", str(eng.data_dir), "--device", "cpu"]
    assert main([*args, "--run", run_id, "--run", run_id]) == 0
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert said["recomputed"] == 1 and said["missing"] == 0
    assert main([*args, "--run", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no run 'nope' in the history" in err and len(err.splitlines()) == 1
