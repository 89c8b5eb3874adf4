"""Record a render: measure its images, then keep them as one thing in three places that say the same (the PNG's
own text chunk, a JSON sidecar, a history row) plus the search index; the sketch once, by its content hash.

A render may also be kept first and measured after (the Renders service does so: the designer sees the image without
waiting for CLIP): it is recorded with `"measured": false` and per image `metrics` `{}`, and `measure(run_id)` later
computes the numbers, indexes the outputs for search and rewrites the three places with `"measured": true` and
`timings["metrics"]`. `timings["total"]` stays what the designer waited: until the images were kept."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import NotFound
from ..metadata import save_png, write_png, write_sidecar
from ..metrics import image_metrics
from ..rules import modes
from ..rules.controlnets import CONTROLS, DEFAULT_CONTROL
from ..schema import GenerateResult, StyleHit
from .plan import Plan, control_of

CONTROLS_KEPT = 8  # the edges of this many recent runs stay in memory (a 1024² map is 3 MB): a page polling a result
# or a measure after its render does not decode the sketch and make the map again
log = logging.getLogger(__name__)
FRAMES = 8  # renders not kept (live frames) held for their callers


def save_output(image: Image.Image, path: Path, meta: dict[str, Any], index: int) -> None:
    """One output with its own view of the run's metadata, in the PNG and its sidecar alike."""
    image_meta = {**meta, "seed": meta["seeds"][index], "index": index, "metrics": meta["metrics"][index]}
    save_png(image, path, image_meta)
    write_sidecar(path.with_suffix(".json"), image_meta)


def _mask_image(mask) -> Image.Image | None:
    import numpy as np

    return None if mask is None else Image.fromarray(mask.astype(np.uint8) * 255, "L")


def lines_map(plan: Plan) -> Image.Image | None:
    """The map a render's edge fidelity is measured against: the first ControlNet's, where it is white lines on black
    (a depth map or a tile's image is not: no edge numbers then)."""
    return plan.control if plan.units and CONTROLS[plan.units[0].type].lines else None


