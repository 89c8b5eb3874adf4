"""`Engine`: the one interface pages, CLI, server and tests use; `LocalEngine` wires the modules."""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from . import images as imgs
from .arena import Arena
from .chain import build_chain
from .errors import BadInput
from .generator import Generator, Params
from .history import History, HistoryIndex
from .jobs import GpuQueue
from .library import StyleInfo, StyleLibrary, chroma_client
from .metadata import save_png, write_sidecar
from .metrics import image_metrics
from .models import ModelStore
from .schema import MAX_SEED, GenerateRequest, GenerateResult, Progress, StyleHit
from .settings import Settings

log = logging.getLogger(__name__)

ProgressFn = Callable[[Progress], None]
DEFAULT_CONCEPTS = [
    "a building", "an interior", "furniture", "a chair", "a lamp", "a product", "a person", "a landscape",
    "a city at night", "a technical drawing", "a sketch", "a watercolor painting", "a poster", "a texture",
]  # fmt: skip


class Engine(ABC):
    """What a caller can ask of an engine, local or remote."""

    @abstractmethod
    def health(self) -> dict[str, Any]: ...

    @abstractmethod
    def generate(
        self, request: GenerateRequest, on_progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> GenerateResult: ...

    @abstractmethod
    def list_styles(self, include_hidden: bool = False) -> list[StyleInfo]: ...

    @abstractmethod
    def add_style(self, image: bytes, name: str, description: str = "", tags: list[str] | None = None) -> StyleInfo: ...

    @abstractmethod
    def remove_style(self, name_or_id: str) -> StyleInfo: ...

    @abstractmethod
    def hide_style(self, name_or_id: str, hidden: bool = True) -> StyleInfo: ...

    @abstractmethod
    def search_styles(self, text: str | None = None, image: bytes | None = None, k: int = 3) -> list[StyleHit]: ...

    @abstractmethod
    def style_image(self, name_or_id: str) -> Image.Image: ...

    @abstractmethod
    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]: ...

    @abstractmethod
    def run(self, run_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def run_sketch(self, run_id: str) -> bytes | None: ...

    def batch_runs(self, batch: str) -> list[dict[str, Any]]:
        """Every run of one batch, oldest first (a remote engine keeps its history on the server)."""
        return []

    @abstractmethod
    def search_runs(
        self, text: str | None = None, like: tuple[str, int] | None = None, k: int = 12
    ) -> list[dict[str, Any]]: ...

    @abstractmethod
    def segment(
        self,
        image: bytes,
        points: list[tuple[float, float]] | None = None,
        labels: list[int] | None = None,
        box: list[float] | None = None,
    ):
        """SAM2: the object at the points and/or in the box, as a `regions.Segment`."""


@dataclass
class Prepared:
    """A request's inputs made ready for the pipeline (see `LocalEngine.prepare`)."""

    sketch: Image.Image | None = None
    sketch_hash: str | None = None
    control: Image.Image | None = None
    edge_mode: str | None = None
    width: int = 0
    height: int = 0
    seeds: list[int] = field(default_factory=list)
    region_masks: list[Any] = field(default_factory=list)  # bool H×W at the render's size, one per region
    timings: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


def _save_output(image: Image.Image, path: Path, meta: dict[str, Any], index: int) -> None:
    """One output with its own view of the run's metadata, in the PNG and its sidecar alike."""
    image_meta = {**meta, "seed": meta["seeds"][index], "index": index, "metrics": meta["metrics"][index]}
    save_png(image, path, image_meta)
    write_sidecar(path.with_suffix(".json"), image_meta)


def _collection_name(settings: Settings) -> str:
    if settings.profile == "tiny":
        return "styles-tiny"
    slug = re.sub(r"[^a-zA-Z0-9._-]+", "-", settings.clip_model.strip("/").split("/")[-1])
    return f"styles-{slug}"[:60]


class LocalEngine(Engine):
    """Runs everything in this process; models load on first use and stay loaded."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.data_dir = Path(self.settings.data_dir).expanduser()
        self.models = ModelStore(self.settings)
        self.queue = GpuQueue()
        self.history = History(self.data_dir / "history.sqlite")
        self._lock = threading.Lock()
        self._library: StyleLibrary | None = None
        self._history_index: HistoryIndex | None = None
        self._generator: Generator | None = None
        self._catalog_models = None
        self._flux_generator = None
        self._products = None
        self._client = None
        self.retrieval: dict[str, Any] | None = None  # the active tuned adapter, None for the base CLIP
        self.arena = Arena(self.data_dir / "arena.sqlite")
        self.sweeps_dir = self.data_dir / "runs" / "sweeps"
        self.catalog_dir = self.data_dir / "runs" / "catalog"
        self.tune_dir = self.data_dir / "runs" / "tune"

    # ---- parts, built once ----------------------------------------------------------------
    def _retrieval_parts(self, info: dict[str, Any] | None):
        """The style library and the history index of one retrieval model (the base CLIP, or a tuned adapter
        merged into it), each model in its own collections."""
        from . import retrieval
        from .embeddings import ClipEmbeddings

        if info is None:
            model, processor = self.models.clip
        else:
            from .tune.train import load_tuned

            model, processor = load_tuned(Path(info["run_dir"]), self.settings, self.models.device)
        embeddings = ClipEmbeddings(model, processor, self.models.device)
        client = self._chroma()
        name = _collection_name(self.settings) + retrieval.suffix(info)
        lib = StyleLibrary(
            client,
            embeddings,
            collection=name,
            max_pixels=self.settings.max_input_pixels,
            max_bytes=self.settings.max_upload_bytes,
        )
        return lib, HistoryIndex(client, embeddings, f"history-{name}")

    def _chroma(self):
        if self._client is None:
            self._client = chroma_client(self.data_dir / "chroma", self.settings.chroma_host, self.settings.chroma_port)
        return self._client

    @property
    def library(self) -> StyleLibrary:
        with self._lock:
            if self._library is None:
                from .retrieval import read_active

                self.retrieval = read_active(self.data_dir)
                lib, index = self._retrieval_parts(self.retrieval)
                lib.ingest()
                self._library, self._history_index = lib, index
            return self._library

    def use_retrieval(self, run_dir: Path | None, on_progress: ProgressFn | None = None) -> dict[str, Any]:
        """Point retrieval at a tuned adapter (`run_dir`) or back at the base CLIP (None). The target model's
        collections are brought in step with the active ones first (styles, history, products), so search,
        "more like this" and similar products keep every item; the other model's collections stay."""
        from . import retrieval

        retrieval.check_run(run_dir)
        target = retrieval.adapter_info(run_dir) if run_dir is not None else None
        source_lib, source_index, source_products = self.library, self.history_index, self.products
        t0 = time.perf_counter()
        if (target or {}).get("id") == (self.retrieval or {}).get("id"):
            return {"retrieval": target, "changed": False, "seconds": 0.0}
        lib, index = self._retrieval_parts(target)
        stats = {"styles": retrieval.sync_library(source_lib, lib, on_progress)}
        stats["history"] = retrieval.sync_index(
            source_index.col, index.col, lib.embeddings, "path", "history", on_progress
        )
        from .catalog.tag_run import ProductIndex

        products = ProductIndex(lib.client, lib.embeddings, f"products-{lib.vectors.name}")
        stats["products"] = retrieval.sync_index(
            source_products.col, products.col, lib.embeddings, "thumbnail", "products", on_progress
        )
        retrieval.write_active(self.data_dir, target)
        with self._lock:
            self._library, self._history_index, self._products = lib, index, products
            self.retrieval = target
        return {"retrieval": target, "changed": True, **stats, "seconds": round(time.perf_counter() - t0, 2)}

    def retrieval_library(self, info: dict[str, Any] | None) -> StyleLibrary:
        """The style library of a retrieval model: the active one, or another brought in step with it."""
        from . import retrieval

        if (info or {}).get("id") == (self.retrieval or {}).get("id"):
            return self.library
        lib, _ = self._retrieval_parts(info)
        retrieval.sync_library(self.library, lib)
        return lib

    def retrieval_contest(self, run_dir: Path, queries: list[str], k: int = 4) -> dict[str, Any]:
        """A blind Arena contest: for each query, the base CLIP's top k styles against the tuned adapter's."""
        from . import retrieval

        tuned = retrieval.adapter_info(run_dir)
        queries = list(dict.fromkeys(q.strip() for q in queries if q.strip()))[:100]
        if not queries:
            raise BadInput("type at least one query (one per line)")
        base_lib, tuned_lib = self.retrieval_library(None), self.retrieval_library(tuned)
        results = [
            (q, [h.as_dict() for h in base_lib.search_text(q, k)], [h.as_dict() for h in tuned_lib.search_text(q, k)])
            for q in queries
        ]
        return self.arena.create_retrieval("base CLIP", f"tuned: {tuned['name']}", results)

    @property
    def history_index(self) -> HistoryIndex:
        _ = self.library
        assert self._history_index is not None
        return self._history_index

    @property
    def generator(self) -> Generator:
        with self._lock:
            if self._generator is None:
                self._generator = Generator(self.models.pipeline)
            return self._generator

    @property
    def catalog_models(self):
        """The translator and attribute LLM of catalog runs, loaded on first use."""
        with self._lock:
            if self._catalog_models is None:
                from .catalog.models import CatalogModels

                self._catalog_models = CatalogModels(
                    self.settings, self.models.device, self.models.dtype, retrieval_clip=self._library_embeddings()
                )
            return self._catalog_models

    def _library_embeddings(self):
        return self._library.embeddings if self._library is not None else None

    @property
    def products(self):
        """The product photos tagged so far, for similar-product search (same CLIP space as the styles)."""
        from .catalog.tag_run import ProductIndex

        library = self.library
        with self._lock:
            if self._products is None:
                self._products = ProductIndex(library.client, library.embeddings, f"products-{library.vectors.name}")
            return self._products

    def similar_products(self, image: bytes | None = None, text: str | None = None, k: int = 8) -> list[dict[str, Any]]:
        """Tagged products ranked by CLIP similarity to a photo or to words."""
        if image is not None:
            img = imgs.decode(image, self.settings.max_input_pixels, self.settings.max_upload_bytes)
            vector = self.library.embeddings.embed_images([img])[0]
        elif text and text.strip():
            vector = self.library.embeddings.embed_query(text.strip())
        else:
            raise BadInput("similar-product search needs a photo or words")
        return self.products.search(vector, k)

    @property
    def flux_generator(self):
        with self._lock:
            if self._flux_generator is None:
                from .flux import FluxGenerator

                self._flux_generator = FluxGenerator(self.models.flux)
            return self._flux_generator

    def load(self) -> None:
        """Load every model now (the UI and server warm up with this)."""
        _ = self.library, self.generator

    # ---- engine interface ----------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        ids = self.settings.models()
        return {
            "profile": self.settings.profile,
            "device": self.models.device,
            "dtype": str(self.models.dtype).removeprefix("torch."),
            "models": {
                "base": ids.base,
                "controlnet": ids.controlnet,
                "ip_adapter": f"{ids.ip_adapter}/{ids.ip_adapter_subfolder}/{ids.ip_adapter_weight}",
                "clip": ids.clip,
                "flux": " + ".join(p for p in self.settings.flux_paths() if p),
            },
            "loaded": self.models.loaded(),
            "retrieval": self._retrieval_label(),
            "queue": len(self.queue),
            "data_dir": str(self.data_dir),
        }

    def _retrieval_label(self) -> str:
        if self._library is None:
            from .retrieval import read_active

            info = read_active(self.data_dir)
        else:
            info = self.retrieval
        return f"tuned: {info['name']} ({info['scenario']})" if info else "base CLIP"

    def list_styles(self, include_hidden: bool = False) -> list[StyleInfo]:
        return self.library.list(include_hidden)

    def add_style(self, image: bytes, name: str, description: str = "", tags: list[str] | None = None) -> StyleInfo:
        return self.library.add(image, name, description, tags)

    def remove_style(self, name_or_id: str) -> StyleInfo:
        return self.library.remove(name_or_id)

    def hide_style(self, name_or_id: str, hidden: bool = True) -> StyleInfo:
        return self.library.set_hidden(name_or_id, hidden)

    def search_styles(self, text: str | None = None, image: bytes | None = None, k: int = 3) -> list[StyleHit]:
        if not 1 <= k <= 100:
            raise BadInput(f"k must be between 1 and 100 (got {k})")
        if image is not None:
            img = imgs.decode(image, self.settings.max_input_pixels, self.settings.max_upload_bytes)
            return self.library.search_image(img, k)
        if not text or not text.strip():
            raise BadInput("search needs a text or an image")
        return self.library.search_text(text.strip(), k)

    def style_image(self, name_or_id: str) -> Image.Image:
        return self.library.image(self.library.find(name_or_id).id)

    def _concepts(self, images: list[Image.Image], concepts: list[str], k: int) -> list[list[dict[str, Any]]]:
        """CLIP zero-shot per image: the most likely concepts with softmax confidences (as CLIP's own logits)."""
        import torch

        emb = self.library.embeddings
        image_vecs = torch.tensor(emb.embed_images(images))
        text_vecs = torch.tensor(emb.embed_documents([f"a photo of {c}" for c in concepts]))
        scale = float(emb.model.logit_scale.detach().exp())
        probs = torch.softmax(scale * image_vecs @ text_vecs.T, dim=-1)
        out = []
        for row in probs.tolist():
            ranked = sorted(zip(concepts, row, strict=True), key=lambda x: -x[1])[:k]
            out.append([{"concept": c, "confidence": round(p, 4)} for c, p in ranked])
        return out

    def analyze(self, image: bytes, concepts: list[str] | None = None, k: int = 5) -> list[dict[str, Any]]:
        """CLIP zero-shot: the image's most likely concepts."""
        concepts = [c.strip() for c in (concepts or DEFAULT_CONCEPTS) if c.strip()]
        if not concepts:
            raise BadInput("analyze needs at least one concept")
        img = imgs.decode(image, self.settings.max_input_pixels, self.settings.max_upload_bytes)
        return self._concepts([img], concepts, k)[0]

    def segment(
        self,
        image: bytes,
        points: list[tuple[float, float]] | None = None,
        labels: list[int] | None = None,
        box: list[float] | None = None,
    ):
        """SAM2: the object at the points (label 1 inside, 0 outside) and/or in the box → a `Segment`."""
        img = imgs.decode(image, self.settings.max_input_pixels, self.settings.max_upload_bytes)
        return self.models.segmenter.segment(img, points, labels, box)

    def segment_all(
        self,
        image: bytes,
        concepts: list[str] | None = None,
        k: int = 3,
        grid: int = 8,
        score_threshold: float = 0.5,
        max_masks: int = 16,
    ) -> dict[str, Any]:
        """Automatic masks (a grid of point prompts, thresholded, de-duplicated), each with its own CLIP
        concepts: the region-wise analysis."""
        from .regions import cutout

        concepts = [c.strip() for c in (concepts or DEFAULT_CONCEPTS) if c.strip()]
        img = imgs.decode(image, self.settings.max_input_pixels, self.settings.max_upload_bytes)
        segments = self.models.segmenter.automatic(img, grid, score_threshold, max_masks=max_masks)
        if segments and concepts:
            for seg, found in zip(
                segments, self._concepts([cutout(img, s.mask) for s in segments], concepts, k), strict=True
            ):
                seg.concepts = found
        return {"width": img.width, "height": img.height, "segments": segments}

    def runs(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        return self.history.list(limit, offset)

    def batch_runs(self, batch: str) -> list[dict[str, Any]]:
        """Every run of one batch (a sweep, a catalog run), oldest first."""
        return self.history.in_batch(batch)

    def recompute_metrics(self, run_ids: list[str] | None = None) -> int:
        """Measure past runs again (after a metric or model change); PNG, sidecar and history stay in step."""
        runs = [self.run(r) for r in run_ids] if run_ids else self.history.list(limit=1_000_000)
        done = 0
        known = {s.id for s in self.library.list(include_hidden=True)}
        for run in runs:
            meta = run["metadata"]
            paths = [Path(p) for p in run["outputs"]]
            if not all(p.is_file() for p in paths):
                log.warning("run %s: an output file is missing; skipped", run["id"])
                continue
            images = [Image.open(p).convert("RGB") for p in paths]
            control = None
            sketch = self.run_sketch(run["id"])
            if sketch is not None:
                fitted = imgs.fit(imgs.decode(sketch, self.settings.max_input_pixels), meta["params"]["size"])
                low, high = meta.get("canny") or (50, 150)
                control, _ = imgs.edges(fitted, meta["edge_mode"] or "auto", low, high)
            refs = [self.library.image(s["id"]) for s in meta["styles"] if s.get("used") and s["id"] in known]
            meta["metrics"] = image_metrics(self.library.embeddings, images, meta["prompt"], control, refs)
            for i, image in enumerate(images):
                _save_output(image, paths[i], meta, i)
            self.history.update_metadata(run["id"], meta)
            done += 1
        return done

    def run(self, run_id: str) -> dict[str, Any]:
        row = self.history.get(run_id)
        if row is None:
            raise BadInput(f"no run '{run_id}' in the history")
        return row

    def run_sketch(self, run_id: str) -> bytes | None:
        sketch_hash = self.run(run_id)["sketch_hash"]
        path = self.data_dir / "sketches" / f"{sketch_hash}.png"
        return path.read_bytes() if sketch_hash and path.is_file() else None

    def search_runs(
        self, text: str | None = None, like: tuple[str, int] | None = None, k: int = 12
    ) -> list[dict[str, Any]]:
        """Past outputs ranked by CLIP similarity to words, or to one output ("more like this")."""
        if not 1 <= k <= 100:
            raise BadInput(f"k must be between 1 and 100 (got {k})")
        if like is not None:
            vector = self.history_index.vector(*like)
            if vector is None:
                raise BadInput(f"output {like[0]}#{like[1]} is not in the search index")
        elif text and text.strip():
            vector = self.library.embeddings.embed_query(text.strip())
        else:
            raise BadInput("history search needs words or an output to compare with")
        return self.history_index.search(vector, k)

    def prepare(self, request: GenerateRequest) -> Prepared:
        """The sketch decoded and turned into its control edges, the size and the seeds: all a render needs
        besides the styles."""
        t0 = time.perf_counter()
        prepared = Prepared()
        if request.sketch is not None:
            prepared.sketch = imgs.decode(
                request.sketch, self.settings.max_input_pixels, self.settings.max_upload_bytes, name="sketch"
            )
            prepared.sketch_hash = imgs.content_hash(request.sketch)
            fitted = imgs.fit(prepared.sketch, request.size)
            prepared.control, prepared.edge_mode = imgs.edges(
                fitted, request.edge_mode, request.canny_low, request.canny_high
            )
            prepared.timings["edges"] = time.perf_counter() - t0
        control = prepared.control
        prepared.width, prepared.height = control.size if control is not None else (request.size, request.size)
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        prepared.seeds = [(seed + i) % (MAX_SEED + 1) for i in range(request.variations)]
        prepared.region_masks = self._region_masks(request, prepared)
        return prepared

    def _region_masks(self, request: GenerateRequest, prepared: Prepared) -> list[Any]:
        """Each region's mask, checked (an image, not empty, the sketch's or the render's size), scaled to the
        render's size and layered (where regions overlap, the later one wins)."""
        import numpy as np

        from .regions import exclusive, read_mask

        render = (prepared.width, prepared.height)
        sizes = [prepared.sketch.size, render] if prepared.sketch is not None else [render]
        masks = []
        for i, region in enumerate(request.regions, start=1):
            name = f"region {i}'s mask"
            mask = read_mask(region.mask, None, name, self.settings.max_input_pixels, self.settings.max_upload_bytes)
            size = (mask.shape[1], mask.shape[0])
            if size not in sizes:
                expected = " or ".join(f"{w}×{h}" for w, h in dict.fromkeys(sizes))
                raise BadInput(
                    f"{name} is {size[0]}×{size[1]} but must be {expected} (the sketch's size); "
                    "segment the same sketch, or export the mask at its size"
                )
            if size != render:
                scaled = Image.fromarray(mask.astype(np.uint8) * 255).resize(render, Image.NEAREST)
                mask = np.asarray(scaled) > 127
            if not mask.any():
                raise BadInput(f"{name} vanishes at {render[0]}×{render[1]}; make the region larger")
            masks.append(mask)
        layered = exclusive(masks)  # where regions overlap, the later one wins
        for i, mask in enumerate(layered, start=1):
            if not mask.any():
                raise BadInput(f"region {i} is entirely covered by a later region; remove one of them")
        return layered

    def params(
        self,
        request: GenerateRequest,
        prepared: Prepared,
        styles: list[StyleHit],
        region_styles: list[StyleHit] | None = None,
    ) -> Params:
        """The pipeline call for a request, its prepared inputs and its styles (the references as images)."""
        region_styles = region_styles or []
        return Params(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            control=prepared.control,
            references=[(self.library.image(s.id), s.weight) for s in styles if s.used],
            seeds=prepared.seeds,
            width=prepared.width,
            height=prepared.height,
            steps=request.steps,
            guidance=request.guidance,
            structure_strength=request.structure_strength,
            style_strength=request.style_strength,
            style_only=request.style_only,
            scheduler=request.scheduler,
            regions=[
                (mask, self.library.image(hit.id))
                for mask, hit in zip(prepared.region_masks, region_styles, strict=True)
            ],
        )

    def finish(
        self,
        request: GenerateRequest,
        prepared: Prepared,
        styles: list[StyleHit],
        images: list[Image.Image],
        timings: dict[str, Any],
        references: list[Image.Image],
        region_styles: list[StyleHit] | None = None,
    ) -> GenerateResult:
        """Measure rendered images and keep them: outputs/, the history and its search index. The last step of
        every render, in this process or on a worker."""
        t0 = time.perf_counter()
        metrics = image_metrics(self.library.embeddings, images, request.prompt, prepared.control, references)
        timings = {**prepared.timings, **timings, "metrics": time.perf_counter() - t0}
        result = GenerateResult(
            images=images,
            seeds=prepared.seeds,
            metadata={"metrics": metrics},
            styles=styles,
            edges=prepared.control,
            regions=self._region_records(request, prepared, region_styles or [], images),
        )
        timings["total"] = time.perf_counter() - prepared.started
        self._record(request, result, timings, prepared)
        return result

    def _region_records(
        self, request: GenerateRequest, prepared: Prepared, hits: list[StyleHit], images: list[Image.Image]
    ) -> list[dict[str, Any]]:
        """What the metadata keeps of each region: its mask (RLE at the render's size), words, colour, the
        style it got and how close each output's region came to that style (CLIP cosine)."""
        from .regions import REGION_COLORS, cutout, rle_encode

        records = []
        emb = self.library.embeddings
        for i, (region, mask, hit) in enumerate(zip(request.regions, prepared.region_masks, hits, strict=True)):
            ref = emb.embed_images([self.library.image(hit.id)])[0]
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

    def generate(
        self, request: GenerateRequest, on_progress: ProgressFn | None = None, cancel: threading.Event | None = None
    ) -> GenerateResult:
        """Sketch (or none) + prompt → images with metadata, saved to outputs/ and the history."""
        if request.model == "flux" and request.regions:
            raise BadInput("regions need SD 1.5 (IP-Adapter masks); FLUX renders text only")
        if request.model == "flux" and (request.sketch is not None or request.style or request.blend):
            from .flux import TEXT_ONLY

            raise BadInput(TEXT_ONLY)
        if request.model == "flux":  # text only: no retrieval either
            request = request.model_copy(update={"use_style": False})
        prepared = self.prepare(request)
        library = self.library
        generator = self.flux_generator if request.model == "flux" else self.generator

        def generate_node(x: dict[str, Any]) -> GenerateResult:
            styles: list[StyleHit] = x["styles"]
            region_styles: list[StyleHit] = x["region_styles"]
            timings: dict[str, Any] = {"retrieval": time.perf_counter() - t_chain}
            params = self.params(request, prepared, styles, region_styles)
            t_wait = time.perf_counter()
            waiting = (
                (lambda n: on_progress(Progress("queued", n, 0, time.perf_counter() - t_wait))) if on_progress else None
            )
            with self.queue.slot(waiting, cancel):
                timings["queued"] = time.perf_counter() - t_wait
                out = generator.run(params, on_progress, cancel)
            timings.update(out.timings)
            references = [r for r, _ in params.references]
            return self.finish(request, prepared, styles, out.images, timings, references, region_styles)

        t_chain = time.perf_counter()
        chain = build_chain(library, generate_node)
        return chain.invoke({"sketch": prepared.control, "prompt": request.prompt, "options": request})

    # ---- results on disk ------------------------------------------------------------------
    def _record(self, request, result, timings, prepared: Prepared) -> None:
        sketch, sketch_hash, edge_mode = prepared.sketch, prepared.sketch_hash, prepared.edge_mode
        width, height = prepared.width, prepared.height
        now = datetime.now(UTC)
        run_id = f"{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
        ids = self.settings.models()
        meta: dict[str, Any] = {
            "version": 1,
            "run_id": run_id,
            "kind": "sketch" if sketch is not None else "text",
            "created_at": now.isoformat(timespec="seconds"),
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": result.seeds[0],
            "seeds": result.seeds,
            "width": width,
            "height": height,
            "edge_mode": edge_mode,
            "canny": [request.canny_low, request.canny_high] if edge_mode == "canny" else None,
            "sketch_hash": sketch_hash,
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
                "model": request.model,
                "size": request.size,
                "variations": request.variations,
                "k": request.k,
                "style": request.style,
                "blend": [b.model_dump() for b in request.blend],
                "use_style": request.use_style,
            },
            "styles": [s.as_dict() for s in result.styles],
            "regions": result.regions,
            "models": {
                "base": self.settings.flux_paths()[0] if request.model == "flux" else ids.base,
                "lora": self.settings.flux_paths()[1] if request.model == "flux" else None,
                "controlnet": ids.controlnet,
                "ip_adapter": ids.ip_adapter,
                "ip_adapter_weight": ids.ip_adapter_weight,
                "clip": ids.clip,
                "sam2": ids.sam2 if request.regions else None,
                "retrieval_adapter": dict(self.retrieval) if self.retrieval else None,
            },
            "profile": self.settings.profile,
            "device": self.models.device,
            "dtype": str(self.models.dtype).removeprefix("torch."),
            "timings": {
                k: (round(v, 4) if isinstance(v, float) else [round(s, 4) for s in v]) for k, v in timings.items()
            },
            "metrics": result.metadata["metrics"],
        }
        if sketch is not None:
            sketch_path = self.data_dir / "sketches" / f"{sketch_hash}.png"
            if not sketch_path.exists():
                sketch_path.parent.mkdir(parents=True, exist_ok=True)
                sketch.save(sketch_path)
        out_dir = self.data_dir / "outputs" / f"{now:%Y-%m-%d}"
        paths = []
        for i, image in enumerate(result.images):
            path = out_dir / f"{run_id}-{i}.png"
            _save_output(image, path, meta, i)
            paths.append(str(path))
        self.history.add(run_id, meta, paths)
        self.history_index.add(run_id, result.images, paths, meta)
        result.metadata = meta
        result.paths = paths
        result.run_id = run_id
