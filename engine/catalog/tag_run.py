"""A tagging run: a folder or zip of product photos → CLIP attributes with confidences → LLM listings → one
table row per image (CSV and .xlsx), every image indexed for similar-product search."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadInput, Cancelled, NotFound
from ..files import write_atomic
from ..schema import Progress
from .listing import ListingFailed, ListingWriter, listing_row
from .tagging import Tagger, Vocabulary, load_vocabulary, read_images, tag_rows

LISTING_COLUMNS = ["title", "bullet_points", "description", "style_summary", "seo_tags"]


class ProductIndex:
    """Product photos' CLIP vectors in a Chroma collection: similar products for an image or for words."""

    def __init__(self, client, embeddings, collection: str):
        from ..library import HNSW

        self.embeddings = embeddings
        self.col = client.get_or_create_collection(collection, configuration={"hnsw": HNSW})

    def add(self, ids: list[str], vectors: list[list[float]], metadatas: list[dict[str, Any]]) -> None:
        if ids:
            self.col.upsert(ids=ids, embeddings=vectors, metadatas=metadatas)

    def count(self) -> int:
        return self.col.count()

    def search(self, vector: list[float], k: int = 8) -> list[dict[str, Any]]:
        """The k nearest products by cosine similarity (1 − distance), best first."""
        if not 1 <= k <= 100:
            raise BadInput(f"k must be between 1 and 100 (got {k})")
        n = self.count()
        if n == 0:
            raise NotFound("no products are indexed yet; tag a folder first")
        got = self.col.query(query_embeddings=[vector], n_results=min(k, n), include=["metadatas", "distances"])
        return [
            {"id": i, **m, "score": round(1.0 - float(d), 4)}
            for i, m, d in zip(got["ids"][0], got["metadatas"][0], got["distances"][0], strict=True)
        ]


def write_table(rows: list[dict[str, Any]], columns: list[str], out: Path) -> list[Path]:
    """`out` as .csv or .xlsx (by its suffix), and the other format beside it, both one row per image."""
    from ..tables import csv_bytes, xlsx_bytes

    if out.suffix.lower() not in (".csv", ".xlsx"):
        raise BadInput(f"--out must end in .csv or .xlsx (got {out.name})")
    csv_path, xlsx_path = out.with_suffix(".csv"), out.with_suffix(".xlsx")
    write_atomic(csv_path, csv_bytes(rows, columns, bom=True))  # with a BOM, so Excel reads the umlauts
    write_atomic(xlsx_path, xlsx_bytes(rows, columns, "tags"))
    return [csv_path, xlsx_path]


def tag_images(
    engine,
    source: Path,
    vocab: Vocabulary | None = None,
    writer: ListingWriter | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Tag every readable image under `source` (a folder or a .zip); write listings when `writer` is given.
    Returns rows (one per image: attributes, confidences, listing fields, status), skipped files with their
    reasons, the column order and timings. Every image is also added to the engine's product index."""
    vocab = vocab or load_vocabulary()
    started = time.perf_counter()
    items, skipped = read_images(Path(source), engine.settings.max_input_pixels, engine.settings.max_upload_bytes)
    t_read = time.perf_counter() - started
    if not items:
        raise BadInput(
            f"{Path(source).name} holds no readable image" + (f" ({len(skipped)} skipped)" if skipped else "")
        )
    tagger = Tagger(engine.library.embeddings, vocab)
    vectors: list[list[float]] = []
    for i in range(0, len(items), 16):
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled while tagging")
        vectors += tagger.embed([it.image for it in items[i : i + 16]])
        if on_progress:
            on_progress(Progress("tag", min(i + 16, len(items)), len(items), time.perf_counter() - started))
    guesses = tagger.tag_vectors(vectors)
    rows = tag_rows(items, guesses)
    thumbs = _thumbnails(engine.data_dir / "products", items)
    for row, thumb in zip(rows, thumbs, strict=True):
        row["thumbnail"] = str(thumb)
    t_tag = time.perf_counter() - started - t_read
    engine.products.add(
        [it.sha256 for it in items],
        vectors,
        [
            {"name": it.name, "source": str(Path(source).resolve()), "thumbnail": str(th), **_certain(g)}
            for it, g, th in zip(items, guesses, thumbs, strict=True)
        ],
    )
    for row in rows:
        row.update({c: "" for c in LISTING_COLUMNS}, status="tagged", error="")
    t0 = time.perf_counter()
    if writer is not None:
        jobs = [(i, {a: g.value for a, g in guess.items()}, items[i].name) for i, guess in enumerate(guesses)]

        def done(key, result, count, total):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled while writing listings")
            if on_progress:
                on_progress(Progress("listings", count, total, time.perf_counter() - started))

        for i, result in writer.write_many(jobs, on_done=done).items():
            if isinstance(result, ListingFailed):
                rows[i].update(status="listing failed", error=str(result))
            else:
                rows[i].update(listing_row(result.listing), status="listed")
    columns = [*vocab.columns(), *(LISTING_COLUMNS if writer is not None else []), "status", "error"]
    return {
        "rows": rows,
        "columns": columns,
        "skipped": [{"name": s.name, "reason": s.reason} for s in skipped],
        "seconds": {"read": round(t_read, 3), "tag": round(t_tag, 3), "listings": round(time.perf_counter() - t0, 3)},
        "images": len(items),
    }


def _thumbnails(folder: Path, items) -> list[Path]:
    """A 256-px JPEG of every product, named by its content hash (kept once however often it is tagged), so
    tables and search results can show photos that came in a zip."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for it in items:
        path = folder / f"{it.sha256[:32]}.jpg"
        if not path.is_file():
            thumb = it.image.copy()
            thumb.thumbnail((256, 256))
            buf = io.BytesIO()
            thumb.save(buf, "JPEG", quality=85)
            write_atomic(path, buf.getvalue())
        out.append(path)
    return out


def _certain(guesses) -> dict[str, str]:
    """Attribute values as index metadata (Chroma keeps flat str/number values)."""
    return {f"attr_{a}": g.value for a, g in guesses.items()}
