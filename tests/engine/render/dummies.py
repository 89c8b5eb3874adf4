"""In-memory dummy components for the render path's unit tests, as diffusers' pipeline tests make theirs
(`get_dummy_components` / `get_dummy_inputs`): the tiny profile's models built from `TINY_SPEC` under a fixed seed,
kept in memory and written nowhere. Under seed 0 every weight equals the tiny profile's on disk (the same builders,
engine/tiny.py), so these tests see the pixels the product renders on the tiny profile."""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

from engine.images import control_map
from engine.render.sd15 import Params
from engine.tiny import TINY_SPEC, build_clip, build_components, feature_extractor


def dummy_components(seed: int = 0) -> dict[str, Any]:
    """UNet, ControlNet, VAE, text encoder, tokenizer, scheduler, image encoder, feature extractor and the IP-Adapter's
    weights of the tiny spec, fp32 on the CPU."""
    return build_components(TINY_SPEC, seed)


def ip_adapter_state_dict(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """h94's file keys (`image_proj.…`, `ip_adapter.…`) → the nested dict `load_ip_adapter` takes in place of a file,
    split as diffusers splits the file when it reads it."""
    nested: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, tensor in flat.items():
        part, _, name = key.partition(".")
        nested[part][name] = tensor
    return nested


def dummy_pipeline(components: dict[str, Any]):
    """The product's pipeline (engine/models.py `load_pipeline`: SD 1.5 + the default ControlNet + IP-Adapter, no
    safety checker, progress bars off) made from in-memory components instead of `from_pretrained`."""
    from diffusers import StableDiffusionControlNetPipeline

    parts = {k: v for k, v in components.items() if k != "ip_adapter"}
    pipe = StableDiffusionControlNetPipeline(**parts, safety_checker=None, requires_safety_checker=False)
    pipe.load_ip_adapter(
        ip_adapter_state_dict(components["ip_adapter"]), subfolder="models", weight_name="ip-adapter_sd15.safetensors"
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def clip_embeddings():
    """The tiny retrieval CLIP (engine/tiny.py `build_clip`, the profile's own weights) as the style library's
    embeddings, in memory."""
    from transformers import CLIPProcessor

    from engine.embeddings import ClipEmbeddings
    from engine.tokenizer import memory_tokenizer

    tokenizer = memory_tokenizer()
    processor = CLIPProcessor(image_processor=feature_extractor(TINY_SPEC), tokenizer=tokenizer)
    return ClipEmbeddings(build_clip(TINY_SPEC, tokenizer).eval(), processor)


def drawing(width: int = 64, height: int = 64) -> Image.Image:
    """Dark pen strokes on white, as a designer draws: a box and a roof."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([width * 0.2, height * 0.4, width * 0.8, height * 0.9], outline="black", width=2)
    d.line([(width * 0.15, height * 0.45), (width * 0.5, height * 0.1), (width * 0.85, height * 0.45)], "black", 2)
    return img


def dummy_params(**changes: Any) -> Params:
    """One small sketch-guided call (`get_dummy_inputs`): 64×64, 2 steps, seed 7, the drawing's own lines as the
    control map, no style reference."""
    values: dict[str, Any] = {
        "prompt": "a timber cabin at dusk",
        "negative_prompt": "",
        "control": control_map(drawing(), "canny", "lines")[0],
        "references": [],
        "seeds": [7],
        "width": 64,
        "height": 64,
        "steps": 2,
    }
    return Params(**{**values, **changes})
