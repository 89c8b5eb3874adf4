"""One pipeline call as the generators take it (`Params`) and give it back (`Output`): plain data, no torch, so
the job path can name them without loading diffusers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ..rules.controlnets import DEFAULT_CONTROL


@dataclass
class Params:
    """One pipeline call, already validated and resolved (sizes, seeds, references)."""

    prompt: str
    negative_prompt: str
    control: Image.Image | None
    references: list[tuple[Image.Image, float]]
    seeds: list[int]
    width: int
    height: int
    steps: int = 20
    guidance: float = 7.5
    structure_strength: float = 1.5
    style_strength: float = 0.8
    style_only: bool = False
    scheduler: str = "unipc"
    mode: str = "quality"  # engine/rules/modes.py: whether the few-step LoRA and the tiny VAE are used
    # (mask at the render's size, bool H×W; its reference image), one per region, in order
    regions: list[tuple[Any, Image.Image]] = field(default_factory=list)
    init: Image.Image | None = None  # image-to-image: the start, at the render's size
    mask: Any = None  # inpainting: bool H×W at the render's size, True = repaint
    strength: float = 0.75  # how far back to noise the start goes
    control_type: str = DEFAULT_CONTROL  # which ControlNet follows `control`
    # several ControlNets at once: (type, map, weight, start, end) each; empty: the one above, `control_type`
    # following `control` at `structure_strength` over all the steps
    controls: list[tuple[str, Image.Image, float, float, float]] = field(default_factory=list)
    checkpoint: str | None = None  # the base model's file or hub id; None: the default
    loras: list[tuple[str, str, float]] = field(default_factory=list)  # (name, file, weight)
    hires_size: tuple[int, int] | None = None  # hires fix: upscale to this size and refine
    hires_strength: float = 0.35


@dataclass
class Output:
    images: list[Image.Image]
    timings: dict[str, float | list[float]] = field(default_factory=dict)
    worker: int = 0  # which executor worker rendered it (always 0 in this process)
