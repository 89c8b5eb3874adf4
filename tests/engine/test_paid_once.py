"""Paid once: a style's image embedding is encoded once per data folder (kept on disk across processes), a prompt's
text once per engine; the pixels are the same whichever way the numbers came."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.masks import mask_png
from engine.render.sd15 import Params
from engine.schema import GenerateRequest
from engine.style_embeds import StyleEmbeds
from tests.conftest import line_sketch, make_data_dir, make_engine, png


def styled(**kw) -> GenerateRequest:
    values = {"prompt": "a timber cabin", "sketch": png(line_sketch()), "size": 64, "steps": 2, "seed": 7}
    return GenerateRequest.build(**{**values, "style": "Terrazzo", "keep": False, **kw})


def calls_to(engine, part: str, monkeypatch) -> list[int]:
    """Count what the loaded pipeline's `part` (image_encoder, text_encoder) is asked to encode: measures an internal
    (how often an encoder runs), the renders themselves go through the interface."""
    module = getattr(engine.executor.generator("sd15").pipe, part)
    calls: list[int] = []
    forward = module.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(module, "forward", counting)
    return calls


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(im) for im in result.images()])


def embeds_on_disk(data: Path) -> list[Path]:
    return sorted((data / "embeds" / "ip-adapter").glob("*.safetensors"))


@pytest.fixture
def data(tmp_path, tiny_models) -> Path:
    return make_data_dir(tmp_path / "data", tiny_models, warm=True)


def render_in_new_engine(data: Path, request: GenerateRequest, monkeypatch, **settings):
    """A new engine on `data` (as a new process would be) renders `request`: (result, image encoder calls)."""
    engine = make_engine(data, **settings)
    try:
        calls = calls_to(engine, "image_encoder", monkeypatch)
        return engine.generate(request), len(calls)
    finally:
        engine.close()


# ---- style embeddings ------------------------------------------------------------------------------------------


def test_a_known_style_is_never_encoded_again_in_a_new_process(data, monkeypatch):
    first, encoded = render_in_new_engine(data, styled(), monkeypatch)
    assert encoded >= 1 and len(embeds_on_disk(data)) == encoded

    again, encoded_again = render_in_new_engine(data, styled(), monkeypatch)
    assert encoded_again == 0
    assert np.array_equal(pixels(again), pixels(first))


def test_an_engine_in_another_dtype_encodes_its_own(data, monkeypatch):
    _, fp32 = render_in_new_engine(data, styled(), monkeypatch, dtype="float32")
    _, bf16 = render_in_new_engine(data, styled(), monkeypatch, dtype="bfloat16")
    assert fp32 >= 1 and bf16 == fp32
    assert len(embeds_on_disk(data)) == fp32 + bf16
    dtypes = set()
    for path in embeds_on_disk(data):
        with safe_open(str(path), framework="pt") as f:
            dtypes.add(f.metadata()["dtype"])
    assert dtypes == {"float32", "bfloat16"}


def test_another_image_encoder_in_the_same_folder_encodes_again(tmp_path, tiny_models, monkeypatch):
    root = tmp_path / "data"
    (root / "models").mkdir(parents=True)
    shutil.copytree(tiny_models, root / "models" / "tiny")  # its own copy: its encoder is rewritten below
    data = make_data_dir(root, tiny_models, warm=True)
    first, encoded = render_in_new_engine(data, styled(style_strength=2), monkeypatch)
    assert encoded >= 1

    # the image encoder retrained in place: same folder, same name, other weights
    weights = data / "models" / "tiny" / "IP-Adapter" / "models" / "image_encoder" / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
    tensors = {k: v + 0.05 if v.is_floating_point() else v for k, v in load_file(weights).items()}
    save_file(tensors, str(weights), metadata=metadata)

    other, encoded_again = render_in_new_engine(data, styled(style_strength=2), monkeypatch)
    assert encoded_again == encoded, "another encoder's embedding was reused"
    assert not np.array_equal(pixels(other), pixels(first))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_embedding_file_is_encoded_again_silently(data, monkeypatch, damage):
    first, encoded = render_in_new_engine(data, styled(), monkeypatch)
    files = embeds_on_disk(data)
    sizes = [f.stat().st_size for f in files]
    for f in files:
        content = f.read_bytes()
        f.write_bytes(
            {"truncated": content[: len(content) // 2], "garbage": b"\x00not a file" * 9, "empty": b""}[damage]
        )

    again, encoded_again = render_in_new_engine(data, styled(), monkeypatch)
    assert encoded_again == encoded
    assert np.array_equal(pixels(again), pixels(first))
    assert [f.stat().st_size for f in embeds_on_disk(data)] == sizes  # written anew, whole
    assert not list((data / "embeds" / "ip-adapter").glob("*.tmp"))


def test_a_region_render_uses_the_kept_embeddings_too(data, monkeypatch):
    left = np.zeros((64, 96), bool)
    left[:, :48] = True
    request = styled(regions=[{"mask": mask_png(left), "words": "walnut"}])
    engine = make_engine(data)
    try:
        calls = calls_to(engine, "image_encoder", monkeypatch)
        first = engine.generate(request)
        encoded = len(calls)
        assert encoded >= 1 and len(embeds_on_disk(data)) == encoded
        engine.generate(request)
        assert len(calls) == encoded, "the same regions were encoded again in one engine"
    finally:
        engine.close()

    again, encoded_again = render_in_new_engine(data, request, monkeypatch)
    assert encoded_again == 0
    assert np.array_equal(pixels(again), pixels(first))


def test_without_a_model_store_embeddings_stay_in_memory(tmp_path):
    store = StyleEmbeds(None, "an encoder")
    image = line_sketch()
    key = store.key(image, torch.float32, torch.device("cpu"))
    assert store.get(key) is None
    store.put(key, torch.ones(1, 4))
    assert torch.equal(store.get(key), torch.ones(1, 4))
    assert store.key(image, torch.bfloat16, torch.device("cpu")) != key
    assert StyleEmbeds(None, "another encoder").key(image, torch.float32, torch.device("cpu")) != key


# ---- prompt encodings ------------------------------------------------------------------------------------------


def test_the_same_prompt_twice_encodes_its_text_once_and_the_pixels_match_a_fresh_engine(
    engine, fresh_engine, monkeypatch
):
    request = styled(prompt="a boathouse of paid-once tests", negative_prompt="fog", hires=1.5, variations=2)
    calls = calls_to(engine, "text_encoder", monkeypatch)
    engine.generate(request)
    assert len(calls) == 2  # the prompt and the negative prompt; the hires pass and the second image reuse them
    warm = engine.generate(request)
    assert len(calls) == 2

    fresh = fresh_engine.generate(request)
    assert np.array_equal(pixels(warm), pixels(fresh))

    engine.generate(styled(prompt="a boathouse of paid-once tests", guidance=1.0))
    assert len(calls) == 3  # no guidance: the prompt alone
    engine.generate(styled(prompt="a boathouse of paid-once tests", guidance=1.0, mode="fast"))
    assert len(calls) == 4  # the few-step LoRA active: encoded again (a LoRA may change the text encoder)
    engine.generate(styled(prompt="another boathouse of paid-once tests", guidance=1.0))
    assert len(calls) == 5


@pytest.mark.parametrize("task", ["text", "txt2img"])
@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_kept_prompt_encodings_give_the_pipelines_own_latents(engine, task, guidance):
    """The pipeline fed the kept encodings computes exactly what it computes from the strings, for two images."""
    gen = engine.executor.generator("sd15")
    p = Params("a round tower", "moss", None, [], [1, 2], 64, 64, steps=2, guidance=guidance)
    gen._use_adapters(gen.pipe, p)
    pipe = gen.task(gen.pipe, task)
    common = dict(
        height=64, width=64, num_inference_steps=2, guidance_scale=guidance, num_images_per_prompt=2,
        ip_adapter_image_embeds=[gen.style_embeds([], guidance > 1)], output_type="latent",
    )  # fmt: skip
    if task == "txt2img":
        common["image"] = line_sketch(64, 64)

    def seeds():
        return [torch.Generator("cpu").manual_seed(s) for s in p.seeds]

    from_text = pipe(prompt=p.prompt, negative_prompt=p.negative_prompt, generator=seeds(), **common).images
    prompt_embeds, negative_embeds = gen.prompt_embeds(pipe, gen.pipe, p)
    assert (negative_embeds is None) == (guidance <= 1)
    kept = pipe(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, generator=seeds(), **common)
    assert torch.equal(kept.images, from_text)
