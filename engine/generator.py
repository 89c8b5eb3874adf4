"""The diffusers call: sketch-guided (ControlNet) or text-only, with IP-Adapter style references."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from .errors import Busy, Cancelled
from .schema import Progress

log = logging.getLogger(__name__)

SCHEDULERS = {
    "unipc": UniPCMultistepScheduler,
    "ddim": DDIMScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
}


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
    # (mask at the render's size, bool H×W; its reference image), one per region, in order
    regions: list[tuple[Any, Image.Image]] = field(default_factory=list)


class StepClock:
    """The `callback_on_step_end` every pipeline call uses: time per step (after a device sync), progress
    reports, and cancel between steps (the pipeline stops at its next step)."""

    def __init__(self, total: int, sync: Callable[[], None], on_progress=None, cancel: threading.Event | None = None):
        self.total, self.sync, self.on_progress, self.cancel = total, sync, on_progress, cancel
        self.steps: list[float] = []
        self.start = self._last = time.perf_counter()

    def on_step_end(self, pipeline, i, t, kwargs):
        self.sync()
        now = time.perf_counter()
        self.steps.append(now - self._last)
        self._last = now
        if self.on_progress:
            # the first step also pays the prompt encoding and the pipeline's set-up: the rate comes from the rest
            recent = self.steps[1:][-5:]
            per_step = sorted(recent)[len(recent) // 2] if recent else None
            self.on_progress(Progress("denoise", i + 1, self.total, now - self.start, per_step))
        if self.cancel is not None and self.cancel.is_set():
            pipeline._interrupt = True
        return kwargs


@dataclass
class Output:
    images: list[Image.Image]
    timings: dict[str, float | list[float]] = field(default_factory=dict)
    worker: int = 0  # which executor worker rendered it (always 0 in this process)


def style_block(unet) -> str:
    """The UNet block that carries style: the first up block with attention (SD1.5: up_blocks.1)."""
    for i, block in enumerate(unet.up_blocks):
        if hasattr(block, "attentions"):
            return f"block_{i}"
    raise ValueError("this UNet has no cross-attention up block")


class Generator:
    """Owns the loaded pipeline; callers serialise through the engine's GPU queue."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.device = pipe.device
        self._scheduler_config = pipe.scheduler.config
        self._schedulers: dict[str, object] = {}
        self._text_pipe = None
        self._style_block = style_block(pipe.unet)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _scheduler(self, name: str):
        if name not in self._schedulers:
            self._schedulers[name] = SCHEDULERS[name].from_config(self._scheduler_config)
        return self._schedulers[name]

    @torch.inference_mode()
    def style_embeds(self, references: list[tuple[Image.Image, float]], cfg: bool) -> torch.Tensor:
        """Weighted mean of the references' image embeddings, shaped for `ip_adapter_image_embeds`."""
        if references:
            images = [img for img, _ in references]
            weights = torch.tensor([w for _, w in references], device=self.device, dtype=torch.float32)
            embeds, _ = self.pipe.encode_image(images, self.device, 1)
            mixed = (embeds.float() * weights[:, None]).sum(0) / weights.sum()
            positive = mixed[None, None].to(embeds.dtype)
        else:
            dim = self.pipe.image_encoder.config.projection_dim
            positive = torch.zeros((1, 1, dim), device=self.device, dtype=self.pipe.unet.dtype)
        # Unconditional image embedding is zeros, as diffusers' own encode_image makes it.
        return torch.cat([torch.zeros_like(positive), positive]) if cfg else positive

    @torch.inference_mode()
    def region_inputs(self, p: Params, cfg: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embeddings (cfg·1, n, dim) for the global style (if any) and each region, and their masks
        (1, n, H, W) as IP-Adapter attention masks: each region's reference acts only inside its mask (the
        masks do not overlap) and the global reference on the rest of the image."""
        import numpy as np
        from diffusers.image_processor import IPAdapterMaskProcessor

        masks = [m for m, _ in p.regions]
        embeds, _ = self.pipe.encode_image([ref for _, ref in p.regions], self.device, 1)  # (regions, dim)
        parts = [embeds]
        if p.references:
            rest = ~np.logical_or.reduce(masks)
            masks = [rest, *masks]
            parts.insert(0, self.style_embeds(p.references, cfg=False)[0])  # (1, dim)
        positive = torch.cat(parts)[None].to(self.pipe.unet.dtype)
        images = [Image.fromarray(m.astype("uint8") * 255, "L") for m in masks]
        processed = IPAdapterMaskProcessor().preprocess(images, height=p.height, width=p.width)
        mask_tensor = processed.reshape(1, len(images), *processed.shape[-2:])
        return (torch.cat([torch.zeros_like(positive), positive]) if cfg else positive), mask_tensor

    def _set_style_scale(self, strength: float, style_only: bool, has_refs: bool) -> None:
        if not has_refs:
            self.pipe.set_ip_adapter_scale(0.0)
        elif style_only:
            self.pipe.set_ip_adapter_scale({"up": {self._style_block: strength}})
        else:
            self.pipe.set_ip_adapter_scale(strength)

    def text_pipe(self):
        if self._text_pipe is None:
            self._text_pipe = StableDiffusionPipeline.from_pipe(self.pipe)
            self._text_pipe.set_progress_bar_config(disable=True)
        return self._text_pipe

    def run(
        self,
        p: Params,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Output:
        timings: dict[str, float | list[float]] = {}
        cfg = p.guidance > 1.0
        try:
            t0 = time.perf_counter()
            attention: dict[str, Any] = {}
            if p.regions:
                embeds, masks = self.region_inputs(p, cfg)
                attention["ip_adapter_masks"] = [masks.to(self.device)]
            else:
                embeds = self.style_embeds(p.references, cfg)
            self._sync()
            timings["style_encode"] = time.perf_counter() - t0

            self._set_style_scale(p.style_strength, p.style_only, bool(p.references or p.regions))
            pipe = self.pipe if p.control is not None else self.text_pipe()
            pipe.scheduler = self._scheduler(p.scheduler)
            clock = StepClock(p.steps, self._sync, on_progress, cancel)
            on_step_end = clock.on_step_end

            call = dict(
                prompt=p.prompt,
                negative_prompt=p.negative_prompt or None,
                height=p.height,
                width=p.width,
                num_inference_steps=p.steps,
                guidance_scale=p.guidance,
                num_images_per_prompt=len(p.seeds),
                generator=[torch.Generator("cpu").manual_seed(s) for s in p.seeds],
                ip_adapter_image_embeds=[embeds],
                output_type="latent",
                callback_on_step_end=on_step_end,
                cross_attention_kwargs=attention or None,
            )
            if p.control is not None:
                call.update(image=p.control, controlnet_conditioning_scale=p.structure_strength)
            latents = pipe(**call).images
            timings["denoise"] = time.perf_counter() - clock.start
            timings["steps"] = clock.steps
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after {len(clock.steps)} of {p.steps} steps")

            t0 = time.perf_counter()
            with torch.inference_mode():
                vae = self.pipe.vae
                decoded = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
                images = self.pipe.image_processor.postprocess(decoded, output_type="pil")
            self._sync()
            timings["vae_decode"] = time.perf_counter() - t0
            return Output(images=images, timings=timings)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise Busy(
                f"the GPU ran out of memory for {len(p.seeds)} image(s) at {p.width}×{p.height}",
                fix="lower the size or the number of variations, or close other GPU programs",
            ) from None
