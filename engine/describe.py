"""A prompt from an image: CLIP similarity between the image and a shipped vocabulary (objects, mediums, styles,
materials, colour palettes) plus the style library's own tags, composed into one readable line that a render takes.

Each term is scored by the cosine between the image's CLIP embedding and the embedding of a short phrase made from
the term and its category's template ("a photo of a chair", "an image in art deco style"), as the style library
scores its styles; its `confidence` is its share among its category's terms (a softmax at CLIP's own logit scale).
The vocabulary's phrases are embedded once per CLIP model (the retrieval model in use: the base CLIP or a tuned
adapter), and so are the library's tags as they first appear: kept in memory and in the data folder
(`cache/describe-MODEL.npz`, phrase → vector, named by a fingerprint of the model's text side), so another process
or the next start reads them instead of embedding ~370 phrases again. The words are the studio's own."""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import BadInput
from .files import write_atomic
from .schema import MAX_PROMPT

log = logging.getLogger(__name__)

CATEGORIES = ("object", "medium", "style", "material", "colour")


def _terms(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.replace("\n", ",").split(",") if t.strip())


VOCABULARY: dict[str, tuple[str, ...]] = {
    "object": _terms("""
        chair, armchair, lounge chair, sofa, stool, bench, dining table, coffee table, desk, floor lamp, table lamp,
        pendant light, bookshelf, cabinet, sideboard, bed, vase, bowl, mug, teapot, bottle, plate, wall clock, mirror,
        rug, cushion, building, house, timber cabin, tower, skyscraper, bridge, pavilion, church, facade, staircase,
        living room, kitchen, bedroom, bathroom, office, courtyard, garden, street, city skyline, landscape,
        mountain range, forest, beach, lake, river, desert, meadow, car, bicycle, motorcycle, sailing boat, train,
        airplane, shoe, sneaker, boot, handbag, backpack, jacket, dress, shirt, hat, wristwatch, ring, necklace,
        pair of sunglasses, smartphone, laptop, pair of headphones, camera, loudspeaker, kettle, toaster, person,
        portrait, face, hand, cat, dog, horse, bird, fish, tree, flower, potted plant, fruit bowl, logo, poster,
        repeating pattern, texture swatch, map, diagram, robot, spaceship, castle, sculpture
    """),
    "medium": _terms("""
        photograph, studio photograph, product photo, architectural photograph, aerial photograph, macro photograph,
        black and white photograph, film photograph, polaroid photo, pencil sketch, charcoal drawing, ink drawing,
        pen and ink illustration, technical drawing, blueprint, architectural section drawing, line drawing,
        watercolor painting, gouache painting, oil painting, acrylic painting, pastel drawing, digital painting,
        concept art, vector illustration, flat illustration, children's book illustration, comic book panel,
        manga drawing, 3d render, clay render, isometric illustration, low poly render, pixel art, paper collage,
        screen print, linocut print, woodblock print, etching, mosaic, stained glass window, embroidery,
        marker rendering, ballpoint pen sketch, chalk drawing, storyboard frame, infographic
    """),
    "style": _terms("""
        minimalist, maximalist, art deco, art nouveau, bauhaus, mid-century modern, scandinavian, japandi,
        brutalist, modernist, postmodern, industrial, rustic, farmhouse, bohemian, victorian, gothic, baroque, rococo,
        neoclassical, futuristic, cyberpunk, steampunk, retro, vintage, 1970s, 1980s, memphis design, pop art,
        surrealist, impressionist, expressionist, cubist, abstract, photorealistic, hyperrealistic, cinematic, moody,
        dreamy, whimsical, playful, elegant, luxurious, organic, geometric, biophilic, coastal, mediterranean,
        wabi-sabi, zen, streetwear, haute couture, ukiyo-e, constructivist, swiss graphic design, y2k, vaporwave,
        solarpunk, high-tech, folk art
    """),
    "material": _terms("""
        oak wood, walnut wood, pine wood, bamboo, plywood, reclaimed wood, rattan, wicker, marble, granite, terrazzo,
        travertine, slate, sandstone, raw concrete, polished concrete, red brick, ceramic, porcelain, terracotta,
        clay, clear glass, frosted glass, crystal, brushed steel, stainless steel, chrome, copper, brass, bronze,
        gold leaf, silver, aluminium, cast iron, rusted metal, corten steel, glossy plastic, acrylic, resin, rubber,
        carbon fiber, leather, suede, velvet, linen, cotton, wool, felt, silk, denim, knitted yarn, paper, cardboard,
        cork, ice
    """),
    "colour": _terms("""
        black and white, monochrome, grayscale, warm earth tones, cool blue tones, muted pastels, pastel pink,
        soft beige, cream and white, neutral tones, vibrant rainbow, bold primary colors, neon pink and cyan,
        teal and orange, deep red, burgundy, terracotta orange, mustard yellow, golden yellow, sage green,
        forest green, emerald green, olive green, navy blue, cobalt blue, sky blue, turquoise, lavender, purple,
        magenta, hot pink, coral, peach, brown and tan, charcoal gray, silver gray, gold and black, sepia,
        desaturated, high contrast
    """),
}
# The phrase each category's terms are embedded as (CLIP reads captions better than bare words)
TEMPLATES = {
    "object": "a photo of {a} {term}",
    "medium": "{a} {term}",
    "style": "an image in {term} style",
    "material": "something made of {term}",
    "colour": "an image with a {term} color palette",
}
# At most this many terms of a category go into the prompt; the subject, the medium and the palette always have one
# (a render wants all three), a style or a material only when CLIP is clear about it
PICKS = {"object": 1, "medium": 1, "style": 2, "material": 1, "colour": 2}
ALWAYS = ("object", "medium", "colour")
MAX_TAGS = 256  # the library's most used tags that stand as candidates (a big library does not slow a call down)
MAX_TAG_CACHE = 4096  # tag embeddings kept per model before the oldest go
DESCRIBE_SIDE = 448  # the image is scaled to at most this side first: CLIP sees 224 px, decoding more is waste
MAX_K = 20


