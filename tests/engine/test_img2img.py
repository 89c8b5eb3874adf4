"""Image-to-image, inpainting, the ControlNet types, the designer's LoRAs and checkpoints, and the hires fix, through
the real pipelines on the tiny profile (diffusers' ControlNet img2img / inpaint pipelines made by `from_pipe`, LoRAs
by `load_lora_weights`, ControlNets by `from_pretrained`)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import BadInput, ModelUnavailable, NotFound, TooLarge
from engine.metadata import read_png
from engine.model_files import CONTROLS
from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from engine.tiny import save_fast_lora
from tests.conftest import REPO, TOKEN, Server, line_sketch, make_data_dir, make_engine, png

SIZE = 96
SKETCH = png(line_sketch(SIZE, SIZE))


def photo(seed: int) -> Image.Image:
    """A 'photo': smooth colour blobs (something the autoencoder can give back)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BICUBIC)


def square_mask(lo: int = 32, hi: int = 64) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[lo:hi, lo:hi] = True
    return mask


def mask_png(mask: np.ndarray) -> bytes:
    return png(Image.fromarray(mask.astype(np.uint8) * 255))


def request(**kw) -> GenerateRequest:
    values = {"prompt": "a timber cabin", "seed": 5, "size": SIZE, "steps": 4, "use_style": False, **kw}
    return GenerateRequest.build(**values)


def pixels(result, i: int = 0) -> np.ndarray:
    return np.asarray(result.images()[i]).astype(np.int16)


def saved(result, i: int = 0) -> Image.Image:
    """An output as the engine saved it (its PNG text chunks: our metadata and the A1111 parameters line)."""
    return Image.open(io.BytesIO(result.png[i]))


def recorded(result, i: int = 0) -> dict:
    """The metadata inside an output's PNG."""
    return read_png(io.BytesIO(result.png[i]))


def round_trip(tiny_models: Path, image: Image.Image) -> np.ndarray:
    """What the tiny profile's autoencoder gives back for an image: the floor img2img at strength 0 can reach."""
    from diffusers import AutoencoderKL
    from diffusers.image_processor import VaeImageProcessor

    vae = AutoencoderKL.from_pretrained(tiny_models / "stable-diffusion-v1-5", subfolder="vae").eval()
    processor = VaeImageProcessor(vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1))
    with torch.inference_mode():
        x = processor.preprocess(image).to(vae.dtype)
        decoded = vae.decode(vae.encode(x).latent_dist.mode(), return_dict=False)[0]
    return np.asarray(processor.postprocess(decoded, output_type="pil")[0]).astype(np.int16)


