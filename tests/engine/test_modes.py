"""Render modes (quality, fast, live) and step previews, through the real loading path on the tiny profile: the
few-step LoRA by `load_lora_weights`, TAESD by `AutoencoderTiny.from_pretrained`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import BadInput, ModelUnavailable, NotFound
from engine.metadata import read_png
from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from tests.conftest import REPO, TOKEN, Server, line_sketch, make_data_dir, make_engine, png
from ui.live import LiveScheduler

SKETCH = png(line_sketch(128, 128))


def request(mode: str, **kw) -> GenerateRequest:
    values = {"prompt": "a timber cabin", "sketch": SKETCH, "seed": 5, "size": 128, "mode": mode, **kw}
    return GenerateRequest.build(**values)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images()[0])


def saved_files(engine, run_id: str) -> list[Path]:
    """A run's PNGs where the engine keeps them: under outputs/ of the data folder the test gave it."""
    return sorted(Path(engine.settings.data_dir).glob(f"outputs/*/{run_id}-*.png"))


def test_each_mode_brings_its_steps_guidance_and_scheduler_unless_set():
    assert (request("quality").steps, request("quality").guidance, request("quality").scheduler) == (20, 7.5, "unipc")
    assert (request("fast").steps, request("fast").guidance, request("fast").scheduler) == (4, 1.0, "lcm")
    assert (request("live").steps, request("live").scheduler) == (2, "lcm")
    assert request("fast", steps=6).steps == 6  # what the caller sets wins
    with pytest.raises(BadInput, match="mode"):
        GenerateRequest.build(prompt="x", mode="turbo")
    with pytest.raises(BadInput, match="fast mode is for SD 1.5"):
        from engine.render.plan import check_model as check

        check(GenerateRequest.build(prompt="x", mode="fast", model="flux"))


@pytest.mark.parametrize("mode", ["quality", "fast", "live"])
def test_each_mode_renders_and_records_its_mode_lora_and_scheduler_everywhere(engine, mode):
    result = engine.generate(request(mode, steps=2))
    [path] = saved_files(engine, result.run_id)
    in_png, sidecar = read_png(path), json.loads(path.with_suffix(".json").read_text())
    row = engine.history.get(result.run_id).metadata
    for meta in (in_png, sidecar, row):
        assert meta["params"]["mode"] == mode
        assert meta["params"]["scheduler"] == {"quality": "unipc"}.get(mode, "lcm")
        lora = meta["models"]["lora"]
        assert (lora is None) if mode == "quality" else lora.endswith("lcm-lora-sdv1-5")
        # the tiny autoencoder decodes live frames, and fast ones on a CPU (as here)
        assert meta["models"]["vae"] == "full" if mode == "quality" else meta["models"]["vae"].endswith("taesd")
    with Image.open(path) as im:
        params = im.text["parameters"]
    if mode == "quality":
        assert "<lora:" not in params and "Mode:" not in params
    else:
        assert "<lora:lcm-lora-sdv1-5:1>" in params and f"Mode: {mode}" in params and "Sampler: LCM" in params
    # live on a CPU renders at most 256 px (here the request's 128 already is)
    assert result.images()[0].size == (128, 128)


def test_same_seed_and_mode_same_pixels_and_the_lora_is_switched_not_reloaded(engine):
    quality = pixels(engine.generate(request("quality", steps=3)))
    fast = pixels(engine.generate(request("fast")))
    live = pixels(engine.generate(request("live")))
    # switching back and forth gives the same pixels again: the LoRA is off exactly, not subtracted
    assert np.array_equal(quality, pixels(engine.generate(request("quality", steps=3))))
    assert np.array_equal(fast, pixels(engine.generate(request("fast"))))
    assert np.array_equal(live, pixels(engine.generate(request("live"))))
    # the LoRA changes the output: the same steps, scheduler and guidance without it differ
    plain = pixels(engine.generate(request("quality", steps=4, guidance=1.0, scheduler="lcm")))
    assert not np.array_equal(plain, fast)
    # measures an internal: the LoRA is loaded once and fused/unfused in the generator's own pipeline
    pipe = engine.executor.generator("sd15").pipe
    assert pipe.get_list_adapters() == {"unet": ["fast"]}  # loaded once, by name
    # fused for fast and live, and back in quality mode the base weights are the loaded ones, bit for bit
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items() if "lora_" not in k}
    engine.generate(request("fast", steps=1))
    engine.generate(request("quality", steps=1))
    after = pipe.unet.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base.items())
    loaded = engine.capabilities().loaded
    assert loaded["fast_lora"] and loaded["taesd"]


