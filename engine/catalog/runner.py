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
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import BadInput, Cancelled
from ..files import write_atomic
from ..metrics import aggregate, clip_score
from ..schema import GenerateRequest, Progress, describe_validation_error
from .prompts import DEFAULT_TEMPLATE, DESCRIPTION_TEMPLATE, PromptTemplate
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
    model: Literal["sd15", "flux"] = "sd15"  # flux: FLUX.1-schnell + LoRA (4 steps, guidance 0 suit it)
    llm: Literal["local", "server", "none"] = "local"  # a transformers model, an OpenAI-compatible URL, or none
    llm_url: str | None = None
    llm_model: str = "local-model"
    retries: int = Field(2, ge=0, le=5)
    limit: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> CatalogOptions:
        if self.model == "flux" and self.style:
            raise ValueError("FLUX renders from text only here: choose no style, or the SD 1.5 model")
        if self.llm == "server" and not self.llm_url:
            raise ValueError("an LLM server needs its URL (e.g. http://127.0.0.1:1234/v1)")
        if self.llm == "none" and self.template == DEFAULT_TEMPLATE:
            self.template = DESCRIPTION_TEMPLATE  # no attributes to fill: describe with the row's own words
        PromptTemplate(self.template)  # a bad template fails now, as one line
        return self

    @classmethod
    def build(cls, **values: Any) -> CatalogOptions:
        if values.get("llm_url") and "llm" not in values:
            values["llm"] = "server"
        try:
            return cls(**values)
        except ValidationError as exc:
            raise BadInput(describe_validation_error(exc)) from None


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
        self.sheet_bytes = sheet_bytes
        self.sheet_hash = hashlib.sha256(sheet_bytes).hexdigest()
        self.run_id: str | None = None  # set by open(): a preview writes nothing

    def open(self) -> str:
        if self.run_id is None:
            self.run_id = self._open()
        return self.run_id

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
        write_atomic(self.folder / f"input{Path(self.sheet.name).suffix.lower()}", self.sheet_bytes)  # to resume
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

    def _prompt(self, item: Item, translation: str | None) -> dict[str, Any]:
        """The row's attributes (from the LLM, unless there is none) and its prompt."""
        description = translation or item.text
        fields = {"name": item.name, "category": item.category, "description": description, "id": item.id}
        if self.options.llm == "none":
            return {"attributes": {}, "method": "none", "attempts": 0, "prompt": self.template.render(fields)}
        found = self.models.extractor(self.options).extract(description)
        return {
            "attributes": found.attributes.model_dump(),
            "method": found.method,
            "attempts": found.attempts,
            "prompt": self.template.render({**found.attributes.as_prompt_fields(), **fields}),
        }

    def preview(self, n: int = 3) -> list[dict[str, Any]]:
        """Translation, attributes and prompt of the first `n` rows, without rendering or writing anything."""
        from .llm import ExtractionFailed

        chosen = self.items[:n]
        ok = [it for it in chosen if it.error is None]
        if self.options.source_lang == "en" or not ok:
            translated = {it.id: it.text for it in ok}
        else:
            texts = self.models.translator(self.options.source_lang).translate([it.text for it in ok])
            translated = dict(zip([it.id for it in ok], texts, strict=True))
        out = []
        for it in chosen:
            row = {"row": it.row, "id": it.id, "description": it.text, "translation": translated.get(it.id, "")}
            if it.error:
                out.append({**row, "error": it.error})
                continue
            try:
                out.append({**row, **self._prompt(it, translated[it.id])})
            except ExtractionFailed as exc:
                out.append({**row, "error": f"row {it.row}: {exc}"})
        return out

    def _score(self, image, prompt: str) -> float:
        """Prompt fidelity with the catalog's CLIP: torchmetrics' CLIPScore definition, as the Dashboard's."""
        scorer = self.models.scorer()
        return round(clip_score(scorer.embed_images([image])[0], scorer.embed_query(prompt)), 4)

    def _prepare_item(self, item: Item, translation: str | None) -> dict[str, Any]:
        """Everything before the render: the row's state with its prompt, or failed with the reason."""
        from .llm import ExtractionFailed

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
            state.update(self._prompt(item, translation))
        except ExtractionFailed as exc:
            return {**state, "status": "failed", "stage": "attributes", "error": f"row {item.row}: {exc}"}
        return {**state, "status": "prompted"}

    def _request(self, item: Item, state: dict[str, Any]) -> GenerateRequest:
        return GenerateRequest.build(
            prompt=state["prompt"],
            negative_prompt=self.options.negative_prompt,
            steps=self.options.steps,
            size=self.options.size,
            guidance=self.options.guidance,
            seed=state["seed"],
            style=self.options.style,
            use_style=self.options.style is not None,
            model=self.options.model,
            source="catalog",
            batch=self.run_id,
            ref=item.id,
        )

    def _finish_item(self, item: Item, state: dict[str, Any], png: bytes, meta: dict[str, Any], started: float):
        image = self.folder / "images" / f"{safe_name(item.id)}.png"
        write_atomic(image, png)
        with Image.open(image) as im:
            clip_score = self._score(im.convert("RGB"), state["prompt"])
        done = {
            **state,
            "status": "done",
            "stage": "image",
            "image": str(image.relative_to(self.folder)),
            "run": meta.get("run_id"),
            "clip_score": clip_score,
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_json(self._item_path(item), done)  # last: the row counts as done only now

    def _failed(self, item: Item, stage: str, error: str) -> dict[str, Any]:
        return {"row": item.row, "id": item.id, "status": "failed", "stage": stage, "error": f"row {item.row}: {error}"}

    def run(
        self,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
        executor=None,
    ) -> dict[str, Any]:
        """Do every pending row (a row's file is written last, so a kill loses at most the row in hand), then
        write the tables and the report. Returns the summary."""
        self.open()
        started = time.perf_counter()
        todo = self.pending()
        translations = self._translations(todo, on_progress, started) if todo else {}
        total, done_before = len(self.items), len(self.items) - len(todo)
        queued: list[tuple[Any, GenerateRequest]] = []
        for n, item in enumerate(todo):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after {done_before + n} of {total} rows; run again to resume")
            if on_progress:
                on_progress(Progress("rows", done_before + n, total, time.perf_counter() - started))
            t0 = time.perf_counter()
            state = self._prepare_item(item, translations.get(item.id))
            if state["status"] == "failed":
                write_json(self._item_path(item), state)
                continue
            existing = self._existing_render(item)  # rendered before a kill, not yet written
            if existing is not None:
                self._finish_item(item, state, Path(existing["outputs"][0]).read_bytes(), existing["metadata"], t0)
                continue
            try:
                request = self._request(item, state)
            except BadInput as exc:
                write_json(self._item_path(item), self._failed(item, "image", str(exc)))
                continue
            if executor is None or executor.name == "local":  # render now: results come row by row
                try:
                    result = self.engine.generate(request, cancel=cancel)
                except BadInput as exc:  # e.g. a style removed since the run began: this row fails, not the run
                    write_json(self._item_path(item), self._failed(item, "image", str(exc)))
                    continue
                self._finish_item(item, state, _first_png(result), result.metadata, t0)
            else:
                queued.append(((item, state, t0), request))
        if queued:  # a Ray cluster: prompts first (above), then every render at once across the workers
            finished = total - len(queued)
            for (item, state, t0), result in executor.render(queued, cancel):
                self._finish_item(item, state, _first_png(result), result.metadata, t0)
                finished += 1
                if on_progress:
                    on_progress(Progress("rows", finished, total, time.perf_counter() - started))
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
            "clip_model": self.models.settings.catalog_clip_path(),
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


def _first_png(result) -> bytes:
    return result.png[0] if result.png else Path(result.paths[0]).read_bytes()


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
            f"CLIP score (prompt fidelity, 0–100) with {s['clip_model']}:",
            "",
            "| | n | mean | median | std | p10 | p90 |",
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


def resume(engine, folder: Path, models) -> CatalogRun:
    """Open a run folder again with the sheet copy and the options it was started with."""
    folder = Path(folder)
    meta_path = folder / "run.json"
    if not meta_path.is_file():
        raise BadInput(f"{folder} holds no catalog run (no run.json)")
    meta = json.loads(meta_path.read_text())
    copies = sorted(folder.glob("input.*"))
    if not copies:
        raise BadInput(f"{folder} has lost its copy of the sheet; start the run again from the sheet")
    from .sheets import read_sheet

    data = copies[0].read_bytes()
    sheet = read_sheet(data, meta["sheet"])
    return CatalogRun(engine, folder, sheet, data, CatalogOptions.build(**meta["options"]), models)


def past_runs(root: Path) -> list[dict[str, Any]]:
    """The catalog runs under `root`, newest first: what run.json and summary.json say, and how far each got."""
    out = []
    for meta_path in Path(root).glob("*/run.json"):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        folder = meta_path.parent
        summary_path = folder / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        written = len(list((folder / "items").glob("*.json")))
        out.append({**meta, "folder": str(folder), "written": written, "summary": summary,
                    "complete": written >= meta["rows"]})  # fmt: skip
    return sorted(out, key=lambda r: r["created_at"], reverse=True)
