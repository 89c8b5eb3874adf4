"""Image–text pairs → cleaned, de-duplicated, stratified splits → WebDataset shards, and a reader for them.

Sources (any mix):
- a folder of images + a captions CSV (`file`/`image`/`path` column, `caption`/`text` column, optional `label`);
- a catalog tagging table (`python -m engine catalog tag`'s CSV: `image`, attributes, `title`, ...);
- the style library (image + name, description, tags).

Cleaning drops unreadable images (decoded with the upload limits) and empty captions and de-duplicates by the
image bytes' SHA-256 (the first caption wins). An optional `clean(text) -> text` hook rewrites captions (e.g. an
LLM through `llm_caption_cleaner`); whatever it fails on keeps the original caption.

The split is stratified by label (the label column, else the caption) with a fixed seed, 80/10/10 by default,
plus `mini_train`, a seeded subset of train for quick runs. Layout of DATA_DIR::

    plan.json                      what goes into which shard (written before any shard)
    captions-cleaned.json          the caption hook's answers, so a resumed prepare asks nothing twice
    train/shard-000000.tar ...     WebDataset: <key>.jpg|png, <key>.txt, <key>.json per sample
    val/ test/ mini_train/
    manifest.json                  counts per split, written last: its presence means "complete"

Every shard is written to a temporary name and renamed, so an interrupted prepare leaves only whole shards;
running it again with the same inputs keeps those and writes the rest.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import random
import re
import shutil
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import BadInput, EngineError
from ..files import atomic_writer, write_atomic
from ..images import decode
from ..schema import Progress
from .splits import DEFAULT_FRACTIONS, MIN_HELD_OUT, min_pairs, split_counts

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ALL_SPLITS = (*SPLITS, "mini_train")
SHARD_PATTERN = "shard-%06d.tar"
MANIFEST = "manifest.json"
PLAN = "plan.json"
CLEAN_CACHE = "captions-cleaned.json"
FORMAT_VERSION = 1

FILE_COLUMNS = ("file", "filename", "image", "image_path", "path", "img")
TEXT_COLUMNS = ("caption", "text", "title", "description", "prompt")
LABEL_COLUMNS = ("label", "category", "class")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_CLEAN_FAILURES = 5  # the caption hook failed this often in a row: stop asking, keep the captions
UNCERTAIN = "uncertain"  # the tagger's word for a low-confidence attribute (engine.catalog.tagging.UNCERTAIN)


@dataclass
class Dropped:
    """A pair that was left out, with a one-line reason."""

    name: str
    reason: str


@dataclass
class RawPair:
    """One candidate pair before cleaning; `read()` returns the image file's bytes."""

    name: str
    read: Callable[[], bytes] = field(repr=False)
    text: str
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pair:
    """A clean pair: `key` is the image bytes' SHA-256 (32 hex), `text` the (cleaned) caption."""

    key: str
    name: str
    read: Callable[[], bytes] = field(repr=False)
    text: str
    label: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    """One sample read back from a shard."""

    key: str
    image: Image.Image
    text: str
    meta: dict[str, Any]

    def __iter__(self):  # unpacks as (image, text, meta)
        return iter((self.image, self.text, self.meta))


def normalize_text(text: Any) -> str:
    """One line, single spaces; None → ""."""
    return " ".join(str(text or "").split())


