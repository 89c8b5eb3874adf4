"""Plan a render: validate a request and prepare its inputs with no side effects, as diffusers' `check_inputs`
does for a pipeline. The sketch is decoded once here; the HTTP server plans a request when it arrives (so a bad
sketch is a 422 at once) and hands the plan to the job, which renders it without decoding again."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .. import images as imgs
from ..errors import BadInput
from ..masks import exclusive, read_mask
from ..schema import MAX_SEED, GenerateRequest
from . import capabilities, modes


@dataclass
class Plan:
    """A request made ready for the pipeline: all a render needs besides its styles."""

    request: GenerateRequest
    sketch: Image.Image | None = None
    sketch_hash: str | None = None
    control: Image.Image | None = None
    edge_mode: str | None = None
    width: int = 0
    height: int = 0
    seeds: list[int] = field(default_factory=list)
    region_masks: list[Any] = field(default_factory=list)  # bool H×W at the render's size, one per region
    timings: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


def plan(request: GenerateRequest, max_pixels: int, max_bytes: int, cpu: bool = False) -> Plan:
    """Check the request against its model's rules, decode the sketch and turn it into the control edges, fix the
    size and the seeds, and read and layer the region masks. On a CPU, live mode renders at most its small size."""
    capabilities.check(request)
    cap = modes.MODES[request.mode].cpu_size
    if cpu and cap and request.size > cap:
        request = request.model_copy(update={"size": cap})
    if not capabilities.rules(request.model).styles and request.use_style:
        request = request.model_copy(update={"use_style": False})  # text only: no retrieval either
    t0 = time.perf_counter()
    p = Plan(request)
    if request.sketch is not None:
        p.sketch = imgs.decode(request.sketch, max_pixels, max_bytes, name="sketch")
        p.sketch_hash = imgs.content_hash(request.sketch)
        fitted = imgs.fit(p.sketch, request.size)
        p.control, p.edge_mode = imgs.edges(fitted, request.edge_mode, request.canny_low, request.canny_high)
        p.timings["edges"] = time.perf_counter() - t0
    p.width, p.height = p.control.size if p.control is not None else (request.size, request.size)
    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    p.seeds = [(seed + i) % (MAX_SEED + 1) for i in range(request.variations)]
    p.region_masks = region_masks(request, p, max_pixels, max_bytes)
    return p


def region_masks(request: GenerateRequest, p: Plan, max_pixels: int, max_bytes: int) -> list[np.ndarray]:
    """Each region's mask, checked (an image, not empty, the sketch's or the render's size), scaled to the render's
    size and layered (where regions overlap, the later one wins)."""
    render = (p.width, p.height)
    sizes = [p.sketch.size, render] if p.sketch is not None else [render]
    masks = []
    for i, region in enumerate(request.regions, start=1):
        name = f"region {i}'s mask"
        mask = read_mask(region.mask, None, name, max_pixels, max_bytes)
        size = (mask.shape[1], mask.shape[0])
        if size not in sizes:
            expected = " or ".join(f"{w}×{h}" for w, h in dict.fromkeys(sizes))
            raise BadInput(
                f"{name} is {size[0]}×{size[1]} but must be {expected} (the sketch's size); "
                "segment the same sketch, or export the mask at its size"
            )
        if size != render:
            scaled = Image.fromarray(mask.astype(np.uint8) * 255).resize(render, Image.NEAREST)
            mask = np.asarray(scaled) > 127
        if not mask.any():
            raise BadInput(f"{name} vanishes at {render[0]}×{render[1]}; make the region larger")
        masks.append(mask)
    layered = exclusive(masks)  # where regions overlap, the later one wins
    for i, mask in enumerate(layered, start=1):
        if not mask.any():
            raise BadInput(f"region {i} is entirely covered by a later region; remove one of them")
    return layered


def control_of(sketch: bytes, meta: dict[str, Any], max_pixels: int) -> Image.Image:
    """The control edges a past run followed, made again from its sketch and its metadata (same function, same
    pixels): for its result view and for measuring it again."""
    fitted = imgs.fit(imgs.decode(sketch, max_pixels), meta["params"]["size"])
    low, high = meta.get("canny") or (50, 150)
    return imgs.edges(fitted, meta["edge_mode"] or "auto", low, high)[0]
