"""A designer's own SD 1.5 checkpoint (one original-layout .safetensors file) through diffusers' real
`from_single_file`, offline, on the tiny profile: exact round trip, a different model renders differently, and files
that are not SD 1.5 checkpoints are refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import PREFIXES, load_single_file, save_single_file
from engine.errors import ModelUnavailable
from tests.conftest import line_sketch


@pytest.fixture(scope="module")
def base(tiny_models) -> Path:
    return tiny_models / "stable-diffusion-v1-5"


@pytest.fixture(scope="module")
def controlnet(tiny_models):
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(tiny_models / "sd-controlnet-canny")


@pytest.fixture(scope="module")
def checkpoint(base, tmp_path_factory) -> Path:
    return save_single_file(base, tmp_path_factory.mktemp("ckpt") / "mine.safetensors")


def folder_models(base: Path) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    return {
        "unet": UNet2DConditionModel.from_pretrained(base, subfolder="unet"),
        "vae": AutoencoderKL.from_pretrained(base, subfolder="vae"),
        "text_encoder": CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
    }


def render(pipe) -> np.ndarray:
    return pipe(
        "a house",
        image=line_sketch(64, 64),
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="np",
    ).images


def test_round_trip_gives_every_weight_of_the_folder(base, controlnet, checkpoint):
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith(tuple(PREFIXES.values())) for k in keys)  # the original layout, nothing else
    # tiny: 3 blocks × 1 layer; up block 0's upsampler follows a resnet, up block 1's a cross-attention
    assert {
        "model.diffusion_model.output_blocks.1.1.conv.weight",
        "model.diffusion_model.output_blocks.3.2.conv.weight",
    } <= set(keys)

    pipe = load_single_file(checkpoint, base, controlnet, dtype=torch.float32)
    assert pipe.controlnet is controlnet and pipe.safety_checker is None
    for part, model in folder_models(base).items():
        want, got = model.state_dict(), getattr(pipe, part).state_dict()
        assert want.keys() == got.keys(), part
        unequal = [k for k in want if not torch.equal(want[k], got[k])]
        assert not unequal, f"{part}: {unequal[:3]}"


def test_a_perturbed_checkpoint_is_another_model_and_renders(base, controlnet, checkpoint, tmp_path):
    from diffusers import StableDiffusionControlNetPipeline

    tuned = load_single_file(
        save_single_file(base, tmp_path / "tuned.safetensors", perturb_seed=7), base, controlnet, dtype=torch.float32
    )
    plain = StableDiffusionControlNetPipeline.from_pretrained(
        base, controlnet=controlnet, safety_checker=None, requires_safety_checker=False
    )
    plain.set_progress_bar_config(disable=True)
    want, got = plain.unet.state_dict(), tuned.unet.state_dict()
    assert any(not torch.equal(want[k], got[k]) for k in want)
    assert all(
        torch.equal(a, b) for a, b in zip(plain.vae.state_dict().values(), tuned.vae.state_dict().values(), strict=True)
    )

    image, reference = render(tuned), render(plain)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
    assert np.abs(image - reference).max() > 1e-3


def test_pickles_are_refused_unless_allowed(base, controlnet, checkpoint, tmp_path):
    from safetensors.torch import load_file

    ckpt = tmp_path / "mine.ckpt"
    with pytest.raises(ModelUnavailable, match="pickled checkpoint") as err:
        load_single_file(ckpt, base, controlnet, dtype=torch.float32)  # refused before the file is even looked at
    assert err.value.fix and "\n" not in str(err.value)

    torch.save({"state_dict": load_file(str(checkpoint))}, ckpt)  # as the original training code saved them
    pipe = load_single_file(ckpt, base, controlnet, dtype=torch.float32, allow_pickle=True)
    assert torch.equal(pipe.unet.conv_in.weight, folder_models(base)["unet"].conv_in.weight)


def test_what_is_not_an_sd15_checkpoint_is_one_line(base, controlnet, checkpoint, tmp_path):
    def refusal(path: Path, config: Path = base) -> str:
        with pytest.raises(ModelUnavailable) as err:
            load_single_file(path, config, controlnet, dtype=torch.float32)
        assert err.value.fix and "\n" not in str(err.value)
        return err.value.message

    text = tmp_path / "x.safetensors"
    text.write_text("not weights at all")
    assert refusal(text).startswith("'x.safetensors' is not an SD 1.5 checkpoint: not a readable safetensors file")
    assert "not found" in refusal(tmp_path / "gone.safetensors")
    assert "holds no UNet" in refusal(base / "unet" / "diffusion_pytorch_model.safetensors")  # diffusers layout

    other = tmp_path / "other-family"  # the same file against a config with another block layout
    shutil.copytree(base, other)
    config = json.loads((other / "unet" / "config.json").read_text())
    (other / "unet" / "config.json").write_text(json.dumps({**config, "layers_per_block": 2}))
    assert "lacks" in refusal(checkpoint, other)
