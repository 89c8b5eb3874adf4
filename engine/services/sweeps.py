"""Sweeps as jobs; their contact sheets, tables and summaries by batch name."""

from __future__ import annotations

import json
from typing import Any

from ..api import JobInfo, Sweeps
from ..errors import BadInput
from ..jobs import JobContext
from ..schema import GenerateRequest
from ..sweep import MAX_CELLS, cell_rows, past_sweeps, run_sweep, sweep_sets
from . import Core, named, read_file

FILES = ("contact.png", "table.csv", "sweep.json")


class SweepsService(Sweeps):
    def __init__(self, core: Core):
        self.core = core
        self.root = core.folder("sweeps")

    def handlers(self):
        return {"sweep": self._run}

    def start(self, request, structures, styles, steps=None, controls=None, lora_weights=None) -> JobInfo:
        steps = steps or [request.steps]
        controls = list(dict.fromkeys(controls or []))
        lora_weights = list(dict.fromkeys(lora_weights or []))
        if lora_weights and not request.loras:
            raise BadInput("a LoRA weight axis varies the request's LoRA: pick a LoRA first")
        cells = len(structures) * len(styles) * len(steps) * max(1, len(controls)) * max(1, len(lora_weights))
        if not cells:
            raise BadInput("give at least one value on every axis")
        if cells > MAX_CELLS:
            raise BadInput(f"the sweep has {cells} cells; at most {MAX_CELLS} (fewer values per axis)")
        for value in structures:
            GenerateRequest.build(**{**request.model_dump(), "structure_strength": value})  # each value, now
        for value in styles:
            GenerateRequest.build(**{**request.model_dump(), "style_strength": value})
        for value in steps:
            GenerateRequest.build(**{**request.model_dump(), "steps": value})
        for value in controls:  # each type, now (a model-backed map, a FLUX request: refused before the first cell)
            self.core.check(GenerateRequest.build(**{**request.model_dump(), "control": value, "controls": []}))
        self.core.check(request)
        payload = {"request": request.model_dump_json(), "structures": structures, "styles": styles, "steps": steps}
        if controls:
            payload["controls"] = controls
        if lora_weights:
            payload["lora_weights"] = lora_weights
        return self.core.jobs.submit("sweep", payload, title=f"sweep: {request.prompt[:60]}")

    def _run(self, payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        request = GenerateRequest.model_validate_json(payload["request"])
        result = run_sweep(
            self.core.pipeline, request, payload["structures"], payload["styles"], payload["steps"],
            out_root=self.root, on_progress=ctx.report, cancel=ctx.cancel, controls=payload.get("controls"),
            lora_weights=payload.get("lora_weights"),
        )  # fmt: skip
        return {"batch": result.batch, "cells": len(result.cells)}

    def get(self, batch: str) -> dict[str, Any]:
        data = json.loads(read_file(named(self.root, batch, "sweep") / "sweep.json", f"sweep {batch}'s summary"))
        cells = [{k: v for k, v in c.items() if k != "paths"} for c in data["cells"]]
        return {**data, "cells": cells, "table": cell_rows(cells), "sets": sweep_sets(data)}

    def list(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in s.items() if k not in ("contact_sheet", "table")} for s in past_sweeps(self.root)]

    def file(self, batch: str, name: str) -> bytes:
        if name not in FILES:
            raise BadInput(f"a sweep has {', '.join(FILES)}; not '{name}'")
        return read_file(named(self.root, batch, "sweep") / name, f"{name} of sweep {batch}")
