"""`python -m engine.bench` on the tiny profile: the render modes side by side per precision, and the float32 vs
bfloat16 accuracy of a render and of each model part. Tiny sizes and one round: the code paths, not the numbers."""

from __future__ import annotations

import json
import math
import re

import pytest

from engine.bench import main
from engine.history import History
from tests.conftest import make_data_dir


@pytest.fixture
def bench(tmp_path, tiny_models, capsys):
    """Run the benchmark on the tiny profile in its own data folder: (its JSON report, the tables on stderr)."""
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)

    def run(*argv: str) -> tuple[dict, str]:
        capsys.readouterr()
        assert main(["--profile", "tiny", "--data-dir", str(data), "--retrieval", "0", "--size", "64", *argv]) == 0
        out, err = capsys.readouterr()
        return json.loads(out), err

    run.data = data
    return run


def test_modes_table_has_one_row_per_mode_and_precision_with_the_machine(bench):
    report, err = bench("--modes", "quality,fast,live", "--dtypes", "float32,auto", "--runs", "1")
    modes = report["modes"]
    rows = modes["rows"]
    assert [(r["mode"], r["requested"]) for r in rows] == [
        (m, d) for d in ("float32", "auto") for m in ("quality", "fast", "live")
    ]
    # "float32", or "float32 (bf16 units unused: AMX)" on a CPU that has them
    assert {r["precision"].split(" (")[0] for r in rows[:3]} == {"float32"}
    assert all(r["precision"].startswith("auto → ") for r in rows[3:])  # what auto resolved to on this machine
    for r in rows:
        # a designer who stays in the mode, and one who just switched to it: both timed
        assert r["end_to_end_s"] > 0 and r["after_switch_s"] > 0 and r["s_per_step"] > 0
        assert "metrics_after_s" in r  # the measure job's time after the image (None: measured with the render)
    assert rows[0]["speedup_vs_quality"] == 1.0 and rows[2]["speedup_vs_quality"] > 0
    assert all(r["fp32_over_this"]["end_to_end"] > 0 for r in rows[3:])
    assert [e["freed"] for e in modes["engines"]] == [True, True]  # each engine let go before the next

    machine = modes["machine"]
    assert machine["torch_isa"] and machine["threads"] >= 1 and "amx_bf16" in machine["cpu_flags"]
    assert "Machine: " in err and f"torch ISA {machine['torch_isa']}" in err
    table = [line for line in err.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| mode | device | precision | size | end to end | after a switch | s/step | decode")
    assert sum(line.startswith(("| quality", "| fast", "| live")) for line in table) == 6
    assert re.search(r"\| quality \| cpu \| float32( \([^)]*\))? \| 64×64 \|", err) and "| live | cpu | auto → " in err

    # every render went through the interface and was measured before the next began
    runs = History(bench.data / "history.sqlite").list(limit=100)
    assert len(runs) == 2 * (3 + 3 * 2)  # per engine: a warm-up per mode, then each mode twice in the round
    assert all(run["metadata"].get("measured", True) for run in runs)


def test_one_mode_has_no_switch_to_time(bench):
    report, err = bench("--modes", "live", "--dtypes", "float32", "--runs", "2")
    (row,) = report["modes"]["rows"]
    assert row["after_switch_s"] is None and len(row["same_mode_s"]) == 2
    assert re.search(r"\| live \| cpu \| float32( \([^)]*\))? \| 64×64 \|", err), err


def test_accuracy_compares_float32_and_bfloat16_renders_and_parts(bench):
    report, err = bench("--accuracy", "--accuracy-parts", "--steps", "3", "--part-calls", "1")
    acc = report["accuracy"]
    assert acc["latents_shape"] == [1, 4, 8, 8]
    assert math.isfinite(acc["latents_rel_error"]) and 0 < acc["latents_rel_error"] < 1
    assert math.isfinite(acc["latents_max_abs"])
    assert acc["image_psnr_db"] is not None and math.isfinite(acc["image_psnr_db"]) and acc["image_psnr_db"] > 0
    assert acc["float32"]["precision"].startswith("float32") and acc["bfloat16"]["precision"].startswith("bfloat16")
    assert acc["float32"]["render_s"] > 0 and acc["bfloat16"]["render_s"] > 0
    assert "final latents: relative error" in err and "decoded image: PSNR (8-bit)" in err

    parts = {p["part"]: p for p in report["accuracy_parts"]["parts"]}
    assert set(parts) == {
        "UNet + ControlNet + IP-Adapter, one step",
        "VAE decode",
        "TAESD decode",
        "CLIP text encoder (SD), pooled",
        "CLIP text encoder (SD), hidden states",
        "IP-Adapter image encoder",
        "retrieval CLIP, image",
        "retrieval CLIP, text",
    }
    for p in parts.values():
        assert p["float32_s"] > 0 and p["bfloat16_s"] > 0 and math.isfinite(p["rel_error"])
    assert parts["VAE decode"]["psnr_db"] > 0 and parts["TAESD decode"]["psnr_db"] > 0
    assert 0.9 < parts["IP-Adapter image encoder"]["cosine"] <= 1 + 1e-9
    assert "| part | input | fp32 | bf16 | bf16 ÷ fp32 time | agreement |" in err
