"""Tune training: the tiny CLIP learns coloured shapes, each scenario trains only its own parameters, the adapter
is the epoch with the best validation recall (not the last), and a run killed with SIGKILL resumes to the same
adapter as one that was never interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import BadInput
from engine.models import load_clip
from engine.settings import Settings
from engine.tune.bench import bench_train, make_shapes
from engine.tune.data import prepare
from engine.tune.evaluate import evaluate
from engine.tune.train import (
    HEADS,
    SCENARIOS,
    TrainConfig,
    TrainProgress,
    apply_scenario,
    load_tuned,
    train,
    trainable_names,
    val_score,
)
from tests.conftest import REPO, make_data_dir


@pytest.fixture(scope="module")
def settings(tmp_path_factory, tiny_models) -> Settings:
    return Settings(profile="tiny", data_dir=make_data_dir(tmp_path_factory.mktemp("tune"), tiny_models), device="cpu")


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory) -> Path:
    """9 colour × shape classes, 20 images each: 144 train, 18 val, 18 test."""
    root = tmp_path_factory.mktemp("shapes")
    csv_path = make_shapes(root / "images", per_class=20, seed=0)
    prepare(root / "data", images=root / "images", captions=csv_path, shard_size=64, mini_train=36)
    return root / "data"


def t2i_r1(metrics: dict, which: str) -> float:
    return metrics[which]["text_to_image"]["R@1"]


def test_dual_lora_learns_shapes(settings, shapes_data, tmp_path):
    reports: list[TrainProgress] = []
    config = TrainConfig(scenario="dual_lora", epochs=8, min_steps=0, lr=5e-3, batch_size=16, seed=0)
    result = train(shapes_data, tmp_path / "run", settings, config, on_progress=reports.append)
    assert result["steps"] == 8 * 9 and result["train_samples"] == 144
    assert [r.step for r in reports] == list(range(1, 73)) and all(r.total == 72 for r in reports)
    assert reports[-1].eta == 0 and reports[10].eta > 0 and reports[-1].epoch == 8
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    losses = [s["loss"] for s in summary["losses"]]
    assert len(losses) == 72 and sum(losses[-9:]) < 0.75 * sum(losses[:9])
    assert summary["samples_per_s"] > 0 and summary["trainable_parameters"] == result["trainable_parameters"]

    metrics = evaluate(tmp_path / "run", settings, device="cpu")
    assert metrics == json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["samples"] == 18 and metrics["queries"] == {"text_to_image": 18, "image_to_image": 18}
    # chance is 1/9; the untrained tiny CLIP is at or below it, the tuned one far above (0.44–0.78 over seeds)
    assert t2i_r1(metrics, "base") <= 0.12
    assert t2i_r1(metrics, "tuned") >= t2i_r1(metrics, "base") + 0.3
    assert metrics["tuned"]["text_to_image"]["R@5"] > metrics["base"]["text_to_image"]["R@5"]


def test_keeps_the_epoch_with_the_best_validation_recall(settings, shapes_data, tmp_path):
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(epoch: int, path: Path) -> None:
        snapshots[epoch] = load_file(str(path / "trainable.safetensors"))

    # a rate this high overshoots: validation recall rises, then falls back before the last epoch
    config = TrainConfig(scenario="dual_lora", epochs=6, min_steps=0, lr=5e-2, batch_size=16, seed=0)
    result = train(shapes_data, tmp_path / "run", settings, config, on_checkpoint=snapshot)
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    validation = summary["validation"]
    history = validation["history"]
    assert validation["split"] == "val" and validation["samples"] == 18
    assert [h["epoch"] for h in history] == list(range(7)) and [h["step"] for h in history] == list(range(0, 63, 9))
    best = max(history, key=val_score)  # the first of equals, as training keeps it
    assert result["kept_epoch"] == best["epoch"] == validation["best"]["epoch"] == summary["kept_epoch"]
    assert 1 <= best["epoch"] < 6 and history[-1]["text_to_image"]["R@1"] < best["text_to_image"]["R@1"]
    assert f"kept epoch {best['epoch']} (the best, step {best['step']})" in result["note"]

    adapter = load_file(str(tmp_path / "run" / "adapter" / "adapter.safetensors"))
    assert sorted(adapter) == sorted(snapshots[6])
    assert all(torch.equal(adapter[k], snapshots[best["epoch"]][k]) for k in adapter)
    assert not all(torch.equal(adapter[k], snapshots[6][k]) for k in adapter)
    meta = json.loads((tmp_path / "run" / "adapter" / "adapter.json").read_text())
    assert meta["kept_epoch"] == best["epoch"]


def expected_trainable(model, scenario: str, r: int = 8) -> int:
    """LoRA on q_proj and v_proj (A: r × in, B: out × r) of each adapted tower's layers, plus the heads."""
    towers, heads = SCENARIOS[scenario]
    count = 0
    for tower in towers:
        cfg = model.config.vision_config if tower == "vision" else model.config.text_config
        count += cfg.num_hidden_layers * 2 * (2 * r * cfg.hidden_size)
    if heads:
        count += sum(getattr(model, h).weight.numel() for h in HEADS)
    return count


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_scenario_trains_only_its_parameters(scenario, settings, shapes_data, tmp_path):
    base, _ = load_clip(settings, "cpu")
    model, _ = load_clip(settings, "cpu")
    want = expected_trainable(model, scenario)
    _, clip = apply_scenario(model, scenario, {"r": 8, "alpha": 16, "dropout": 0.0, "targets": ["q_proj", "v_proj"],
                                               "towers": list(SCENARIOS[scenario][0])})  # fmt: skip
    names = trainable_names(clip)
    assert sum(p.numel() for p in clip.parameters() if p.requires_grad) == want
    towers, heads = SCENARIOS[scenario]
    lora = [n for n in names if ".lora_" in n]
    assert all(("q_proj" in n or "v_proj" in n) for n in lora)
    assert {n.split(".")[0] for n in lora} == {{"vision": "vision_model", "text": "text_model"}[t] for t in towers}
    assert sorted(set(names) - set(lora)) == (sorted(f"{h}.weight" for h in HEADS) if heads else [])

    # exactly one epoch, and its weights (not the best on validation): what each scenario trains shows
    config = TrainConfig(scenario=scenario, epochs=1, min_steps=0, lr=5e-3, batch_size=12, split="mini_train",
                         val_split="none")  # fmt: skip
    result = train(shapes_data, tmp_path / "run", settings, config)
    assert result["trainable_parameters"] == want
    assert result["steps"] == (0 if scenario == "zero_shot" else 3)
    adapter = load_file(str(tmp_path / "run" / "adapter" / "adapter.safetensors"))
    assert sorted(adapter) == names and sum(t.numel() for t in adapter.values()) == want

    tuned, processor = load_tuned(tmp_path / "run", settings, "cpu")
    before, after = base.state_dict(), tuned.state_dict()
    assert set(before) == set(after)  # merged: a plain CLIPModel again
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    allowed = {f"{h}.weight" for h in HEADS} if heads else set()
    for tower in towers:
        prefix = {"vision": "vision_model", "text": "text_model"}[tower]
        allowed |= {k for k in before if k.startswith(prefix) and k.endswith(("q_proj.weight", "v_proj.weight"))}
    assert changed <= allowed
    assert bool(changed) == (scenario != "zero_shot")
    feats = tuned.get_text_features(**processor(text=["a red circle"], return_tensors="pt"))
    feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
    assert feats.shape == (1, model.config.projection_dim)


