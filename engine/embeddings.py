"""CLIP as a LangChain `Embeddings`: texts and images into one L2-normalised space."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from langchain_core.embeddings import Embeddings
from PIL import Image

BATCH = 16


def pooled(out) -> torch.Tensor:
    """The projected embedding from what get_text_features / get_image_features return (a tensor or an output)."""
    # transformers 5 returns a model output whose pooler_output is the projected embedding.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipEmbeddings(Embeddings):
    """One instance serves indexing and queries, so both sides share the same model and space."""

    def __init__(self, model, processor, device: str = "cpu"):
        self.model = model
        self.processor = processor
        self.device = device
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.inference_mode()
    def _encode_texts(self, texts: list[str]) -> torch.Tensor:
        inputs = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return pooled(self.model.get_text_features(**inputs))

    @torch.inference_mode()
    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.model.dtype)
        return pooled(self.model.get_image_features(pixel_values=pixels))

    def _batched(self, items: Sequence, encode) -> list[list[float]]:
        out: list[list[float]] = []
        with self._lock:
            for i in range(0, len(items), BATCH):
                feats = encode(list(items[i : i + BATCH])).float()
                feats = torch.nn.functional.normalize(feats, dim=-1)
                out.extend(feats.cpu().tolist())
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._batched(texts, self._encode_texts)

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def embed_images(self, images: Sequence[Image.Image]) -> list[list[float]]:
        """Images → unit vectors in the same space as the texts."""
        return self._batched(images, self._encode_images)

    def embed_image(self, uris: list[str]) -> list[list[float]]:
        """File paths → vectors; the hook langchain-chroma's `add_images` looks for."""
        images = []
        for uri in uris:
            with Image.open(uri) as im:
                images.append(im.convert("RGB"))
        return self.embed_images(images)
