"""Past renders: the history store, their files, search by meaning and the Dashboard's rows."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from PIL import Image

from ..api import History, JobInfo, RunRecord
from ..errors import BadInput, NotFound
from ..evaluation import image_rows
from ..jobs import JobContext
from ..schema import Progress
from . import Core, read_file, thumbnail

MAX_THUMBNAILS = 500  # refs one thumbnails call may name (the pages ask for 500 at a time)
THUMBNAIL_PX = (16, 512)  # a thumbnail's side: never the full PNG
THUMBNAIL_BUDGET = 32 * 1024 * 1024  # JPEG bytes one thumbnails reply may carry; the refs past it are left out
MAX_REMEASURE = 10_000  # run ids one remeasure may name (None: every run, read one at a time by its job)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")
REF = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,119})#([0-9]{1,3})")  # ASCII digits only: int() reads others too


def output_ref(ref: object) -> tuple[str, int] | None:
    """A ref "RUN_ID#INDEX" → (run id, index): one answer for every spelling of the same output ("RUN#00" is "RUN#0");
    None for anything else ("RUN# 0", "RUN#+0", "RUN#٠")."""
    match = REF.fullmatch(ref) if isinstance(ref, str) else None
    return (match[1], int(match[2])) if match else None


def record(row: dict[str, Any]) -> RunRecord:
    return RunRecord(
        id=row["id"], created_at=row["created_at"], seconds=row["seconds"], images=len(row["outputs"]),
        sketch_hash=row["sketch_hash"], metadata=row["metadata"], starred=row.get("starred", False),
    )  # fmt: skip


class HistoryService(History):
    def __init__(self, core: Core):
        self.core = core

    def handlers(self):
        return {"remeasure": self._remeasure}

    def _row(self, run_id: str) -> dict[str, Any]:
        row = self.core.history.get(run_id)
        if row is None:
            raise NotFound(f"no run '{run_id}' in the history")
        return row

    def list(
        self,
        limit: int = 50,
        offset: int = 0,
        batch: str | None = None,
        starred: bool = False,
        text: str = "",
        style: str | None = None,
    ) -> list[RunRecord]:
        if not 1 <= limit <= 100_000 or offset < 0:
            raise BadInput(f"limit must be between 1 and 100000 and offset at least 0 (got {limit}, {offset})")
        filters = {"starred": starred, "text": text or "", "style": style or None}
        store = self.core.history
        rows = store.in_batch(batch, **filters) if batch else store.list(limit, offset, **filters)
        return [record(r) for r in rows]

    def get(self, run_id: str) -> RunRecord:
        return record(self._row(run_id))

    def star(self, run_id: str, starred: bool = True) -> RunRecord:
        if not self.core.history.star(run_id, starred):
            raise NotFound(f"no run '{run_id}' in the history")
        return self.get(run_id)

    def facets(self) -> dict[str, list[str]]:
        return self.core.history.facets()

    def sketch(self, run_id: str) -> bytes | None:
        path = self.core.recorder.sketch_path(self._row(run_id)["sketch_hash"])
        return path.read_bytes() if path else None

    def _output(self, run_id: str, index: int) -> Path:
        outputs = self._row(run_id)["outputs"]
        if not 0 <= index < len(outputs):
            raise NotFound(f"run '{run_id}' has no output {index} (it has {len(outputs)})")
        return Path(outputs[index])

    def image(self, run_id: str, index: int = 0, px: int = 0) -> bytes:
        return thumbnail(read_file(self._output(run_id, index), f"output {index} of {run_id}"), px)

    def thumbnails(self, refs: list[str], px: int = 96) -> dict[str, bytes]:
        if len(refs) > MAX_THUMBNAILS:
            raise BadInput(f"at most {MAX_THUMBNAILS} thumbnails at once (got {len(refs)})", fix="ask in parts")
        if not THUMBNAIL_PX[0] <= px <= THUMBNAIL_PX[1]:
            raise BadInput(f"px must be between {THUMBNAIL_PX[0]} and {THUMBNAIL_PX[1]} (got {px})")
        out: dict[str, bytes] = {}
        size = 0
        for run_id, index in dict.fromkeys(filter(None, map(output_ref, refs))):
            jpeg = self._thumbnail(run_id, index, px)
            if jpeg is None:
                continue
            size += len(jpeg)
            if size > THUMBNAIL_BUDGET:
                break
            out[f"{run_id}#{index}"] = jpeg
        return out

    def _thumbnail(self, run_id: str, index: int, px: int) -> bytes | None:
        """One output's thumbnail; None when it is gone or its file cannot be read as an image."""
        try:
            return self.image(run_id, index, px)
        except NotFound:
            return None
        except (OSError, ValueError, Image.DecompressionBombError):  # a file someone broke or replaced
            return None

    def search(self, text=None, like_run=None, like_index: int = 0, k: int = 12) -> list[dict[str, Any]]:
        if not 1 <= k <= 100:
            raise BadInput(f"k must be between 1 and 100 (got {k})")
        retrieval = self.core.retrieval
        if like_run:
            vector = retrieval.history_index.vector(like_run, like_index)
            if vector is None:
                row = self.core.history.get(like_run)
                if row is not None and row["metadata"].get("measured") is False:  # indexed with its numbers
                    raise NotFound(f"output {like_run}#{like_index} is not in the search index yet: it is being "
                                   "measured; try again in a moment")  # fmt: skip
                raise NotFound(f"output {like_run}#{like_index} is not in the search index")
        elif text and text.strip():
            vector = retrieval.library.embeddings.embed_query(text.strip())
        else:
            raise BadInput("history search needs words or an output to compare with")
        hits = retrieval.history_index.search(vector, k)
        runs: dict[str, dict[str, Any]] = {}  # each hit's run: its prompt and style, as History lists them
        for h in hits:
            if h["run_id"] not in runs:
                row = self.core.history.get(h["run_id"])
                meta = row["metadata"] if row else {}
                used = [s["name"] for s in meta.get("styles", []) if s.get("used")]
                runs[h["run_id"]] = {"prompt": meta.get("prompt", ""), "style": " + ".join(used) or "no style"}
        return [
            {"run_id": h["run_id"], "index": h["index"], "score": h["score"], **runs[h["run_id"]],
             "created_at": h.get("created_at", "")}
            for h in hits
        ]  # fmt: skip

    def rows(self, limit: int = 5000) -> list[dict[str, Any]]:
        return image_rows(self.core.history.list(limit=limit))

    def remeasure(self, run_ids: list[str] | None = None) -> JobInfo:
        if run_ids is None:
            payload: dict[str, Any] = {"every": True}
            title = "remeasure every run"
        else:
            payload = {"run_ids": self._remeasurable(run_ids)}
            n = len(payload["run_ids"])
            title = f"remeasure {n} run" + ("s" if n != 1 else "")
        key = "remeasure:" + hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:32]
        return self.core.jobs.submit("remeasure", payload, title=title, key=key)

    def _remeasurable(self, run_ids: list[str]) -> list[str]:
        """The ids to measure again, each once, in the order named: every one a run in the history, at most
        MAX_REMEASURE; else one line."""
        if not isinstance(run_ids, list) or not run_ids:
            raise BadInput("name at least one run to measure again, or none at all (null) for every run")
        if len(run_ids) > MAX_REMEASURE:
            raise BadInput(
                f"at most {MAX_REMEASURE} runs at once (got {len(run_ids)})", fix="leave run_ids out for every run"
            )
        bad = next((r for r in run_ids if not isinstance(r, str) or not RUN_ID.fullmatch(r)), None)
        if bad is not None:
            raise BadInput(f"'{str(bad)[:60]}' is not a run id")
        ids = list(dict.fromkeys(run_ids))
        known = self.core.history.existing(ids)
        missing = [r for r in ids if r not in known]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise NotFound(f"no run '{missing[0]}' in the history{more}")
        return ids

    def _remeasure(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        """The "remeasure" job: one run at a time, each measured under the recorder's lock, a cancel heeded between
        two runs; progress counts runs."""
        ids = self.core.history.ids() if payload.get("every") else list(payload["run_ids"])
        started = time.perf_counter()
        counts = {"remeasured": 0, "missing": 0, "runs": len(ids)}
        ctx.report(Progress("remeasuring", 0, len(ids), 0.0))
        for step, run_id in enumerate(ids, 1):
            ctx.check()
            measured = self.core.recorder.remeasure(run_id)
            counts["remeasured" if measured else "missing"] += 1
            ctx.report(Progress("remeasuring", step, len(ids), time.perf_counter() - started))
        return counts
