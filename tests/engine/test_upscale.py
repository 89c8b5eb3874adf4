"""Upscaling (issue 32) on the tiny profile: `generate --upscale` as a user types it, the upscale operation's new run
and its record, the pixel limit, the refine hook, tiled against untiled, and the loader on Real-ESRGAN's own key
layout (the official names at toy size), safetensors by default and pickles only where allowed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.cli import main
from engine.errors import BadInput, ModelUnavailable, NotFound
from engine.metadata import read_png
from engine.schema import GenerateRequest
from engine.settings import Settings
from engine.upscaler import Tiling, load_upscaler, run_tiled
from tests.conftest import make_data_dir, make_engine


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_models) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("upscale-data"), tiny_models, warm=True)


@pytest.fixture(scope="module")
def engine(data_dir):
    return make_engine(data_dir, max_input_pixels=200_000)


def render(engine, size: int = 64, **kw):
    values = {"prompt": "a walnut sideboard", "size": size, "steps": 2, "seed": 11, "use_style": False, **kw}
    return engine.generate(GenerateRequest.build(**values))


def upscaled(engine, run_id: str, index: int = 0, factor: int = 2, refine: bool = False):
    job = engine.follow(engine.renders.upscale(run_id, index, factor, refine))
    return engine.measured(job.id)


def test_generate_upscale_2_doubles_the_size_and_records_it(capsys, data_dir):
    code = main(["generate", "--profile", "tiny", "--data-dir", str(data_dir), "--prompt", "a red barn", "--size",
                 "64", "--steps", "2", "--seed", "3", "--no-style", "--upscale", "2"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["size"] == [128, 128] and report["upscale"] == 2 and report["kind"] == "upscale"
    kept = Path(report["output"])
    with Image.open(kept) as im:
        assert im.size == (128, 128)
        assert "Postprocess upscale by: 2" in im.text["parameters"] and "Size: 128x128" in im.text["parameters"]
    # one record in three places, linked to the render it came from
    png_meta = read_png(kept)
    sidecar = json.loads(kept.with_suffix(".json").read_text())
    row = make_engine(data_dir).history.get(report["run_id"])
    for meta in (png_meta, sidecar, row.metadata):
        assert meta["upscale"]["factor"] == 2 and meta["width"] == 128 and meta["height"] == 128
        assert meta["upscale"]["source"] == {"run_id": report["source_run_id"], "index": 0}
        assert meta["upscale"]["architecture"] == "RRDBNet" and meta["upscale"]["scale"] == 4
        assert meta["measured"] is True and meta["seed"] == 3 and meta["prompt"] == "a red barn"
    source = make_engine(data_dir).history.get(report["source_run_id"])
    assert source.metadata["width"] == 64 and "upscale" not in source.metadata


@pytest.mark.parametrize(("value", "said"), [("3", "invalid choice: 3"), ("two", "invalid int value")])
def test_a_bad_factor_is_one_line_and_exit_2(capsys, data_dir, value, said):
    code = main(["generate", "--profile", "tiny", "--data-dir", str(data_dir), "--prompt", "a barn", "--upscale",
                 value])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and said in err and "Traceback" not in err
    code = main(["generate", "--profile", "tiny", "--data-dir", str(data_dir), "--prompt", "a barn",
                 "--upscale-refine"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "--upscale-refine goes with --upscale" in err


def test_upscale_4_of_one_variation_is_a_new_run_and_the_source_stays(engine):
    source = render(engine, variations=2)
    made = upscaled(engine, source.run_id, index=1, factor=4)
    assert made.run_id != source.run_id and len(made.png) == 1
    assert made.images()[0].size == (256, 256)
    assert made.seeds == [source.seeds[1]] and made.metadata["upscale"]["source"]["index"] == 1
    assert made.metadata["kind"] == "upscale" and made.measured and made.metadata["metrics"][0]["clip_score"] >= 0
    assert engine.history.get(made.run_id).metadata["upscale"]["factor"] == 4
    assert engine.history.get(source.run_id).images == 2  # the source run is as it was


def test_x2_is_x4_then_lanczos(engine):
    """×2 runs the ×4 model and halves its output (Lanczos), as peers do: the same pixels as ×4 downscaled."""
    source = render(engine)
    x2 = upscaled(engine, source.run_id, factor=2).images()[0]
    x4 = upscaled(engine, source.run_id, factor=4).images()[0]
    halved = np.asarray(x4.resize(x2.size, Image.Resampling.LANCZOS)).astype(int)
    assert np.abs(np.asarray(x2).astype(int) - halved).max() <= 1


def test_bad_upscales_are_one_line(engine):
    source = render(engine, size=128)  # 128² × 4 = 512² = 262 k pixels, over this engine's 200 k
    with pytest.raises(BadInput, match=r"would make 512×512 \(0.3 M pixels\), over this engine's limit") as caught:
        engine.renders.upscale(source.run_id, 0, 4)
    assert "\n" not in str(caught.value)
    assert upscaled(engine, source.run_id, factor=2).images()[0].size == (256, 256)  # ×2 fits
    with pytest.raises(BadInput, match="has 1 image; there is no image 3"):
        engine.renders.upscale(source.run_id, 3, 2)
    with pytest.raises(NotFound, match="no run 'nope'"):
        engine.renders.upscale("nope", 0, 2)
    with pytest.raises(BadInput, match="factor must be 2 or 4"):
        engine.renders.upscale(source.run_id, 0, 3)
    wide = render(engine, aspect="9:1").run_id  # 576×64: ×2 fits the pixels, not a render's 1024 px a side
    with pytest.raises(BadInput, match="at most 1024 px a side; 576×64 ×2 would be 1152×128"):
        engine.renders.upscale(wide, 0, 2, refine=True)


def test_refine_renders_the_upscale_again_at_low_strength(engine):
    source = render(engine)
    made = upscaled(engine, source.run_id, factor=2, refine=True)
    meta = made.metadata
    assert made.images()[0].size == (128, 128) and meta["kind"] == "upscale"
    assert meta["upscale"]["refine"]["strength"] == 0.3 and meta["params"]["strength"] == 0.3
    assert meta["upscale"]["refine"]["control"] in ("tile", "canny")  # the tile ControlNet where registered
    assert meta["upscale"]["source"]["run_id"] == source.run_id and meta["seed"] == source.seeds[0]
    assert engine.history.get(made.run_id).metadata["upscale"]["refine"] is not None


# ---- tiling and loading, below the interface ------------------------------------------------------------------
def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def test_tiles_give_the_untiled_pixels_and_no_seams(data_dir):
    upscaler = load_upscaler(Settings(profile="tiny", data_dir=data_dir, device="cpu"), "cpu", torch.float32)
    image = noise(88, 72)
    whole = np.asarray(run_tiled(upscaler, image, Tiling(tile=512, overlap=0, pad=0))).astype(int)
    seen = []
    tiled = run_tiled(upscaler, image, Tiling(tile=40, overlap=8, pad=16), on_tile=lambda d, n: seen.append((d, n)))
    diff = np.abs(np.asarray(tiled).astype(int) - whole)
    assert tiled.size == (352, 288) and seen[-1] == (6, 6)  # 3 × 2 tiles, each reported
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())
    assert whole.std() > 5  # the tiny model's output does depend on the image: the comparison means something


def official_layout(feat: int, grow: int, blocks: int, in_ch: int = 3) -> dict[str, tuple[int, ...]]:
    """RealESRGAN_x4plus's key names and shapes (xinntao/Real-ESRGAN, BasicSR's RRDBNet), written out by hand."""
    shapes: dict[str, tuple[int, ...]] = {"conv_first": (feat, in_ch, 3, 3)}
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                shapes[f"body.{b}.rdb{r}.conv{c}"] = (grow if c < 5 else feat, feat + (c - 1) * grow, 3, 3)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (feat, feat, 3, 3)
    shapes["conv_last"] = (3, feat, 3, 3)
    out = {}
    for name, shape in shapes.items():
        out[f"{name}.weight"], out[f"{name}.bias"] = shape, (shape[0],)
    return out


def official_weights(feat: int = 8, grow: int = 4, blocks: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * 0.05 for k, shape in official_layout(feat, grow, blocks).items()}


def settings_for(path: Path, tmp_path: Path, **kw) -> Settings:
    return Settings(data_dir=tmp_path, device="cpu", upscaler_model=str(path), **kw)


def test_the_loader_takes_the_official_key_layout(tmp_path):
    weights = official_weights()
    bare = tmp_path / "RealESRGAN_x4plus.safetensors"
    save_file(weights, str(bare))
    up = load_upscaler(settings_for(bare, tmp_path), "cpu", torch.float32)
    assert (up.scale, up.architecture, up.loader) == (4, "RRDBNet", "built-in")
    assert set(up.net.state_dict()) == set(weights)  # exactly the official names, none missing, none left over
    image = noise(24, 16)
    out = run_tiled(up, image)
    assert out.size == (96, 64)

    # the official release's pickle: the EMA weights under params_ema (beside params), refused unless allowed
    release = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": weights, "params": official_weights(seed=2)}, release)
    with pytest.raises(ModelUnavailable, match="pickled checkpoint") as caught:
        load_upscaler(settings_for(release, tmp_path), "cpu", torch.float32)
    assert "DESIGN_STUDIO_ALLOW_PICKLE" in caught.value.fix
    pickled = load_upscaler(settings_for(release, tmp_path, allow_pickle=True), "cpu", torch.float32)
    assert np.array_equal(np.asarray(run_tiled(pickled, image)), np.asarray(out))  # the EMA weights, not params

    # a folder holding the file, named by the weight setting, as the hub's snapshot is
    folder = load_upscaler(
        Settings(data_dir=tmp_path, device="cpu", upscaler_model=str(tmp_path),
                 upscaler_weight="RealESRGAN_x4plus.safetensors"), "cpu", torch.float32,
    )  # fmt: skip
    assert np.array_equal(np.asarray(run_tiled(folder, image)), np.asarray(out))


def test_the_x2_variant_and_a_wrong_file_load_or_say_why(tmp_path):
    x2 = official_layout(8, 4, 1, in_ch=12)  # RealESRGAN_x2plus: the input pixel-unshuffled by 2
    path = tmp_path / "x2.safetensors"
    save_file({k: torch.randn(s) * 0.05 for k, s in x2.items()}, str(path))
    up = load_upscaler(settings_for(path, tmp_path), "cpu", torch.float32)
    assert up.scale == 2 and run_tiled(up, noise(21, 15)).size == (42, 30)  # odd sides: reflected, cropped back

    wrong = tmp_path / "other.safetensors"
    save_file({"model.0.weight": torch.zeros(8, 3, 3, 3)}, str(wrong))
    with pytest.raises(ModelUnavailable, match="not Real-ESRGAN's RRDBNet layout") as caught:
        load_upscaler(settings_for(wrong, tmp_path), "cpu", torch.float32)
    assert "\n" not in str(caught.value) and "spandrel" in caught.value.fix
    with pytest.raises(ModelUnavailable, match="has no file 'nope.safetensors'"):
        load_upscaler(
            Settings(data_dir=tmp_path, device="cpu", upscaler_model=str(tmp_path), upscaler_weight="nope.safetensors"),
            "cpu", torch.float32,
        )  # fmt: skip
