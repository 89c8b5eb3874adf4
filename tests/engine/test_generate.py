"""The whole chain on the tiny profile: sketch + prompt → image with metadata everywhere."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadInput, Cancelled
from engine.metadata import read_png
from engine.schema import GenerateRequest


def request(sketch: bytes | None, **kw) -> GenerateRequest:
    values = {"prompt": "a timber cabin at dusk", "sketch": sketch, "size": 64, "steps": 2, "seed": 7}
    return GenerateRequest.build(**{**values, **kw})


def pixels(result, i: int = 0) -> np.ndarray:
    return np.asarray(result.images()[i], dtype=np.int16)


def saved_files(engine, run_id: str) -> list[Path]:
    """A run's PNGs where the engine keeps them: under outputs/ of the data folder the test gave it."""
    return sorted(Path(engine.settings.data_dir).glob(f"outputs/*/{run_id}-*.png"))


def test_sketch_and_prompt_give_an_image_of_the_requested_size_with_metadata_everywhere(engine, sketch_bytes):
    result = engine.generate(request(sketch_bytes))
    assert result.images()[0].size == (96, 64)  # 96×64 sketch, short side 64
    [path] = saved_files(engine, result.run_id)
    assert path.read_bytes() == result.png[0] == engine.history.image(result.run_id, 0)

    in_png = read_png(path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    row = engine.history.get(result.run_id).model_dump()
    assert in_png == sidecar
    assert in_png["seed"] == 7 and in_png["prompt"] == "a timber cabin at dusk"
    assert in_png["params"]["steps"] == 2 and in_png["edge_mode"] == "lines"
    assert in_png["models"]["base"].endswith("stable-diffusion-v1-5")
    assert [s for s in in_png["styles"] if s["used"]], "the retrieved style is recorded"
    assert set(in_png["timings"]) >= {"edges", "retrieval", "denoise", "vae_decode", "total"}
    assert {k: v for k, v in row["metadata"].items() if k != "metrics"} == {
        k: v for k, v in in_png.items() if k not in ("index", "metrics")
    }
    # how faithful it is, measured right after it was made and kept with it
    assert row["metadata"]["metrics"] == [in_png["metrics"]]
    assert set(in_png["metrics"]) == {
        "clip_score",
        "style_similarity",
        "edge_f1",
        "edge_precision",
        "edge_recall",
        "chamfer",
    }
    assert 0 <= in_png["metrics"]["clip_score"] <= 100 and 0 <= in_png["metrics"]["edge_f1"] <= 1
    assert row["images"] == 1

    # the sketch itself is kept, so a result can be restored with its sketch
    with (
        Image.open(io.BytesIO(engine.history.sketch(result.run_id))) as kept,
        Image.open(io.BytesIO(sketch_bytes)) as drawn,
    ):
        assert np.array_equal(np.asarray(kept.convert("RGB")), np.asarray(drawn.convert("RGB")))
    # other tools read the settings from the A1111 `parameters` chunk
    with Image.open(path) as im:
        params = im.text["parameters"]
    assert params.startswith("a timber cabin at dusk\n")
    assert "Steps: 2, Sampler: UniPC, CFG scale: 7.5, Seed: 7, Size: 96x64" in params


def test_same_seed_same_pixels_other_seed_other_pixels(engine, sketch_bytes):
    a = engine.generate(request(sketch_bytes, seed=11))
    b = engine.generate(request(sketch_bytes, seed=11))
    c = engine.generate(request(sketch_bytes, seed=12))
    assert np.array_equal(pixels(a), pixels(b))
    assert np.abs(pixels(a) - pixels(c)).max() > 0


def test_no_seed_picks_one_and_records_it(engine, sketch_bytes):
    result = engine.generate(request(sketch_bytes, seed=None))
    again = engine.generate(request(sketch_bytes, seed=result.seeds[0]))
    assert np.array_equal(pixels(result), pixels(again))


def test_variations_use_consecutive_seeds(engine, sketch_bytes):
    result = engine.generate(request(sketch_bytes, seed=5, variations=3))
    assert result.seeds == [5, 6, 7]
    assert len(result.images()) == len(saved_files(engine, result.run_id)) == 3
    assert [read_png(io.BytesIO(b))["seed"] for b in result.png] == [5, 6, 7]
    assert np.abs(pixels(result, 0) - pixels(result, 1)).max() > 0


def test_blend_weights_change_the_output(engine, sketch_bytes):
    names = [s.name for s in engine.styles.list()[:2]]
    even = engine.generate(request(sketch_bytes, blend=[{"style": names[0]}, {"style": names[1]}], style_strength=2))
    skew = engine.generate(
        request(sketch_bytes, blend=[{"style": names[0]}, {"style": names[1], "weight": 0.1}], style_strength=2)
    )
    assert [s["weight"] for s in skew.metadata["styles"]] == [1.0, 0.1]
    assert np.abs(pixels(even) - pixels(skew)).max() > 0


def test_explicit_style_bypasses_retrieval_and_style_strength_matters(engine, sketch_bytes):
    name = engine.styles.list()[0].name
    strong = engine.generate(request(sketch_bytes, style=name, style_strength=2))
    none = engine.generate(request(sketch_bytes, style=name, style_strength=0))
    assert [s["name"] for s in strong.metadata["styles"]] == [name]
    assert np.abs(pixels(strong) - pixels(none)).max() > 0


def test_style_only_applies_the_reference_to_fewer_blocks(engine, sketch_bytes):
    name = engine.styles.list()[0].name
    full = engine.generate(request(sketch_bytes, style=name, style_strength=2))
    style_only = engine.generate(request(sketch_bytes, style=name, style_strength=2, style_only=True))
    assert style_only.metadata["params"]["style_only"] is True
    assert np.abs(pixels(full) - pixels(style_only)).max() > 0


def test_text_to_image_without_a_sketch(engine):
    result = engine.generate(request(None))
    assert result.images()[0].size == (64, 64)
    assert result.metadata["kind"] == "text" and result.metadata["edge_mode"] is None


def test_unknown_style_is_one_clear_error(engine, sketch_bytes):
    with pytest.raises(BadInput, match="unknown style 'no such style'"):
        engine.generate(request(sketch_bytes, style="no such style"))


def test_progress_reports_every_step(engine, sketch_bytes):
    seen = []
    # measures an internal: the pipeline's own progress callback, every step (a job's follower may see steps merged)
    engine.pipeline.generate(request(sketch_bytes, steps=3), on_progress=seen.append)
    steps = [(p.step, p.total) for p in seen if p.stage == "denoise"]
    assert list(dict.fromkeys(steps)) == [(1, 3), (2, 3), (3, 3)]  # every step, in order
    # a step is told again only when its preview is ready (the render forming, decoded beside it)
    repeats = [b for a, b in zip(seen, seen[1:], strict=False) if (a.step, a.total) == (b.step, b.total)]
    assert all(r.preview is not None and r.preview_step != 0 for r in repeats)
    assert all(b.elapsed >= a.elapsed for a, b in zip(seen, seen[1:], strict=False))


def test_cancel_between_steps_and_the_engine_stays_usable(engine, sketch_bytes):
    cancel = threading.Event()

    def stop_after_first(p):
        if p.stage == "denoise" and p.step >= 1:  # a follower sees the job's newest step
            cancel.set()

    before = len(engine.history.list(limit=1000))
    with pytest.raises(Cancelled, match=r"after \d+ of 20 steps"):
        engine.generate(request(sketch_bytes, steps=20), on_progress=stop_after_first, cancel=cancel)
    assert len(engine.history.list(limit=1000)) == before  # nothing half-made is recorded
    assert engine.generate(request(sketch_bytes)).images()


def test_two_callers_queue_for_the_pipeline_and_both_finish(engine, sketch_bytes):
    results, positions = [], []
    queued = threading.Event()

    def on_progress(p):
        if p.stage == "queued":
            positions.append(p.step)
            queued.set()

    def second_caller():
        results.append(engine.generate(request(sketch_bytes), on_progress=on_progress))

    # measures an internal: the executor's GPU queue (held here as a first render would hold it)
    with engine.executor.queue.slot():  # the first caller holds the GPU
        worker = threading.Thread(target=second_caller)
        worker.start()
        assert queued.wait(timeout=30)

        def waiting_for_the_gpu():  # the render job runs, and stands second in the GPU's queue
            jobs = [j for j in engine.jobs.list() if j.kind == "render"]
            return len(engine.executor.queue) == 2 and [(j.state, j.stage, j.step) for j in jobs] == [
                ("running", "queued", 1)
            ]

        deadline = time.monotonic() + 30
        while not waiting_for_the_gpu() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert waiting_for_the_gpu()
        assert positions == [1]  # the caller was told: queued, first in line
    worker.join(timeout=60)
    assert len(results) == 1 and results[0].images()
    assert len(engine.executor.queue) == 0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"prompt": "   "}, "prompt: the prompt is empty"),
        ({"steps": 0}, "steps: must be between 1 and 150 \\(got 0\\)"),
        ({"steps": 10000}, "steps: must be between 1 and 150 \\(got 10000\\)"),
        ({"guidance": 99}, "guidance: must be at most 30"),
        ({"variations": 50}, "variations: must be at most 8"),
        ({"size": 4096}, "size: must be at most 1024"),
        ({"seed": -1}, "seed: must be at least 0"),
    ],
)
def test_absurd_parameters_are_refused_with_one_line(values, message):
    with pytest.raises(BadInput, match=message):
        GenerateRequest.build(**{"prompt": "a chair", **values})


