"""Rows, filters, summaries, comparisons and the CSV export, on constructed histories."""

from __future__ import annotations

import csv
import io
import statistics

import numpy as np
import pytest

from engine.errors import BadInput
from engine.evaluation import compare, filter_rows, image_rows, run_set, summarize, to_csv


def make_run(run_id, created, prompt, style, metrics, batch=None, label="", source="studio", structure=1.5):
    return {
        "id": run_id,
        "outputs": [f"/data/outputs/{run_id}-{i}.png" for i in range(len(metrics))],
        "metadata": {
            "run_id": run_id,
            "created_at": created,
            "prompt": prompt,
            "seeds": [100 + i for i in range(len(metrics))],
            "sketch_hash": "abc",
            "source": source,
            "batch": batch,
            "label": label,
            "styles": [{"id": style.lower(), "name": style, "used": True}, {"id": "x", "name": "Other", "used": False}],
            "params": {"structure_strength": structure, "style_strength": 0.8, "steps": 20, "guidance": 7.5},
            "metrics": metrics,
        },
    }


RUNS = [
    make_run("r1", "2026-11-01T10:00:00+00:00", "A Blue chair", "Watercolor",
             [{"clip_score": 20.0, "edge_f1": 0.5}, {"clip_score": 22.0, "edge_f1": 0.7}], batch="ab", label="A"),
    make_run("r2", "2026-11-02T10:00:00+00:00", "a red lamp", "Ink", [{"clip_score": 30.0, "edge_f1": 0.9}],
             batch="ab", label="B", source="cli", structure=0.5),
    make_run("r3", "2026-11-05T23:59:00+00:00", "a blue lamp", "Watercolor", [{"clip_score": 26.0}]),
]  # fmt: skip


def test_every_output_is_one_row_with_its_set_style_settings_and_metrics():
    rows = image_rows(RUNS)
    assert [(r["run_id"], r["index"]) for r in rows] == [("r1", 0), ("r1", 1), ("r2", 0), ("r3", 0)]
    assert [r["set"] for r in rows] == ["ab · A", "ab · A", "ab · B", "r3"]
    assert rows[0]["style"] == "Watercolor"  # only the used reference
    assert rows[1]["seed"] == 101 and rows[1]["clip_score"] == 22.0 and rows[1]["style_similarity"] is None
    assert rows[2]["structure_strength"] == 0.5 and rows[2]["source"] == "cli"
    assert run_set({"run_id": "x", "batch": "sweep-1", "label": ""}) == "sweep-1"


def test_filters_narrow_by_set_source_style_words_and_inclusive_dates():
    rows = image_rows(RUNS)
    assert len(filter_rows(rows)) == 4
    assert {r["run_id"] for r in filter_rows(rows, sets=["ab · B", "r3"])} == {"r2", "r3"}
    assert {r["run_id"] for r in filter_rows(rows, sources=["cli"])} == {"r2"}
    assert {r["run_id"] for r in filter_rows(rows, styles=["Watercolor"])} == {"r1", "r3"}
    assert {r["run_id"] for r in filter_rows(rows, text="BLUE")} == {"r1", "r3"}
    assert {r["run_id"] for r in filter_rows(rows, text="blue lamp")} == {"r3"}
    assert {r["run_id"] for r in filter_rows(rows, since="2026-11-02", until="2026-11-05")} == {"r2", "r3"}
    assert filter_rows(rows, since="2026-11-06") == []


def test_summaries_per_group_match_statistics():
    out = {g["style"]: g for g in summarize(image_rows(RUNS), "style")}
    water = out["Watercolor"]
    assert water["images"] == 3
    assert water["clip_score_mean"] == pytest.approx(statistics.fmean([20, 22, 26]))
    assert water["clip_score_std"] == pytest.approx(statistics.stdev([20, 22, 26]), abs=1e-4)
    assert water["clip_score_p90"] == pytest.approx(np.percentile([20, 22, 26], 90), abs=1e-4)
    assert water["edge_f1_median"] == pytest.approx(0.6)
    assert "style_similarity_mean" not in water  # nothing measured, nothing made up


def test_compare_gives_the_mean_difference_and_a_bootstrap_interval():
    rng = np.random.default_rng(1)
    a, b = rng.normal(20, 1, 40).tolist(), rng.normal(23, 1, 40).tolist()
    res = compare(a, b)
    assert res["diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert res["ci_low"] < res["diff"] < res["ci_high"]
    assert res["significant"] and res["ci_low"] > 2.0
    assert compare(a, b) == res  # the same resamples for the same data

    same = compare(a, rng.permutation(a).tolist())
    assert same["diff"] == pytest.approx(0) and same["ci_low"] < 0 < same["ci_high"] and not same["significant"]


def test_compare_refuses_too_few_images():
    with pytest.raises(BadInput, match=r"at least 2 measured images on each side \(got 1 and 3\)"):
        compare([1.0, None], [1.0, 2.0, 3.0])


def test_csv_export_has_one_line_per_image():
    rows = image_rows(RUNS)
    got = list(csv.DictReader(io.StringIO(to_csv(rows).decode())))
    assert len(got) == 4
    assert [g["run_id"] for g in got] == ["r1", "r1", "r2", "r3"]
    assert got[1]["clip_score"] == "22.0" and got[3]["edge_f1"] == ""
    assert got[0]["image"] == "r1#0"  # the output, as the engine names it (no path on its machine)
