"""Sweeps on the tiny profile: every cell rendered and measured, a contact sheet and a table, from code and CLI."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.errors import BadInput
from engine.schema import GenerateRequest
from engine.sweep import CELL_PX, contact_sheet, parse_values, past_sweeps, run_sweep
from tests.conftest import line_sketch, png


def test_a_sweep_renders_each_cell_with_one_seed_and_style_and_writes_sheet_and_table(fresh_engine):
    engine = fresh_engine
    request = GenerateRequest.build(prompt="a wooden chair", sketch=png(line_sketch()), size=64, steps=2, seed=5)
    seen = []
    result = run_sweep(
        engine.pipeline, request, [0.0, 2.0], [0.1, 1.2], [2], engine.sweeps.root, on_progress=seen.append
    )

    assert len(result.cells) == 4
    assert [(c.structure_strength, c.style_strength) for c in result.cells] == [
        (0.0, 0.1), (0.0, 1.2), (2.0, 0.1), (2.0, 1.2)
    ]  # fmt: skip
    assert [p.step for p in seen] == [0, 1, 2, 3, 4] and all(p.total == 4 for p in seen)
    runs = [engine.history_store.get(c.run_id)["metadata"] for c in result.cells]
    assert {m["seed"] for m in runs} == {5}
    assert len({json.dumps([s for s in m["styles"] if s["used"]]) for m in runs}) == 1  # one reference for all
    assert {m["source"] for m in runs} == {"sweep"} and {m["batch"] for m in runs} == {result.batch}
    assert [m["label"] for m in runs][1] == "structure 0 · style 1.2 · 2 steps"
    assert result.sets()[1] == f"{result.batch} · structure 0 · style 1.2 · 2 steps"
    for cell, meta in zip(result.cells, runs, strict=True):
        assert cell.metrics["clip_score"] == meta["metrics"][0]["clip_score"]
        assert cell.metrics["edge_f1"] is not None and cell.metrics["style_similarity"] is not None
    # structure strength is what changed between rows: the renders differ
    a, b = (np.asarray(Image.open(result.cells[i].paths[0]), dtype=float) for i in (0, 2))
    assert np.abs(a - b).mean() > 0.5

    folder = engine.sweeps.root / result.batch
    assert result.files["contact_sheet"] == str(folder / "contact.png")
    with Image.open(folder / "contact.png") as sheet:
        assert sheet.width > 2 * CELL_PX and sheet.height > 2 * CELL_PX
    with open(folder / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and table[3]["structure_strength"] == "2.0" and table[3]["style_strength"] == "1.2"
    assert float(table[0]["clip_score"]) == result.cells[0].metrics["clip_score"]
    assert past_sweeps(engine.sweeps.root)[0]["batch"] == result.batch


def test_the_contact_sheet_grows_with_the_grid(fresh_engine):
    request = GenerateRequest.build(prompt="a lamp", size=64, steps=1, seed=1, use_style=False)
    small = run_sweep(fresh_engine.pipeline, request, [1.0], [0.5])
    big = run_sweep(fresh_engine.pipeline, request, [0.5, 1.0], [0.2, 0.5, 0.8], [1, 2])
    one, many = contact_sheet(small), contact_sheet(big)
    assert many.width - one.width == 2 * (CELL_PX + 8)  # two more style columns
    assert many.height > 2 * one.height  # two structure rows in each of two step blocks
    assert big.style == "no style"


def test_bad_grids_fail_before_anything_renders(fresh_engine):
    request = GenerateRequest.build(prompt="a lamp", size=64, steps=1)
    with pytest.raises(BadInput, match="structure_strength: must be at most 3"):
        run_sweep(fresh_engine.pipeline, request, [1.0, 5.0], [0.5])
    with pytest.raises(BadInput, match="the sweep has 81 cells; at most 64"):
        run_sweep(fresh_engine.pipeline, request, [0.1 * i for i in range(9)], [0.1 * i for i in range(9)])
    assert fresh_engine.history.list() == []
    with pytest.raises(BadInput, match="'1, two' is not a comma-separated list of numbers"):
        parse_values("1, two", "--structure")
    assert parse_values("0.5; 1,1 ,", "x") == [0.5, 1.0]


def test_cli_sweep_prints_its_files_and_table(capsys, tmp_path, tiny_models):
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    sketch = tmp_path / "sketch.png"
    line_sketch().save(sketch)
    args = ["sweep", "--profile", "tiny", "--data-dir", str(data), "--sketch", str(sketch), "--prompt", "a stool",
            "--structure", "0.5,1.5", "--style-strength", "0.4", "--steps", "1", "--size", "64", "--seed", "9",
            "--out", str(tmp_path / "sweeps")]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["contact_sheet"] == str(tmp_path / "sweeps" / report["batch"] / "contact.png")
    assert [c["structure_strength"] for c in report["cells"]] == [0.5, 1.5]
    assert all(c["edge_f1"] is not None for c in report["cells"])

    assert main([*args[:-2], "--structure", "0.5,abc"]) == 2
    assert "is not a comma-separated list" in capsys.readouterr().err


def test_a_sweep_varies_a_loras_weight_as_one_more_axis(fresh_engine, tmp_path, tiny_models, capsys):
    """The designer's LoRA at 0, 0.5 and 1 with everything else the same: one run set per weight, each run recorded
    with its weight, weight 0 the very pixels of no LoRA; the CLI's --lora-weights says the same."""
    from diffusers import UNet2DConditionModel

    from engine.tiny import save_fast_lora

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "stable-diffusion-v1-5", subfolder="unet")
    lora = save_fast_lora(unet, tmp_path / "lora", rank=4, scale=0.5)
    fresh_engine.renders.add_model("lora", "walnut", lora.read_bytes())
    base = {"prompt": "a chair", "sketch": png(line_sketch(64, 64)), "seed": 7, "steps": 2, "size": 64,
            "structure_strength": 1.0, "style_strength": 0.5}  # fmt: skip
    request = GenerateRequest.build(**base, loras=[{"name": "walnut", "weight": 1.0}])
    job = fresh_engine.sweeps.start(request, [1.0], [0.5], lora_weights=[0.0, 1.0])
    sweep = fresh_engine.sweeps.get(fresh_engine.follow(job).result["batch"])
    assert [c["lora_weight"] for c in sweep["cells"]] == [0.0, 1.0]
    assert [r["lora_weight"] for r in sweep["table"]] == [0.0, 1.0]
    assert sweep["sets"][1].endswith("structure 1 · style 0.5 · 2 steps · LoRA 1")
    runs = [fresh_engine.history.get(c["run_id"]).metadata for c in sweep["cells"]]
    assert [m["params"]["loras"] for m in runs] == [[{"name": "walnut", "weight": w}] for w in (0.0, 1.0)]
    plain = fresh_engine.generate(GenerateRequest.build(**base, style=runs[0]["styles"][0]["id"]))
    zero = fresh_engine.history.image(sweep["cells"][0]["run_id"])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(zero)).convert("RGB")), np.asarray(plain.images()[0]))
    with pytest.raises(BadInput, match="pick a LoRA first"):
        fresh_engine.sweeps.start(GenerateRequest.build(**base), [1.0], [0.5], lora_weights=[0.5])
    code = main(["sweep", "--prompt", "a chair", "--lora-weights", "0,1", "--data-dir", str(tmp_path / "d")])
    assert code == 2 and "--lora-weights varies a LoRA" in capsys.readouterr().err
