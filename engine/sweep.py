"""Sweeps: one sketch and prompt over a grid of structure strength × style strength (× steps), every cell
measured, drawn as a contact sheet with its numbers and written as a table."""

from __future__ import annotations

import csv
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import BadInput
from .evaluation import METRICS, run_set
from .schema import MAX_SEED, GenerateRequest, Progress

MAX_CELLS = 64
CELL_PX = 192


@dataclass
class SweepCell:
    structure_strength: float
    style_strength: float
    steps: int
    run_id: str
    seeds: list[int]
    paths: list[str]
    seconds: float
    metrics: dict[str, float | None]  # the mean over the cell's variations
    control: str | None = None  # the ControlNet type, where the sweep varies it (None: the request's own)
    lora_weight: float | None = None  # the first LoRA's weight, where the sweep varies it (None: the request's own)


@dataclass
class SweepResult:
    batch: str
    prompt: str
    style: str
    cells: list[SweepCell]
    folder: Path | None = None
    files: dict[str, str] = field(default_factory=dict)
    images: list[Image.Image] = field(default_factory=list, repr=False)  # each cell's first image, for the sheet

    def sets(self) -> list[str]:
        """The run sets (one per cell) as the Dashboard names them."""
        return sweep_sets({"batch": self.batch, "cells": [asdict(c) for c in self.cells]})

    def table(self) -> list[dict[str, Any]]:
        """One row per cell: its setting, its run, and its numbers."""
        return cell_rows([asdict(c) for c in self.cells])


def cell_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A sweep's table: one row per cell with its setting, its run, and its numbers (its metrics' means)."""
    varied = any(c.get("control") for c in cells)
    weighed = any(c.get("lora_weight") is not None for c in cells)
    return [
        {
            **({"control": c.get("control")} if varied else {}),
            **({"lora_weight": c.get("lora_weight")} if weighed else {}),
            "structure_strength": c["structure_strength"],
            "style_strength": c["style_strength"],
            "steps": c["steps"],
            **{m: c["metrics"].get(m) for m in METRICS},
            "run_id": c["run_id"],
            "seconds": round(c["seconds"], 3),
        }
        for c in cells
    ]


def sweep_sets(summary: dict[str, Any]) -> list[str]:
    """The run sets (one per cell) of a sweep's summary (sweep.json), as the Dashboard names them."""
    return [
        run_set(
            {
                "batch": summary["batch"],
                "label": cell_label(
                    c["structure_strength"], c["style_strength"], c["steps"], c.get("control"), c.get("lora_weight")
                ),
            }
        )
        for c in summary["cells"]
    ]


def cell_label(
    structure: float, style: float, steps: int, control: str | None = None, lora_weight: float | None = None
) -> str:
    """A cell's label within its sweep's batch: the run set the Dashboard and Arena show (the ControlNet type and
    the LoRA's weight too, where the sweep varies them)."""
    label = f"structure {structure:g} · style {style:g} · {steps} steps" + (f" · {control}" if control else "")
    return label + (f" · LoRA {lora_weight:g}" if lora_weight is not None else "")


