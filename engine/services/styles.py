"""The style library, through the live retrieval model."""

from __future__ import annotations

import time

from .. import images as imgs
from ..api import DescribedTerm, Description, Styles
from ..describe import Describer, library_tags
from ..errors import BadInput
from ..schema import StyleHit, StyleInfo
from . import Core, png, thumbnail


class StylesService(Styles):
    def __init__(self, core: Core):
        self.core = core
        self.describer = Describer(core.data_dir / "cache")  # the vocabulary's embeddings, per retrieval model

    @property
    def library(self):
        return self.core.retrieval.library

    def list(self, include_hidden: bool = False) -> list[StyleInfo]:
        return self.library.list(include_hidden)

    def add(self, image: bytes, name: str, description: str = "", tags: list[str] | None = None) -> StyleInfo:
        return self.library.add(image, name, description, tags)

    def remove(self, name_or_id: str) -> StyleInfo:
        return self.library.remove(name_or_id)

    def hide(self, name_or_id: str, hidden: bool = True) -> StyleInfo:
        return self.library.set_hidden(name_or_id, hidden)

    def search(self, text: str | None = None, image: bytes | None = None, k: int = 3) -> list[StyleHit]:
        if not 1 <= k <= 100:
            raise BadInput(f"k must be between 1 and 100 (got {k})")
        if image is not None:
            s = self.core.settings
            return self.library.search_image(imgs.decode(image, s.max_input_pixels, s.max_upload_bytes), k)
        if not text or not text.strip():
            raise BadInput("search needs a text or an image")
        return self.library.search_text(text.strip(), k)

    def image(self, name_or_id: str, px: int = 0) -> bytes:
        return thumbnail(png(self.library.image(self.library.find(name_or_id).id)), px)

    def describe(self, image: bytes, k: int = 5, threshold: float = 0.15, max_chars: int = 200) -> Description:
        started = time.perf_counter()
        s = self.core.settings
        img = imgs.decode(image, s.max_input_pixels, s.max_upload_bytes, name="the image to describe")
        library = self.library
        prompt, terms = self.describer.describe(
            library.embeddings, img, library_tags(library.list()), k, threshold, max_chars
        )
        return Description(
            prompt=prompt,
            terms={c: [DescribedTerm(**vars(t)) for t in found] for c, found in terms.items()},
            model=self.core.retrieval.label(),
            seconds=round(time.perf_counter() - started, 3),
        )
