"""A catalog run: sheet → translation → LLM attributes → prompt → image → CLIP score, one folder per run,
per-row state on disk with atomic writes, so a killed run resumes where it stopped with nothing lost or doubled.

    OUT/run.json                the sheet, its hash and the options (a resume must match them)
    OUT/translations.json       translated descriptions, saved after every batch
    OUT/items/ID.json           one file per row: done (with its image and numbers) or failed (with the reason)
    OUT/images/ID.png           the render, with its full metadata inside
    OUT/results.csv / .xlsx     one line per row
    OUT/summary.json / report.md  counts, failures with reasons, CLIP score statistics, time per item
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadInput, Cancelled
from ..metrics import aggregate
from ..schema import GenerateRequest, Progress, describe_validation_error
from .prompts import DEFAULT_TEMPLATE, PromptTemplate
from .sheets import MAX_ROWS, Item, Sheet, items, safe_name

RESULT_COLUMNS = [
    "row", "id", "status", "name", "category", "description", "translation", "product_type", "key_features",
    "color_material", "design", "method", "attempts", "prompt", "seed", "image", "clip_score", "seconds", "error",
]  # fmt: skip


class CatalogOptions(BaseModel):
    """What a catalog run is asked to do; saved in run.json (never the API key)."""

    model_config = ConfigDict(extra="forbid")

    text_column: str = Field(min_length=1)
    id_column: str | None = None
    name_column: str | None = None
    category_column: str | None = None
    source_lang: str = Field("de", pattern=r"^[a-z]{2,3}$")
    template: str = DEFAULT_TEMPLATE
    negative_prompt: str = "text, watermark, logo, blurry, cropped"
    seed: int = Field(42, ge=0, le=2**32 - 1 - MAX_ROWS)  # plus the row index stays a valid seed
    steps: int = Field(20, ge=1, le=150)
    size: int = Field(512, ge=64, le=1024)
    guidance: float = Field(7.5, ge=0, le=30)
    style: str | None = None
    llm_url: str | None = None
    llm_model: str = "local-model"
    retries: int = Field(2, ge=0, le=5)
    limit: int | None = Field(None, ge=1)

    @classmethod
    def build(cls, **values: Any) -> CatalogOptions:
        try:
            return cls(**values)
        except ValidationError as exc:
            raise BadInput(describe_validation_error(exc)) from None


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False).encode())


class CatalogRun:
    """One run folder. `run()` does every row not yet done, then writes the tables and the report."""

    def __init__(self, engine, folder: Path, sheet: Sheet, sheet_bytes: bytes, options: CatalogOptions, models):
        self.engine = engine
        self.folder = Path(folder)
        self.sheet = sheet
        self.options = options
        self.models = models  # CatalogModels: the translator and the LLM, held once per process
        self.template = PromptTemplate(options.template)
        self.items = items(sheet, options.text_column, options.id_column, options.name_column, options.category_column)
        if options.limit:
            self.items = self.items[: options.limit]
        self.sheet_hash = hashlib.sha256(sheet_bytes).hexdigest()
        self.run_id = self._open()

    @classmethod
    def from_file(cls, engine, folder: Path, sheet_path: Path, options: CatalogOptions, models) -> CatalogRun:
        from .sheets import load_sheet

        sheet = load_sheet(sheet_path)
        return cls(engine, folder, sheet, Path(sheet_path).read_bytes(), options, models)

    # ---- the run folder ---------------------------------------------------------------------
    def _open(self) -> str:
        """Start a new run folder, or resume the one there if it ran the same sheet with the same options."""
        meta_path = self.folder / "run.json"
        saved_options = self.options.model_dump()
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta["sheet_sha256"] != self.sheet_hash:
                raise BadInput(f"{self.folder} holds a run of another sheet ({meta['sheet']}); choose another folder")
            if meta["options"] != saved_options:
                changed = sorted(k for k in saved_options if saved_options[k] != meta["options"].get(k))
                raise BadInput(
                    f"{self.folder} holds a run with other options ({', '.join(changed)}); "
                    "resume with the same options or choose another folder"
                )
            return meta["run_id"]
        if self.folder.exists() and any(self.folder.iterdir()):
            raise BadInput(f"{self.folder} is not empty and holds no catalog run; choose an empty or new folder")
        run_id = f"catalog-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        write_json(
            meta_path,
            {
                "run_id": run_id,
                "sheet": self.sheet.name,
                "sheet_sha256": self.sheet_hash,
                "rows": len(self.items),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "options": saved_options,
            },
        )
        return run_id

    def _item_path(self, item: Item) -> Path:
        return self.folder / "items" / f"{safe_name(item.id)}.json"

    def state(self, item: Item) -> dict[str, Any] | None:
        path = self._item_path(item)
        return json.loads(path.read_text()) if path.is_file() else None

    def pending(self) -> list[Item]:
        return [it for it in self.items if self.state(it) is None]

    # ---- stages -----------------------------------------------------------------------------
    def _translations(self, todo: list[Item], on_progress, started: float) -> dict[str, str]:
        path = self.folder / "translations.json"
        done: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
        if self.options.source_lang == "en":
            return {it.id: it.text for it in todo}
        need = [it for it in todo if it.error is None and it.id not in done]
        if need:
            translator = self.models.translator(self.options.source_lang)
            batch = translator.batch_size
            for i in range(0, len(need), batch):
                chunk = need[i : i + batch]
                for it, text in zip(chunk, translator.translate([it.text for it in chunk]), strict=True):
                    done[it.id] = text
                write_json(path, done)
                if on_progress:
                    on_progress(
                        Progress("translate", min(i + batch, len(need)), len(need), time.perf_counter() - started)
                    )
        return done

    def _existing_render(self, item: Item) -> dict[str, Any] | None:
        """A render of this row the engine already kept (the run was killed before the row was written)."""
        for run in self.engine.batch_runs(self.run_id):
            if run["metadata"].get("ref") == item.id and all(Path(p).is_file() for p in run["outputs"]):
                return run
        return None

    def _render(self, item: Item, prompt: str, seed: int, cancel) -> tuple[bytes, dict[str, Any]]:
        existing = self._existing_render(item)
        if existing is not None:
            return Path(existing["outputs"][0]).read_bytes(), existing["metadata"]
        request = GenerateRequest.build(
            prompt=prompt,
            negative_prompt=self.options.negative_prompt,
            steps=self.options.steps,
            size=self.options.size,
            guidance=self.options.guidance,
            seed=seed,
            style=self.options.style,
            use_style=self.options.style is not None,
            source="catalog",
            batch=self.run_id,
            ref=item.id,
        )
        result = self.engine.generate(request, cancel=cancel)
        png = result.png[0] if result.png else Path(result.paths[0]).read_bytes()
        return png, result.metadata

    def _do_item(self, item: Item, translation: str | None, cancel) -> dict[str, Any]:
        from .llm import ExtractionFailed

        started = time.perf_counter()
        state: dict[str, Any] = {
            "row": item.row,
            "id": item.id,
            "name": item.name,
            "category": item.category,
            "description": item.text,
            "translation": translation,
            "seed": self.options.seed + item.row - 2,  # the global seed plus the row's index
        }
        if item.error:
            return {**state, "status": "failed", "stage": "sheet", "error": item.error}
        try:
            found = self.models.extractor(self.options).extract(translation or item.text)
        except ExtractionFailed as exc:
            return {**state, "status": "failed", "stage": "attributes", "error": f"row {item.row}: {exc}"}
        fields = {**found.attributes.as_prompt_fields(), "name": item.name, "category": item.category,
                  "description": translation or item.text, "id": item.id}  # fmt: skip
        prompt = self.template.render(fields)
        state.update(
            attributes=found.attributes.model_dump(), method=found.method, attempts=found.attempts, prompt=prompt
        )
        png, meta = self._render(item, prompt, state["seed"], cancel)
        image = self.folder / "images" / f"{safe_name(item.id)}.png"
        write_atomic(image, png)
        metrics = (meta.get("metrics") or [{}])[0]
        return {
            **state,
            "status": "done",
            "stage": "image",
            "image": str(image.relative_to(self.folder)),
            "run": meta.get("run_id"),
            "clip_score": metrics.get("clip_score"),
            "seconds": round(time.perf_counter() - started, 3),
        }

    def run(
        self, on_progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """Do every pending row (a row's file is written last, so a kill loses at most the row in hand), then
        write the tables and the report. Returns the summary."""
        started = time.perf_counter()
        todo = self.pending()
        translations = self._translations(todo, on_progress, started) if todo else {}
        total, done_before = len(self.items), len(self.items) - len(todo)
        for n, item in enumerate(todo):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after {done_before + n} of {total} rows; run again to resume")
            if on_progress:
                on_progress(Progress("rows", done_before + n, total, time.perf_counter() - started))
            try:
                state = self._do_item(item, translations.get(item.id), cancel)
            except Cancelled:
                raise
            except BadInput as exc:  # e.g. a prompt the engine refuses: this row fails, the run goes on
                state = {"row": item.row, "id": item.id, "status": "failed", "stage": "image",
                         "error": f"row {item.row}: {exc}"}  # fmt: skip
            write_json(self._item_path(item), state)
        if on_progress:
            on_progress(Progress("rows", total, total, time.perf_counter() - started))
        return self.finish()

    # ---- outputs ----------------------------------------------------------------------------
    def results(self) -> list[dict[str, Any]]:
        out = []
        for item in self.items:
            s = self.state(item) or {"row": item.row, "id": item.id, "status": "pending"}
            attrs = s.get("attributes") or {}
            out.append(
                {
                    "row": s["row"], "id": s["id"], "status": s["status"], "name": item.name,
                    "category": item.category, "description": item.text, "translation": s.get("translation") or "",
                    **{k: attrs.get(k, "") for k in ("product_type", "key_features", "color_material", "design")},
                    "method": s.get("method", ""), "attempts": s.get("attempts", ""), "prompt": s.get("prompt", ""),
                    "seed": s.get("seed", ""), "image": s.get("image", ""), "clip_score": s.get("clip_score"),
                    "seconds": s.get("seconds"), "error": s.get("error") or "",
                }
            )  # fmt: skip
        return out

    def finish(self) -> dict[str, Any]:
        rows = self.results()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.folder / "results.csv", buf.getvalue().encode())
        write_atomic(self.folder / "results.xlsx", _xlsx(rows))
        done = [r for r in rows if r["status"] == "done"]
        failed = [r for r in rows if r["status"] == "failed"]
        summary = {
            "run_id": self.run_id,
            "sheet": self.sheet.name,
            "rows": len(rows),
            "done": len(done),
            "failed": len(failed),
            "pending": len(rows) - len(done) - len(failed),
            "failures": [{"row": r["row"], "id": r["id"], "error": r["error"]} for r in failed],
            "clip_score": aggregate([r["clip_score"] for r in done if r["clip_score"] is not None]),
            "seconds_per_item": aggregate([r["seconds"] for r in done if r["seconds"] is not None]),
            "methods": {m: sum(r["method"] == m for r in done) for m in sorted({r["method"] for r in done})},
        }
        write_json(self.folder / "summary.json", summary)
        write_atomic(self.folder / "report.md", _report(summary).encode())
        return summary


def _xlsx(rows: list[dict[str, Any]]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "results"
    sheet.append(RESULT_COLUMNS)
    for r in rows:
        sheet.append([r[c] for c in RESULT_COLUMNS])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def _report(s: dict[str, Any]) -> str:
    lines = [
        f"# Catalog run {s['run_id']}",
        "",
        f"Sheet: {s['sheet']} · {s['rows']} rows · {s['done']} rendered · {s['failed']} failed"
        + (f" · {s['pending']} not yet done" if s["pending"] else ""),
        "",
    ]
    clip, secs = s["clip_score"], s["seconds_per_item"]
    if clip.get("n"):
        lines += [
            "| CLIP score | n | mean | median | std | p10 | p90 |",
            "|---|---|---|---|---|---|---|",
            f"| | {clip['n']} | {clip['mean']:.2f} | {clip['median']:.2f} | {clip['std']:.2f} | {clip['p10']:.2f}"
            f" | {clip['p90']:.2f} |",
            "",
            f"Time per item: mean {secs['mean']:.2f} s, median {secs['median']:.2f} s.",
            "",
        ]
    if s["failures"]:
        lines += ["## Failures", ""] + [f"- {f['id']}: {f['error']}" for f in s["failures"]] + [""]
    return "\n".join(lines)
