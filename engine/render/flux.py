"""FLUX.1 text-to-image: render with a loaded FLUX pipeline (engine/models.py `load_flux`) with the same
`Params` / `Output` as the SD 1.5 generator.

FLUX.1-schnell is distilled for ~4 steps with guidance 0 (the request's model defaults, engine/rules/models.py). It
takes no sketch and no style reference here: sketch-guided and style-referenced renders stay on SD 1.5, the default
model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch

from ..errors import BadInput, Busy, Cancelled
from ..rules.models import TEXT_ONLY
from ..schema import Progress
from .call import Output, Params
from .sd15 import StepClock

# FLUX.1-schnell was distilled with 256 T5 tokens (dev: 512); the T5 prompt is always padded to this length.
SCHNELL_MAX_SEQUENCE_LENGTH = 256


class FluxGenerator:
    """Text-to-image with a loaded `FluxPipeline`; callers serialise through the engine's GPU queue.

    Uses from `Params`: prompt, seeds, width, height, steps and guidance (0.0 for schnell, which has no guidance
    embedding and ignores it; dev embeds it). FLUX reads a negative prompt only with true CFG (off here) and has
    only its flow-matching scheduler, so `negative_prompt` and `scheduler` are ignored; structure/style strengths
    do not apply (no sketch, no references).
    """

    def __init__(self, pipe, max_sequence_length: int = SCHNELL_MAX_SEQUENCE_LENGTH):
        self.pipe = pipe
        self.device = pipe.device
        self.max_sequence_length = max_sequence_length
        # The VAE downsamples by vae_scale_factor and the transformer packs 2×2 latent patches: 16 px for FLUX.1.
        self.multiple = pipe.vae_scale_factor * 2

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) rounded down to multiples of `self.multiple` (16 px for FLUX.1), as FLUX renders them:
        the images come back at that size. Smaller than one multiple is a `BadInput`."""
        m = self.multiple
        if width < m or height < m:
            raise BadInput(f"FLUX needs at least {m}×{m} pixels, got {width}×{height}")
        return width // m * m, height // m * m

    @torch.inference_mode()
    def _decode(self, latents: torch.Tensor, width: int, height: int):
        pipe, vae = self.pipe, self.pipe.vae
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return pipe.image_processor.postprocess(decoded, output_type="pil")

    def run(
        self,
        p: Params,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Output:
        """`len(p.seeds)` images, one per seed, at `size(p.width, p.height)`; raises `BadInput` for a sketch or
        style references, `Cancelled` when `cancel` is set between steps, `Busy` when the GPU runs out of memory."""
        if p.control is not None or p.references:
            raise BadInput(TEXT_ONLY)
        width, height = self.size(p.width, p.height)
        timings: dict[str, float | list[float]] = {"style_encode": 0.0}
        try:
            clock = StepClock(p.steps, self._sync, on_progress, cancel)
            on_step_end = clock.on_step_end

            latents = self.pipe(
                prompt=p.prompt,
                height=height,
                width=width,
                num_inference_steps=p.steps,
                guidance_scale=p.guidance,
                num_images_per_prompt=len(p.seeds),
                generator=[torch.Generator("cpu").manual_seed(s) for s in p.seeds],
                max_sequence_length=self.max_sequence_length,
                output_type="latent",
                callback_on_step_end=on_step_end,
            ).images
            timings["denoise"] = time.perf_counter() - clock.start
            timings["steps"] = clock.steps
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after {len(clock.steps)} of {p.steps} steps")

            t0 = time.perf_counter()
            images = self._decode(latents, width, height)
            self._sync()
            timings["vae_decode"] = time.perf_counter() - t0
            return Output(images=images, timings=timings)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise Busy(
                f"the GPU ran out of memory for {len(p.seeds)} image(s) at {width}×{height}",
                fix="lower the size or the number of variations, or close other GPU programs",
            ) from None


# ----------------------------------------------------------------------------------------------------------------
# The tiny FLUX: random weights in black-forest-labs/FLUX.1-schnell's layout, loaded by the same from_pretrained.
