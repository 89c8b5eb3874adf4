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

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import BadInput, Busy, Cancelled
from ..files import write_atomic
from ..metrics import aggregate, clip_score
from ..schema import GenerateRequest, Progress
from ..tables import csv_bytes, xlsx_bytes
from .options import CatalogOptions
from .prompts import PromptTemplate
from .sheets import Item, Sheet, items, safe_name

RESULT_COLUMNS = [
    "row", "id", "status", "name", "category", "description", "translation", "product_type", "key_features",
    "color_material", "design", "method", "attempts", "prompt", "seed", "image", "clip_score", "seconds", "error",
]  # fmt: skip


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
    ) -> dict[str, Any]:
        """Do every pending row (a row's file is written last, so a kill loses at most the row in hand), then
        write the tables and the report. Returns the summary. With an engine that renders in several lanes (Ray
        workers), that many rows render at once; the prompts are made in order either way."""
        self.open()
        with run_lock(self.folder):
            return self._run(on_progress, cancel)

    def _run(self, on_progress, cancel) -> dict[str, Any]:
        started = time.perf_counter()
        todo = self.pending()
        translations = self._translations(todo, on_progress, started) if todo else {}
        total, done_before = len(self.items), len(self.items) - len(todo)
        finished = done_before
        lanes = max(1, getattr(self.engine, "workers", 1))
        running: dict[Future, tuple[Item, dict[str, Any], float]] = {}

        def report() -> None:
            if on_progress:
                on_progress(Progress("rows", finished, total, time.perf_counter() - started))

        def collect(wait_for_all: bool) -> None:
            nonlocal finished
            while running and (wait_for_all or len(running) >= lanes):
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    item, state, t0 = running.pop(future)
                    try:
                        result = future.result()
                    except BadInput as exc:  # e.g. a style removed since the run began: this row fails, not the run
                        write_json(self._item_path(item), self._failed(item, "image", str(exc)))
                    else:
                        self._finish_item(item, state, _first_png(result), result.metadata, t0)
                    finished += 1
                report()

        with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="catalog-row") as pool:
            try:
                for item in todo:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"cancelled after {finished} of {total} rows; run again to resume")
                    report()
                    t0 = time.perf_counter()
                    state = self._prepare_item(item, translations.get(item.id))
                    existing = self._existing_render(item) if state["status"] != "failed" else None
                    if state["status"] == "failed":
                        write_json(self._item_path(item), state)
                    elif existing is not None:  # rendered before a kill, not yet written
                        self._finish_item(
                            item, state, Path(existing["outputs"][0]).read_bytes(), existing["metadata"], t0
                        )
                    else:
                        try:
                            request = self._request(item, state)
                        except BadInput as exc:
                            write_json(self._item_path(item), self._failed(item, "image", str(exc)))
                        else:
                            running[pool.submit(self.engine.generate, request, cancel)] = (item, state, t0)
                            collect(wait_for_all=False)
                            continue
                    finished += 1
                collect(wait_for_all=True)
            finally:
                if cancel is not None and running:
                    cancel.set()  # the rows in flight stop at their next step
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
        write_atomic(self.folder / "results.csv", csv_bytes(rows, RESULT_COLUMNS))
        write_atomic(self.folder / "results.xlsx", xlsx_bytes(rows, RESULT_COLUMNS))
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
        try:
            started = json.loads((self.folder / "run.json").read_text()).get("created_at")
        except (OSError, ValueError):
            started = None
        write_atomic(self.folder / "report.md", _report(summary, started).encode())
        return summary


@contextmanager
def run_lock(folder: Path):
    """One process at a time works on a run folder (a second would render its rows again); the lock goes with
    the process, so a killed run can be resumed at once."""
    import fcntl

    with open(folder / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise Busy(f"the catalog run in {folder.name} is running elsewhere; wait for it, or cancel it") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _first_png(result) -> bytes:
    return result.png[0] if result.png else Path(result.paths[0]).read_bytes()


def model_name(model: str) -> str:
    """A model as a person reads it: a hub id as it is, a local folder by its name (never the engine's path)."""
    return Path(model).name if Path(model).is_absolute() or model.startswith(("~", ".")) else model


def _report(s: dict[str, Any], started: str | None = None) -> str:
    """The run in a designer's words: the sheet, the counts, the CLIP scores and the failures, the files by their
    names in the run's download; the run id only in the closing technical note."""
    when = f" · started {started[:16].replace('T', ' ')} UTC" if started else ""
    lines = [
        f"# Catalog: {s['sheet']}",
        "",
        f"{s['rows']} rows · {s['done']} rendered · {s['failed']} failed"
        + (f" · {s['pending']} not yet done" if s["pending"] else "")
        + when,
        "",
    ]
    clip, secs = s["clip_score"], s["seconds_per_item"]
    if clip.get("n"):
        lines += [
            f"CLIP score (prompt fidelity, 0–100) with {model_name(s['clip_model'])}:",
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
    lines += [
        "Every row, with its attributes, prompt and score, is in results.csv and results.xlsx; each image is "
        "images/<id>.png.",
        "",
        "---",
        f"Technical note: run {s['run_id']}.",
        "",
    ]
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