@dataclass
class Scored:
    term: str
    score: float  # cosine between the image and the term's phrase, in [-1, 1]
    confidence: float  # its share among the category's terms
    source: str = "vocabulary"  # or "library": one of the style library's tags
    picked: bool = False


def article(term: str) -> str:
    return "an" if term[:1].lower() in "aeiou" else "a"


def phrase(category: str, term: str) -> str:
    return TEMPLATES[category].format(a=article(term), term=term)


def library_tags(styles) -> list[str]:
    """The visible styles' tags that the vocabulary lacks, the most used first (at most MAX_TAGS)."""
    known = {t.lower() for terms in VOCABULARY.values() for t in terms}
    counts = Counter(t.strip().lower() for s in styles for t in s.tags if t.strip())
    return [t for t, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0])) if t not in known][:MAX_TAGS]


class _ModelCache:
    """One CLIP model's phrase embeddings (the vocabulary's and the tags' seen so far), by phrase; `matrices`: the
    vocabulary's, one per category, once made."""

    def __init__(self):
        self.lock = threading.Lock()
        self.vectors: dict[str, np.ndarray] = {}
        self.loaded = False
        self.path: Path | None = None
        self.matrices: dict[str, np.ndarray] | None = None


def text_fingerprint(embeddings) -> str | None:
    """What names a CLIP's text side: its tokenizer's reading of a probe phrase and a strided sample of every text
    parameter (a tuned adapter merged into the text tower changes all of a merged weight). None: not a CLIP model."""
    import torch

    model = getattr(embeddings, "model", None)
    if model is None or not hasattr(model, "named_parameters"):
        return None
    digest = hashlib.sha256()
    try:
        probe = embeddings.processor(text=["a photo of a chair"], return_tensors="pt")["input_ids"]
        digest.update(probe.numpy().tobytes())
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.startswith(("text_model.", "text_projection")):
                    flat = param.detach().reshape(-1)
                    sample = flat[:: max(1, flat.numel() // 256)][:256].float().cpu().numpy()
                    digest.update(f"{name}{tuple(param.shape)}".encode())
                    digest.update(sample.tobytes())
    except (AttributeError, KeyError, TypeError, RuntimeError):
        return None
    return digest.hexdigest()[:16]


def vocabulary_phrases() -> list[str]:
    return [phrase(c, t) for c in CATEGORIES for t in VOCABULARY[c]]


class Describer:
    """Scores an image against the vocabulary and the library's tags with a CLIP `ClipEmbeddings` and writes the
    prompt. One per engine; each phrase is embedded once per model it meets (and kept in `cache_dir`, if given)."""

    def __init__(self, cache_dir: Path | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _cache(self, embeddings) -> _ModelCache:
        with self._lock:
            cache = self._models.get(embeddings)
            if cache is None:
                cache = self._models[embeddings] = _ModelCache()
            return cache

    def vectors(self, embeddings, phrases: list[str]) -> np.ndarray:
        """The phrases' embeddings (one row each): from memory, else from the data folder's file for this model,
        else embedded now (and the file rewritten with them)."""
        cache = self._cache(embeddings)
        with cache.lock:
            if not cache.loaded:
                self._load(embeddings, cache)
            missing = [p for p in dict.fromkeys(phrases) if p not in cache.vectors]
            if missing:
                if len(cache.vectors) + len(missing) > len(vocabulary_phrases()) + MAX_TAG_CACHE:
                    keep = set(vocabulary_phrases()) | set(phrases)  # tags no style has any more go
                    cache.vectors = {p: v for p, v in cache.vectors.items() if p in keep}
                found = np.asarray(embeddings.embed_documents(missing), dtype=np.float32)
                cache.vectors.update(zip(missing, found, strict=True))
                self._save(cache)
            if not phrases:
                return np.zeros((0, embeddings.dim), np.float32)
            return np.stack([cache.vectors[p] for p in phrases])

    def _load(self, embeddings, cache: _ModelCache) -> None:
        cache.loaded = True
        fingerprint = text_fingerprint(embeddings) if self.cache_dir is not None else None
        if not fingerprint:
            return
        cache.path = self.cache_dir / f"describe-{fingerprint}.npz"
        if not cache.path.is_file():
            return
        try:
            with np.load(cache.path, allow_pickle=False) as kept:
                cache.vectors.update(zip(kept["phrases"].tolist(), kept["vectors"].astype(np.float32), strict=True))
        except (OSError, ValueError, KeyError):
            log.warning("%s is unreadable; its phrases are embedded again", cache.path)

    @staticmethod
    def _save(cache: _ModelCache) -> None:
        if cache.path is None:
            return
        buf = io.BytesIO()
        phrases = list(cache.vectors)
        np.savez(buf, phrases=np.array(phrases, dtype=str), vectors=np.stack([cache.vectors[p] for p in phrases]))
        try:
            write_atomic(cache.path, buf.getvalue())
        except OSError as exc:  # a read-only or full data folder: memory alone keeps them
            log.warning("cannot keep the phrase embeddings in %s: %s", cache.path, exc)

    def vocabulary(self, embeddings) -> dict[str, np.ndarray]:
        """Each category's phrase embeddings (rows in VOCABULARY's order)."""
        cache = self._cache(embeddings)
        if cache.matrices is None:
            vectors, out, start = self.vectors(embeddings, vocabulary_phrases()), {}, 0
            for c in CATEGORIES:
                out[c] = vectors[start : start + len(VOCABULARY[c])]
                start += len(VOCABULARY[c])
            cache.matrices = out
        return cache.matrices

    def tag_vectors(self, embeddings, tags: list[str]) -> np.ndarray:
        return self.vectors(embeddings, [phrase("style", t) for t in tags])

    def describe(
        self, embeddings, image: Image.Image, tags: list[str], k: int = 5, threshold: float = 0.15, max_chars: int = 200
    ) -> tuple[str, dict[str, list[Scored]]]:
        """The prompt, and each category's top k terms best first, the picked ones marked (and always among them)."""
        if not 1 <= k <= MAX_K:
            raise BadInput(f"k must be between 1 and {MAX_K} (got {k})")
        if not 0 <= threshold <= 1:
            raise BadInput(f"threshold must be between 0 and 1 (got {threshold})")
        if not 20 <= max_chars <= MAX_PROMPT:
            raise BadInput(f"max_chars must be between 20 and {MAX_PROMPT} (got {max_chars})")
        vocabulary = self.vocabulary(embeddings)
        tag_vecs = self.tag_vectors(embeddings, tags)
        if max(image.size) > DESCRIBE_SIDE:
            image = image.copy()
            image.thumbnail((DESCRIBE_SIDE, DESCRIBE_SIDE), Image.Resampling.BICUBIC)
        vector = np.asarray(embeddings.embed_images([image])[0], dtype=np.float32)
        scale = logit_scale(embeddings)
        ranked: dict[str, list[Scored]] = {}
        for c in CATEGORIES:
            terms = [(t, "vocabulary") for t in VOCABULARY[c]]
            matrix = vocabulary[c]
            if c == "style" and tags:
                terms += [(t, "library") for t in tags]
                matrix = np.concatenate([matrix, tag_vecs])
            scores = matrix @ vector
            shares = np.exp(scale * (scores - scores.max()))
            shares /= shares.sum()
            order = sorted(range(len(terms)), key=lambda i: (-float(scores[i]), terms[i][0]))
            ranked[c] = [
                Scored(terms[i][0], round(float(scores[i]), 4), round(float(shares[i]), 4), terms[i][1]) for i in order
            ]
        prompt, picks = compose({c: pick(c, ranked[c], threshold) for c in CATEGORIES}, max_chars)
        shown = {}
        for c in CATEGORIES:
            for s in picks[c]:
                s.picked = True
            shown[c] = [s for i, s in enumerate(ranked[c]) if i < k or s.picked]
        return prompt, shown


def logit_scale(embeddings) -> float:
    """CLIP's own temperature (100 for the released models), which turns cosines into shares."""
    try:
        return float(min(math.exp(float(embeddings.model.logit_scale.detach())), 100.0))
    except (AttributeError, TypeError, ValueError):
        return 100.0


def pick(category: str, ranked: list[Scored], threshold: float) -> list[Scored]:
    """The terms of a category the prompt says: the best ones whose share reaches `threshold` (the subject and the
    medium and the palette: at least their best one), at most PICKS of them."""
    chosen = [s for s in ranked[: PICKS[category]] if s.confidence >= threshold]
    if not chosen and category in ALWAYS and ranked:
        chosen = ranked[:1]
    return chosen


def compose(picks: dict[str, list[Scored]], max_chars: int) -> tuple[str, dict[str, list[Scored]]]:
    """ "a chair, watercolor painting, art deco style, walnut wood, sage green and cream palette": the subject, the
    medium, the style, the material, the palette. The least sure optional terms are left out until it fits
    `max_chars` (then it is cut at a word, as a last resort). The line, and the terms it says."""
    picks = {c: list(picks[c]) for c in CATEGORIES}

    def line() -> str:
        parts = []
        if picks["object"]:
            term = picks["object"][0].term
            parts.append(f"{article(term)} {term}")
        parts += [s.term for s in picks["medium"]]
        if picks["style"]:
            parts.append(" and ".join(s.term for s in picks["style"]) + " style")
        parts += [s.term for s in picks["material"]]
        if picks["colour"]:
            parts.append(" and ".join(s.term for s in picks["colour"]) + " palette")
        return ", ".join(parts)

    text = line()
    while len(text) > max_chars:
        optional = [(s.confidence, c, s) for c in CATEGORIES if c not in ALWAYS for s in picks[c]]
        if not optional:
            break
        _, c, s = min(optional, key=lambda x: x[0])
        picks[c].remove(s)
        text = line()
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0].rstrip(",")
    return text, picks
