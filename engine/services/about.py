"""What this engine is (device, models, features) and what it takes (its limits)."""

from __future__ import annotations

import threading
import time

from .. import doctor, precision
from ..api import About, Capabilities, DoctorReport, Limits
from ..catalog_models import local_llm_ready
from ..hub import hub_online
from ..rules.controlnets import CONTROLS
from ..rules.modes import MODES
from ..schema import MAX_PROMPT, MAX_STEPS
from . import Core


class AboutService(About):
    HELD_FOR = 30.0  # seconds a look at what this engine holds stays fresh (the sidebar asks on every rerun)

    def __init__(self, core: Core):
        self.core = core
        self._held: tuple[float, list[str], list[str]] | None = None
        self._held_lock = threading.Lock()

    def held(self) -> tuple[list[str], list[str]]:
        """The ControlNet types and the modes this engine can render with now: those whose weights it holds (the
        doctor's look at the disk: nothing loads), or all of them while the hub is reachable (fetched on first
        use). Quality mode needs nothing beyond the base model; fast and live need the few-step LoRA."""
        with self._held_lock:
            if self._held is not None and time.monotonic() - self._held[0] < self.HELD_FOR:
                return self._held[1], self._held[2]
            settings = self.core.settings
            if settings.profile == "tiny" or hub_online():
                controls, modes = list(CONTROLS), list(MODES)
            else:
                usable = {
                    e.name: bool(c and c.usable)
                    for e in doctor.ENTRIES
                    if e.name.startswith("controlnet-") or e.name == "fast-lora"
                    for c in [doctor.check(e, settings)]
                }
                controls = [n for n in CONTROLS if usable.get(f"controlnet-{n}", False)]
                modes = [m for m, mode in MODES.items() if not mode.lora or usable.get("fast-lora", False)]
            self._held = (time.monotonic(), controls, modes)
            return controls, modes

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
        controls, modes = self.held()
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
            controls=controls,
            modes=modes,
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

    def doctor(self) -> DoctorReport:
        from ..doctor import diagnose

        return diagnose(self.core.settings)