# ---- sources ---------------------------------------------------------------------------------------------------------
def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"captions table {path} does not exist")
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{path.name} is not UTF-8 text; save it as CSV (UTF-8)") from None
    if not raw.strip():
        raise BadInput(f"{path.name} is empty; it needs a header row and one row per image")
    try:
        dialect = csv.Sniffer().sniff(raw[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(raw), dialect=dialect)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    reader.fieldnames = columns
    rows = [{k: (v or "") for k, v in row.items() if k is not None} for row in reader]
    return columns, rows


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    if wanted:
        return lower.get(wanted.lower())
    return next((lower[c] for c in candidates if c in lower), None)


def _image_reader(root: Path) -> Callable[[str], Callable[[], bytes]]:
    """name → a function reading that image's bytes, from a folder (or a .zip, as the tagger accepts)."""
    root = Path(root)
    if root.is_dir():

        def from_folder(name: str) -> Callable[[], bytes]:
            path = Path(name) if Path(name).is_absolute() else root / name
            return lambda: path.read_bytes()

        return from_folder
    if root.is_file() and root.suffix.lower() == ".zip":

        def from_zip(name: str) -> Callable[[], bytes]:
            def read() -> bytes:
                with zipfile.ZipFile(root) as zf:
                    return zf.read(name)

            return read

        return from_zip
    raise BadInput(f"images folder {root} does not exist")


def pairs_from_folder(
    images: Path,
    captions: Path,
    file_column: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> list[RawPair]:
    """A folder of images and a CSV naming each image (relative to the folder) with its caption."""
    images, captions = Path(images), Path(captions)
    if not images.exists():
        raise BadInput(f"images folder {images} does not exist")
    columns, rows = _read_csv(captions)
    fcol = _pick(columns, file_column, FILE_COLUMNS)
    tcol = _pick(columns, text_column, TEXT_COLUMNS)
    lcol = _pick(columns, label_column, LABEL_COLUMNS)
    if fcol is None or tcol is None:
        missing = [
            what
            for what, col, cands in (("an image column", fcol, FILE_COLUMNS), ("a caption column", tcol, TEXT_COLUMNS))
            if col is None
        ]
        names = {
            "an image column": file_column or " / ".join(FILE_COLUMNS),
            "a caption column": text_column or " / ".join(TEXT_COLUMNS),
        }
        need = "; ".join(f"{m} ({names[m]})" for m in missing)
        raise BadInput(f"{captions.name} needs {need}; its columns are: {', '.join(columns) or 'none'}")
    if label_column and lcol is None:
        raise BadInput(f"{captions.name} has no column '{label_column}'; its columns are: {', '.join(columns)}")
    reader = _image_reader(images)
    out = []
    for i, row in enumerate(rows, start=2):  # row 1 is the header
        name = row.get(fcol, "").strip()
        if not name:
            continue
        text = normalize_text(row.get(tcol))
        out.append(
            RawPair(
                name=name,
                read=reader(name),
                text=text,
                label=normalize_text(row.get(lcol)) if lcol else "",
                meta={"source": "folder", "file": name, "row": i},
            )
        )
    return out


def tagging_caption(title: str, values: list[str]) -> str:
    """A tagging table row → "Title. red, striped, long sleeve" (uncertain attributes left out)."""
    values = [v for v in (normalize_text(v) for v in values) if v and v.casefold() != UNCERTAIN]
    parts = [p for p in (normalize_text(title).rstrip("."), ", ".join(values)) if p]
    return ". ".join(parts)


def pairs_from_tagging(table: Path, images: Path | None = None) -> list[RawPair]:
    """A catalog tagging CSV (`catalog tag --out`): `image` + attribute columns (+ listing `title`) → captions.

    Image names are relative to the tagged folder or zip (`images`; default: the table's folder). The label
    for stratification is the first attribute's value."""
    table = Path(table)
    columns, rows = _read_csv(table)
    lower = [c.lower() for c in columns]
    attributes = [c for c in columns if f"{c.lower()}_confidence" in lower]
    if "image" not in lower or not (attributes or "title" in lower):
        raise BadInput(
            f"{table.name} is not a tagging table: it needs an 'image' column and attribute columns "
            f"(<attribute>, <attribute>_confidence) or a 'title'; its columns are: {', '.join(columns) or 'none'}"
        )
    icol = columns[lower.index("image")]
    title_col = columns[lower.index("title")] if "title" in lower else None
    reader = _image_reader(Path(images) if images else table.parent)
    out = []
    for i, row in enumerate(rows, start=2):
        name = row.get(icol, "").strip()
        if not name:
            continue
        first = normalize_text(row.get(attributes[0])) if attributes else ""
        out.append(
            RawPair(
                name=name,
                read=reader(name),
                text=tagging_caption(row.get(title_col, "") if title_col else "", [row.get(a) for a in attributes]),
                label="" if first.casefold() == UNCERTAIN else first,
                meta={"source": "tagging", "file": name, "row": i},
            )
        )
    return out


def library_caption(name: str, description: str, tags: list[str]) -> str:
    parts = [normalize_text(name).rstrip("."), normalize_text(description).rstrip(".")]
    if tags:
        parts.append(", ".join(normalize_text(t) for t in tags if normalize_text(t)))
    return ". ".join(p for p in parts if p)


def pairs_from_library(library) -> list[RawPair]:
    """Every style (hidden ones too): its image with "name. description. tag, tag"; label = the style name."""
    out = []
    for s in library.list(include_hidden=True):

        def read(sid: str = s.id) -> bytes:
            buf = io.BytesIO()
            library.image(sid).save(buf, format="PNG")
            return buf.getvalue()

        out.append(
            RawPair(
                name=f"style '{s.name}'",
                read=read,
                text=library_caption(s.name, s.description, s.tags),
                label=normalize_text(s.name),
                meta={"source": "library", "style_id": s.id, "style": s.name},
            )
        )
    return out


# ---- cleaning --------------------------------------------------------------------------------------------------------
def _load(pair: RawPair | Pair, max_pixels: int, max_bytes: int) -> tuple[bytes, Image.Image]:
    try:
        data = pair.read()
    except FileNotFoundError:
        raise BadInput("file not found") from None
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise BadInput(f"cannot read it ({type(exc).__name__})") from None
    return data, decode(data, max_pixels, max_bytes, name=pair.name)


def clean_pairs(
    raw: Iterable[RawPair],
    max_pixels: int = 64_000_000,
    max_bytes: int = 20 * 1024 * 1024,
    clean: Callable[[str], str] | None = None,
    cache: dict[str, str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> tuple[list[Pair], list[Dropped]]:
    """Readable, non-empty, unique pairs (by image content hash, the first caption wins) and what was dropped.

    `clean(text)` may rewrite each distinct caption once (answers are kept in `cache`); an exception or an
    empty answer keeps the original."""
    raw = list(raw)
    started = time.perf_counter()
    pairs: list[Pair] = []
    dropped: list[Dropped] = []
    seen: dict[str, str] = {}
    cache = {} if cache is None else cache
    failures = 0
    for i, rp in enumerate(raw, start=1):
        if on_progress and (i % 32 == 0 or i == len(raw)):
            on_progress(Progress("read", i, len(raw), time.perf_counter() - started))
        if not rp.text:
            dropped.append(Dropped(rp.name, "empty caption"))
            continue
        try:
            data, img = _load(rp, max_pixels, max_bytes)
        except BadInput as exc:
            dropped.append(Dropped(rp.name, exc.message))
            continue
        key = hashlib.sha256(data).hexdigest()[:32]
        if key in seen:
            dropped.append(Dropped(rp.name, f"duplicate of {seen[key]}"))
            continue
        seen[key] = rp.name
        meta = {**rp.meta, "width": img.width, "height": img.height}
        pairs.append(Pair(key, rp.name, rp.read, rp.text, rp.label, meta))
    if clean is not None:
        texts = sorted({p.text for p in pairs})
        for i, text in enumerate(texts, start=1):
            if text not in cache and failures < MAX_CLEAN_FAILURES:
                try:
                    new = normalize_text(clean(text))
                    failures = 0
                except Exception as exc:  # a failed call keeps the caption; the run goes on
                    failures += 1
                    log.warning("caption cleanup failed for %r: %s", text[:60], exc)
                    if failures == MAX_CLEAN_FAILURES:
                        log.warning("caption cleanup: %d failures in a row; keeping the other captions", failures)
                    new = ""
                cache[text] = new or text
            if on_progress:
                on_progress(Progress("clean", i, len(texts), time.perf_counter() - started))
        for p in pairs:
            new = cache.get(p.text, p.text)
            if new != p.text:
                p.meta["original_text"] = p.text
                p.text = new
    return pairs, dropped


CLEAN_SYSTEM = (
    "You clean image captions for training an image search model. Rewrite the caption as one short, plain "
    "description of what the picture shows: keep colours, materials, style and object type; drop prices, sizes, "
    'SKUs, shipping and marketing words. Answer with one JSON object only: {"caption": "..."}.'
)


def _caption_from_reply(reply: str) -> str | None:
    for candidate in (reply, *re.findall(r"\{[^{}]*\}", reply or "")):
        try:
            data = json.loads(candidate)
        except (ValueError, TypeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("caption"), str) and data["caption"].strip():
            return normalize_text(data["caption"])
    return None


def llm_caption_cleaner(backend) -> Callable[[str], str]:
    """A `clean` hook over a catalog LLM backend (`OpenAIBackend`, `TransformersBackend`): one request per
    caption asking for {"caption": ...}; a reply that is not such JSON keeps the original caption."""

    def clean(text: str) -> str:
        reply = backend.complete([{"role": "system", "content": CLEAN_SYSTEM}, {"role": "user", "content": text}])
        got = _caption_from_reply(reply)
        if got is None:
            log.info("caption cleanup: unusable reply for %r; kept the original", text[:60])
        return got or text

    return clean


# ---- split -----------------------------------------------------------------------------------------------------------
def check_enough(
    n: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    fix: str | None = None,
    error: type[BadInput] = BadInput,
) -> None:
    """Refuse, in one line, pairs too few for recall to be measured on the held-out splits (training would run,
    then fail at its measurement and leave an adapter without scores). `error`: BadInput for pairs the call sent,
    Conflict for what the engine holds (the library, a tagging run), which the call cannot change."""
    need = min_pairs(fractions)
    if n < need:
        held = " and ".join(w for w, f in zip(("validation", "test"), fractions[1:], strict=True) if f > 0)
        pairs = "1 usable pair is" if n == 1 else f"{n} usable pairs are"
        raise error(
            f"{pairs} too few: recall is measured on held-out pairs, at least {MIN_HELD_OUT} in "
            f"{'each of the ' + held + ' splits' if ' and ' in held else 'the ' + held + ' split'}, which takes at "
            f"least {need} pairs ({need - n} more)",
            fix=fix,
        )


def split_pairs(
    pairs: list[Pair], fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0, mini_train: int = 1000
) -> dict[str, list[Pair]]:
    """Stratified train/val/test (+ mini_train ⊂ train), the same for the same pairs and seed.

    Pairs are grouped by label (the caption where there is none), the groups and their members shuffled with the
    seed, and the concatenation dealt out so each split stays at its fraction all along the list: every label
    lands in the splits in proportion (as far as its size allows) and the totals match the fractions exactly."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6 or fractions[0] <= 0:
        raise BadInput(f"split fractions must be three non-negative numbers summing to 1, train > 0 (got {fractions})")
    rng = random.Random(seed)
    groups: dict[str, list[Pair]] = {}
    for p in sorted(pairs, key=lambda p: p.key):
        groups.setdefault((p.label or p.text).casefold(), []).append(p)
    labels = sorted(groups)
    rng.shuffle(labels)
    ordered = []
    for label in labels:
        members = groups[label]
        rng.shuffle(members)
        ordered += members
    n = len(ordered)
    target = split_counts(n, tuple(fractions))
    got = [0, 0, 0]
    out: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for i, p in enumerate(ordered):
        open_ = [s for s in range(3) if got[s] < target[s]]
        s = max(open_, key=lambda s: (target[s] * (i + 1) / n - got[s], -s))
        got[s] += 1
        out[SPLITS[s]].append(p)
    for s in SPLITS:
        rng.shuffle(out[s])  # shards hold a mixed order, as streaming readers expect
    mini = sorted(rng.sample(range(len(out["train"])), min(mini_train, len(out["train"]))))
    out["mini_train"] = [out["train"][i] for i in mini]
    return out


# ---- shards ----------------------------------------------------------------------------------------------------------
def _encode_for_shard(data: bytes, img: Image.Image, max_side: int) -> tuple[bytes, str]:
    """The stored image: the original bytes when they are a JPEG/PNG within `max_side`, else re-encoded."""
    with Image.open(io.BytesIO(data)) as probe:
        fmt = probe.format
        exif_rotated = bool(probe.getexif().get(0x0112, 1) not in (1, None)) if fmt == "JPEG" else False
    if max(img.size) <= max_side and fmt in ("JPEG", "PNG") and not exif_rotated:
        return data, "jpg" if fmt == "JPEG" else "png"
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, format="PNG")
        return buf.getvalue(), "png"
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue(), "jpg"


def _plan(splits: dict[str, list[Pair]], shard_size: int, max_side: int) -> dict[str, Any]:
    shards = {
        s: [[p.key for p in items[i : i + shard_size]] for i in range(0, len(items), shard_size)]
        for s, items in splits.items()
    }
    digest = hashlib.sha256(
        json.dumps(
            {
                "version": FORMAT_VERSION,
                "max_side": max_side,
                "shards": shards,
                "texts": {p.key: [p.text, p.label] for items in splits.values() for p in items},
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    return {"version": FORMAT_VERSION, "fingerprint": digest, "shard_size": shard_size, "max_side": max_side,
            "shards": shards}  # fmt: skip


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"))


def _write_shard(path: Path, pairs: list[Pair], max_side: int, max_pixels: int, max_bytes: int) -> None:
    import webdataset as wds

    with atomic_writer(path, suffix=".partial") as fh, wds.TarWriter(fh, encoder=False, mtime=0.0) as sink:
        for p in pairs:
            try:
                data, img = _load(p, max_pixels, max_bytes)
            except BadInput as exc:
                raise BadInput(f"{p.name} can no longer be read ({exc.message}); run prepare again") from None
            if hashlib.sha256(data).hexdigest()[:32] != p.key:
                raise BadInput(f"{p.name} changed while preparing; run prepare again")
            stored, ext = _encode_for_shard(data, img, max_side)
            meta = {"name": p.name, "label": p.label, **p.meta}
            sink.write(
                {
                    "__key__": p.key,
                    ext: stored,
                    "txt": p.text.encode("utf-8"),
                    "json": json.dumps(meta, ensure_ascii=False).encode("utf-8"),
                }
            )


def write_shards(
    splits: dict[str, list[Pair]],
    out: Path,
    shard_size: int = 1000,
    max_side: int = 512,
    max_pixels: int = 64_000_000,
    max_bytes: int = 20 * 1024 * 1024,
    overwrite: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_shard: Callable[[str, int, Path], None] | None = None,
) -> dict[str, Any]:
    """Write the shards that are missing; returns {"plan": ..., "written": n, "kept": n}.

    A plan (`plan.json`) fixes which samples go into which shard; a folder holding another data set's plan
    is refused unless `overwrite`. `on_shard(split, index, path)` runs after each shard is in place."""
    if shard_size < 1:
        raise BadInput(f"shard size must be at least 1 (got {shard_size})")
    out = Path(out)
    plan = _plan(splits, shard_size, max_side)
    plan_path = out / PLAN
    if plan_path.is_file() and not overwrite:
        try:
            old = json.loads(plan_path.read_text())
        except ValueError:
            old = {}
        if old.get("fingerprint") != plan["fingerprint"]:
            raise BadInput(
                f"{out} already holds shards of other data (or other split settings)",
                fix="pass --overwrite to replace them, or choose an empty --out folder",
            )
    elif overwrite:
        for name in (*ALL_SPLITS, MANIFEST, PLAN):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan_path, plan)
    by_key = {p.key: p for items in splits.values() for p in items}
    total = sum(len(v) for v in plan["shards"].values())
    started = time.perf_counter()
    written = kept = done = 0
    for split, shards in plan["shards"].items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob(".*.partial"):  # left by a killed prepare
            tmp.unlink(missing_ok=True)
        for index, keys in enumerate(shards):
            path = folder / (SHARD_PATTERN % index)
            if path.is_file():
                kept += 1
            else:
                _write_shard(path, [by_key[k] for k in keys], max_side, max_pixels, max_bytes)
                written += 1
            done += 1
            if on_progress:
                on_progress(Progress("shards", done, total, time.perf_counter() - started))
            if on_shard:
                on_shard(split, index, path)
    return {"plan": plan, "written": written, "kept": kept}


def prepare(
    out: Path,
    images: Path | None = None,
    captions: Path | None = None,
    tagging: Path | None = None,
    library=None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    mini_train: int = 1000,
    shard_size: int = 1000,
    max_side: int = 512,
    max_pixels: int = 64_000_000,
    max_bytes: int = 20 * 1024 * 1024,
    clean: Callable[[str], str] | None = None,
    overwrite: bool = False,
    file_column: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_shard: Callable[[str, int, Path], None] | None = None,
) -> dict[str, Any]:
    """Collect → clean → split → shard → manifest; returns the manifest plus what this call wrote and kept."""
    out = Path(out)
    started = time.perf_counter()
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; give a folder")
    raw: list[RawPair] = []
    sources: dict[str, int] = {}
    if captions is not None:
        if images is None:
            raise BadInput("--captions needs --images, the folder its file names are relative to")
        got = pairs_from_folder(images, captions, file_column, text_column, label_column)
        sources["folder"] = len(got)
        raw += got
    elif images is not None and tagging is None:
        raise BadInput("--images needs --captions CSV (file, caption[, label]) or --tagging CSV")
    if tagging is not None:
        got = pairs_from_tagging(tagging, images if captions is None else None)
        sources["tagging"] = len(got)
        raw += got
    if library is not None:
        got = pairs_from_library(library)
        sources["library"] = len(got)
        raw += got
    if not sources:
        raise BadInput("nothing to prepare: give --images with --captions, --tagging, or --library")
    cache_path = out / CLEAN_CACHE
    cache: dict[str, str] = {}
    if clean is not None and cache_path.is_file():
        try:
            cache = json.loads(cache_path.read_text())
        except ValueError:
            cache = {}
    pairs, dropped = clean_pairs(raw, max_pixels, max_bytes, clean, cache, on_progress)
    if clean is not None:
        write_json_atomic(cache_path, cache)
    if not pairs:
        reasons = "; ".join(f"{d.name}: {d.reason}" for d in dropped[:3])
        raise BadInput(f"no readable image–caption pairs ({len(dropped)} dropped{': ' + reasons if reasons else ''})")
    check_enough(len(pairs), fractions)
    splits = split_pairs(pairs, fractions, seed, mini_train)
    result = write_shards(splits, out, shard_size, max_side, max_pixels, max_bytes, overwrite, on_progress, on_shard)
    plan = result["plan"]
    manifest = {
        "version": FORMAT_VERSION,
        "fingerprint": plan["fingerprint"],
        "seed": seed,
        "fractions": list(fractions),
        "shard_size": shard_size,
        "max_side": max_side,
        "sources": sources,
        "samples": len(pairs),
        "labels": len({(p.label or p.text).casefold() for p in pairs}),
        "cleaned": sum(1 for p in pairs if "original_text" in p.meta),
        "dropped": len(dropped),
        "dropped_examples": [{"name": d.name, "reason": d.reason} for d in dropped[:50]],
        "splits": {
            s: {
                "samples": len(splits[s]),
                "shards": [f"{s}/{SHARD_PATTERN % i}" for i in range(len(plan["shards"][s]))],
            }
            for s in ALL_SPLITS
        },
    }
    write_json_atomic(out / MANIFEST, manifest)
    return {
        **manifest,
        "folder": str(out),
        "written_shards": result["written"],
        "kept_shards": result["kept"],
        "seconds": round(time.perf_counter() - started, 3),
    }


# ---- reading ---------------------------------------------------------------------------------------------------------
def load_manifest(data_dir: Path) -> dict[str, Any]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise BadInput(f"data folder {data_dir} does not exist", fix="run `python -m engine tune prepare` first")
    path = data_dir / MANIFEST
    if not path.is_file():
        raise BadInput(
            f"{data_dir} is not a prepared data folder (no {MANIFEST})",
            fix="prepare it (again, to finish an interrupted prepare): `python -m engine tune prepare --name`",
        )
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        raise BadInput(f"{path} is damaged; run prepare again") from None
    return manifest


def shard_paths(data_dir: Path, split: str) -> list[Path]:
    manifest = load_manifest(data_dir)
    if split not in manifest.get("splits", {}):
        raise BadInput(f"unknown split '{split}'; the data folder has: {', '.join(manifest.get('splits', {}))}")
    return [Path(data_dir) / rel for rel in manifest["splits"][split]["shards"]]


def _key_ext(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    return (name.rsplit("/", 1)[0] + "/" + key if "/" in name else key), ext


class ShardDataset:
    """A split's samples by index (random access into the tar shards), as a map-style torch dataset.

    `ds[i]` is a `Sample` (unpacks as image, text, meta); files are opened lazily, per process, so the
    dataset works with DataLoader workers."""

    def __init__(self, data_dir: Path, split: str = "train", max_pixels: int = 64_000_000):
        self.data_dir = Path(data_dir)
        self.split = split
        self.max_pixels = max_pixels
        self.shards = shard_paths(self.data_dir, split)
        self.index: list[tuple[int, str, dict[str, tuple[int, int]]]] = []  # (shard, key, ext → (offset, size))
        for si, path in enumerate(self.shards):
            if not path.is_file():
                raise BadInput(f"shard {path} is missing; run prepare again")
            entries: dict[str, dict[str, tuple[int, int]]] = {}
            order: list[str] = []
            with tarfile.open(path) as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    key, ext = _key_ext(m.name)
                    if key not in entries:
                        entries[key] = {}
                        order.append(key)
                    entries[key][ext] = (m.offset_data, m.size)
            self.index += [(si, k, entries[k]) for k in order]
        self._files: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):
        return {**self.__dict__, "_files": {}}

    def _read(self, shard: int, where: tuple[int, int]) -> bytes:
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        fh = self._files.get(shard)
        if fh is None:
            fh = self._files[shard] = open(self.shards[shard], "rb")  # noqa: SIM115 - kept open for random access
        fh.seek(where[0])
        return fh.read(where[1])

    def raw(self, i: int) -> dict[str, Any]:
        """The sample's fields as stored: key, image bytes and extension, text, meta."""
        shard, key, parts = self.index[i]
        ext = next((e for e in ("jpg", "png", "jpeg", "webp") if e in parts), None)
        if ext is None or "txt" not in parts:
            raise EngineError(f"sample {key} in {self.shards[shard].name} lacks an image or a caption")
        meta = json.loads(self._read(shard, parts["json"])) if "json" in parts else {}
        return {"key": key, "ext": ext, "image": self._read(shard, parts[ext]),
                "text": self._read(shard, parts["txt"]).decode("utf-8"), "meta": meta}  # fmt: skip

    def __getitem__(self, i: int) -> Sample:
        r = self.raw(i)
        image = decode(r["image"], self.max_pixels, name=f"{r['key']}.{r['ext']}")
        return Sample(r["key"], image, r["text"], r["meta"])

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


def read_split(data_dir: Path, split: str = "train") -> Iterator[Sample]:
    """Every sample of a split in shard order: (image, text, meta) when unpacked."""
    ds = ShardDataset(data_dir, split)
    try:
        for i in range(len(ds)):
            yield ds[i]
    finally:
        ds.close()