@pytest.fixture(scope="module")
def walnut(tmp_path_factory, tiny_models) -> bytes:
    """A LoRA the designer made (random weights, shaped for the tiny SD 1.5 UNet), as a `.safetensors` file."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "stable-diffusion-v1-5", subfolder="unet")
    folder = tmp_path_factory.mktemp("lora")
    return save_fast_lora(unet, folder, rank=4, scale=0.5).read_bytes()


@pytest.fixture(scope="module")
def eng(tmp_path_factory, tiny_models, walnut):
    """An engine whose models folder holds a LoRA the designer added."""
    engine = make_engine(make_data_dir(tmp_path_factory.mktemp("data"), tiny_models, warm=True))
    assert engine.renders.add_model("lora", "walnut wood", walnut) == {
        "name": "walnut wood",
        "kind": "lora",
        "added": True,
    }
    return engine


def test_img2img_strength_0_gives_the_image_back_and_1_ignores_it(eng, tiny_models):
    a, b = photo(1), photo(2)
    kept = eng.generate(request(init_image=png(a), strength=0.0))
    assert kept.metadata["kind"] == "img2img" and kept.metadata["params"]["strength"] == 0.0
    # strength 0 takes no step: the image as the autoencoder gives it back (this random VAE's round trip is lossy)
    assert np.abs(pixels(kept) - round_trip(tiny_models, a)).max() <= 2

    def apart(strength: float) -> float:
        one = pixels(eng.generate(request(init_image=png(a), strength=strength)))
        two = pixels(eng.generate(request(init_image=png(b), strength=strength)))
        return float(np.abs(one - two).mean())

    # at 1 the start is pure noise: two very different images end nearly the same; at 0.25 they stay apart
    assert apart(1.0) < 0.35 * apart(0.25)


def test_inpainting_changes_pixels_only_inside_the_mask(eng):
    start = photo(3)
    mask = square_mask()
    result = eng.generate(request(init_image=png(start), mask=mask_png(mask), strength=0.9, variations=2))
    far = np.ones_like(mask)
    far[24:72, 24:72] = False  # beyond the feathered seam (a few pixels)
    for i in range(2):
        out = pixels(result, i)
        assert np.array_equal(out[far], np.asarray(start).astype(np.int16)[far])  # the rest: the original exactly
        assert np.abs(out[mask] - np.asarray(start).astype(np.int16)[mask]).mean() > 10  # inside: repainted
    meta = recorded(result)
    assert meta["kind"] == "inpaint" and meta["mask_hash"] and meta["init_hash"]
    with saved(result) as im:
        assert "Denoising strength: 0.9" in im.text["parameters"] and "Mask: inpaint" in im.text["parameters"]


def test_inpainting_with_a_sketch_follows_it_inside(eng):
    start = photo(4)
    result = eng.generate(
        request(sketch=SKETCH, init_image=png(start), mask=mask_png(square_mask(16, 80)), strength=1.0)
    )
    assert result.metadata["edge_mode"] == "lines" and result.edges is not None  # the map it followed, as a PNG
    assert "edge_f1" in result.metadata["metrics"][0]


@pytest.mark.parametrize("control", list(CONTROLS))
def test_each_controlnet_type_renders_and_is_recorded(eng, control):
    result = eng.generate(request(sketch=SKETCH, control=control))
    meta = recorded(result)
    assert meta["params"]["control"] == control
    expected = CONTROLS[control].tiny_folder  # the tiny profile's folder of its hub id
    assert meta["models"]["controlnet"].endswith(expected)
    assert meta["edge_mode"] == {"canny": "lines", "lineart": "lineart", "scribble": "scribble"}.get(control, control)
    with saved(result) as im:
        assert f"Model: {expected}" in im.text["parameters"]
    assert eng.capabilities().loaded.get(f"controlnet_{control}", control == "canny")


def test_controlnet_types_follow_different_maps_and_models(eng):
    outs = {c: pixels(eng.generate(request(sketch=SKETCH, control=c))) for c in ("canny", "lineart")}
    assert not np.array_equal(outs["canny"], outs["lineart"])


def test_a_lora_changes_the_output_and_weight_0_does_not(eng):
    plain = pixels(eng.generate(request(sketch=SKETCH)))
    with_lora = eng.generate(request(sketch=SKETCH, loras=[{"name": "walnut wood", "weight": 1.0}]))
    assert np.abs(pixels(with_lora) - plain).mean() > 1
    zero = eng.generate(request(sketch=SKETCH, loras=[{"name": "walnut wood", "weight": 0}]))
    assert np.array_equal(pixels(zero), plain)
    # switched off again exactly: the base model is untouched
    assert np.array_equal(pixels(eng.generate(request(sketch=SKETCH))), plain)
    meta = recorded(with_lora)
    assert meta["params"]["loras"] == [{"name": "walnut wood", "weight": 1.0}]
    with saved(with_lora) as im:
        assert im.text["parameters"].splitlines()[0] == "a timber cabin <lora:walnut wood:1>"


def test_a_lora_with_the_fast_mode_and_back(eng):
    fast = pixels(eng.generate(request(sketch=SKETCH, mode="fast")))
    both = eng.generate(request(sketch=SKETCH, mode="fast", loras=[{"name": "walnut wood", "weight": 0.7}]))
    assert not np.array_equal(pixels(both), fast)
    assert np.array_equal(pixels(eng.generate(request(sketch=SKETCH, mode="fast"))), fast)
    with saved(both) as im:
        assert "<lora:lcm-lora-sdv1-5:1> <lora:walnut wood:0.7>" in im.text["parameters"]


def test_hires_fix_doubles_the_size_and_keeps_the_composition(eng):
    base = eng.generate(request(sketch=SKETCH, seed=11))
    other = eng.generate(request(sketch=SKETCH, seed=12))
    hires = eng.generate(request(sketch=SKETCH, seed=11, hires=2.0, hires_strength=0.3))
    assert hires.images()[0].size == (2 * SIZE, 2 * SIZE)
    meta = recorded(hires)
    assert (meta["width"], meta["height"], meta["params"]["hires"]) == (2 * SIZE, 2 * SIZE, 2.0)
    down = np.asarray(hires.images()[0].resize((SIZE, SIZE), Image.Resampling.LANCZOS)).astype(np.int16)
    # the refine pass keeps the seed's composition: closer to its own first pass than another seed is
    assert np.abs(down - pixels(base)).mean() < np.abs(pixels(other) - pixels(base)).mean()
    assert 0 <= hires.metadata["metrics"][0]["edge_f1"] <= 1  # structure fidelity against the sketch, reported
    with saved(hires) as im:
        assert "Hires upscale: 2.0" in im.text["parameters"]


def test_hires_fix_of_a_text_only_render(eng):
    result = eng.generate(request(size=64, hires=1.5, steps=2))
    assert result.images()[0].size == (96, 96) and result.metadata["kind"] == "text"


def test_a_past_run_is_repeated_from_its_metadata(eng):
    plain = eng.generate(request(sketch=SKETCH))
    again = GenerateRequest.from_metadata(plain.metadata, SKETCH)  # strength was not used: the default
    assert (again.strength, again.hires, again.control) == (0.75, 1.0, "canny")
    start = png(photo(9))
    reworked = eng.generate(request(init_image=start, strength=0.6, control="softedge", hires=1.5))
    again = GenerateRequest.from_metadata(reworked.metadata, None, init_image=start)
    assert (again.strength, again.control, again.hires, again.hires_strength) == (0.6, "softedge", 1.5, 0.35)


def test_a_text_only_render_takes_the_aspect_asked(eng):
    def size(**kw) -> tuple[int, int]:
        return eng.generate(request(steps=1, **kw)).images()[0].size

    assert size(size=64, aspect="16:9") == (112, 64)
    assert size(size=64, aspect="3:4") == (64, 88)
    # a sketch's own aspect wins
    assert size(sketch=SKETCH, aspect="16:9") == (SIZE, SIZE)
    with pytest.raises(BadInput, match="aspect"):
        request(aspect="wide")


def test_bad_inputs_are_one_line(eng, walnut):
    with pytest.raises(BadInput, match="a mask needs the image to repaint"):
        request(mask=mask_png(square_mask()))
    with pytest.raises(BadInput, match=r"the mask is 50×50 but must be 96×96"):
        eng.renders.submit(request(init_image=png(photo(1)), mask=mask_png(np.ones((50, 50), bool))))
    with pytest.raises(BadInput, match="hires: must be at most 2"):
        request(hires=3)
    with pytest.raises(NotFound, match=r"no lora 'teak' on the engine \(it has: walnut wood\)"):
        eng.renders.submit(request(loras=[{"name": "teak"}]))
    with pytest.raises(NotFound, match="no checkpoint 'dreamy'"):
        eng.renders.submit(request(checkpoint="dreamy"))
    with pytest.raises(BadInput, match="not a .safetensors file"):
        eng.renders.add_model("lora", "evil", b"\x80\x04pickle" * 10)
    with pytest.raises(BadInput, match="characters that are not allowed"):
        eng.renders.add_model("lora", "wood|<b>", walnut)
    with pytest.raises(BadInput, match="init image needs SD 1.5"):
        eng.renders.submit(GenerateRequest.build(prompt="x", model="flux", init_image=png(photo(1))))


def test_a_lora_for_another_model_is_refused_in_one_line(eng, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "sdxl.safetensors"
    save_file({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": torch.zeros(4, 999)}, str(path))
    eng.renders.add_model("lora", "sdxl thing", path.read_bytes())
    with pytest.raises(ModelUnavailable, match="LoRA 'sdxl thing' does not fit"):
        eng.generate(request(sketch=SKETCH, loras=[{"name": "sdxl thing"}]))
    # and the engine renders on
    assert eng.generate(request(sketch=SKETCH)).run_id


def test_model_upload_limits_and_listing(tmp_path, tiny_models):
    engine = make_engine(make_data_dir(tmp_path / "data", tiny_models), max_model_bytes=1000)
    with pytest.raises(TooLarge, match="over the 0 MB upload limit"):
        engine.renders.add_model("lora", "big", b"x" * 2000)
    listed = engine.renders.models()
    assert listed["loras"] == [] and [c["name"] for c in listed["controls"]] == list(CONTROLS)
    assert all(c["expects"] for c in listed["controls"])


def test_cli_flags_are_each_recorded_in_the_png(tmp_path, tiny_models, walnut):
    from engine.checkpoint import save_single_file

    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    files = {"sketch.png": SKETCH, "start.png": png(photo(6)), "mask.png": mask_png(square_mask())}
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    (tmp_path / "walnut.safetensors").write_bytes(walnut)
    save_single_file(tiny_models / "stable-diffusion-v1-5", tmp_path / "my-model.safetensors", perturb_seed=7)
    out = subprocess.run(
        [sys.executable, "-m", "engine", "generate", "--profile", "tiny", "--data-dir", str(data), "--device", "cpu",
         "--sketch", str(tmp_path / "sketch.png"), "--prompt", "a cabin", "--seed", "3", "--size", str(SIZE),
         "--steps", "4", "--init-image", str(tmp_path / "start.png"), "--strength", "0.6",
         "--mask", str(tmp_path / "mask.png"), "--checkpoint", str(tmp_path / "my-model.safetensors"),
         "--lora", f"{tmp_path / 'walnut.safetensors'}:0.5", "--control", "scribble", "--hires", "1.5"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["size"] == [144, 144] and report["kind"] == "inpaint" and report["control"] == "scribble"
    meta = read_png(Path(report["outputs"][0]))
    p = meta["params"]
    assert (p["strength"], p["control"], p["checkpoint"], p["hires"]) == (0.6, "scribble", "my-model", 1.5)
    assert p["loras"] == [{"name": "walnut", "weight": 0.5}] and meta["mask_hash"] and meta["init_hash"]
    assert meta["models"]["base"] == "my-model"
    with Image.open(report["outputs"][0]) as im:
        line = im.text["parameters"]
    assert "<lora:walnut:0.5>" in line and "Model: my-model" in line and "Denoising strength: 0.6" in line
    assert "Hires upscale: 1.5" in line and "control_v11p_sd15_scribble" in line
    # the files were kept on the engine by name: the next render names them
    listed = make_engine(data).renders.models()
    assert [m["name"] for m in listed["checkpoints"]] == ["my-model"] and [m["name"] for m in listed["loras"]] == [
        "walnut"
    ]


def test_remote_inpaint_with_a_lora_uploaded_over_http(eng, walnut):
    with Server(eng) as server:
        remote = RemoteEngine(server.url, TOKEN)
        assert remote.renders.add_model("lora", "walnut wood", walnut)["added"] is False  # the same file: kept once
        assert "walnut wood" in [m["name"] for m in remote.renders.models()["loras"]]
        start = photo(8)
        mask = square_mask()
        result = remote.generate(
            request(init_image=png(start), mask=mask_png(mask), loras=[{"name": "walnut wood", "weight": 0.8}])
        )
        far = np.ones_like(mask)
        far[24:72, 24:72] = False
        out = np.asarray(result.images()[0]).astype(np.int16)
        assert np.array_equal(out[far], np.asarray(start).astype(np.int16)[far])
        assert result.metadata["params"]["loras"] == [{"name": "walnut wood", "weight": 0.8}]
        with pytest.raises(NotFound, match="no lora 'teak'"):
            remote.renders.submit(request(loras=[{"name": "teak"}]))
