"""Zero-shot product attributes: CLIP over an editable vocabulary (colour, neckline, sleeve, ...).

    vocab = load_vocabulary()                      # engine/catalog/vocab/apparel.yaml, or a path
    items, skipped = read_images(Path("photos"))   # a folder (recursive) or a .zip; broken files are skipped
    tagger = Tagger(ClipEmbeddings(model, processor), vocab)
    vectors = tagger.embed([it.image for it in items])   # index these if you like
    rows = tag_rows(items, tagger.tag_vectors(vectors))  # image, color, color_confidence, neckline, ...

Every attribute is its own zero-shot classifier, as in CLIP's paper: each value's text embedding is the
normalised mean over the prompt templates (prompt ensembling), and an image's probabilities are the softmax
of `logit_scale * cosine` over that attribute's values. Below the vocabulary's threshold the value is written
as "uncertain" (the best guess stays in `AttributeGuess.top`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from PIL import Image

from ..embeddings import ClipEmbeddings
from ..errors import BadInput, TooLarge
from ..images import content_hash, decode

VOCAB_DIR = Path(__file__).resolve().parent / "vocab"
DEFAULT_VOCAB = VOCAB_DIR / "apparel.yaml"
UNCERTAIN = "uncertain"
DEFAULT_THRESHOLD = 0.35
TOP_K = 3
BATCH = 16

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
# The engine's upload limits (Settings.max_input_pixels / max_upload_bytes), per image.
MAX_PIXELS = 64_000_000
MAX_BYTES = 20 * 1024 * 1024
# A zip is refused as a whole when its central directory declares more than this (zip bombs).
MAX_ZIP_TOTAL_BYTES = 2 * 1024**3
MAX_ZIP_MEMBERS = 50_000
MAX_VOCAB_BYTES = 1024 * 1024

_VOCAB_KEYS = {"family", "item", "threshold", "templates", "attributes"}
_ATTRIBUTE_KEYS = {"values", "templates", "threshold"}


def _line(text: object) -> str:
    """Messages are shown as one line (UI, CLI, server)."""
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary


@dataclass
class Vocabulary:
    """One product family's attributes and the prompts that ask CLIP about them.

    Templates: `{}` is replaced by the value ("red", "v-neck"), `{item}` by the family's item noun ("top").
    `attribute_templates` / `thresholds` override the family's templates / threshold for single attributes.
    """

    family: str
    attributes: dict[str, list[str]]
    item: str = "item"
    templates: list[str] = field(default_factory=lambda: ["a photo of a {} {item}."])
    threshold: float = DEFAULT_THRESHOLD
    attribute_templates: dict[str, list[str]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)

    def templates_for(self, attribute: str) -> list[str]:
        return self.attribute_templates.get(attribute) or self.templates

    def threshold_for(self, attribute: str) -> float:
        return self.thresholds.get(attribute, self.threshold)

    def prompts(self, attribute: str, value: str) -> list[str]:
        return [t.format(value, item=self.item) for t in self.templates_for(attribute)]

    def columns(self) -> list[str]:
        """The columns of `tag_rows`, in order: image, then `<attr>`, `<attr>_confidence` per attribute."""
        out = ["image"]
        for name in self.attributes:
            out += [name, f"{name}_confidence"]
        return out


def _text(value, what: str, name: str) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
        shown = "empty" if value is None else f"{type(value).__name__} {value!r}"
        raise BadInput(f"{name}: {what} must be text, not {_line(shown)}; put it in quotes")
    text = str(value).strip()
    if not text:
        raise BadInput(f"{name}: {what} is empty")
    return text


def _threshold(value, what: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise BadInput(f"{name}: {what} must be a number from 0 to 1, not {_line(repr(value))}")
    return float(value)


def _templates(value, what: str, name: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadInput(f'{name}: {what} must be a list of prompts such as "a photo of a {{}} {{item}}."')
    out = []
    for raw in value:
        t = _text(raw, what, name)
        try:
            filled = t.format("VALUE", item="ITEM")
        except (KeyError, IndexError, ValueError) as exc:
            raise BadInput(
                f'{name}: {what} "{_line(t)}" has an unknown placeholder ({_line(exc)}); '
                "use {} for the value and {item} for the item noun, {{ and }} for braces"
            ) from None
        if "VALUE" not in filled:
            raise BadInput(f'{name}: {what} "{_line(t)}" has no {{}} where the value goes')
        out.append(t)
    return out


def vocabulary_from_dict(data, name: str = "vocabulary") -> Vocabulary:
    """A checked `Vocabulary` from parsed YAML/JSON; every problem is a one-line `BadInput` naming `name`."""
    if not isinstance(data, dict):
        raise BadInput(f"{name}: expected a mapping with family, templates, threshold and attributes")
    unknown = sorted(str(k) for k in data if k not in _VOCAB_KEYS)
    if unknown:
        raise BadInput(f"{name}: unknown key(s) {', '.join(unknown)}; use {', '.join(sorted(_VOCAB_KEYS))}")
    family = _text(data.get("family", Path(name).stem), "family", name)
    item = _text(data.get("item", "item"), "item", name)
    templates = _templates(data.get("templates", ["a photo of a {} {item}."]), "template", name)
    threshold = _threshold(data.get("threshold", DEFAULT_THRESHOLD), "threshold", name)
    raw_attrs = data.get("attributes")
    if not isinstance(raw_attrs, dict) or not raw_attrs:
        raise BadInput(f"{name}: no attributes; add e.g. `attributes: {{color: [black, white]}}`")

    attributes: dict[str, list[str]] = {}
    attribute_templates: dict[str, list[str]] = {}
    thresholds: dict[str, float] = {}
    columns = {"image"}
    for raw_name, spec in raw_attrs.items():
        attr = _text(raw_name, "an attribute name", name)
        if attr in columns or f"{attr}_confidence" in columns:
            raise BadInput(f"{name}: attribute '{attr}' clashes with another column; rename it")
        columns |= {attr, f"{attr}_confidence"}
        if isinstance(spec, dict):
            unknown = sorted(str(k) for k in spec if k not in _ATTRIBUTE_KEYS)
            if unknown:
                raise BadInput(
                    f"{name}: attribute '{attr}' has unknown key(s) {', '.join(unknown)}; "
                    "use values, templates, threshold"
                )
            if "templates" in spec:
                attribute_templates[attr] = _templates(spec["templates"], f"template of '{attr}'", name)
            if "threshold" in spec:
                thresholds[attr] = _threshold(spec["threshold"], f"threshold of '{attr}'", name)
            spec = spec.get("values")
        if not isinstance(spec, list):
            raise BadInput(f"{name}: attribute '{attr}' needs a list of values, e.g. `{attr}: [a, b]`")
        values = [_text(v, f"a value of '{attr}'", name) for v in spec]
        if len(values) < 2:
            raise BadInput(f"{name}: attribute '{attr}' needs at least 2 values to choose between (has {len(values)})")
        seen: dict[str, str] = {}
        for v in values:
            if v.casefold() == UNCERTAIN:
                raise BadInput(f"{name}: '{UNCERTAIN}' is reserved for low-confidence guesses; remove it from '{attr}'")
            if v.casefold() in seen:
                raise BadInput(f"{name}: attribute '{attr}' lists '{v}' twice")
            seen[v.casefold()] = v
        attributes[attr] = values
    return Vocabulary(
        family=family,
        attributes=attributes,
        item=item,
        templates=templates,
        threshold=threshold,
        attribute_templates=attribute_templates,
        thresholds=thresholds,
    )


def parse_vocabulary(text: str, name: str = "vocabulary") -> Vocabulary:
    """A vocabulary from YAML text (the UI's editor, a test)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise BadInput(f"{name} is not valid YAML ({where}{_line(problem)})") from None
    if data is None:
        raise BadInput(f"{name} is empty; it needs family, templates, threshold and attributes")
    return vocabulary_from_dict(data, name)


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """The vocabulary in a YAML file; None is the shipped apparel one (engine/catalog/vocab/apparel.yaml)."""
    path = Path(path) if path is not None else DEFAULT_VOCAB
    if not path.is_file():
        raise BadInput(f"vocabulary file not found: {path}")
    if path.stat().st_size > MAX_VOCAB_BYTES:
        raise TooLarge(f"{path.name} is over {MAX_VOCAB_BYTES // 1024} KB; a vocabulary is a short YAML file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{path.name} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise BadInput(f"{path.name} cannot be read ({_line(exc.strerror or exc)})") from None
    return parse_vocabulary(text, path.name)


# ---------------------------------------------------------------------------------------------------------------
# Reading images


@dataclass
class ImageItem:
    """One readable image: `name` is its path inside the folder or zip (forward slashes)."""

    name: str
    image: Image.Image = field(repr=False)
    sha256: str


@dataclass
class Skipped:
    """A file that looked like an image but could not be used, with a one-line reason."""

    name: str
    reason: str


def _hidden(parts: Sequence[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _is_image_name(parts: Sequence[str]) -> bool:
    return bool(parts) and not _hidden(parts) and Path(parts[-1]).suffix.lower() in IMAGE_SUFFIXES


def _decoded(name: str, data: bytes, max_pixels: int, max_bytes: int) -> ImageItem | Skipped:
    try:
        image = decode(data, max_pixels, max_bytes, name=name)
    except BadInput as exc:
        return Skipped(name, _line(exc))
    return ImageItem(name, image, content_hash(data))


def _too_big(name: str, size: int, max_bytes: int) -> Skipped:
    return Skipped(name, f"{name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")


def _iter_folder(root: Path, max_pixels: int, max_bytes: int) -> Iterator[ImageItem | Skipped]:
    names: list[str] = []
    for folder, dirs, files in os.walk(root):  # does not follow links to folders (no cycles)
        dirs[:] = [d for d in dirs if not _hidden([d])]
        rel = Path(folder).relative_to(root)
        for f in files:
            parts = [*rel.parts, f]
            if _is_image_name(parts):
                names.append("/".join(parts))
    for name in sorted(names):
        path = root / name
        try:
            size = path.stat().st_size
            if size > max_bytes:
                yield _too_big(name, size, max_bytes)
                continue
            data = path.read_bytes()
        except OSError as exc:
            yield Skipped(name, f"{name} cannot be read ({_line(exc.strerror or exc)})")
            continue
        yield _decoded(name, data, max_pixels, max_bytes)


def _zip_name(info: zipfile.ZipInfo) -> str:
    return "/".join(p for p in info.filename.replace("\\", "/").split("/") if p not in ("", "."))


def _iter_zip(path: Path, max_pixels: int, max_bytes: int, max_total_bytes: int) -> Iterator[ImageItem | Skipped]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadInput(f"{path.name} is not a readable zip file ({_line(exc)})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise BadInput(f"{path.name} has {len(infos)} entries; the limit is {MAX_ZIP_MEMBERS}; split it")
        members: dict[str, zipfile.ZipInfo] = {}
        duplicates: list[str] = []
        for info in infos:
            name = _zip_name(info)
            if info.is_dir() or not _is_image_name(name.split("/")):
                continue
            if name in members:
                duplicates.append(name)
                continue
            members[name] = info
        # Zip bombs: the central directory's declared sizes are checked before anything is inflated. The
        # reads below stop at max_bytes + 1 whatever a member claims (zipfile never returns more than the
        # declared size), so a lying header cannot exhaust memory either.
        total = sum(info.file_size for info in members.values() if info.file_size <= max_bytes)
        if total > max_total_bytes:
            raise TooLarge(
                f"{path.name} unpacks to {total / 1e9:.1f} GB of images; the limit is "
                f"{max_total_bytes / 1e9:.1f} GB; split it into smaller zips"
            )
        for name in sorted(members):
            info = members[name]
            if info.file_size > max_bytes:
                yield _too_big(name, info.file_size, max_bytes)
                continue
            try:
                with zf.open(info) as fh:
                    data = fh.read(max_bytes + 1)
            except RuntimeError as exc:  # encrypted
                yield Skipped(name, f"{name} cannot be unpacked ({_line(exc)})")
                continue
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError) as exc:
                yield Skipped(name, f"{name} is damaged in the zip ({_line(exc)})")
                continue
            if len(data) > max_bytes:
                yield _too_big(name, len(data), max_bytes)
                continue
            yield _decoded(name, data, max_pixels, max_bytes)
        for name in duplicates:
            yield Skipped(name, f"{name} appears more than once in {path.name}; the first copy is used")


def iter_images(
    source: str | Path,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES,
) -> Iterator[ImageItem | Skipped]:
    """`read_images` one file at a time, for catalogs too big to hold decoded at once."""
    source = Path(source)
    if source.is_dir():
        return _iter_folder(source, max_pixels, max_bytes)
    if source.is_file() and source.suffix.lower() == ".zip":
        return _iter_zip(source, max_pixels, max_bytes, max_total_bytes)
    if not source.exists():
        raise BadInput(f"no such folder or zip: {source}")
    raise BadInput(f"{source.name} is neither a folder nor a .zip of images")


def read_images(
    source: str | Path,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES,
) -> tuple[list[ImageItem], list[Skipped]]:
    """The images in a folder (recursive) or a .zip, sorted by relative name, and the files that were skipped.

    Only .png/.jpg/.jpeg/.webp names are considered; other files, hidden files and folders and `__MACOSX` are
    ignored without a record. An image that is broken, not really an image or over `max_bytes`/`max_pixels`
    is skipped with a one-line reason, never fatal. Errors that concern the source itself raise `BadInput`:
    a missing path, a damaged zip, or a zip whose images declare more than `max_total_bytes` uncompressed.
    No images at all is not an error: both lists come back empty.
    """
    items: list[ImageItem] = []
    skipped: list[Skipped] = []
    for got in iter_images(source, max_pixels, max_bytes, max_total_bytes):
        (items if isinstance(got, ImageItem) else skipped).append(got)
    return items, skipped


# ---------------------------------------------------------------------------------------------------------------
# Zero-shot tagging


@dataclass
class AttributeGuess:
    """One attribute of one image. `value` is UNCERTAIN when `probability` (the best one) is under the
    threshold; `top` holds the three best values either way and `probabilities` every value (they sum to 1)."""

    value: str
    probability: float
    uncertain: bool
    top: list[tuple[str, float]]
    probabilities: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def best(self) -> str:
        return self.top[0][0]


def _pixels_key(im: Image.Image) -> tuple:
    return im.mode, im.size, hashlib.blake2b(im.tobytes(), digest_size=16).digest()


class Tagger:
    """A zero-shot classifier per vocabulary attribute over one CLIP's shared text-image space."""

    def __init__(self, embeddings: ClipEmbeddings, vocab: Vocabulary):
        self.embeddings = embeddings
        self.vocab = vocab
        self.logit_scale = float(embeddings.model.logit_scale.detach().exp())
        prompts: list[str] = []
        for attr, values in vocab.attributes.items():
            for v in values:
                prompts += vocab.prompts(attr, v)
        vecs = torch.tensor(embeddings.embed_documents(prompts), dtype=torch.float64)
        # Prompt ensembling: per value, the mean of its (unit) template embeddings, normalised again.
        classes: list[torch.Tensor] = []
        self._slices: dict[str, slice] = {}
        start = row = 0
        for attr, values in vocab.attributes.items():
            n = len(vocab.templates_for(attr))
            for _ in values:
                classes.append(vecs[row : row + n].mean(dim=0))
                row += n
            self._slices[attr] = slice(start, start + len(values))
            start += len(values)
        self.text = torch.nn.functional.normalize(torch.stack(classes), dim=-1)  # (all values, dim)

    def embed(self, images: Sequence[Image.Image]) -> list[list[float]]:
        """Unit image vectors, in the embeddings' space (for an index); `tag_vectors` tags them.

        Identical pictures (same pixels) are embedded once: catalogs reuse photos across variants, and a batched
        float32 forward pass is not bit-exact across batch positions, so this also makes their tags identical.
        """
        keys = [_pixels_key(im) for im in images]
        first: dict[tuple, int] = {}
        unique: list[Image.Image] = []
        for im, key in zip(images, keys, strict=True):
            if key not in first:
                first[key] = len(unique)
                unique.append(im)
        vectors = self.embeddings.embed_images(unique)
        return [list(vectors[first[key]]) for key in keys]

    def tag(self, images: Sequence[Image.Image]) -> list[dict[str, AttributeGuess]]:
        """Per image, per attribute (in the vocabulary's order), the guessed value."""
        return self.tag_vectors(self.embed(images))

    def tag_vectors(self, vectors: Sequence[Sequence[float]]) -> list[dict[str, AttributeGuess]]:
        """Tags from `embed`'s vectors (or an index's), so images are embedded once for both."""
        return [self._tag_one(v) for v in vectors]

    def _tag_one(self, vector: Sequence[float]) -> dict[str, AttributeGuess]:
        # One image at a time (a 32×512 product is nothing next to the image encoder): a batched matmul is
        # not bit-exact across rows, and the same vector must always give exactly the same tags.
        image = torch.nn.functional.normalize(torch.tensor(vector, dtype=torch.float64), dim=-1)
        logits = self.logit_scale * (self.text @ image)  # (all values,)
        guesses = {}
        for attr, values in self.vocab.attributes.items():
            p = torch.softmax(logits[self._slices[attr]], dim=-1).tolist()
            ranked = sorted(zip(values, p, strict=True), key=lambda vp: -vp[1])
            best, best_p = ranked[0]
            uncertain = best_p < self.vocab.threshold_for(attr)
            guesses[attr] = AttributeGuess(
                value=UNCERTAIN if uncertain else best,
                probability=best_p,
                uncertain=uncertain,
                top=ranked[:TOP_K],
                probabilities=dict(zip(values, p, strict=True)),
            )
        return guesses


def tag_rows(items: Sequence[ImageItem | str], guesses: Sequence[dict[str, AttributeGuess]]) -> list[dict]:
    """One flat row per image: `image`, then `<attr>` and `<attr>_confidence` (4 decimals) per attribute,
    in the vocabulary's order (`Vocabulary.columns()`)."""
    rows = []
    for item, guess in zip(items, guesses, strict=True):
        row: dict = {"image": item if isinstance(item, str) else item.name}
        for attr, g in guess.items():
            row[attr] = g.value
            row[f"{attr}_confidence"] = round(g.probability, 4)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Benchmark


def bench_images(n: int, size: tuple[int, int] = (512, 640), seed: int = 0, quality: int = 90) -> list[bytes]:
    """`n` JPEG product-like photos (width, height): a coloured top on a light, slightly noisy background."""
    import numpy as np
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(n):
        img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(225, 256, 3)))
        d = ImageDraw.Draw(img)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        body = [(0.3 * w, 0.2 * h), (0.7 * w, 0.2 * h), (0.75 * w, 0.9 * h), (0.25 * w, 0.9 * h)]
        d.polygon(body, fill=color)
        d.polygon([(0.3 * w, 0.2 * h), (0.1 * w, 0.5 * h), (0.2 * w, 0.55 * h), (0.35 * w, 0.35 * h)], fill=color)
        d.polygon([(0.7 * w, 0.2 * h), (0.9 * w, 0.5 * h), (0.8 * w, 0.55 * h), (0.65 * w, 0.35 * h)], fill=color)
        if rng.random() < 0.5:  # stripes
            for y in range(int(0.25 * h), int(0.9 * h), max(4, h // 24)):
                d.line([(0.3 * w, y), (0.7 * w, y)], fill=(255, 255, 255), width=max(1, h // 96))
        d.ellipse([0.42 * w, 0.15 * h, 0.58 * w, 0.27 * h], fill=img.getpixel((2, 2)))  # neckline
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (h, w, 3), dtype=np.int16)
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def bench_tagging(
    embeddings: ClipEmbeddings,
    n: int = 500,
    size: tuple[int, int] = (512, 640),
    vocab: Vocabulary | None = None,
    batch: int = BATCH,
) -> dict:
    """Decode `n` generated JPEGs (from bytes, width×height `size`) and tag them `batch` at a time.

    Reports throughput (images/minute over decode + embed + classify) and per-stage seconds; asserts nothing.
    `prepare_s` (the text side, once per vocabulary) and `generate_s` (making the test JPEGs) are not counted.
    """
    vocab = vocab or load_vocabulary()
    t0 = time.perf_counter()
    data = bench_images(n, size)
    generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tagger = Tagger(embeddings, vocab)
    prepare_s = time.perf_counter() - t0
    decode_s = embed_s = classify_s = 0.0
    for i in range(0, n, batch):
        t0 = time.perf_counter()
        images = [
            decode(b, MAX_PIXELS, MAX_BYTES, name=f"bench-{i + j}.jpg") for j, b in enumerate(data[i : i + batch])
        ]
        t1 = time.perf_counter()
        vectors = tagger.embed(images)
        t2 = time.perf_counter()
        tagger.tag_vectors(vectors)
        t3 = time.perf_counter()
        decode_s, embed_s, classify_s = decode_s + t1 - t0, embed_s + t2 - t1, classify_s + t3 - t2
    total = decode_s + embed_s + classify_s
    return {
        "images": n,
        "size": list(size),
        "batch": batch,
        "device": str(embeddings.device),
        "attributes": len(vocab.attributes),
        "values": sum(len(v) for v in vocab.attributes.values()),
        "images_per_minute": round(n / total * 60, 1) if total > 0 else math.inf,
        "total_s": round(total, 3),
        "decode_s": round(decode_s, 3),
        "embed_s": round(embed_s, 3),
        "classify_s": round(classify_s, 3),
        "prepare_s": round(prepare_s, 3),
        "generate_s": round(generate_s, 3),
    }
