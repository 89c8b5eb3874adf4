"""`python -m engine tune ...`: one JSON line on success (and one plain line on stderr saying what a run did and
whether it changed recall), exit 2 and one line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.tune import DEFAULT_MIN_STEPS
from engine.tune.bench import make_shapes
from engine.tune.evaluate import verdict
from tests.conftest import make_data_dir

COLOURS = ("red", "green", "blue", "yellow", "purple")


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_models) -> list[str]:
    data_dir = make_data_dir(tmp_path_factory.mktemp("tune-cli"), tiny_models)
    return ["--profile", "tiny", "--data-dir", str(data_dir), "--device", "cpu"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def colour_shapes(tmp_path_factory, base) -> Path:
    """The user's case: 150 captioned images, 5 colours × 2 shapes, 15 of each, prepared by `tune prepare`
    into 120 train, 15 val and 15 test pairs."""
    root = tmp_path_factory.mktemp("colour-shapes")
    csv_path = make_shapes(root / "images", per_class=15, colors=COLOURS, shapes=("circle", "square"))
    args = ["tune", "prepare", "--images", root / "images", "--captions", csv_path, "--out", root / "data", *base]
    assert main([str(a) for a in args]) == 0
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    assert {s: v["samples"] for s, v in manifest["splits"].items() if s != "mini_train"} == {
        "train": 120, "val": 15, "test": 15
    }  # fmt: skip
    return root / "data"


def test_defaults_raise_text_to_image_recall_on_150_pairs(capsys, base, colour_shapes, tmp_path):
    """`tune train` with nothing but its defaults, then `tune eval`: the adapter finds captions' images better."""
    code, out, err = run_cli(capsys, "tune", "train", colour_shapes, "--out", tmp_path / "run", *base)
    assert code == 0, err
    (line,) = out.strip().splitlines()
    trained = json.loads(line)
    # 120 pairs at batch 32 make 3 steps an epoch: the 5 epochs asked for become 34 to reach 100 steps
    assert trained["epochs_requested"] == 5 and trained["min_steps"] == DEFAULT_MIN_STEPS == 100
    assert trained["epochs"] == 34 and trained["steps"] == 102 and trained["train_samples"] == 120
    val = trained["validation"]
    assert val["split"] == "val" and val["samples"] == 15 and val["base"]["epoch"] == 0
    assert 1 <= trained["kept_epoch"] == val["kept"]["epoch"] <= 34
    assert val["kept"]["text_to_image_R@1"] > val["base"]["text_to_image_R@1"]
    assert trained["note"] in err.splitlines() and "raised from 5: --min-steps 100" in trained["note"]
    assert f"kept epoch {trained['kept_epoch']} " in trained["note"]

    code, out, err = run_cli(capsys, "tune", "eval", tmp_path / "run", *base)
    assert code == 0, err
    metrics = json.loads(out)
    before, after = metrics["base"]["text_to_image"]["R@1"], metrics["tuned"]["text_to_image"]["R@1"]
    assert metrics["samples"] == 15 and after >= before + 0.2, (before, after)  # measured: 0.13 → 0.53
    assert metrics["recall_change"] == "improved" and metrics["verdict"] in err.splitlines()
    assert metrics["verdict"].startswith(f"The adapter raised text→image recall@1 from {before:.2f} to {after:.2f}")


def test_an_adapter_that_changes_nothing_says_so_in_one_line(capsys, base, colour_shapes, tmp_path):
    """The user's report: a run too short or too slow to move the adapter. `tune eval` says so, and what to try."""
    code, out, err = run_cli(capsys, "tune", "train", colour_shapes, "--out", tmp_path / "run", "--epochs", "1",
                             "--min-steps", "0", "--lr", "1e-7", *base)  # fmt: skip
    assert code == 0, err
    trained = json.loads(out)
    assert trained["steps"] == 3 and trained["note"] in err.splitlines()
    # training already says that validation recall did not rise, and what to try
    assert trained["validation"]["kept"]["text_to_image_R@1"] == trained["validation"]["base"]["text_to_image_R@1"]
    assert trained["note"].endswith(": try --min-steps 300 or a higher --lr than 1e-07.")
    code, out, err = run_cli(capsys, "tune", "eval", tmp_path / "run", *base)
    assert code == 0, err
    metrics = json.loads(out)
    r1 = metrics["base"]["text_to_image"]["R@1"]
    assert metrics["tuned"]["text_to_image"]["R@1"] == r1 and metrics["recall_change"] == "unchanged"
    said = [line for line in err.splitlines() if "did not change" in line]
    assert said == [metrics["verdict"]], err
    i2i = metrics["base"]["image_to_image"]["R@1"]
    assert metrics["tuned"]["image_to_image"]["R@1"] == i2i
    assert said[0].startswith(
        f"The adapter did not change text→image recall@1 ({r1:.2f} → {r1:.2f}; image→image {i2i:.2f} → {i2i:.2f})"
        " on 15 test pairs: "
    )
    assert "3 steps at lr 1e-07 on 120 training pairs" in said[0]
    assert said[0].endswith("; try --min-steps 300 or a higher --lr (now 1e-07; e.g. 3e-07).")
    # the page words it without CLI flags
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    change, words = verdict(metrics, summary, flags=False)
    assert change == "unchanged" and "--" not in words and "try more epochs (about 100 epochs, 300 steps)" in words


