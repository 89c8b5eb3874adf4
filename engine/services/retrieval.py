"""The live retrieval state: which CLIP retrieves (the base one or a tuned adapter) and its collections: the style
library, the history's search index and the product index. Built once; switching models swaps all three at once."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import retrieval as switching
from ..catalog.tag_run import ProductIndex
from ..embeddings import ClipEmbeddings
from ..errors import BadInput
from ..history import HistoryIndex
from ..library import StyleLibrary, chroma_client
from ..schema import Progress


def collection_name(settings) -> str:
    if settings.profile == "tiny":
        return "styles-tiny"
    slug = re.sub(r"[^a-zA-Z0-9._-]+", "-", settings.clip_model.strip("/").split("/")[-1])
    return f"styles-{slug}"[:60]


class RetrievalState:
    """Loads the retrieval CLIP and its collections on first use (and ingests the shipped styles); thread-safe."""

    def __init__(self, settings, models, data_dir: Path):
        self.settings = settings
        self.models = models
        self.data_dir = Path(data_dir)
        self._lock = threading.Lock()
        self._client = None
        self._parts: tuple[StyleLibrary, HistoryIndex, ProductIndex] | None = None
        self.active: dict[str, Any] | None = None  # the tuned adapter in use, None for the base CLIP

    def _chroma(self):
        if self._client is None:
            self._client = chroma_client(self.data_dir / "chroma", self.settings.chroma_host, self.settings.chroma_port)
        return self._client

    def _build(self, info: dict[str, Any] | None) -> tuple[StyleLibrary, HistoryIndex, ProductIndex]:
        """The collections of one retrieval model (the base CLIP, or an adapter merged into it)."""
        if info is None:
            model, processor = self.models.clip
        else:
            from ..tune.train import load_tuned

            model, processor = load_tuned(Path(info["run_dir"]), self.settings, self.models.device)
        embeddings = ClipEmbeddings(model, processor, self.models.device)
        client = self._chroma()
        name = collection_name(self.settings) + switching.suffix(info)
        lib = StyleLibrary(
            client,
            embeddings,
            collection=name,
            max_pixels=self.settings.max_input_pixels,
            max_bytes=self.settings.max_upload_bytes,
        )
        return (
            lib,
            HistoryIndex(client, embeddings, f"history-{name}"),
            ProductIndex(client, embeddings, f"products-{name}"),
        )

    def _current(self) -> tuple[StyleLibrary, HistoryIndex, ProductIndex]:
        with self._lock:
            if self._parts is None:
                self.active = switching.read_active(self.data_dir)
                parts = self._build(self.active)
                parts[0].ingest()
                self._parts = parts
            return self._parts

    @property
    def library(self) -> StyleLibrary:
        return self._current()[0]

    @property
    def history_index(self) -> HistoryIndex:
        return self._current()[1]

    @property
    def products(self) -> ProductIndex:
        return self._current()[2]

    @property
    def loaded(self) -> bool:
        return self._parts is not None

    def label(self) -> str:
        info = self.active if self._parts is not None else switching.read_active(self.data_dir)
        return f"tuned: {info['name']} ({info['scenario']})" if info else "base CLIP"

    def use(self, run_dir: Path | None, on_progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
        """Point retrieval at a tuned adapter (`run_dir`) or back at the base CLIP (None). The target model's
        collections are brought in step with the active ones first (styles, history, products), so search, "more
        like this" and similar products keep every item; the other model's collections stay."""
        switching.check_run(run_dir)
        target = switching.adapter_info(run_dir) if run_dir is not None else None
        source_lib, source_index, source_products = self._current()
        t0 = time.perf_counter()
        if (target or {}).get("id") == (self.active or {}).get("id"):
            return {"retrieval": target, "changed": False, "seconds": 0.0}
        lib, index, products = self._build(target)
        stats = {"styles": switching.sync_library(source_lib, lib, on_progress)}
        stats["history"] = switching.sync_index(
            source_index.col, index.col, lib.embeddings, "path", "history", on_progress
        )
        stats["products"] = switching.sync_index(
            source_products.col, products.col, lib.embeddings, "thumbnail", "products", on_progress
        )
        switching.write_active(self.data_dir, target)
        with self._lock:
            self._parts = (lib, index, products)
            self.active = target
        return {"retrieval": target, "changed": True, **stats, "seconds": round(time.perf_counter() - t0, 2)}

    def library_of(self, info: dict[str, Any] | None) -> StyleLibrary:
        """The style library of a retrieval model: the active one, or another brought in step with it."""
        if (info or {}).get("id") == (self.active or {}).get("id"):
            return self.library
        lib = self._build(info)[0]
        switching.sync_library(self.library, lib)
        return lib

    def contest(self, arena, run_dir: Path, queries: list[str], k: int = 4) -> dict[str, Any]:
        """A blind Arena contest: for each query, the base CLIP's top k styles against the tuned adapter's."""
        tuned = switching.adapter_info(run_dir)
        queries = list(dict.fromkeys(q.strip() for q in queries if q.strip()))[:100]
        if not queries:
            raise BadInput("type at least one query (one per line)")
        base_lib, tuned_lib = self.library_of(None), self.library_of(tuned)
        results = [
            (q, [h.as_dict() for h in base_lib.search_text(q, k)], [h.as_dict() for h in tuned_lib.search_text(q, k)])
            for q in queries
        ]
        return arena.create_retrieval("base CLIP", f"tuned: {tuned['name']}", results)