@pytest.mark.parametrize("scheduler", ["ddim", "euler_a"])
def test_other_schedulers_run_and_are_recorded(engine, sketch_bytes, scheduler):
    result = engine.generate(request(sketch_bytes, scheduler=scheduler))
    assert result.metadata["params"]["scheduler"] == scheduler
    again = engine.generate(request(sketch_bytes, scheduler=scheduler))
    assert np.array_equal(pixels(result), pixels(again))


def test_out_of_gpu_memory_is_one_clear_error_and_the_engine_recovers(engine, sketch_bytes, monkeypatch):
    # CUDA cannot run here, so the allocator's failure is raised where the pipeline would raise it.
    import torch

    from engine.errors import Busy

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine.executor.generator("sd15"), "style_embeds", out_of_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    with pytest.raises(Busy, match="ran out of memory for 2 image\\(s\\) at 96×64.*lower the size"):
        engine.generate(request(sketch_bytes, variations=2))
    monkeypatch.undo()
    assert len(engine.executor.queue) == 0
    assert engine.generate(request(sketch_bytes)).images()


def test_the_step_rate_leaves_out_the_first_steps_set_up(monkeypatch):
    """The first step also pays the prompt encoding: the ETA comes from the steps after it."""
    from engine.render import sd15 as generator

    clock = iter([0.0, 2.0, 2.5, 3.0, 3.5])  # start; step 1 took 2 s, the next ones 0.5 s
    monkeypatch.setattr(generator.time, "perf_counter", lambda: next(clock))
    seen = []
    step_clock = generator.StepClock(10, lambda: None, seen.append)

    class Pipe:
        _interrupt = False

    for i in range(4):
        step_clock.on_step_end(Pipe(), i, None, {})
    assert [p.step for p in seen] == [1, 2, 3, 4]
    assert seen[0].eta is None  # one step seen, its set-up included: no estimate yet
    assert seen[3].eta == 3.0  # 0.5 s × 6 steps to go
    assert step_clock.steps == [2.0, 0.5, 0.5, 0.5]


def test_what_a_page_asks_never_waits_for_a_running_render(engine, sketch_bytes):
    """A page rerun (health, styles, retrieval, history) is answered while a render runs: no lock is shared."""
    started, cancel = threading.Event(), threading.Event()

    def render():
        with contextlib.suppress(Cancelled):
            engine.generate(
                request(sketch_bytes, steps=150),
                on_progress=lambda p: p.stage == "denoise" and started.set(),
                cancel=cancel,
            )

    worker = threading.Thread(target=render)
    worker.start()
    assert started.wait(120)
    try:
        assert engine.capabilities().profile == "tiny"
        assert engine.styles.list() and engine.styles.search(text="warm wood", k=2)
        engine.history.list(limit=5)
        assert worker.is_alive()  # all answered while the render was still running
    finally:
        cancel.set()
        worker.join(timeout=120)
