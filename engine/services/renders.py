"""Renders as jobs, their results, and the analysis of images (SAM2 masks, CLIP concepts).

A render is planned at submit (the sketch decoded once) and the plan waits in memory for its job; it is released
when the job ends in any state. A `keep: false` render (a live frame) is never written to disk: its job's row in
the store holds no request at all, only that it lives in memory, so after a restart it fails with a line saying so
instead of running again."""

from __future__ import annotations

import io
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from PIL import Image

from .. import images as imgs
from ..api import ControlPreview, JobInfo, RenderResult, Renders, SegmentResult, UploadStatus
from ..errors import BadInput, EngineError, NotFound, QueueFull
from ..jobs import JobContext, StoreUnavailable
from ..masks import check_prompts, mask_png
from ..model_parts import ModelParts
from ..regions import cutout
from ..render.plan import Plan
from ..render.record import FRAMES
from ..rules.controlnets import DEFAULT_CONTROL, REFINE_CONTROL
from ..schema import GenerateRequest, Progress, StyleHit
from . import Core, png

ANALYZE_SIDE = 1024  # /analyze works on the image scaled to at most this many pixels a side
CONTROL_PREVIEW_SIDE = 512  # a ControlNet map preview: enough to judge it, cheap to make and to send
DEFAULT_CONCEPTS = [
    "a building", "an interior", "furniture", "a chair", "a lamp", "a product", "a person", "a landscape",
    "a city at night", "a technical drawing", "a sketch", "a watercolor painting", "a poster", "a texture",
]  # fmt: skip
UPSCALE_FACTORS = (2, 4)
REFINE_STRENGTH = 0.3  # an upscale's refine: low, it sharpens what is there and keeps the composition