class Recorder:
    """Keeps renders in the data folder: outputs/DATE/RUN-i.png (+ .json), sketches/HASH.png, the history and its
    CLIP index. `retrieval` is the live retrieval state (its embeddings measure, its index finds past renders)."""

    def __init__(self, data_dir: Path, settings, history, retrieval, device: str, dtype: str, maps=None):
        self.data_dir = Path(data_dir)
        self.maps = maps  # the control maps' preprocessors (engine/render/preprocess.py), to make a run's map again
        self.settings = settings
        self.history = history
        self.retrieval = retrieval
        self.device, self.dtype = device, dtype
        self.frames: OrderedDict[str, GenerateResult] = OrderedDict()  # renders not kept, newest last
        self._frames_lock = threading.Lock()
        self._measure_lock = threading.Lock()  # one measuring at a time: a measure job and a remeasure may meet
        self._controls: OrderedDict[tuple, Image.Image | None] = OrderedDict()  # the last runs' edges, made once
        self._controls_lock = threading.Lock()

    def finish(
        self,
        plan: Plan,
        styles: list[StyleHit],
        region_styles: list[StyleHit],
        images: list[Image.Image],
        timings: dict[str, Any],
        references: list[Image.Image],
        executor: dict[str, Any] | None = None,
        measure: bool = True,
    ) -> GenerateResult:
        """Measure rendered images and keep them. The last step of every render, wherever it ran. `measure` False:
        keep them unmeasured (`"measured": false`), for `measure(run_id)` to finish later."""
        request, library = plan.request, self.retrieval.library
        t0 = time.perf_counter()
        measured = request.keep and measure
        if measured:
            metrics = image_metrics(library.embeddings, images, request.prompt, lines_map(plan), references)
        else:  # a live frame (on screen for a moment, not worth measuring), or measured after it is kept
            metrics = [{} for _ in images]
        timings = {**plan.timings, **timings}
        if measured or not request.keep:
            timings["metrics"] = time.perf_counter() - t0
        result = GenerateResult(
            images=images,
            seeds=plan.seeds,
            metadata={"metrics": metrics, "measured": measured},
            styles=styles,
            edges=plan.control,
            regions=self.region_records(plan, region_styles, images),
        )
        timings["total"] = time.perf_counter() - plan.started
        if request.keep:
            self.record(plan, result, timings, executor)
        else:
            self.frame(plan, result, timings, executor)
        return result

    def frame(self, plan: Plan, result: GenerateResult, timings: dict[str, Any], executor=None) -> None:
        """A render the caller does not keep (`keep=False`, the live canvas): its PNGs (metadata inside) are held in
        memory for the caller to fetch, the last `FRAMES` of them, and nothing is written to disk or the History."""
        import io

        now = datetime.now(UTC)
        run_id = f"frame-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
        meta = self.metadata(plan, result, timings, run_id, now)
        if executor:
            meta["executor"] = executor
        pngs = []
        for i, image in enumerate(result.images):
            buf = io.BytesIO()
            write_png(image, buf, {**meta, "seed": meta["seeds"][i], "index": i, "metrics": meta["metrics"][i]})
            pngs.append(buf.getvalue())
        result.metadata, result.png, result.run_id = meta, pngs, run_id
        with self._frames_lock:
            self.frames[run_id] = result
            while len(self.frames) > FRAMES:
                self.frames.popitem(last=False)

    def region_records(self, plan: Plan, hits: list[StyleHit], images: list[Image.Image]) -> list[dict[str, Any]]:
        """What the metadata keeps of each region: its mask (RLE at the render's size), words, colour, the style it
        got and how close each output's region came to that style (CLIP cosine)."""
        from ..masks import REGION_COLORS, rle_encode
        from ..regions import cutout

        records = []
        library = self.retrieval.library
        emb = library.embeddings
        regions = plan.request.regions
        for i, (region, mask, hit) in enumerate(zip(regions, plan.region_masks, hits, strict=True)):
            ref = emb.embed_images([library.image(hit.id)])[0]
            crops = emb.embed_images([cutout(img, mask) for img in images])
            similarity = [round(float(sum(a * b for a, b in zip(c, ref, strict=True))), 4) for c in crops]
            records.append(
                {
                    "index": i,
                    "color": REGION_COLORS[i % len(REGION_COLORS)],
                    "words": region.words,
                    "style": hit.as_dict(),
                    "area": round(float(mask.mean()), 4),
                    "style_similarity": similarity,
                    "mask": rle_encode(mask),
                }
            )
        return records

    def metadata(self, plan: Plan, result: GenerateResult, timings: dict[str, Any], run_id: str, now: datetime):
        """The recipe: everything that made these pixels, and how they measure."""
        request = plan.request
        ids = self.settings.models()
        shown = self.settings.shown_model
        flux = request.model == "flux"
        mode = modes.MODES[request.mode]
        active = self.retrieval.active
        return {
            "version": 1,
            "run_id": run_id,
            "kind": "outpaint"
            if plan.outpaint is not None
            else "inpaint"
            if plan.mask is not None
            else "img2img"
            if plan.init is not None
            else "sketch"
            if plan.sketch is not None
            else "text",
            "created_at": now.isoformat(timespec="seconds"),
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": result.seeds[0],
            "seeds": result.seeds,
            "width": plan.hires_size[0] if plan.hires_size else plan.width,
            "height": plan.hires_size[1] if plan.hires_size else plan.height,
            "edge_mode": plan.edge_mode,
            "canny": [request.canny_low, request.canny_high] if plan.edge_mode == "canny" else None,
            "sketch_hash": plan.sketch_hash,
            "init_hash": plan.init_hash,
            "mask_hash": plan.mask_hash,
            "source": request.source,
            "batch": request.batch,
            "label": request.label,
            "ref": request.ref,
            "params": {
                "steps": request.steps,
                "guidance": request.guidance,
                "structure_strength": request.structure_strength,
                "style_strength": request.style_strength,
                "style_only": request.style_only,
                "scheduler": request.scheduler,
                "mode": request.mode,
                "model": request.model,
                "size": request.size,
                "aspect": request.aspect,
                "variations": request.variations,
                "k": request.k,
                "style": request.style,
                "blend": [b.model_dump() for b in request.blend],
                "use_style": request.use_style,
                "control": request.control,
                # every ControlNet it followed (A1111's "ControlNet 0", "ControlNet 1", … in the PNG's parameters)
                "controls": [u.record() for u in plan.units],
                "outpaint": list(plan.outpaint) if plan.outpaint is not None else None,
                "strength": request.strength if plan.init is not None else None,
                "checkpoint": request.checkpoint,
                "loras": [lo.model_dump() for lo in request.loras],
                "hires": request.hires,
                "hires_strength": request.hires_strength if plan.hires_size else None,
            },
            "styles": [s.as_dict() for s in result.styles],
            "regions": result.regions,
            "models": {  # as callers may see them: hub ids and names, never the engine's folders
                "base": shown(self.settings.flux_paths()[0] if flux else (request.checkpoint or ids.base)),
                "lora": shown(self.settings.flux_paths()[1] if flux else (ids.fast_lora if mode.lora else None)),
                "lora_weight": ids.fast_lora_weight if mode.lora and not flux else None,
                "vae": shown(ids.taesd) if mode.uses_tiny_vae(self.device) else "full",
                "controlnet": shown(ids.controlnet_for(request.control)),
                "controlnets": [shown(ids.controlnet_for(u.type)) for u in plan.units],
                "depth_estimator": shown(ids.depth)
                if any(CONTROLS[u.type].preprocessor == "model" for u in plan.units)
                else None,
                "loras": [{"name": n, "weight": w} for n, _, w in plan.loras],
                "ip_adapter": shown(ids.ip_adapter),
                "ip_adapter_weight": ids.ip_adapter_weight,
                "clip": shown(ids.clip),
                "sam2": shown(ids.sam2) if request.regions else None,
                "retrieval_adapter": dict(active) if active else None,
            },
            "profile": self.settings.profile,
            "device": self.device,
            "dtype": self.dtype,
            "timings": {
                k: (round(v, 4) if isinstance(v, float) else [round(s, 4) for s in v]) for k, v in timings.items()
            },
            "metrics": result.metadata["metrics"],
            "measured": result.metadata["measured"],  # False: kept before measuring; `measure` adds the numbers
            **plan.record,
        }

    def record(self, plan: Plan, result: GenerateResult, timings: dict[str, Any], executor=None) -> None:
        now = datetime.now(UTC)
        run_id = f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
        meta = self.metadata(plan, result, timings, run_id, now)
        if executor:
            meta["executor"] = executor
        # the inputs once each, by content hash: the sketch, the image started from, the inpainting mask
        for image, digest in (
            (plan.sketch, plan.sketch_hash),
            (plan.init, plan.init_hash),
            (_mask_image(plan.mask), plan.mask_hash),
            *((u.image, u.image_hash) for u in plan.units),
        ):
            if image is not None:
                path = self.data_dir / "sketches" / f"{digest}.png"
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    image.save(path)
        out_dir = self.data_dir / "outputs" / f"{now:%Y-%m-%d}"
        paths = []
        for i, image in enumerate(result.images):
            path = out_dir / f"{run_id}-{i}.png"
            save_output(image, path, meta, i)
            paths.append(str(path))
        self.history.add(run_id, meta, paths)
        if meta["measured"]:  # else `measure` indexes it, with the embeddings it computes anyway
            self.retrieval.history_index.add(run_id, result.images, paths, meta)
        result.metadata = meta
        result.paths = paths
        result.run_id = run_id

    def derived(
        self, source: dict[str, Any], index: int, image: Image.Image, extra: dict[str, Any], seconds: float
    ) -> str:
        """Keep an image made from one output of a past run (an upscale) as a new run, unmeasured: the source's recipe
        (prompt, params, styles, models, sketch) with this image's size and seed and `extra` (what made it, from which
        run), in its PNG, sidecar and history row alike; in no run set. Its id."""
        import copy

        now = datetime.now(UTC)
        run_id = f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
        meta = copy.deepcopy(source)
        for key in ("executor", "index", "seed", "metrics"):
            meta.pop(key, None)
        seed = source["seeds"][index]
        meta.update(
            run_id=run_id, kind="upscale", created_at=now.isoformat(timespec="seconds"), seed=seed, seeds=[seed],
            width=image.width, height=image.height, source="upscale", batch=None, label="", regions=[],
            metrics=[{}], measured=False, timings={"upscale": round(seconds, 4), "total": round(seconds, 4)}, **extra,
        )  # fmt: skip
        path = self.data_dir / "outputs" / f"{now:%Y-%m-%d}" / f"{run_id}-0.png"
        save_output(image, path, meta, 0)
        self.history.add(run_id, meta, [str(path)])
        return run_id

    def sketch_path(self, sketch_hash: str | None) -> Path | None:
        path = self.data_dir / "sketches" / f"{sketch_hash}.png"
        return path if sketch_hash and path.is_file() else None

    def control(self, row: dict[str, Any]) -> Image.Image | None:
        """The control edges a kept run followed, made again from its sketch (or, without one, from the image it
        started from, as the plan does)."""
        meta = row["metadata"]
        units = meta["params"].get("controls") or [{}]
        source = self.sketch_path(units[0].get("image_hash") or row["sketch_hash"] or meta.get("init_hash"))
        if source is None:
            return None
        key = (row["id"], source.name)  # a run's sketch and settings never change: made once while it is recent
        with self._controls_lock:
            if key in self._controls:
                self._controls.move_to_end(key)
                return self._controls[key]
        made = control_of(source.read_bytes(), meta, self.settings.max_input_pixels, self.maps)
        with self._controls_lock:
            self._controls[key] = made
            while len(self._controls) > CONTROLS_KEPT:
                self._controls.popitem(last=False)
        return made

    def _measure(self, row: dict[str, Any], index: bool) -> bool:
        """Measure a kept run from its files and write the numbers into its PNGs, sidecars and history row (with
        `index`, its outputs also join the search index). False when an output file is missing."""
        meta = row["metadata"]
        paths = [Path(p) for p in row["outputs"]]
        if not all(p.is_file() for p in paths):
            log.warning("run %s: an output file is missing; not measured", row["id"])
            return False
        library = self.retrieval.library
        emb = library.embeddings
        known = {s.id for s in library.list(include_hidden=True)}
        images = [Image.open(p).convert("RGB") for p in paths]
        kind = CONTROLS.get(meta["params"].get("control") or DEFAULT_CONTROL)
        control = self.control(row) if kind is None or kind.lines else None
        refs = [library.image(s["id"]) for s in meta["styles"] if s.get("used") and s["id"] in known]
        t0 = time.perf_counter()
        vectors = emb.embed_images(images)
        meta["metrics"] = image_metrics(emb, images, meta["prompt"], control, refs, vectors=vectors)
        seconds = time.perf_counter() - t0
        if index:
            search = self.retrieval.history_index
            search.add(row["id"], images, [str(p) for p in paths], meta, vectors if search.embeddings is emb else None)
        if meta.get("measured") is False:  # measured after it was kept: say when, and how long it took
            meta["timings"]["metrics"] = round(seconds, 4)
        meta["measured"] = True
        for i, image in enumerate(images):
            save_output(image, paths[i], meta, i)
        self.history.update_metadata(row["id"], meta)
        return True

    def measure(self, run_id: str) -> dict[str, Any]:
        """Measure a run kept unmeasured (`"measured": false`), index it for search, and rewrite its PNGs, sidecars
        and history row with the numbers; a run measured already is left as it is."""
        with self._measure_lock:
            row = self.history.get(run_id)
            if row is None:
                raise NotFound(f"no run '{run_id}' in the history")
            if row["metadata"].get("measured", True):
                return {"run_id": run_id, "measured": True, "already": True}
            if not self._measure(row, index=True):
                raise NotFound(f"run '{run_id}': an output file is missing; it cannot be measured")
        return {"run_id": run_id, "measured": True}

    def remeasure(self, run_id: str) -> bool | None:
        """Measure a past run again (after a metric or model change); PNG, sidecar and history stay in step. A run
        still unmeasured is measured and indexed here as its measure job would. True when it was measured, False when
        an output file is missing, None when the run is not in the history (any more)."""
        with self._measure_lock:
            run = self.history.get(run_id)  # as it is now: its measure job may have run meanwhile
            if run is None:
                return None
            return self._measure(run, index=run["metadata"].get("measured") is False)
