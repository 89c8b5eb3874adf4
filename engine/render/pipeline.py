"""One render, top to bottom: plan → retrieve (the LCEL chain, built once) → run (an executor, in its queue) →
record. `LocalEngine`'s render jobs, sweeps, catalog rows, the Arena and the server all come through here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from ..schema import GenerateRequest, GenerateResult, Progress, StyleHit
from .call import Params
from .plan import Plan, plan
from .styles import pick_region_styles, pick_styles

ProgressFn = Callable[[Progress], None]


class RenderPipeline:
    """Holds what every render shares: the settings, the retrieval state, the executor and the recorder."""

    def __init__(self, settings, retrieval, executor, recorder, maps=None):
        self.settings = settings
        self.maps = maps  # the control maps' preprocessors (engine/render/preprocess.py): model-backed ones here
        self.retrieval = retrieval
        self.executor = executor
        self.recorder = recorder
        from ..model_files import ModelFiles

        self.files = ModelFiles(settings.models_dir, settings.max_model_bytes, settings.allowed_checkpoints())
        # {plan, on_progress, cancel} → attach the styles (global and per region) → render → record
        self.chain = RunnablePassthrough.assign(
            styles=RunnableLambda(self._styles, name="retrieve_styles"),
            region_styles=RunnableLambda(self._region_styles, name="retrieve_region_styles"),
        ) | RunnableLambda(self._render, name="generate")

    def plan(self, request: GenerateRequest) -> Plan:
        """Validate and prepare, no side effects (the sketch decoded once, here)."""
        if self.executor.name == "local":
            cpu = self.settings.resolve_device() == "cpu"
        else:
            cpu = not getattr(self.executor, "gpus", 0)
        limits = (self.settings.max_input_pixels, self.settings.max_upload_bytes)
        return plan(request, *limits, cpu, self.files, self.maps)

    def generate(
        self,
        request: GenerateRequest | Plan,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        measure: bool = True,
    ) -> GenerateResult:
        """Sketch (or none) + prompt → images with their metadata, kept in outputs/ and the history. Measured before
        they are kept unless `measure` is False: then kept as `"measured": false`, for `recorder.measure(run_id)`."""
        planned = request if isinstance(request, Plan) else self.plan(request)
        planned.timings["retrieval_started"] = time.perf_counter()
        return self.chain.invoke({"plan": planned, "on_progress": on_progress, "cancel": cancel, "measure": measure})

    # ---- the chain's steps -------------------------------------------------------------------------------------
    def _styles(self, x: dict[str, Any]) -> list[StyleHit]:
        return pick_styles(self.retrieval.library, x["plan"].request)

    def _region_styles(self, x: dict[str, Any]) -> list[StyleHit]:
        return pick_region_styles(self.retrieval.library, x["plan"].request)

    def params(self, p: Plan, styles: list[StyleHit], region_styles: list[StyleHit]) -> Params:
        """The pipeline call for a plan and its styles (the references as images)."""
        library, request = self.retrieval.library, p.request
        return Params(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            control=p.control,
            references=[(library.image(s.id), s.weight) for s in styles if s.used],
            seeds=p.seeds,
            width=p.width,
            height=p.height,
            steps=request.steps,
            guidance=request.guidance,
            structure_strength=request.structure_strength,
            style_strength=request.style_strength,
            style_only=request.style_only,
            scheduler=request.scheduler,
            mode=request.mode,
            regions=[(mask, library.image(hit.id)) for mask, hit in zip(p.region_masks, region_styles, strict=True)],
            init=p.init,
            mask=p.mask,
            strength=request.strength,
            control_type=request.control,
            controls=[(u.type, u.map, u.weight, u.start, u.end) for u in p.units],
            checkpoint=p.checkpoint,
            loras=p.loras,
            hires_size=p.hires_size,
            hires_strength=request.hires_strength,
        )

    def _render(self, x: dict[str, Any]) -> GenerateResult:
        p: Plan = x["plan"]
        timings: dict[str, Any] = {"retrieval": time.perf_counter() - p.timings.pop("retrieval_started")}
        params = self.params(p, x["styles"], x["region_styles"])
        out = self.executor.run(params, p.request.model, x["on_progress"], x["cancel"])
        timings.update(out.timings)
        references = [r for r, _ in params.references]
        where = {"name": self.executor.name, "worker": out.worker} if self.executor.name != "local" else None
        return self.recorder.finish(
            p, x["styles"], x["region_styles"], out.images, timings, references, where, x.get("measure", True)
        )
