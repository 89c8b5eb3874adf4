"""Plan a render: validate a request and prepare its inputs with no side effects, as diffusers' `check_inputs`
does for a pipeline. The sketch is decoded once here; the HTTP server plans a request when it arrives (so a bad
sketch is a 422 at once) and hands the plan to the job, which renders it without decoding again."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .. import images as imgs
from ..errors import BadInput
from ..masks import exclusive, read_mask
from ..rules.controlnets import DEFAULT_CONTROL
from ..rules.models import TEXT_ONLY, rules
from ..rules.modes import MODES
from ..schema import MAX_SEED, GenerateRequest


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
    init: Image.Image | None = None  # image-to-image: the start, at the render's size
    init_hash: str | None = None
    mask: np.ndarray | None = None  # inpainting: bool H×W at the render's size, True = repaint
    mask_hash: str | None = None
    outpaint: tuple[int, int, int, int] | None = None  # the borders added (left, top, right, bottom), rounded to 8
    checkpoint: str | None = None  # the base model's file (or hub id) when not the default
    loras: list[tuple[str, str, float]] = field(default_factory=list)  # (name, file, weight)
    hires_size: tuple[int, int] | None = None  # the hires fix's final size
    record: dict[str, Any] = field(
        default_factory=dict
    )  # more the run's metadata says (an upscale's refine: its source)
    timings: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


def check_model(request: GenerateRequest) -> None:
    """Refuse what the request's model cannot do, in one line."""
    model = rules(request.model)
    if request.regions and not model.regions:
        raise BadInput("regions need SD 1.5 (IP-Adapter masks); FLUX renders text only")
    if request.mode != "quality" and request.model != "sd15":
        raise BadInput(f"the {request.mode} mode is for SD 1.5; FLUX.1-schnell is a few-step model already")
    if request.model != "sd15":
        asked = [
            what
            for what, on in (
                ("an init image", request.init_image is not None),
                ("a checkpoint", request.checkpoint),
                ("LoRAs", request.loras),
                (f"the {request.control} ControlNet", request.control != DEFAULT_CONTROL),
                ("a hires fix", request.hires > 1),
            )
            if on
        ]
        if asked:
            raise BadInput(f"{asked[0]} needs SD 1.5; {model.name} renders from text only here")
    if (request.sketch is not None and not model.sketch) or ((request.style or request.blend) and not model.styles):
        raise BadInput(TEXT_ONLY)


def plan(request: GenerateRequest, max_pixels: int, max_bytes: int, cpu: bool = False, files=None) -> Plan:
    """Check the request against its model's rules, decode the sketch and turn it into the control map, decode the
    image to start from and its mask, fix the size and the seeds, read and layer the region masks, and resolve the
    checkpoint and LoRA names (`files`: engine/model_files.py). On a CPU, live mode renders at most its small size;
    a live frame has no hires fix."""
    check_model(request)
    cap = MODES[request.mode].cpu_size
    if cpu and cap and request.size > cap:
        request = request.model_copy(update={"size": cap})
    if request.mode == "live" and request.hires > 1:
        request = request.model_copy(update={"hires": 1.0})
    if not rules(request.model).styles and request.use_style:
        request = request.model_copy(update={"use_style": False})  # text only: no retrieval either
    t0 = time.perf_counter()
    p = Plan(request)
    if request.sketch is not None:
        p.sketch = imgs.decode(request.sketch, max_pixels, max_bytes, name="sketch")
        p.sketch_hash = imgs.content_hash(request.sketch)
        fitted = imgs.fit(p.sketch, request.size)
        p.control, p.edge_mode = control_map(fitted, request)
    init = None
    if request.outpaint is not None:
        init = outpaint(request, p, max_pixels, max_bytes)
    elif request.init_image is not None:
        init = imgs.decode(request.init_image, max_pixels, max_bytes, name="init image")
        p.init_hash = imgs.content_hash(request.init_image)
        if p.control is not None:  # the sketch sets the size; the image fills it (centre crop)
            p.init = ImageOps.fit(init, p.control.size, Image.Resampling.LANCZOS)
        else:  # no sketch: ControlNet follows the image's own edges
            p.init = imgs.fit(init, request.size)
            p.control, p.edge_mode = control_map(p.init, request)
    if p.control is not None:
        p.timings["edges"] = time.perf_counter() - t0
    if p.control is not None:
        p.width, p.height = p.control.size
    elif request.aspect and request.model == "sd15":  # text only: the aspect asked, the short side `size`
        p.width, p.height = imgs.fit_size(*map(int, request.aspect.split(":")), short_side=request.size)
    else:
        p.width, p.height = request.size, request.size
    if request.mask is not None:
        p.mask = inpaint_mask(request.mask, init, (p.width, p.height), max_pixels, max_bytes)
        p.mask_hash = imgs.content_hash(request.mask)
    if request.hires > 1:
        p.hires_size = hires_size(p.width, p.height, request.hires)
    if files is not None:
        p.checkpoint = files.resolve("checkpoint", request.checkpoint) if request.checkpoint else None
        p.loras = [(lo.name, files.resolve("lora", lo.name), lo.weight) for lo in request.loras]
    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    p.seeds = [(seed + i) % (MAX_SEED + 1) for i in range(request.variations)]
    p.region_masks = region_masks(request, p, max_pixels, max_bytes)
    return p


