"""Arena contests over the history's run sets (and retrieval contests), and the renders that make two sets."""

from __future__ import annotations

from typing import Any

from ..api import Arena, JobInfo
from ..arena import Arena as ArenaStore
from ..arena import render_settings
from ..errors import BadInput, NotFound
from ..evaluation import image_rows
from ..jobs import JobContext
from . import Core, named

SETTINGS = ("structure_strength", "style_strength", "steps", "guidance")


class ArenaService(Arena):
    def __init__(self, core: Core):
        self.core = core
        self.store = ArenaStore(core.data_dir / "arena.sqlite")

    def handlers(self):
        return {"arena": self._render}

    def _rows(self, run_set: str) -> list[dict[str, Any]]:
        return [r for r in image_rows(self.core.history.list(limit=100_000)) if r["set"] == run_set]

    def contests(self) -> list[dict[str, Any]]:
        return self.store.contests()

    def contest(self, contest_id: str) -> dict[str, Any]:
        return self.store.contest(contest_id)

    def create(self, a_set: str, b_set: str) -> dict[str, Any]:
        return self.store.create(self._found(a_set), self._found(b_set))

    def _found(self, run_set: str) -> list[dict[str, Any]]:
        """The image rows of a run set; NotFound when the history has none."""
        rows = self._rows(run_set)
        if not rows:
            raise NotFound(f"no run set '{run_set[:80]}' with images in the history")
        return rows

    def render(self, inputs_set: str, settings: dict[str, dict[str, float]]) -> JobInfo:
        self._found(inputs_set)  # no run set: nothing else matters
        if sorted(settings) != ["A", "B"]:
            raise BadInput("give settings for A and for B")
        for side, values in settings.items():
            unknown = sorted(set(values) - set(SETTINGS))
            if unknown:
                raise BadInput(f"setting {side}: {', '.join(unknown)} cannot be changed here")
        if settings["A"] == settings["B"]:
            raise BadInput("settings A and B are the same; change at least one value")
        payload = {"inputs": inputs_set, "settings": settings}
        return self.core.jobs.submit("arena", payload, title=f"arena: {inputs_set}")

    def _render(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        history = self.core.history
        run_ids = dict.fromkeys(r["run_id"] for r in self._rows(payload["inputs"]))
        runs = [history.get(run_id) for run_id in run_ids]
        sketch_of = self.core.sketch_of
        names = render_settings(
            self.core.pipeline, runs, payload["settings"], sketch_of, on_progress=ctx.report, cancel=ctx.cancel
        )
        contest = self.store.create(self._rows(names["A"]), self._rows(names["B"]))
        return {"contest": contest["id"], "sets": names}

    def retrieval_contest(self, adapter: str, queries: list[str], k: int = 4) -> dict[str, Any]:
        run_dir = named(self.core.folder("tune", "runs"), adapter, "adapter")
        return self.core.retrieval.contest(self.store, run_dir, queries, k)

    def pairs(self, contest_id: str) -> list[dict[str, Any]]:
        return self.store.pairs(contest_id)

    def next_pair(self, contest_id: str) -> dict[str, Any] | None:
        return self.store.next_pair(contest_id)

    def vote(self, contest_id: str, position: int, choice: str) -> str:
        return self.store.vote(contest_id, position, choice)

    def undo(self, contest_id: str) -> int | None:
        return self.store.undo(contest_id)

    def stats(self, contest_id: str) -> dict[str, Any]:
        return self.store.stats(contest_id)
