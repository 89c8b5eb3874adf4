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
class Unit:
    """One ControlNet a render follows, made ready: its type, weight and range of the steps, and its map at the
    render's size (made from its own image, else the sketch, else the image started from)."""

    type: str
    weight: float
    start: float
    end: float
    map: Image.Image
    used: str  # the preprocessor that made the map (the metadata's `edge_mode` for the first unit)
    image: Image.Image | None = None  # its own image (decoded), None: it follows the sketch or the start image
    image_hash: str | None = None

    def record(self) -> dict[str, Any]:
        """As the metadata keeps it (engine/schema.py ControlUnit.record), with the preprocessor used."""
        return {
            "type": self.type, "weight": self.weight, "start": self.start, "end": self.end,
            "image_hash": self.image_hash, "module": self.used,
        }  # fmt: skip


@dataclass
class Plan:
    """A request made ready for the pipeline: all a render needs besides its styles."""

    request: GenerateRequest
    sketch: Image.Image | None = None
    sketch_hash: str | None = None
    control: Image.Image | None = None  # the first ControlNet's map (what the result view shows)
    edge_mode: str | None = None
    units: list[Unit] = field(default_factory=list)  # every ControlNet it follows, the first one's map `control`
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
                ("several ControlNets", len(request.controls) > 1),
                ("a hires fix", request.hires > 1),
            )
            if on
        ]
        if asked:
            raise BadInput(f"{asked[0]} needs SD 1.5; {model.name} renders from text only here")
    if (request.sketch is not None and not model.sketch) or ((request.style or request.blend) and not model.styles):
        raise BadInput(TEXT_ONLY)


def plan(request: GenerateRequest, max_pixels: int, max_bytes: int, cpu: bool = False, files=None, maps=None) -> Plan:
    """Check the request against its model's rules, decode the sketch and turn it into the control maps (`maps`: the
    engine's Preprocessors, which make a model-backed map too; None: pure ones only), decode the image to start from
    and its mask, fix the size and the seeds, read and layer the region masks, and resolve the checkpoint and LoRA
    names (`files`: engine/model_files.py). On a CPU, live mode renders at most its small size; a live frame has no
    hires fix."""
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
    follows = None  # what a ControlNet without an image of its own follows: the sketch, else the start image
    if request.sketch is not None:
        p.sketch = imgs.decode(request.sketch, max_pixels, max_bytes, name="sketch")
        p.sketch_hash = imgs.content_hash(request.sketch)
        follows = imgs.fit(p.sketch, request.size)
    init = None
    if request.outpaint is not None:  # ControlNet follows the extended canvas: the image's own edges
        init = outpaint(request, p, max_pixels, max_bytes)
        follows = p.init
    elif request.init_image is not None:
        init = imgs.decode(request.init_image, max_pixels, max_bytes, name="init image")
        p.init_hash = imgs.content_hash(request.init_image)
        if follows is not None:  # the sketch sets the size; the image fills it (centre crop)
            p.init = ImageOps.fit(init, follows.size, Image.Resampling.LANCZOS)
        else:  # no sketch: ControlNet follows the image's own edges
            p.init = follows = imgs.fit(init, request.size)
    p.units = control_units(request, follows, max_pixels, max_bytes, maps)
    if p.outpaint is not None:  # every map blank over the new border, so the new part is free
        for unit in p.units:
            blank = np.asarray(unit.map).copy()
            blank[p.mask] = 0
            unit.map = Image.fromarray(blank)
    if p.units:
        p.control, p.edge_mode = p.units[0].map, p.units[0].used
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


def control_units(
    request: GenerateRequest, follows: Image.Image | None, max_pixels: int, max_bytes: int, maps=None
) -> list[Unit]:
    """Each ControlNet with its map: from its own image (fitted to the render's size: the sketch's, else the start
    image's, else the first own image's), else from `follows`. None at all: a text-only render (one `control` and no
    sketch: as ever; several, or one given in `controls`, with nothing to follow: refused)."""
    units = request.units()
    own = {}
    for i, unit in enumerate(units):
        if unit.image is not None:
            name = f"ControlNet {i + 1}'s image"
            own[i] = (imgs.decode(unit.image, max_pixels, max_bytes, name=name), imgs.content_hash(unit.image))
    if follows is None and not own:
        if request.controls:
            raise BadInput(
                "controls: the ControlNets have nothing to follow",
                fix="draw or upload a sketch, start from an image, or give each ControlNet its own image",
            )
        return []
    size = follows.size if follows is not None else imgs.fit(own[min(own)][0], request.size).size
    make = maps.control_map if maps is not None else imgs.control_map
    out = []
    for i, unit in enumerate(units):
        if i in own:
            source = ImageOps.fit(own[i][0], size, Image.Resampling.LANCZOS)
        elif follows is not None:
            source = follows
        else:
            raise BadInput(
                f"ControlNet {i + 1} ({unit.type}) has nothing to follow",
                fix="draw or upload a sketch, start from an image, or give it its own image",
            )
        made, used = make(source, unit.type, request.edge_mode, request.canny_low, request.canny_high)
        out.append(Unit(unit.type, unit.weight, unit.start, unit.end, made, used, *own.get(i, (None, None))))
    return out


def outpaint(request: GenerateRequest, p: Plan, max_pixels: int, max_bytes: int) -> Image.Image:
    """The image at its own size on the extended canvas (`p.init`) and the new border as the part to paint (`p.mask`);
    `plan` makes the ControlNets' maps from the canvas and blanks them over the border."""
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
    return init


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


def control_of(source: bytes, meta: dict[str, Any], max_pixels: int, maps=None) -> Image.Image:
    """The map the first ControlNet of a past run followed, made again from its source (its own image, else the
    sketch, else the image started from) and its metadata (same function, same pixels): for its result view and
    for measuring it again."""
    fitted = imgs.fit(imgs.decode(source, max_pixels), meta["params"]["size"])
    low, high = meta.get("canny") or (50, 150)
    control = meta["params"].get("control", DEFAULT_CONTROL)
    mode = (meta["edge_mode"] or "auto") if control == DEFAULT_CONTROL else "auto"
    make = maps.control_map if maps is not None else imgs.control_map
    return make(fitted, control, mode, low, high)[0]
