"""Precision from the hardware: the detection (with faked processors), the override, and every model path of the
tiny profile computing in bf16 and recording it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import precision
from engine.masks import mask_png
from engine.metadata import read_png
from engine.precision import CpuFeatures, choose_dtype, cpu_features, precision_label
from engine.schema import GenerateRequest
from engine.settings import Settings
from tests.conftest import line_sketch, make_data_dir, make_engine, png

AMX = CpuFeatures("Intel(R) Xeon(R) Platinum 8480+", "AMX", frozenset({"avx2", "avx512_f", "amx_tile", "amx_bf16",
                  "amx_int8", "avx512_bf16", "avx512_vnni"}))  # fmt: skip
ZEN4 = CpuFeatures("AMD EPYC 9654", "AVX512", frozenset({"avx2", "avx512_f", "avx512_bf16", "avx512_vnni"}))
AVX2 = CpuFeatures("AMD EPYC 7B13", "AVX2", frozenset({"avx2"}))


@pytest.mark.parametrize(
    ("features", "dtype", "label"),
    [
        (AMX, torch.bfloat16, "bf16 (AMX)"),
        (ZEN4, torch.bfloat16, "bf16 (AVX512-BF16)"),
        (AVX2, torch.float32, "fp32"),
        (CpuFeatures(), torch.float32, "fp32"),  # nothing known: the safe choice
    ],
)
def test_auto_picks_bf16_only_on_a_cpu_with_bf16_units(features, dtype, label):
    assert choose_dtype("cpu", "auto", features) == dtype
    assert precision_label("cpu", dtype, features) == label


def test_gpus_keep_fp16_and_a_chosen_dtype_always_wins():
    assert choose_dtype("cuda", "auto", AVX2) == torch.float16
    assert choose_dtype("cuda:1", "auto", AMX) == torch.float16
    assert choose_dtype("mps", "auto", AVX2) == torch.float16
    assert choose_dtype("cpu", "float32", AMX) == torch.float32
    assert choose_dtype("cpu", "bfloat16", AVX2) == torch.bfloat16
    assert precision_label("cuda", torch.float16) == "fp16"
    # forced where it does not pay: said so
    assert precision_label("cpu", torch.bfloat16, AVX2) == "bf16 (emulated: slower here)"
    assert precision_label("cpu", torch.float32, AMX) == "fp32 (bf16 units unused: AMX)"


def test_int8_units_named():
    assert AMX.int8 == "AMX-INT8"
    assert ZEN4.int8 == "AVX512-VNNI"
    assert AVX2.int8 is None


def test_detection_reads_what_torch_reports(monkeypatch):
    caps = {name: False for name in precision.FLAGS} | {"amx_bf16": True, "amx_tile": True, "avx2": True}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {**caps, "cpu_name": "Xeon"})
    cpu_features.cache_clear()
    try:
        found = cpu_features()
        assert found.bf16 == "AMX" and "amx_bf16" in found.flags
        assert choose_dtype("cpu") == torch.bfloat16
    finally:
        cpu_features.cache_clear()


def test_detection_falls_back_to_the_kernels_flags(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    monkeypatch.delattr(torch.cpu, "get_capabilities")
    read = precision._proc_cpuinfo
    monkeypatch.setattr(precision, "_proc_cpuinfo", lambda path="": read(str(info)))
    cpu_features.cache_clear()
    try:
        found = cpu_features()
        assert found.model == "AMD EPYC 9654"
        assert {"avx2", "avx512_f", "avx512_bf16"} <= found.flags
        assert found.bf16 == "AVX512-BF16"
    finally:
        cpu_features.cache_clear()


def test_the_settings_resolve_auto_from_the_processor_and_the_variable_overrides(monkeypatch):
    monkeypatch.delenv("DESIGN_STUDIO_DTYPE", raising=False)  # (the suite pins fp32: tests/conftest.py)
    monkeypatch.setattr(precision, "cpu_features", lambda: AMX)
    assert Settings(device="cpu").resolve_dtype("cpu") == torch.bfloat16
    monkeypatch.setenv("DESIGN_STUDIO_DTYPE", "float32")
    assert Settings(device="cpu").resolve_dtype("cpu") == torch.float32
    monkeypatch.setattr(precision, "cpu_features", lambda: AVX2)
    monkeypatch.delenv("DESIGN_STUDIO_DTYPE")
    assert Settings(device="cpu").resolve_dtype("cpu") == torch.float32


def test_tuning_autocasts_to_bf16_on_a_cpu_only_where_the_engine_computes_in_bf16():
    from engine.tune.train import _amp

    assert _amp("cpu", "auto", torch.bfloat16) == (torch.bfloat16, False)
    assert _amp("cpu", "auto", torch.float32) == (None, False)
    assert _amp("cpu", "bf16", torch.float32) == (torch.bfloat16, False)
    assert _amp("cpu", "off", torch.bfloat16) == (None, False)
    assert _amp("cpu", "fp16", torch.float32) == (None, False)  # fp16 autocast is for CUDA


# ---- the tiny profile in bf16, every model path ----------------------------------------------------------------
SKETCH = png(line_sketch(64, 64))


@pytest.fixture(scope="module")
def bf16_engine(tmp_path_factory, tiny_models):
    """An engine on a (faked) AMX processor with `dtype: auto`, as a default install there."""
    mp = pytest.MonkeyPatch()
    mp.setattr(precision, "cpu_features", lambda: AMX)
    try:
        engine = make_engine(make_data_dir(tmp_path_factory.mktemp("bf16"), tiny_models, warm=True), dtype="auto")
        yield engine
        engine.close()
    finally:
        mp.undo()


def render(engine, prompt: str, **kw):
    """A small styled sketch render (64 px, 2 steps unless said), through the interface."""
    return engine.generate(GenerateRequest.build(**{"prompt": prompt, "sketch": SKETCH, "size": 64, "steps": 2, **kw}))


def recorded(engine, result) -> list[dict]:
    """The run's metadata as the result, the history row, the PNG's own text and the sidecar say it."""
    path = next(Path(engine.settings.data_dir).glob(f"outputs/*/{result.run_id}-0.png"))  # in the folder it was given
    return [result.metadata, engine.history.get(result.run_id).metadata, read_png(path),
            json.loads(path.with_suffix(".json").read_text())]  # fmt: skip


def test_a_default_render_on_a_bf16_cpu_is_bf16_and_says_so(bf16_engine):
    caps = bf16_engine.capabilities()
    assert (caps.dtype, caps.precision) == ("bfloat16", "bf16 (AMX)")
    assert caps.cpu["bf16"] == "AMX"
    pipe = bf16_engine.executor.generator("sd15").pipe  # the loaded parts themselves (an internal, measured here)
    for part in ("unet", "controlnet", "vae", "text_encoder", "image_encoder"):
        assert getattr(pipe, part).dtype == torch.bfloat16, part
    result = render(bf16_engine, "a chair", seed=3)
    for meta in recorded(bf16_engine, result):
        assert meta["dtype"] == "bfloat16"
    assert np.asarray(result.images()[0]).std() > 0  # an image, not a blank


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "fast", "steps": 2},  # the few-step LoRA, fused, and TAESD's decode
        {"mode": "live", "keep": False},
        {"steps": 2, "control": "lineart"},  # another ControlNet, loaded on first use
        {"steps": 2, "hires": 1.5, "hires_strength": 0.5},  # the refine pass
        {"steps": 2, "sketch": None},  # text only
    ],
    ids=["fast", "live", "lineart", "hires", "text"],
)
def test_every_render_path_runs_in_bf16(bf16_engine, kw):
    values = {"prompt": "a lamp", "sketch": SKETCH, "size": 64, "seed": 1, **kw}
    result = bf16_engine.generate(GenerateRequest.build(**values))
    image = np.asarray(result.images()[0])
    assert image.ndim == 3 and np.isfinite(image).all() and image.std() > 0
    assert result.metadata["dtype"] == "bfloat16"


def test_image_to_image_inpainting_and_regions_run_in_bf16(bf16_engine):
    start = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    inpainted = render(bf16_engine, "a rug", seed=2, init_image=png(start), mask=mask_png(mask), strength=0.8)
    out = np.asarray(inpainted.images()[0]).astype(int)
    assert (out[~_grown(mask)] == np.asarray(start)[~_grown(mask)]).all()  # the rest kept exactly, in bf16 too
    assert inpainted.metadata["dtype"] == "bfloat16"

    segment = bf16_engine.renders.segment(SKETCH, [[32, 32]])  # SAM2 in bf16
    assert 0 <= segment.area <= 1 and segment.mask().shape == (64, 64)
    left = np.zeros((64, 64), bool)
    left[:, :32] = True
    regions = render(bf16_engine, "a room", seed=4, regions=[{"mask": mask_png(left), "words": "walnut"}])
    assert regions.metadata["dtype"] == "bfloat16" and len(regions.metadata["regions"]) == 1


def _grown(mask: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)


def test_bf16_forced_by_the_variable_is_recorded_on_a_cpu_without_bf16_units(monkeypatch, tmp_path, tiny_models):
    monkeypatch.setattr(precision, "cpu_features", lambda: AVX2)
    monkeypatch.setenv("DESIGN_STUDIO_DTYPE", "bfloat16")
    engine = make_engine(make_data_dir(tmp_path / "data", tiny_models, warm=True))
    try:
        caps = engine.capabilities()
        assert (caps.dtype, caps.precision) == ("bfloat16", "bf16 (emulated: slower here)")
        result = render(engine, "a stool", seed=9)
        assert result.metadata["dtype"] == "bfloat16"
    finally:
        engine.close()


def test_a_cpu_without_bf16_units_stays_fp32(monkeypatch, tmp_path, tiny_models):
    monkeypatch.setattr(precision, "cpu_features", lambda: AVX2)
    engine = make_engine(make_data_dir(tmp_path / "data", tiny_models), dtype="auto")
    try:
        caps = engine.capabilities()
        assert (caps.dtype, caps.precision) == ("float32", "fp32")
    finally:
        engine.close()


def test_no_render_leaves_a_part_in_another_precision(bf16_engine):
    """diffusers' from_pipe casts shared modules to fp32 unless told: after image-to-image and another ControlNet
    the default pipeline's parts are still bf16 (on a GPU they would have doubled in memory)."""
    start = png(Image.new("RGB", (64, 64), "tan"))
    render(bf16_engine, "a vase", seed=6, init_image=start, strength=0.6, control="scribble")
    pipe = bf16_engine.executor.generator("sd15").pipe
    for part in ("unet", "controlnet", "vae", "text_encoder", "image_encoder"):
        assert getattr(pipe, part).dtype == torch.bfloat16, part


def test_the_catalog_translator_and_local_llm_run_in_the_engine_precision(bf16_engine):
    models = bf16_engine.catalog_models()
    translator = models.translator("de")
    assert isinstance(translator.translate(["ein roter Stuhl"])[0], str)  # runs (random weights: any text)
    assert next(translator.model.parameters()).dtype == torch.bfloat16
    llm = models.backend(None, "")
    assert llm.dtype == torch.bfloat16
