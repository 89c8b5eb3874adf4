"""Nothing kept that was not asked for: jobs.sqlite holds a job's inputs only while the job is queued or running,
and a `keep: false` render (a live frame) leaves nothing of its images on disk at all; after a restart such a render
fails with a line saying why instead of running again."""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import numpy as np
from PIL import Image

from engine.schema import GenerateRequest
from tests.conftest import REPO, line_sketch, make_data_dir, make_engine, png

MB = 1024 * 1024


def init_image(seed: int = 0) -> bytes:
    """A 1.5 MB photo-like PNG (noise does not compress)."""
    rng = np.random.default_rng(seed)
    data = png(Image.fromarray(rng.integers(0, 256, (720, 720, 3), dtype=np.uint8)))
    assert 1.4 * MB < len(data) < 1.7 * MB
    return data


def frame(image: bytes, keep: bool = False) -> GenerateRequest:
    return GenerateRequest(prompt="a chair", init_image=image, size=64, steps=1, keep=keep)


def store_size(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("jobs.sqlite*"))


def traces(data: Path, image: bytes) -> list[str]:
    """The files under `data` that hold a piece of the image, as bytes or as base64."""
    pieces = []
    for encoded in (image, base64.b64encode(image), base64.urlsafe_b64encode(image)):  # pydantic's JSON: urlsafe
        middle = len(encoded) // 2
        pieces.append(encoded[middle : middle + 64])
    found = []
    for path in data.rglob("*"):
        if path.is_file() and not path.is_symlink() and "models" not in path.relative_to(data).parts:
            content = path.read_bytes()
            if any(piece in content for piece in pieces):
                found.append(str(path.relative_to(data)))
    return found


def finished(engine, job_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    job = engine.jobs.get(job_id)
    while not job.done and time.monotonic() < deadline:
        job = engine.jobs.wait(job_id, timeout=5)
    return job


def test_cancelled_live_frames_leave_nothing_in_the_job_store(tmp_path, tiny_models):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    engine = make_engine(data)
    engine.jobs.workers = 0  # every frame stays queued until the next one cancels it, as on a busy live canvas
    try:
        image = init_image()
        engine.jobs.cancel(engine.renders.submit(frame(init_image(1))).id)  # the store made, the models loaded
        before = store_size(data)
        for _ in range(30):
            assert engine.jobs.cancel(engine.renders.submit(frame(image)).id).state == "cancelled"
        grown = store_size(data) - before
        assert grown < 0.25 * MB, f"30 cancelled live frames grew jobs.sqlite by {grown / MB:.1f} MB"
        assert traces(data, image) == []
        kept = engine.renders.submit(frame(init_image(2), keep=True))  # a kept render's inputs wait in the store…
        assert traces(data, init_image(2)) != []
        engine.jobs.cancel(kept.id)
        with closing(engine.jobs._db()) as db:  # … until it ends
            assert db.execute("SELECT payload FROM job WHERE id = ?", (kept.id,)).fetchone()[0] == "{}"
    finally:
        engine.close()


def test_a_live_frame_that_runs_writes_none_of_its_images(tmp_path, tiny_models):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    engine = make_engine(data)
    try:
        image, sketch = init_image(3), png(line_sketch(300, 200))
        request = frame(image).model_copy(update={"sketch": sketch, "mode": "live"})
        job = finished(engine, engine.renders.submit(request).id)
        assert job.state == "done", job.error
        assert engine.renders.result(job.id).png  # the frame is there for its caller, in memory
        assert traces(data, image) == [] and traces(data, sketch) == []
    finally:
        engine.close()


QUEUE_AND_DIE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from tests.conftest import make_engine, png, line_sketch
    from engine.schema import GenerateRequest

    engine = make_engine(Path(sys.argv[1]))
    engine.jobs.workers = 0  # queued, never run: the process dies first
    sketch = png(line_sketch())
    for keep in (False, True):
        request = GenerateRequest(prompt="a chair", sketch=sketch, size=64, steps=1, keep=keep)
        print(engine.renders.submit(request).id, flush=True)
    os._exit(0)
    """
)


def test_after_a_restart_a_live_frame_fails_with_the_reason_and_a_kept_render_runs(tmp_path, tiny_models):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    done = subprocess.run([sys.executable, "-c", QUEUE_AND_DIE, str(data)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    live_id, kept_id = done.stdout.split()
    engine = make_engine(data)  # the next engine on this folder takes the dead one's jobs over
    engine.jobs.start()
    try:
        live = finished(engine, live_id)
        assert live.state == "failed"
        assert "keep: false" in live.error and "restarted" in live.error and "render it again" in live.error
        kept = finished(engine, kept_id)
        assert kept.state == "done", kept.error
    finally:
        engine.close()
