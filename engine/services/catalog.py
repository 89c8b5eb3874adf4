"""Catalog runs (a product sheet in, a product photo per row out) and tagging runs (product photos in,
attributes and listings out), as jobs over run folders named by the engine, and similar-product search."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import images as imgs
from ..api import (
    HEAD_ROWS,
    MAX_CELL_SHOWN,
    MAX_SAMPLE,
    MAX_SHEET_ERRORS,
    MAX_TEXT_SHOWN,
    Catalog,
    JobInfo,
    SheetInfo,
    SheetItem,
    SheetMapping,
)
from ..catalog.options import CatalogOptions
from ..catalog.runner import CatalogRun, past_runs, resume
from ..catalog.sheets import choose_columns, guess_columns, guess_language, items, read_sheet, safe_name
from ..errors import BadInput, NotFound
from ..jobs import JobContext
from . import Core, named, newest_json, read_file, thumbnail

RUN_FILES = ("results.csv", "results.xlsx", "report.md")
TAG_FILES = ("results.csv", "results.xlsx")


class Renderer:
    """What a catalog run needs of the engine: renders, in `workers` parallel lanes, and the runs of a batch."""

    def __init__(self, core: Core):
        self.core = core
        self.workers = core.pipeline.executor.workers

    def generate(self, request, cancel=None):
        return self.core.pipeline.generate(request, cancel=cancel)

    def batch_runs(self, batch: str) -> list[dict[str, Any]]:
        return self.core.history.in_batch(batch)


class TagParts:
    """What tagging needs of the engine: its limits, the retrieval CLIP, the product index and a folder."""

    def __init__(self, core: Core):
        self.settings = core.settings
        self.data_dir = core.data_dir
        self.library = core.retrieval.library
        self.products = core.retrieval.products


def _shown(text: str, limit: int) -> str:
    """Text as an answer shows it: at most `limit` characters, a cut one ending in '…'."""
    return text if len(text) <= limit else text[:limit] + "…"


def _stamp() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class CatalogService(Catalog):
    def __init__(self, core: Core):
        self.core = core
        self.root = core.folder("catalog")
        self.tags = core.folder("tags")

    def handlers(self):
        return {"catalog": self._run, "tag": self._tag}

    # ---- catalog runs ---------------------------------------------------------------------------------------
    def inspect(
        self,
        sheet: bytes,
        name: str,
        text_column: str | None = None,
        id_column: str | None = None,
        name_column: str | None = None,
        category_column: str | None = None,
        sample_rows: int = 20,
    ) -> SheetInfo:
        if not 0 <= sample_rows <= MAX_SAMPLE:
            raise BadInput(f"sample_rows must be between 0 and {MAX_SAMPLE} (got {sample_rows})")
        read = read_sheet(sheet, name)
        mapping = choose_columns(read, text_column, id_column, name_column, category_column)
        info = SheetInfo(
            name=read.name,
            columns=read.columns,
            rows=len(read.rows),
            guess=SheetMapping(**guess_columns(read.columns)),
            mapping=SheetMapping(**mapping),
            head=[{c: _shown(v, MAX_CELL_SHOWN) for c, v in row.items()} for row in read.rows[:HEAD_ROWS]],
        )
        if mapping["text"] is None:  # no description column yet: the sheet to choose one from
            return info
        rows = items(read, mapping["text"], mapping["id"], mapping["name"], mapping["category"])
        failing = [r.error for r in rows if r.error]
        info.sample = [
            SheetItem(row=r.row, id=r.id, text=_shown(r.text, MAX_TEXT_SHOWN), error=r.error)
            for r in rows[:sample_rows]
        ]
        info.failing, info.errors = len(failing), failing[:MAX_SHEET_ERRORS]
        info.language = guess_language([r.text for r in rows if r.text])
        return info

    def _new_run(self, sheet: bytes, name: str, options: CatalogOptions, folder: Path) -> CatalogRun:
        models = self.core.catalog_models()
        return CatalogRun(Renderer(self.core), folder, read_sheet(sheet, name), sheet, options, models)

    def preview(self, sheet: bytes, name: str, options: CatalogOptions, n: int = 3) -> list[dict[str, Any]]:
        if not 1 <= n <= 20:
            raise BadInput(f"n must be between 1 and 20 (got {n})")
        return self._new_run(sheet, name, options, self.root / "preview").preview(n)  # writes nothing

    def start(self, sheet: bytes, name: str, options: CatalogOptions) -> JobInfo:
        digest = hashlib.sha256(sheet + options.model_dump_json().encode()).hexdigest()[:10]
        folder = self.root / f"{safe_name(Path(name).stem)[:60]}-{digest}"
        run = self._new_run(sheet, name, options, folder)
        run.open()  # run.json and the sheet's copy: a resume reads them
        return self.resume(folder.name)

    def resume(self, run: str) -> JobInfo:
        folder = named(self.root, run, "catalog run")
        meta = json.loads(read_file(folder / "run.json", f"catalog run {run}'s run.json"))
        return self.core.jobs.submit("catalog", {"run": run}, title=f"catalog: {meta['sheet']}", key=f"catalog:{run}")

    def _run(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        run = resume(Renderer(self.core), self.root / payload["run"], self.core.catalog_models())
        summary = run.run(on_progress=ctx.report, cancel=ctx.cancel)
        return {"run": payload["run"], "done": summary["done"], "failed": summary["failed"]}

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for r in past_runs(self.root):
            name = Path(r.pop("folder")).name
            out.append({**r, "run": name})
        return out

    def run(self, run: str) -> dict[str, Any]:
        folder = named(self.root, run, "catalog run")
        meta = json.loads(read_file(folder / "run.json", f"catalog run {run}'s run.json"))
        summary_path = folder / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        results = resume(Renderer(self.core), folder, self.core.catalog_models()).results()
        return {"run": run, "meta": meta, "summary": summary, "results": results}

    def file(self, run: str, name: str) -> bytes:
        if name not in RUN_FILES:
            raise BadInput(f"a catalog run has {', '.join(RUN_FILES)}; not '{name}'")
        return read_file(named(self.root, run, "catalog run") / name, f"{name} of {run} (has the run finished?)")

    def image(self, run: str, item: str, px: int = 0) -> bytes:
        path = named(self.root, run, "catalog run") / "images" / f"{safe_name(item)}.png"
        return thumbnail(read_file(path, f"the image of '{item}' in {run}"), px)

    # ---- tagging --------------------------------------------------------------------------------------------
    def tag(self, photos: bytes, vocabulary=None, llm="none", llm_url=None, llm_model="local-model") -> JobInfo:
        from ..catalog.tagging import DEFAULT_VOCAB, parse_vocabulary

        if vocabulary is None:
            vocabulary = DEFAULT_VOCAB.read_text()
        parse_vocabulary(vocabulary, "the vocabulary")  # a broken vocabulary fails now, as one line
        if llm == "server" and not (llm_url or "").strip():
            raise BadInput("an LLM server needs its URL (e.g. http://127.0.0.1:1234/v1)")
        if len(photos) > self.core.settings.max_upload_bytes:
            raise BadInput(f"the zip is over the {self.core.settings.max_upload_bytes / 1e6:.0f} MB limit")
        if not zipfile.is_zipfile(io.BytesIO(photos)):  # not at the job's start, minutes later
            raise BadInput("the photos are not a .zip file", fix="zip the folder of product photos")
        folder = self.tags / _stamp()
        folder.mkdir(parents=True)
        (folder / "upload.zip").write_bytes(photos)
        (folder / "vocabulary.yaml").write_text(vocabulary)
        payload = {"run": folder.name, "llm": llm, "llm_url": (llm_url or "").strip() or None, "llm_model": llm_model}
        return self.core.jobs.submit("tag", payload, title="tag photos")

    def _tag(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        from ..catalog.listing import ListingWriter
        from ..catalog.tag_run import tag_images, write_table
        from ..catalog.tagging import parse_vocabulary

        folder = self.tags / payload["run"]
        vocab = parse_vocabulary((folder / "vocabulary.yaml").read_text(), "the vocabulary")
        writer = None
        if payload["llm"] != "none":
            backend = self.core.catalog_models().backend(payload["llm_url"], payload["llm_model"])
            writer = ListingWriter(backend, concurrency=4)
        report = tag_images(TagParts(self.core), folder / "upload.zip", vocab, writer, ctx.report, ctx.cancel)
        for row in report["rows"]:
            row["thumbnail"] = Path(row["thumbnail"]).name  # a key for product_image, not a path here
        write_table(report["rows"], report["columns"], folder / "results.csv")
        (folder / "tagged.json").write_text(json.dumps(report, ensure_ascii=False))
        return {"run": payload["run"], "images": report["images"], "skipped": len(report["skipped"])}

    def tag_runs(self) -> list[dict[str, Any]]:
        return [
            {"run": table.parent.name, "images": report["images"], "skipped": len(report["skipped"])}
            for table, report in newest_json(self.tags, "*/tagged.json")
        ]

    def tagged(self, run: str) -> dict[str, Any]:
        folder = named(self.tags, run, "tagging run")
        return json.loads(read_file(folder / "tagged.json", f"tagging run {run}'s table (has it finished?)"))

    def tagged_file(self, run: str, name: str) -> bytes:
        if name not in TAG_FILES:
            raise BadInput(f"a tagging run has {', '.join(TAG_FILES)}; not '{name}'")
        return read_file(named(self.tags, run, "tagging run") / name, f"{name} of {run}")

    def product_image(self, key: str, px: int = 96) -> bytes:
        if not key or Path(key).name != key or not key.endswith(".jpg"):
            raise BadInput(f"'{key}' is not a product photo key")
        return thumbnail(read_file(self.core.data_dir / "products" / key, f"product photo {key}"), px)

    def similar(self, image: bytes | None = None, text: str | None = None, k: int = 8) -> list[dict[str, Any]]:
        retrieval = self.core.retrieval
        if not retrieval.products.count():  # nothing to search: said first, whatever the call holds
            raise NotFound("no products are indexed yet; tag a folder first")
        if image is not None:
            s = self.core.settings
            decoded = imgs.decode(image, s.max_input_pixels, s.max_upload_bytes)
            vector = retrieval.library.embeddings.embed_images([decoded])[0]
        elif text and text.strip():
            vector = retrieval.library.embeddings.embed_query(text.strip())
        else:
            raise BadInput("similar-product search needs a photo or words")
        found = retrieval.products.search(vector, k)
        for hit in found:
            hit["thumbnail"] = Path(hit.get("thumbnail", "")).name
            hit.pop("source", None)
        return found
