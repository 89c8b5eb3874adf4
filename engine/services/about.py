"""What this engine is (device, models, features) and what it takes (its limits)."""

from __future__ import annotations

from .. import precision
from ..api import About, Capabilities, Limits
from ..catalog_models import local_llm_ready
from ..rules.controlnets import CONTROLS
from ..rules.modes import MODES
from ..schema import MAX_PROMPT, MAX_STEPS
from . import Core


class AboutService(About):
    def __init__(self, core: Core):
        self.core = core

    def limits(self) -> Limits:
        s, jobs = self.core.settings, self.core.jobs
        return Limits(
            max_upload_bytes=s.max_upload_bytes, max_model_bytes=s.max_model_bytes,
            max_input_pixels=s.max_input_pixels, max_prompt=MAX_PROMPT, max_steps=MAX_STEPS,
            max_queued=jobs.max_queued, max_per_client=jobs.per_client,
        )  # fmt: skip

    def capabilities(self) -> Capabilities:
        core = self.core
        executor = core.pipeline.executor
        return Capabilities(
            profile=core.settings.profile,
            device=core.models.device,
            dtype=str(core.models.dtype).removeprefix("torch."),
            precision=precision.precision_label(core.models.device, core.models.dtype),
            cpu=precision.cpu_features().as_dict(),
            models=self.models(),
            loaded=core.models.loaded(),
            retrieval=core.retrieval.label(),
            jobs_waiting=core.jobs.waiting(),
            store_error=core.jobs.store_error,
            executor=executor.name,
            workers=executor.workers,
            features={
                "regions": True,
                "flux": True,
                "tuning": True,
                "local_llm": local_llm_ready(core.settings),  # real weights here, not the tiny profile's
                "ray": executor.name == "ray",
                "upscale": True,  # renders.upscale (an engine older than it lacks the key)
            },
            limits=self.limits(),
            controls=list(CONTROLS),
            modes=list(MODES),
        )

    def models(self) -> dict[str, str]:
        """The models in force as callers see them: hub ids, or folders relative to the data folder."""
        settings = self.core.settings
        ids, shown = settings.models(), settings.shown_model
        return {
            "base": shown(ids.base),
            "controlnet": shown(ids.controlnet),
            "ip_adapter": f"{shown(ids.ip_adapter)}/{ids.ip_adapter_subfolder}/{ids.ip_adapter_weight}",
            "clip": shown(ids.clip),
            "sam2": shown(ids.sam2),
            "flux": " + ".join(shown(p) for p in settings.flux_paths() if p),
            "upscaler": "/".join(shown(p) for p in settings.upscaler_paths()),
        }