def outpaint(request: GenerateRequest, p: Plan, max_pixels: int, max_bytes: int) -> Image.Image:
    """The image at its own size on the extended canvas (`p.init`), the new border as the part to paint (`p.mask`)
    and ControlNet's map from the image's own edges, blank over the border so the new part is free."""
    init = imgs.decode(request.init_image, max_pixels, max_bytes, name="init image")
    p.init_hash = imgs.content_hash(request.init_image)
    pads = imgs.outpaint_pads(init.size, request.outpaint)
    width, height = init.width + pads[0] + pads[2], init.height + pads[1] + pads[3]
    if max(width, height) > 2 * imgs.MAX_SIDE or width * height > max_pixels:
        raise BadInput(
            f"the extended image would be {width}×{height}; at most {2 * imgs.MAX_SIDE} a side",
            fix="extend by fewer pixels, or start from a smaller image",
        )
    p.init, p.mask = imgs.outpaint_canvas(init, pads)
    p.outpaint = pads
    control, p.edge_mode = control_map(p.init, request)
    edges = np.asarray(control).copy()
    edges[p.mask] = 0
    p.control = Image.fromarray(edges)
    return init


def control_map(image: Image.Image, request: GenerateRequest) -> tuple[Image.Image, str]:
    return imgs.control_map(image, request.control, request.edge_mode, request.canny_low, request.canny_high)


def hires_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """The hires fix's size: `factor` × the render's, multiples of 8 (at most 2 × 1024 a side: the size's own
    limits bound it)."""
    w, h = (max(8, round(v * factor / 8) * 8) for v in (width, height))
    return w, h


def inpaint_mask(data: bytes, init: Image.Image | None, render: tuple[int, int], max_pixels: int, max_bytes: int):
    """The inpainting mask (white = repaint) at the render's size: made at the image's own size (then cropped and
    scaled as the image was) or at the render's."""
    mask = read_mask(data, None, "mask", max_pixels, max_bytes)
    size = (mask.shape[1], mask.shape[0])
    sizes = [s for s in (init.size if init is not None else None, render) if s]
    if size not in sizes:
        expected = " or ".join(f"{w}×{h}" for w, h in dict.fromkeys(sizes))
        raise BadInput(
            f"the mask is {size[0]}×{size[1]} but must be {expected} (the image's size)",
            fix="paint or segment the mask on the same image",
        )
    if size != render:
        scaled = ImageOps.fit(Image.fromarray(mask.astype(np.uint8) * 255), render, Image.Resampling.NEAREST)
        mask = np.asarray(scaled) > 127
    if not mask.any():
        raise BadInput(f"the mask vanishes at {render[0]}×{render[1]}; paint a larger area")
    return mask


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
    control = meta["params"].get("control", DEFAULT_CONTROL)
    mode = (meta["edge_mode"] or "auto") if control == DEFAULT_CONTROL else "auto"
    return imgs.control_map(fitted, control, mode, low, high)[0]