KILL_CONFIG = TrainConfig(scenario="dual_lora", epochs=4, min_steps=0, lr=5e-3, batch_size=16, seed=3)


def run_train_cli(data: Path, out: Path, settings: Settings, *extra: str) -> subprocess.Popen:
    """`tune train` in a process of its own, on the engine of `settings`' data folder: DATA is copied there as the
    dataset of that name, and the adapter is named after OUT (the folder the engine keeps it in)."""
    shutil.copytree(data, settings.data_dir / "runs" / "tune" / "data" / data.name, dirs_exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "engine", "tune", "train", data.name, "--name", out.name, "--epochs", "4",
            "--min-steps", "0", "--lr", "5e-3", "--batch-size", "16", "--seed", "3", "--profile", "tiny",
            "--data-dir", str(settings.data_dir), "--device", "cpu", *extra]  # fmt: skip
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_matches_an_uninterrupted_run(settings, shapes_data, tmp_path):
    train(shapes_data, tmp_path / "straight", settings, KILL_CONFIG)
    straight = json.loads((tmp_path / "straight" / "train.json").read_text())

    run = settings.data_dir / "runs" / "tune" / "runs" / "killed"  # where the engine keeps the adapter 'killed'
    proc = run_train_cli(shapes_data, run, settings)
    deadline = time.monotonic() + 120
    while not list((run / "checkpoints").glob("epoch-*/state.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "train.json").exists() and not (run / "adapter").exists()
    epochs_done = max(int(p.name.removeprefix("epoch-")) for p in (run / "checkpoints").glob("epoch-*"))
    assert 1 <= epochs_done < 4

    result = train(shapes_data, run, settings, KILL_CONFIG)  # resume is the default
    assert result["resumed_from"]["epoch"] == epochs_done and result["resumed_from"]["step"] == epochs_done * 9
    resumed = json.loads((run / "train.json").read_text())
    assert resumed["steps"] == straight["steps"] == 36
    assert [s["loss"] for s in resumed["losses"]] == [s["loss"] for s in straight["losses"]]
    a = load_file(str(run / "adapter" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "straight" / "adapter" / "adapter.safetensors"))
    assert sorted(a) == sorted(b)
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)

    # a finished run is not trained again; other settings in the same folder are refused
    assert train(shapes_data, run, settings, KILL_CONFIG)["already_complete"] is True
    with pytest.raises(BadInput, match="other settings.*lr"):
        train(shapes_data, run, settings, replace(KILL_CONFIG, lr=1e-3))


def test_bench_reports_samples_per_second(settings):
    out = bench_train(settings, per_class=4, epochs=1, batch_size=8, device="cpu")
    assert out["samples"] == 29 and out["steps"] == 3 and out["samples_per_s"] > 0
    assert out["trainable_parameters"] > 0 and out["device"] == "cpu" and out["amp"] == "off"
