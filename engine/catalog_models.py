"""The catalog's own models (translator, attribute LLM), loaded once per process and shared by runs."""

from __future__ import annotations

import threading
from pathlib import Path

from .settings import Settings

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def local_llm_ready(settings: Settings) -> bool:
    """Whether the local attribute LLM is a real one on this machine: not the tiny profile's random weights, and its
    weights in their folder or in the hub cache (so that the Catalog does not default to an LLM that cannot
    answer). A quick look at files; nothing loads and nothing is downloaded."""
    if settings.profile == "tiny":
        return False
    model = settings.llm_model_path()
    folder = Path(model).expanduser()
    if folder.is_dir():
        weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
        return (folder / "config.json").is_file() and weights
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = [try_to_load_from_cache(model, name) for name in ("config.json", *WEIGHT_FILES)]
    except ValueError:  # not a hub id either (a folder that is not there): no LLM here
        return False
    return isinstance(found[0], str) and any(isinstance(f, str) for f in found[1:])


class CatalogModels:
    def __init__(self, settings: Settings, device: str, dtype, retrieval_clip=None):
        self.settings = settings
        self.retrieval_clip = retrieval_clip  # the engine's ClipEmbeddings, reused when the ids agree
        self._scorer = None
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        self._translators: dict[str, object] = {}
        self._backends: dict[tuple, object] = {}

    def _ensure_tiny(self) -> None:
        if self.settings.profile == "tiny":
            from .tiny import prepare_tiny

            prepare_tiny(self.settings.tiny_dir)

    def translator(self, lang: str):
        from .catalog.translate import Translator

        model_id = self.settings.translation_model_for(lang)
        with self._lock:
            if model_id not in self._translators:
                self._ensure_tiny()
                self._translators[model_id] = Translator(
                    model_id, device=self.device, dtype=self.dtype, allow_pickle=self.settings.allow_pickle
                )
            return self._translators[model_id]

    def backend(self, url: str | None, model: str):
        from .catalog.llm import OpenAIBackend, TransformersBackend

        key = (url, model if url else self.settings.llm_model_path())
        with self._lock:
            if key not in self._backends:
                if url:
                    self._backends[key] = OpenAIBackend(url, model=model, api_key=self.settings.llm_api_key)
                else:
                    self._ensure_tiny()
                    self._backends[key] = TransformersBackend(
                        key[1],
                        device=self.device,
                        dtype=self.dtype,
                        max_new_tokens=self.settings.llm_reply_tokens(),
                        allow_pickle=self.settings.allow_pickle,
                    )
            return self._backends[key]

    def scorer(self):
        """CLIP as embeddings for the catalog's prompt-fidelity score (ViT-L/14 unless set otherwise)."""
        from .embeddings import ClipEmbeddings
        from .models import load_clip

        model_id = self.settings.catalog_clip_path()
        with self._lock:
            if self._scorer is None:
                if self.retrieval_clip is not None and model_id == self.settings.models().clip:
                    self._scorer = self.retrieval_clip
                else:
                    self._ensure_tiny()
                    model, processor = load_clip(
                        self.settings, self.device, model_id, "DESIGN_STUDIO_CATALOG_CLIP_MODEL"
                    )
                    self._scorer = ClipEmbeddings(model, processor, self.device)
            return self._scorer

    def extractor(self, options):
        from .catalog.llm import AttributeExtractor

        url = options.llm_url if options.llm == "server" else None
        return AttributeExtractor(self.backend(url, options.llm_model), retries=options.retries)
