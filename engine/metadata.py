"""PNG text chunks (ours as JSON, plus AUTOMATIC1111's `parameters`) and JSON sidecars."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

CHUNK = "design_studio"
SAMPLERS = {"unipc": "UniPC", "ddim": "DDIM", "euler_a": "Euler a", "lcm": "LCM", "tcd": "TCD"}


def _name(model: str) -> str:
    """A model's short name: the last part of its hub id or folder."""
    return model.rstrip("/").split("/")[-1]


def a1111_parameters(meta: dict[str, Any]) -> str:
    """The `parameters` text other tools (A1111, Civitai, sd-parsers) read settings from."""
    p = meta["params"]
    prompt = meta["prompt"]
    models = meta.get("models") or {}
    if models.get("lora"):  # A1111's own way of naming a LoRA and its weight, in the prompt
        prompt += f" <lora:{_name(models['lora'])}:1>"
    for lora in p.get("loras") or []:
        prompt += f" <lora:{lora['name']}:{lora['weight']:g}>"
    lines = [prompt]
    if meta.get("negative_prompt"):
        lines.append(f"Negative prompt: {meta['negative_prompt']}")
    fields = {
        "Steps": p["steps"],
        "Sampler": SAMPLERS.get(p["scheduler"], p["scheduler"]),
        "CFG scale": p["guidance"],
        "Seed": meta["seed"],
        "Size": f"{meta['width']}x{meta['height']}",
        "Model": _name(meta["models"]["base"]),
    }
    units = p.get("controls") or []
    nets = models.get("controlnets") or []
    if units:  # as sd-webui-controlnet writes them: "ControlNet 0", "ControlNet 1", …
        for i, unit in enumerate(units):
            model = _name(nets[i]) if i < len(nets) and nets[i] else unit["type"]
            fields[f"ControlNet {i}"] = (
                f'"Module: {unit.get("module") or unit["type"]}, Model: {model}, Weight: {unit["weight"]:g}, '
                f'Guidance Start: {unit["start"]:g}, Guidance End: {unit["end"]:g}"'
            )
    elif meta.get("edge_mode"):  # a run recorded before several ControlNets were
        fields["ControlNet"] = (
            f'"module: {meta["edge_mode"]}, model: {_name(models["controlnet"])}, weight: {p["structure_strength"]}"'
        )
    styles = meta.get("styles") or []
    if styles:
        fields["IP-Adapter"] = f'"{meta["models"]["ip_adapter_weight"]}, weight: {p["style_strength"]}"'
        fields["Style"] = '"' + ", ".join(f"{s['name']} ({s['weight']:g})" for s in styles if s.get("used")) + '"'
    if p.get("strength") is not None:
        fields["Denoising strength"] = p["strength"]
        if meta.get("mask_hash"):
            fields["Mask"] = "inpaint (white = repaint)"
    if p.get("outpaint"):
        fields["Outpaint"] = (
            '"'
            + ", ".join(
                f"{side} {px}" for side, px in zip(("left", "top", "right", "bottom"), p["outpaint"], strict=True)
            )
            + '"'
        )
    if (p.get("hires") or 1) > 1:
        fields["Hires upscale"] = p["hires"]
        fields["Hires upscaler"] = "Lanczos"
        fields["Hires denoising strength"] = p["hires_strength"]
    upscale = meta.get("upscale")
    if upscale:  # A1111's Extras tab says an upscale so
        fields["Postprocess upscale by"] = upscale["factor"]
        fields["Postprocess upscaler"] = _name(upscale["model"]).removesuffix(".safetensors")
    if p.get("mode", "quality") != "quality":
        fields["Mode"] = p["mode"]
        if models.get("vae") and models["vae"] != "full":
            fields["VAE"] = _name(models["vae"])
    fields["Version"] = "design-studio"
    lines.append(", ".join(f"{k}: {v}" for k, v in fields.items()))
    return "\n".join(lines)


def write_png(image: Image.Image, out, meta: dict[str, Any]) -> None:
    """The PNG with both text chunks, to a path or a file object."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_parameters(meta))
    info.add_itxt(CHUNK, json.dumps(meta, sort_keys=True))
    image.save(out, format="PNG", pnginfo=info)


def _tmp(path: Path, suffix: str) -> Path:
    """A temporary name beside `path` that no other write uses, not even another call in the same thread (a measure
    job and remeasures may rewrite one run's files at once, in this process or another), so each `replace` moves its
    own complete file."""
    return path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


def _write(path: Path, suffix: str, write: Callable[[Path], None]) -> None:
    """`write` a temporary file of its own, then move it onto `path` in one step; a failed write leaves no temporary
    file behind and `path` as it was."""
    tmp = _tmp(path, suffix)
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save_png(image: Image.Image, path: Path, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, ".tmp.png", lambda tmp: write_png(image, tmp, meta))


def write_sidecar(path: Path, meta: dict[str, Any]) -> None:
    _write(path, ".json.tmp", lambda tmp: tmp.write_text(json.dumps(meta, indent=2, sort_keys=True)))


def read_png(path: Path) -> dict[str, Any]:
    """Our metadata back from a PNG: the dict written, as it was written (empty if the PNG has none, and for an image
    of another format). A file that is not an image at all raises PIL's `UnidentifiedImageError`."""
    with Image.open(path) as im:
        text = im.text.get(CHUNK) if hasattr(im, "text") else None
    return json.loads(text) if text else {}
