"""What each text-to-image model accepts and its defaults: the one place the rules live (the plan enforces them,
the request applies the defaults, the pages read them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelRules:
    name: str
    sketch: bool  # follows a sketch (ControlNet)
    styles: bool  # takes style references (IP-Adapter), and so retrieval
    regions: bool  # per-region styles (IP-Adapter masks)
    steps: int  # default steps
    guidance: float  # default guidance
    multiple: int  # sizes round down to this


MODELS: dict[str, ModelRules] = {
    "sd15": ModelRules("SD 1.5 + ControlNet + IP-Adapter", True, True, True, 20, 7.5, 8),
    "flux": ModelRules("FLUX.1-schnell + LoRA", False, False, False, 4, 0.0, 16),
}
TEXT_ONLY = "FLUX renders from text only here: no sketch and no style reference (use the SD 1.5 model for those)"


def rules(model: str) -> ModelRules:
    return MODELS[model]