def test_a_frame_not_kept_comes_back_but_is_written_nowhere(engine):
    before = len(engine.history.list(limit=1000))
    job = engine.renders.submit(request("live", keep=False))
    assert engine.jobs.wait(job.id, 20).state in ("running", "done", "queued")
    while not engine.jobs.get(job.id).done:
        time.sleep(0.05)
    result = engine.renders.result(job.id)
    assert result.run_id.startswith("frame-") and result.files == []
    assert read_png_bytes(result.png[0])["params"]["mode"] == "live"
    assert len(engine.history.list(limit=1000)) == before
    assert not list(Path(engine.settings.data_dir).glob(f"outputs/*/{result.run_id}*"))
    with pytest.raises(NotFound, match="frame"):
        engine.renders.of_run("frame-20000101-000000-deadbeef")


def read_png_bytes(data: bytes) -> dict:
    import io

    from engine.metadata import CHUNK

    with Image.open(io.BytesIO(data)) as im:
        return json.loads(im.text[CHUNK])


def follow_previews(eng, job_id: str) -> list[tuple[int, bytes]]:
    seen = []
    info = eng.jobs.get(job_id)
    while not info.done:
        info = eng.jobs.wait(job_id, 5)
        if info.preview and (not seen or seen[-1][0] != info.preview_step):
            seen.append((info.preview_step, info.preview))
    assert info.state == "done", info.error
    return seen


def test_step_previews_arrive_while_a_render_runs_locally_and_over_http(tmp_path, tiny_models):
    eng = make_engine(make_data_dir(tmp_path / "data", tiny_models, warm=True))
    eng.load()
    slow = request("quality", steps=30, size=256)
    local = follow_previews(eng, eng.renders.submit(slow).id)
    with Server(eng) as server:
        remote = RemoteEngine(server.url, TOKEN)
        over_http = follow_previews(remote, remote.renders.submit(slow).id)
    eng.jobs.stop()
    for seen in (local, over_http):
        assert len(seen) >= 2, seen  # the render forming, more than once
        steps = [s for s, _ in seen]
        assert steps == sorted(steps) and 0 < steps[-1] < 30
        with Image.open(__import__("io").BytesIO(seen[-1][1])) as im:
            assert im.format == "JPEG" and max(im.size) <= 256


def test_a_pickled_lora_is_refused_without_the_opt_in(tmp_path, tiny_models):
    eng = make_engine(make_data_dir(tmp_path / "data", tiny_models), fast_lora_weight="lora.bin")
    with pytest.raises(ModelUnavailable, match="pickled"):
        eng.generate(request("fast", steps=1))


def test_cli_mode_flag_renders_and_records_it(tmp_path, tiny_models):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    sketch = tmp_path / "s.png"
    sketch.write_bytes(SKETCH)
    out = subprocess.run(
        [sys.executable, "-m", "engine", "generate", "--profile", "tiny", "--data-dir", str(data), "--device", "cpu",
         "--sketch", str(sketch), "--prompt", "a cabin", "--mode", "fast", "--seed", "3", "--size", "128"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    meta = read_png(Path(json.loads(out.stdout)["outputs"][0]))
    assert (meta["params"]["mode"], meta["params"]["steps"], meta["params"]["scheduler"]) == ("fast", 4, "lcm")


def test_live_scheduler_one_at_a_time_newest_wins_once_after_a_burst():
    live = LiveScheduler(quiet=0.25)
    assert live.wait(0.0) is None  # nothing yet
    live.see("a", 0.0)
    assert live.wait(0.1) == pytest.approx(0.15)  # not mid-edit: waits for the input to be still
    assert live.wait(0.3) == 0
    assert live.start() == "a"
    for t, sig in ((0.4, "b"), (0.5, "c"), (0.6, "d")):  # a burst while "a" renders
        live.see(sig, t)
        assert live.wait(t) is None  # one render at a time
    live.finish(ok=True)
    assert live.shown == "a" and live.superseded == 2  # b and c are never rendered
    assert live.wait(0.7) == pytest.approx(0.15)
    assert live.wait(0.9) == 0 and live.start() == "d"
    live.finish(ok=True)
    live.see("d", 1.0)
    assert live.wait(5.0) is None and live.rendered == 2  # once after the burst, and not again
    live.see("e", 6.0)
    live.start()
    live.finish(ok=False)
    assert live.wait(9.0) is None  # a failed input is not retried until it changes