def test_prepare_train_eval(capsys, base, tmp_path):
    csv_path = make_shapes(tmp_path / "images", per_class=4)
    code, out, err = run_cli(capsys, "tune", "prepare", "--images", tmp_path / "images", "--captions", csv_path,
                             "--out", tmp_path / "data", "--shard-size", "10", *base)  # fmt: skip
    assert code == 0, err
    (line,) = out.strip().splitlines()
    prepared = json.loads(line)
    assert prepared["samples"] == 36 and prepared["splits"] == {"train": 29, "val": 4, "test": 3, "mini_train": 29}
    assert prepared["written_shards"] == 3 + 1 + 1 + 3

    code, out, err = run_cli(capsys, "tune", "train", tmp_path / "data", "--out", tmp_path / "run", "--epochs", "2",
                             "--min-steps", "0", "--batch-size", "8", "--accumulate", "2", "--lr", "1e-3",
                             "--scenario", "text_lora", *base)  # fmt: skip
    assert code == 0, err
    trained = json.loads(out)
    assert trained["scenario"] == "text_lora" and trained["steps"] == 2 * 2 and trained["resumed_from"] is None
    assert (tmp_path / "run" / "adapter" / "adapter.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["epoch-1", "epoch-2"]

    code, out, err = run_cli(capsys, "tune", "eval", tmp_path / "run", *base)
    assert code == 0, err
    metrics = json.loads(out)
    assert set(metrics["base"]) == set(metrics["tuned"]) == {"text_to_image", "image_to_image"}
    assert set(metrics["tuned"]["text_to_image"]) == {"R@1", "R@5", "R@10"}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list, str]]:
    images = tmp_path / "images"
    csv_path = make_shapes(images, per_class=1)
    (tmp_path / "wrong.csv").write_text("name,notes\na.png,hello\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (broken / "b.jpg").write_text("text")
    (broken / "captions.csv").write_text("file,caption\na.png,a thing\nb.jpg,another\n")
    return {
        "missing folder": (["prepare", "--images", tmp_path / "nope", "--captions", csv_path, "--out", tmp_path / "d"],
                           "images folder"),
        "missing csv": (["prepare", "--images", images, "--captions", tmp_path / "nope.csv", "--out", tmp_path / "d"],
                        "does not exist"),
        "no columns": (["prepare", "--images", images, "--captions", tmp_path / "wrong.csv", "--out", tmp_path / "d"],
                       "needs an image column"),
        "no images": (["prepare", "--images", broken, "--captions", broken / "captions.csv", "--out", tmp_path / "d"],
                      "no readable image"),
        "no data": (["prepare", "--out", tmp_path / "d"], "needs data"),
        "unknown scenario": (["train", images, "--out", tmp_path / "r", "--scenario", "full_finetune"],
                             "unknown scenario 'full_finetune'"),
        "negative min steps": (["train", images, "--out", tmp_path / "r", "--min-steps", "-1"],
                               "--min-steps must be 0 or more"),
        "not prepared": (["train", images, "--out", tmp_path / "r"], "not a prepared data folder"),
        "no adapter": (["eval", images], "holds no trained adapter"),
        "no run": (["eval", tmp_path / "nowhere"], "does not exist"),
        "bad k": (["eval", images, "-k", "1,five"], "-k takes"),
    }  # fmt: skip


def test_bad_input_is_one_line(capsys, base, tmp_path):
    for what, (args, message) in bad_inputs(tmp_path).items():
        code, out, err = run_cli(capsys, "tune", *args, *base)
        assert code == 2, (what, err)
        assert out == "" and len(err.strip().splitlines()) == 1, (what, err)
        assert err.startswith("error: ") and message in err, (what, err)
    assert not (tmp_path / "d" / "manifest.json").exists()