def parse_values(text: str, name: str, cast=float) -> list:
    """'0.5, 1, 1.5' → [0.5, 1.0, 1.5]: the CLI's and the page's way to give a grid axis."""
    try:
        values = [cast(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"{name}: '{text}' is not a comma-separated list of numbers") from None
    if not values:
        raise BadInput(f"{name}: give at least one value")
    return list(dict.fromkeys(values))  # keep the order, drop repeats


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def run_sweep(
    engine,
    request: GenerateRequest,
    structures: list[float],
    styles: list[float],
    steps: list[int] | None = None,
    out_root: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    controls: list[str] | None = None,
    lora_weights: list[float] | None = None,
) -> SweepResult:
    """Render every cell with the same seed(s) and the same style reference, so only the swept settings
    change (`controls`: the ControlNet types too, as a fourth axis; `lora_weights`: the request's first LoRA's weight
    as a fifth); write `contact.png`, `table.csv` and
    `sweep.json` into `out_root/<batch>/` when given."""
    steps = steps or [request.steps]
    if lora_weights and not request.loras:
        raise BadInput("a LoRA weight axis varies the request's LoRA: pick a LoRA first")
    grid = list(itertools.product(steps, controls or [None], lora_weights or [None], structures, styles))
    if len(grid) > MAX_CELLS:
        raise BadInput(f"the sweep has {len(grid)} cells; at most {MAX_CELLS} (fewer values per axis)")
    now = datetime.now(UTC)
    batch = request.batch or f"sweep-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
    # validate every cell before the first render, so a bad value fails now and not halfway through
    cells_req = [
        GenerateRequest.build(
            **{
                **request.model_dump(),
                "steps": n,
                "structure_strength": st,
                "style_strength": sy,
                **({"control": c, "controls": []} if c else {}),
                **(
                    {"loras": [{**request.loras[0].model_dump(), "weight": w}, *request.model_dump()["loras"][1:]]}
                    if w is not None
                    else {}
                ),  # fmt: skip
                "seed": seed,
                "source": "sweep",
                "batch": batch,
                "label": cell_label(st, sy, n, c, w),
            }
        )
        for n, c, w, st, sy in grid
    ]
    cells: list[SweepCell] = []
    started = time.perf_counter()
    style_name, style_pin = "no style", None
    images = []
    for i, cell_req in enumerate(cells_req):
        if on_progress:
            on_progress(Progress("sweep", i, len(cells_req), time.perf_counter() - started))
        if style_pin and not cell_req.style and not cell_req.blend:
            cell_req = cell_req.model_copy(update={"style": style_pin})  # the style the first cell retrieved
        t0 = time.perf_counter()
        result = engine.generate(cell_req, cancel=cancel)
        if i == 0:
            used = [s for s in result.styles if s.used]
            style_pin = used[0].id if used else None
            style_name = " + ".join(s.name for s in used) or "no style"
        per_image = result.metadata.get("metrics") or []
        cells.append(
            SweepCell(
                structure_strength=cell_req.structure_strength,
                style_strength=cell_req.style_strength,
                steps=cell_req.steps,
                run_id=result.run_id or "",
                seeds=result.seeds,
                paths=result.paths,
                seconds=time.perf_counter() - t0,
                metrics={m: _mean([x.get(m) for x in per_image]) for m in METRICS},
                control=cell_req.control if controls else None,
                lora_weight=cell_req.loras[0].weight if lora_weights else None,
            )
        )
        images.append(result.images[0])
    if on_progress:
        on_progress(Progress("sweep", len(cells_req), len(cells_req), time.perf_counter() - started))
    result = SweepResult(batch=batch, prompt=request.prompt, style=style_name, cells=cells, images=images)
    if out_root is not None:
        write_outputs(result, Path(out_root) / batch)
    return result


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def cell_lines(cell: SweepCell) -> list[str]:
    """The two lines under a cell of the contact sheet. The strength axes say "style strength"; the score here says
    "style similarity", so the two are never read as one. A number that was not measured (no sketch: no edge F1) is
    left out, never drawn as a dash the sheet's font may not have."""
    m = cell.metrics
    first = [f"CLIP {m['clip_score']:.1f}"] if m.get("clip_score") is not None else []
    if m.get("edge_f1") is not None:
        first.append(f"edge F1 {m['edge_f1']:.2f}")
    second = [f"style similarity {m['style_similarity']:.2f}"] if m.get("style_similarity") is not None else []
    second.append(f"{cell.seconds:.1f}s")
    return [" · ".join(first) or "not measured", " · ".join(second)]


def contact_sheet(result: SweepResult, cell_px: int = CELL_PX) -> Image.Image:
    """Rows: structure strength; columns: style strength; one block per steps value. Under every cell its
    CLIP score, edge F1 and style similarity (`cell_lines`)."""
    structures = list(dict.fromkeys(c.structure_strength for c in result.cells))
    styles = list(dict.fromkeys(c.style_strength for c in result.cells))
    blocks = list(dict.fromkeys((c.steps, c.control, c.lora_weight) for c in result.cells))
    label_w, head_h, text_h, pad, block_h = 150, 28, 40, 8, 26
    title_h = 48
    cols, rows = len(styles), len(structures)
    width = label_w + cols * (cell_px + pad) + pad
    block = block_h + head_h + rows * (cell_px + text_h + pad)
    height = title_h + len(blocks) * block + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    big, small = _font(16), _font(12)
    draw.text((pad, 8), result.prompt[:110], fill="black", font=big)
    draw.text((pad, 28), f"style reference: {result.style} · {result.batch}", fill="#555", font=small)
    by_key = {
        (c.steps, c.control, c.lora_weight, c.structure_strength, c.style_strength): k
        for k, c in enumerate(result.cells)
    }
    y0 = title_h
    for n, control, weight in blocks:
        head = f"{n} steps" + (f" · ControlNet {control}" if control else "")
        draw.text((pad, y0 + 4), head + (f" · LoRA weight {weight:g}" if weight is not None else ""), fill="black",
                  font=big)  # fmt: skip
        for j, sy in enumerate(styles):
            x = label_w + j * (cell_px + pad)
            draw.text((x, y0 + block_h + 6), f"style strength {sy:g}", fill="black", font=small)
        for i, st in enumerate(structures):
            y = y0 + block_h + head_h + i * (cell_px + text_h + pad)
            draw.text((pad, y + cell_px // 2 - 8), f"structure strength {st:g}", fill="black", font=small)
            for j, sy in enumerate(styles):
                k = by_key.get((n, control, weight, st, sy))
                if k is None:
                    continue
                cell, x = result.cells[k], label_w + j * (cell_px + pad)
                image = result.images[k] if k < len(result.images) else None
                if image is None and cell.paths and Path(cell.paths[0]).is_file():
                    image = Image.open(cell.paths[0]).convert("RGB")
                if image is not None:
                    thumb = ImageOps.contain(image, (cell_px, cell_px))
                    sheet.paste(thumb, (x + (cell_px - thumb.width) // 2, y + (cell_px - thumb.height) // 2))
                line1, line2 = cell_lines(cell)
                draw.text((x, y + cell_px + 4), line1, fill="black", font=small)
                draw.text((x, y + cell_px + 20), line2, fill="#333", font=small)
        y0 += block
    return sheet


def write_outputs(result: SweepResult, folder: Path) -> None:
    """contact.png, table.csv (one row per cell) and sweep.json in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    sheet = folder / "contact.png"
    contact_sheet(result).save(sheet)
    table = result.table()
    csv_path = folder / "table.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    summary = folder / "sweep.json"
    cells = [asdict(c) for c in result.cells]
    summary.write_text(
        json.dumps({"batch": result.batch, "prompt": result.prompt, "style": result.style, "cells": cells}, indent=2)
    )
    result.folder = folder
    result.files = {"contact_sheet": str(sheet), "table": str(csv_path), "summary": str(summary)}


def past_sweeps(root: Path) -> list[dict[str, Any]]:
    """The sweeps written under `root`, newest first: their summary plus the paths of their files."""
    out = []
    for summary in sorted(Path(root).glob("*/sweep.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            data = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        folder = summary.parent
        out.append({**data, "contact_sheet": str(folder / "contact.png"), "table": str(folder / "table.csv")})
    return out
