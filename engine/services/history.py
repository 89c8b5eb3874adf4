"""Past renders: the history store, their files, search by meaning and the Dashboard's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api import History, RunRecord
from ..errors import BadInput, NotFound
from ..evaluation import image_rows
from . import Core, read_file, thumbnail


def record(row: dict[str, Any]) -> RunRecord:
    return RunRecord(
        id=row["id"], created_at=row["created_at"], seconds=row["seconds"], images=len(row["outputs"]),
        sketch_hash=row["sketch_hash"], metadata=row["metadata"], starred=row.get("starred", False),
    )  # fmt: skip


class HistoryService(History):
    def __init__(self, core: Core):
        self.core = core

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
        if len(refs) > 10_000:
            raise BadInput("at most 10000 thumbnails at once")
        out = {}
        for ref in dict.fromkeys(refs):
            run_id, _, index = ref.rpartition("#")
            try:
                out[ref] = self.image(run_id, int(index), px)
            except (NotFound, ValueError):
                continue
        return out

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

    def remeasure(self, run_ids: list[str] | None = None) -> int:
        runs = [self._row(r) for r in run_ids] if run_ids else self.core.history.list(limit=1_000_000)
        return self.core.recorder.remeasure(runs)
