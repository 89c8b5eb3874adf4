"""From the history to numbers: one row per image, run sets, filters, summaries and two-set comparisons."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import numpy as np

from .errors import BadInput
from .metrics import aggregate

# The numbers every image carries, with the words the Dashboard uses for them.
METRICS: dict[str, str] = {
    "clip_score": "Prompt fidelity (CLIP score)",
    "style_similarity": "Style similarity",
    "edge_f1": "Structure fidelity (edge F1)",
    "chamfer": "Chamfer distance (px)",
}
HIGHER_IS_BETTER = {"clip_score": True, "style_similarity": True, "edge_f1": True, "chamfer": False}
# The words a table a person reads gives its columns; the rows, the CSV and the JSON keep the names on the left.
COLUMN_NAMES: dict[str, str] = {
    "set": "Run set",
    "style": "Style",
    "source": "Source",
    "images": "Images",
    "prompt": "Prompt",
    "structure_strength": "Structure strength",
    "style_strength": "Style strength",
    "steps": "Steps",
    "lora_weight": "LoRA weight",
    "control": "ControlNet",
    "guidance": "Guidance",
    "seed": "Seed",
    "clip_score": "Prompt fidelity",
    "style_similarity": "Style similarity",
    "edge_f1": "Edge F1",
    "chamfer": "Chamfer (px)",
    "run_id": "Run",
    "seconds": "Seconds",
}
STAT_NAMES = {
    "mean": "mean",
    "median": "median",
    "std": "spread, SD",
    "p10": "10th percentile",
    "p90": "90th percentile",
}


def column_name(key: str) -> str:
    """A table column as a person reads it: "clip_score" → "Prompt fidelity", "edge_f1_p90" → "Edge F1 (90th
    percentile)"; a name it does not know, with spaces for its underscores."""
    if key in COLUMN_NAMES:
        return COLUMN_NAMES[key]
    for metric in METRICS:
        stat = key.removeprefix(f"{metric}_")
        if stat != key and stat in STAT_NAMES:
            return f"{COLUMN_NAMES[metric]} ({STAT_NAMES[stat]})"
    return key.replace("_", " ").capitalize()


def run_set(meta: dict[str, Any]) -> str:
    """The set a run belongs to: its batch (and label: one setting of a sweep or an A/B test), else itself."""
    batch, label = meta.get("batch"), meta.get("label") or ""
    if not batch:
        return meta["run_id"]
    return f"{batch} · {label}" if label else batch


def image_rows(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every output of every run as one flat row: what made it, which it is, and how it measures."""
    rows = []
    for run in runs:
        meta = run["metadata"]
        params = meta.get("params", {})
        used = [s["name"] for s in meta.get("styles", []) if s.get("used")]
        for i in range(len(run["outputs"])):
            metrics = (meta.get("metrics") or [{}] * len(run["outputs"]))[i] or {}
            rows.append(
                {
                    "run_id": run["id"],
                    "index": i,
                    "set": run_set(meta),
                    "batch": meta.get("batch") or "",
                    "label": meta.get("label") or "",
                    "source": meta.get("source") or "unknown",
                    "created_at": meta["created_at"],
                    "prompt": meta["prompt"],
                    "style": " + ".join(used) or "no style",
                    "structure_strength": params.get("structure_strength"),
                    "style_strength": params.get("style_strength"),
                    "steps": params.get("steps"),
                    "guidance": params.get("guidance"),
                    "scheduler": params.get("scheduler"),
                    "seed": meta["seeds"][i] if i < len(meta.get("seeds", [])) else None,
                    "sketch_hash": meta.get("sketch_hash") or "",
                    "image": f"{run['id']}#{i}",  # the output, as the engine's history.image names it
                    **{m: metrics.get(m) for m in METRICS},
                }
            )
    return rows


def _day(value: str | date | datetime) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return datetime.fromisoformat(value).date()


def filter_rows(
    rows: list[dict[str, Any]],
    sets: Iterable[str] | None = None,
    sources: Iterable[str] | None = None,
    styles: Iterable[str] | None = None,
    text: str = "",
    since: str | date | None = None,
    until: str | date | None = None,
) -> list[dict[str, Any]]:
    """The rows that pass every filter given (None or empty: no filter). Dates are inclusive UTC days;
    text matches the prompt, case-insensitively, word by word."""
    sets, sources, styles = (set(x) if x else None for x in (sets, sources, styles))
    words = text.lower().split()
    first, last = (_day(since) if since else None), (_day(until) if until else None)
    out = []
    for r in rows:
        if sets is not None and r["set"] not in sets:
            continue
        if sources is not None and r["source"] not in sources:
            continue
        if styles is not None and r["style"] not in styles:
            continue
        if words and not all(w in r["prompt"].lower() for w in words):
            continue
        day = _day(r["created_at"])
        if (first and day < first) or (last and day > last):
            continue
        out.append(r)
    return out


def summarize(rows: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Per value of `by` (set, style, source …): the aggregates of every metric, flattened for a table."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r[by], []).append(r)
    out = []
    for key, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        row: dict[str, Any] = {by: key, "images": len(members)}
        for m in METRICS:
            for stat, value in aggregate([x[m] for x in members if x[m] is not None]).items():
                if stat != "n":
                    row[f"{m}_{stat}"] = value
        out.append(row)
    return out


def compare(
    a: list[float], b: list[float], confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Mean of B minus mean of A with a percentile bootstrap confidence interval (scipy), resampling each
    set independently. The interval excludes 0 when the sets differ at that confidence."""
    from scipy.stats import bootstrap

    a = [float(x) for x in a if x is not None and np.isfinite(x)]
    b = [float(x) for x in b if x is not None and np.isfinite(x)]
    if len(a) < 2 or len(b) < 2:
        raise BadInput(f"comparing needs at least 2 measured images on each side (got {len(a)} and {len(b)})")

    def diff(x, y, axis=-1):
        return np.mean(y, axis=axis) - np.mean(x, axis=axis)

    res = bootstrap(
        (np.array(a), np.array(b)),
        diff,
        vectorized=True,
        paired=False,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {
        "n_a": len(a),
        "n_b": len(b),
        "mean_a": float(np.mean(a)),
        "mean_b": float(np.mean(b)),
        "diff": float(np.mean(b) - np.mean(a)),
        "ci_low": low,
        "ci_high": high,
        "confidence": confidence,
        "significant": not (low <= 0.0 <= high),
    }


CSV_COLUMNS = [
    "run_id", "index", "created_at", "prompt", "style", *METRICS, "structure_strength", "style_strength", "steps",
    "guidance", "scheduler", "seed", "set", "batch", "label", "source", "sketch_hash", "image",
]  # fmt: skip


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    """One CSV line per image (the Dashboard's export): metrics, settings and the output's file."""
    from .tables import csv_bytes

    return csv_bytes(rows, CSV_COLUMNS)
