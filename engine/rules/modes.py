"""Render modes: one setting that trades quality for speed, the same in the request, the UI, the CLI, the API and
the metadata. The one place their rules live.

- `quality`: the base model as it is: 20 steps of UniPC, classifier-free guidance 7.5, the full VAE.
- `fast`: a few-step LoRA on the UNet (LCM-LoRA SD1.5 by default, or Hyper-SD15 / TCD), its own scheduler, 4 steps and
  guidance 1 (no unconditional pass: half the work per step, as diffusers documents LCM-LoRA with IP-Adapter); on a
  CPU the tiny autoencoder decodes too (the full VAE's 512² decode costs as much as the four steps there).
- `live`: the same LoRA at the fewest steps that still hold the sketch (2), the tiny autoencoder (TAESD) for the
  decode, and at most 256 px on a CPU: for the Studio's live canvas, which re-renders as you draw.

The LoRA is loaded once into the loaded pipeline as a named adapter and fused into the UNet for fast and live (no
reload, no second copy of the UNet); back in quality mode the base weights are read back from the checkpoint
(engine/lora.py), so the UNet is exactly the base model and `quality` keeps its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

RenderMode = Literal["quality", "fast", "live"]
FAST_ADAPTER = "fast"


@dataclass(frozen=True)
class Mode:
    name: str
    steps: int
    guidance: float
    scheduler: str
    lora: bool  # the few-step LoRA on
    tiny_vae: Literal["never", "cpu", "always"]  # where TAESD decodes instead of the full VAE
    cpu_size: int | None  # the short side is capped at this on a CPU
    summary: str  # what it costs and changes, for the UI and the CLI's help

    def uses_tiny_vae(self, device: str) -> bool:
        """TAESD decodes: always in live mode; in fast mode on a CPU, where the full VAE's decode would cost as much
        as the few steps themselves (on a GPU it takes milliseconds, and keeps its better pixels)."""
        return self.tiny_vae == "always" or (self.tiny_vae == "cpu" and str(device).startswith("cpu"))

    def defaults(self) -> dict[str, Any]:
        return {"steps": self.steps, "guidance": self.guidance, "scheduler": self.scheduler}


MODES: dict[str, Mode] = {
    "quality": Mode(
        "quality", 20, 7.5, "unipc", False, "never", None, "20 steps, guidance 7.5, full VAE: the best pixels"
    ),
    "fast": Mode(
        "fast",
        4,
        1.0,
        "lcm",
        True,
        "cpu",
        None,
        "few-step LoRA, 4 steps, no guidance pass (tiny VAE on a CPU): ~10× faster, a little softer",
    ),
    "live": Mode(
        "live",
        2,
        1.0,
        "lcm",
        True,
        "always",
        256,
        "2 steps, tiny VAE, ≤ 256 px on a CPU: for drawing, not for keeping",
    ),
}
# Settings that come from the mode unless the caller sets them
MODE_FIELDS = ("steps", "guidance", "scheduler")


def switch(params: dict[str, Any], to: str) -> dict[str, Any]:
    """Request settings (with their `mode`, quality if none) moved to mode `to`: the same, or, for another mode,
    without the steps, guidance and scheduler, which then come from `to` unless set again."""
    if to == (params.get("mode") or "quality"):
        return dict(params)
    return {k: v for k, v in params.items() if k not in MODE_FIELDS}