class RendersService(Renders):
    def __init__(self, core: Core):
        self.core = core
        self._plans: dict[str, Plan] = {}  # planned at submit, rendered by the job: the sketch is decoded once
        self._lock = threading.Lock()
        # big model files in parts, each within the request limit (data folder: uploads/)
        self.parts = ModelParts(core.data_dir / "uploads", core.pipeline.files, core.settings.max_upload_bytes)

    def handlers(self):
        return {"render": self._run, "measure": self._measure, "upscale": self._upscale}

    def submit(self, request: GenerateRequest) -> JobInfo:
        planned = self.core.check(request)
        if request.keep:
            payload, title = {"request": request.model_dump_json()}, request.prompt[:80]
        else:  # nothing of it on disk: the plan in memory is all there is
            payload, title = {"memory": True}, "render (not kept)"
        with self._lock:
            job = self.core.jobs.submit("render", payload, title=title)
            if not job.done:
                self._plans[job.id] = planned
        return job

    def ended(self, job_id: str) -> None:
        """The job ended (done, failed, cancelled, abandoned): its plan, sketch and inputs go."""
        with self._lock:
            self._plans.pop(job_id, None)

    def _run(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        with self._lock:
            planned = self._plans.pop(ctx.id, None)
        if planned is None and payload.get("memory"):
            raise EngineError(
                "this render was not to be kept (keep: false), so it was held in memory only, and the engine "
                "restarted before it ran",
                fix="render it again",
            )
        if planned is None:  # queued before a restart: plan again
            planned = self.core.pipeline.plan(GenerateRequest.model_validate_json(payload["request"]))
        # kept first, measured after: the designer waits for the images, not for CLIP (a live frame: never measured)
        result = self.core.pipeline.generate(planned, ctx.report, ctx.cancel, measure=False)
        out = {"run_id": result.run_id, "images": len(result.images)}
        if planned.request.keep:
            out["measure_job"] = self.measure_later(result.run_id, planned.request.prompt)
        return out

    def measure_later(self, run_id: str, prompt: str = "") -> str | None:
        """Queue the job that measures a run kept unmeasured; its id. With the queue full, the run is measured now
        instead (None): a render's numbers are never left behind."""
        try:
            job = self.core.jobs.submit("measure", {"run_id": run_id}, title=f"measure: {prompt[:60]}", key=run_id)
        except (QueueFull, StoreUnavailable):
            self.core.recorder.measure(run_id)
            return None
        return job.id

    def _measure(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        ctx.check()
        return self.core.recorder.measure(payload["run_id"])

    def result(self, job_id: str) -> RenderResult:
        job = self.core.jobs.get(job_id)
        if job.kind not in ("render", "upscale"):
            raise BadInput(f"job '{job_id}' is a {job.kind} job, not a render")
        if job.state != "done":
            raise BadInput(f"job '{job_id}' is {job.state}" + (f": {job.error}" if job.error else ""))
        result = self.of_run(job.result["run_id"])
        result.measure_job = job.result.get("measure_job")
        return result

    def of_run(self, run_id: str) -> RenderResult:
        """A past render as a result: its files as saved and the edges it followed (a frame not kept: from memory,
        while it is among the last few)."""
        frame = self.core.recorder.frames.get(run_id)
        if frame is not None:
            return RenderResult(
                run_id=run_id, seeds=frame.seeds, metadata=frame.metadata, styles=frame.styles,
                regions=frame.regions, png=frame.png, edges=png(frame.edges) if frame.edges is not None else None,
            )  # fmt: skip
        if run_id.startswith("frame-"):
            raise NotFound(f"frame '{run_id}' is gone: frames not kept are held for the last {FRAMES} renders only")
        row = self.core.history.get(run_id)
        if row is None:
            raise NotFound(f"no run '{run_id}' in the history")
        meta = row["metadata"]
        control = self.core.recorder.control(row)
        edges = png(control) if control is not None else None
        return RenderResult(
            run_id=run_id,
            seeds=meta["seeds"],
            metadata=meta,
            styles=[
                StyleHit(**{k: s[k] for k in ("id", "name", "score", "weight", "source", "used")})
                for s in meta["styles"]
            ],  # fmt: skip
            regions=meta.get("regions") or [],
            png=[Path(p).read_bytes() for p in row["outputs"]],
            edges=edges,
            files=[self.core.in_data_folder(p) for p in row["outputs"]],
        )

    # ---- upscaling ------------------------------------------------------------------------------------------------
    def upscale(self, run_id: str, index: int = 0, factor: int = 4, refine: bool = False) -> JobInfo:
        if factor not in UPSCALE_FACTORS:
            raise BadInput(f"factor must be 2 or 4 (got {factor})")
        source = self.of_run(run_id)
        if not 0 <= index < len(source.png):
            count = len(source.png)
            raise BadInput(f"run '{run_id}' has {count} image{'s' if count != 1 else ''}; there is no image {index}")
        with Image.open(io.BytesIO(source.png[index])) as im:
            width, height = im.size
        check_upscale(width, height, factor, refine, self.core.settings.max_input_pixels)
        payload = {"run_id": run_id, "index": index, "factor": factor, "refine": refine}
        prompt = source.metadata.get("prompt", "")
        return self.core.jobs.submit("upscale", payload, title=f"upscale ×{factor}: {prompt[:60]}")

    def _upscale(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        from ..upscaler import Tiling, upscale

        run_id, index, factor = payload["run_id"], int(payload["index"]), int(payload["factor"])
        source = self.of_run(run_id)
        image = Image.open(io.BytesIO(source.png[index])).convert("RGB")
        ctx.report(Progress("loading the upscaler", 0, 0, 0.0))
        upscaler = self.core.models.upscaler
        s = self.core.settings
        tiling = Tiling(s.upscale_tile, min(s.upscale_overlap, s.upscale_tile // 4))
        t0 = time.perf_counter()

        def waiting(position: int) -> None:
            ctx.report(Progress("queued", position, 0, time.perf_counter() - t0))

        def tiled(done: int, total: int) -> None:
            ctx.report(Progress("upscaling", done, total, time.perf_counter() - t0))

        queue = getattr(self.core.pipeline.executor, "queue", None)  # a local GPU: it takes its turn with renders
        with queue.slot(waiting, ctx.cancel) if queue is not None else nullcontext():
            made = upscale(upscaler, image, factor, tiling, tiled, ctx.cancel)
        seconds = time.perf_counter() - t0
        record = {
            "factor": factor, "source": {"run_id": run_id, "index": index}, "model": upscaler.model,
            "architecture": upscaler.architecture, "loader": upscaler.loader, "scale": upscaler.scale,
            "tile_px": tiling.tile, "overlap": tiling.overlap, "width": made.width, "height": made.height,
            "seconds": round(seconds, 4), "refine": None,
        }  # fmt: skip
        if payload.get("refine"):
            new_run = self._refine(source.metadata, index, made, record, ctx)
        else:
            new_run = self.core.recorder.derived(source.metadata, index, made, {"upscale": record}, seconds)
        return {"run_id": new_run, "images": 1, "measure_job": self.measure_later(new_run, source.metadata["prompt"])}

    def _refine(self, meta: dict[str, Any], index: int, image, record: dict[str, Any], ctx: JobContext) -> str:
        """The upscaled image refined by image-to-image at REFINE_STRENGTH with the source's recipe, following the
        tile ControlNet (where the registry has one; else the default ControlNet on the image's own edges): the hook a
        refine of large prints goes through. Recorded by the render path as a run whose `upscale` names its source."""
        from ..rules.controlnets import CONTROLS

        control = REFINE_CONTROL if REFINE_CONTROL in CONTROLS else DEFAULT_CONTROL
        mode = meta["params"].get("mode") or "quality"
        request = GenerateRequest.from_metadata(
            meta, None, init_image=png(image), strength=REFINE_STRENGTH, control=control, size=min(image.size),
            aspect=None, hires=1.0, variations=1, seed=meta["seeds"][index], regions=[], source="upscale", keep=True,
            mode="fast" if mode == "live" else mode,  # live renders small on a CPU: the refine keeps the size
        )  # fmt: skip
        planned = self.core.pipeline.plan(request)
        record["refine"] = {"strength": REFINE_STRENGTH, "control": control, "steps": request.steps}
        planned.record = {"kind": "upscale", "upscale": record}
        result = self.core.pipeline.generate(planned, ctx.report, ctx.cancel, measure=False)
        return result.run_id

    def models(self) -> dict[str, Any]:
        return self.core.pipeline.files.list()

    def add_model(self, kind, name: str, data: bytes) -> dict[str, Any]:
        return self.core.pipeline.files.add(kind, name, data)

    def upload_begin(self, kind, name: str, sha256: str, size: int) -> UploadStatus:
        return UploadStatus(**self.parts.begin(kind, name, sha256, size))

    def upload_part(self, sha256: str, offset: int, chunk: bytes) -> UploadStatus:
        return UploadStatus(**self.parts.part(sha256, offset, chunk))

    def upload_finish(self, kind, name: str, sha256: str) -> dict[str, Any]:
        return self.parts.finish(kind, name, sha256)

    def _decode(self, image: bytes):
        s = self.core.settings
        return imgs.decode(image, s.max_input_pixels, s.max_upload_bytes)

    def control_preview(self, image: bytes, control=DEFAULT_CONTROL, edge_mode="auto", canny_low=50, canny_high=150):
        img = self._decode(image)
        img.thumbnail((CONTROL_PREVIEW_SIDE, CONTROL_PREVIEW_SIDE), Image.Resampling.LANCZOS)
        made, used = self.core.pipeline.maps.control_map(img, control, edge_mode, canny_low, canny_high)
        return ControlPreview(png=imgs.png_bytes(made), used=used, width=made.width, height=made.height)

    def segment(self, image: bytes, points=None, labels=None, box=None) -> SegmentResult:
        points, labels, box = check_prompts(points, labels, box)  # before the image is decoded: cheap refusals first
        found = self.core.models.segmenter.segment(self._decode(image), points, labels, box)
        return SegmentResult(
            mask_png=mask_png(found.mask), score=round(found.score, 4), area=round(found.area, 4), bbox=found.bbox,
            polygons=found.polygons,
        )  # fmt: skip

    def concepts(self, images: list, concepts: list[str], k: int) -> list[list[dict[str, Any]]]:
        """CLIP zero-shot per image: the most likely concepts with softmax confidences (as CLIP's own logits)."""
        import torch

        emb = self.core.retrieval.library.embeddings
        image_vecs = torch.tensor(emb.embed_images(images))
        text_vecs = torch.tensor(emb.embed_documents([f"a photo of {c}" for c in concepts]))
        scale = float(emb.model.logit_scale.detach().exp())
        probs = torch.softmax(scale * image_vecs @ text_vecs.T, dim=-1)
        out = []
        for row in probs.tolist():
            ranked = sorted(zip(concepts, row, strict=True), key=lambda x: -x[1])[:k]
            out.append([{"concept": c, "confidence": round(p, 4)} for c, p in ranked])
        return out

    def analyze(self, image, concepts=None, k=5, segment=True, grid=8, threshold=0.5) -> dict[str, Any]:
        wanted = [c.strip() for c in (concepts or DEFAULT_CONCEPTS) if c.strip()]
        if not wanted:
            raise BadInput("analyze needs at least one concept")
        if not 1 <= k <= 50:
            raise BadInput(f"k must be between 1 and 50 (got {k})")
        if not 1 <= grid <= 32:
            raise BadInput(f"grid must be between 1 and 32 (got {grid})")
        img = self._decode(image)
        if max(img.size) > ANALYZE_SIDE:  # masks and polygons come at this size (the response says which)
            img.thumbnail((ANALYZE_SIDE, ANALYZE_SIDE), Image.Resampling.BILINEAR)
        out: dict[str, Any] = {"concepts": self.concepts([img], wanted, k)[0]}
        if segment:
            segments = self.core.models.segmenter.automatic(img, grid, threshold, max_masks=16)
            if segments:
                cut = self.concepts([cutout(img, s.mask) for s in segments], wanted, min(k, 5))
                for seg, found in zip(segments, cut, strict=True):
                    seg.concepts = found
            out["segmentation"] = {
                "width": img.width,
                "height": img.height,
                "masks": [s.as_dict("rle") for s in segments],
            }
        return out


def check_upscale(width: int, height: int, factor: int, refine: bool, max_pixels: int) -> None:
    """An upscale the engine can make: its result within the pixel limit and, to be refined, within what a render
    takes (1024 px a side at most)."""
    from ..images import MAX_SIDE

    w, h = width * factor, height * factor
    if w * h > max_pixels:
        raise BadInput(
            f"upscaling {width}×{height} ×{factor} would make {w}×{h} ({w * h / 1e6:.1f} M pixels), over this "
            f"engine's limit of {max_pixels / 1e6:.1f} M pixels",
            fix="upscale ×2, or a smaller render",
        )
    if refine and max(w, h) > MAX_SIDE:
        raise BadInput(
            f"a refined upscale is rendered again, at most {MAX_SIDE} px a side; {width}×{height} ×{factor} would "
            f"be {w}×{h}",
            fix="upscale without refine, or ×2",
        )
