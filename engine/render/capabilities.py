"""What each text-to-image model accepts and its defaults: the one place the rules live (the plan enforces them,
the CLI and the pages read the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInput


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


def check(request) -> None:
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
                (f"the {request.control} ControlNet", request.control != "canny"),
                ("a hires fix", request.hires > 1),
            )
            if on
        ]
        if asked:
            raise BadInput(f"{asked[0]} needs SD 1.5; {model.name} renders from text only here")
    if (request.sketch is not None and not model.sketch) or ((request.style or request.blend) and not model.styles):
        raise BadInput(TEXT_ONLY)
