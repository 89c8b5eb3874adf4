"""FLUX text-to-image on the tiny random-weight FLUX.1-schnell, through the same from_pretrained path as the real id."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import BadInput, Cancelled, ModelUnavailable
from engine.models import load_flux
from engine.render.flux import FluxGenerator
from engine.render.sd15 import Params
from engine.tiny import build_tiny_flux, build_tiny_flux_lora

SIZE = 64
STEPS = 2


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory):
    return build_tiny_flux(tmp_path_factory.mktemp("flux") / "FLUX.1-schnell")


@pytest.fixture(scope="module")
def generator(tiny_flux):
    return FluxGenerator(load_flux(tiny_flux, None, "cpu", torch.float32))


def params(seeds: list[int], **kw) -> Params:
    base = dict(
        prompt="studio photo of a red cotton t-shirt",
        negative_prompt="",
        control=None,
        references=[],
        seeds=seeds,
        width=SIZE,
        height=SIZE,
        steps=STEPS,
        guidance=0.0,
    )
    return Params(**{**base, **kw})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_builds_the_real_repo_layout(tiny_flux):
    for name in ("model_index.json", "scheduler/scheduler_config.json", "tokenizer_2/spiece.model"):
        assert (tiny_flux / name).is_file(), name
    for sub in ("transformer", "vae"):
        assert (tiny_flux / sub / "diffusion_pytorch_model.safetensors").is_file()
    for sub in ("text_encoder", "text_encoder_2"):
        assert (tiny_flux / sub / "model.safetensors").is_file()
    assert not list(tiny_flux.rglob("*.bin"))


def test_renders_one_image_per_seed_at_the_requested_size(generator):
    progress = []
    out = generator.run(params([1, 2]), on_progress=progress.append)
    assert len(out.images) == 2
    assert all(isinstance(im, Image.Image) and im.size == (SIZE, SIZE) for im in out.images)
    assert not np.array_equal(pixels(out.images[0]), pixels(out.images[1]))
    assert [pr.step for pr in progress] == list(range(1, STEPS + 1))
    assert all(pr.stage == "denoise" and pr.total == STEPS for pr in progress)
    assert len(out.timings["steps"]) == STEPS
    assert out.timings["style_encode"] == 0.0
    assert {"denoise", "vae_decode"} <= out.timings.keys()


def test_same_seed_same_pixels(generator):
    first, second = (generator.run(params([7])).images[0] for _ in range(2))
    assert np.array_equal(pixels(first), pixels(second))


def test_sizes_round_down_to_multiples_of_16(generator):
    out = generator.run(params([1], width=SIZE + 15, height=SIZE + 1))
    assert out.images[0].size == (SIZE, SIZE)
    with pytest.raises(BadInput):
        generator.run(params([1], width=8))


def test_cancel_between_steps(generator):
    cancel = threading.Event()
    with pytest.raises(Cancelled, match="after 1 of"):
        generator.run(params([1]), on_progress=lambda pr: cancel.set(), cancel=cancel)


@pytest.mark.parametrize(
    "extra",
    [
        {"control": Image.new("RGB", (SIZE, SIZE), "white")},
        {"references": [(Image.new("RGB", (SIZE, SIZE), "red"), 1.0)]},
    ],
    ids=["sketch", "style-reference"],
)
def test_sketch_or_style_reference_is_bad_input(generator, extra):
    with pytest.raises(BadInput) as err:
        generator.run(params([1], **extra))
    assert "text only" in str(err.value) and "\n" not in str(err.value)


def test_missing_folder_is_model_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable) as err:
        load_flux(str(tmp_path / "no-such-flux"), None, "cpu", torch.float32)
    message = str(err.value)
    assert "hf download" in message and "no-such-flux" in message and "\n" not in message


def test_pickled_lora_is_refused(tiny_flux):
    with pytest.raises(ModelUnavailable, match="pickled"):
        load_flux(tiny_flux, "/somewhere/fashion-lora.bin", "cpu", torch.float32)


def test_lora_changes_the_pixels(tiny_flux, generator, tmp_path):
    lora = build_tiny_flux_lora(tmp_path / "lora", generator.pipe.transformer.config)
    with_lora = FluxGenerator(load_flux(tiny_flux, lora, "cpu", torch.float32))
    plain, styled = generator.run(params([3])).images[0], with_lora.run(params([3])).images[0]
    assert styled.size == plain.size
    assert not np.array_equal(pixels(plain), pixels(styled))
    # the folder works as well as the file, as a hub id's cached snapshot does
    assert load_flux(tiny_flux, lora.parent, "cpu", torch.float32) is not None


def test_the_engine_renders_flux_from_text_and_keeps_it_like_any_run(fresh_engine):
    from engine.errors import BadInput
    from engine.schema import GenerateRequest
    from tests.conftest import line_sketch, png

    request = GenerateRequest.build(prompt="a red wool jacket, product photo", model="flux", size=64, steps=2, seed=8)
    first, again = fresh_engine.generate(request), fresh_engine.generate(request)
    assert first.images()[0].size == (64, 64)
    assert np.array_equal(pixels(first.images()[0]), pixels(again.images()[0]))
    meta = fresh_engine.history.get(first.run_id).metadata
    assert meta["params"]["model"] == "flux" and meta["models"]["base"].endswith("FLUX.1-schnell")
    assert meta["models"]["lora"].endswith("flux-lora") and meta["styles"] == []
    assert meta["metrics"][0]["clip_score"] is not None
    with pytest.raises(BadInput, match="FLUX renders from text only"):
        fresh_engine.generate(request.model_copy(update={"sketch": png(line_sketch())}))
