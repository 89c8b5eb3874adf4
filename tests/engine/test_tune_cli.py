"""`python -m engine tune ...` on the engine in this process: one JSON line on success (and plain lines on stderr
naming the dataset or adapter and saying what a run did and whether it changed recall), exit 2 and one line for bad
input. Datasets and adapters are named and live on the engine (tests/server/test_tune_remote.py: the same over
--remote)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.tune import DEFAULT_MIN_STEPS
from engine.tune.bench import make_shapes
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


def quietly(*args) -> tuple[int, dict]:
    """The CLI's exit code and JSON line, where no capsys is at hand (module fixtures)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(a) for a in args])
    return code, json.loads(buf.getvalue() or "null")


@pytest.fixture(scope="module")
def colour_shapes(tmp_path_factory, base) -> str:
    """The user's case: 150 captioned images, 5 colours × 2 shapes, 15 of each, prepared by `tune prepare`
    into 120 train, 15 val and 15 test pairs: the dataset 'colours' on the engine."""
    root = tmp_path_factory.mktemp("colour-shapes")
    csv_path = make_shapes(root / "images", per_class=15, colors=COLOURS, shapes=("circle", "square"))
    code, prepared = quietly("tune", "prepare", "--images", root / "images", "--captions", csv_path, "--name",
                             "colours", *base)  # fmt: skip
    assert code == 0 and prepared["dataset"] == "colours"
    assert {s: n for s, n in prepared["splits"].items() if s != "mini_train"} == {"train": 120, "val": 15, "test": 15}
    return "colours"


def test_defaults_raise_text_to_image_recall_on_150_pairs(capsys, base, colour_shapes):
    """`tune train` with nothing but its defaults (it measures recall too), then `tune eval`: the adapter finds
    captions' images better."""
    code, out, err = run_cli(capsys, "tune", "train", colour_shapes, "--name", "defaults", *base)
    assert code == 0, err
    (line,) = out.strip().splitlines()
    trained = json.loads(line)
    assert trained["adapter"] == "defaults" and trained["dataset"] == "colours"
    assert "adapter 'defaults' trained on dataset 'colours'" in err.splitlines()
    # 120 pairs at batch 32 make 3 steps an epoch: the 5 epochs asked for become 34 to reach 100 steps
    assert trained["epochs_requested"] == 5 and trained["min_steps"] == DEFAULT_MIN_STEPS == 100
    assert trained["epochs"] == 34 and trained["steps"] == 102 and trained["train_samples"] == 120
    val = trained["validation"]
    assert val["split"] == "val" and val["samples"] == 15 and val["base"]["epoch"] == 0
    assert 1 <= trained["kept_epoch"] == val["kept"]["epoch"] <= 34
    assert val["kept"]["text_to_image_R@1"] > val["base"]["text_to_image_R@1"]
    assert trained["note"] in err.splitlines() and "raised from 5: the minimum of 100 steps" in trained["note"]
    assert f"kept epoch {trained['kept_epoch']} " in trained["note"]
    assert trained["recall_change"] == "improved" and trained["verdict"] in err.splitlines()

    code, out, err = run_cli(capsys, "tune", "eval", "defaults", *base)
    assert code == 0, err
    metrics = json.loads(out)
    before, after = metrics["base"]["text_to_image"]["R@1"], metrics["tuned"]["text_to_image"]["R@1"]
    assert metrics["samples"] == 15 and after >= before + 0.2, (before, after)  # measured: 0.13 → 0.53
    assert metrics["recall_change"] == "improved" and metrics["verdict"] in err.splitlines()
    assert metrics["verdict"].startswith(f"The adapter raised text→image recall@1 from {before:.2f} to {after:.2f}")
    assert metrics["tuned"] == trained["metrics"]["tuned"]  # what training measured, measured again


def test_an_adapter_that_changes_nothing_says_so_in_one_line(capsys, base, colour_shapes):
    """The user's report: a run too short or too slow to move the adapter. Training and `tune eval` say so, and
    what to try."""
    code, out, err = run_cli(capsys, "tune", "train", colour_shapes, "--name", "too-slow", "--epochs", "1",
                             "--min-steps", "0", "--lr", "1e-7", *base)  # fmt: skip
    assert code == 0, err
    trained = json.loads(out)
    assert trained["steps"] == 3 and trained["note"] in err.splitlines()
    # training already says that validation recall did not rise, and what to try
    assert trained["validation"]["kept"]["text_to_image_R@1"] == trained["validation"]["base"]["text_to_image_R@1"]
    assert trained["note"].endswith(": try more epochs (300 steps) or a higher learning rate than 1e-07.")
    code, out, err = run_cli(capsys, "tune", "eval", "too-slow", *base)
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
    # the engine words it the same for the CLI and the page: no flags
    assert "--" not in said[0] and said[0].endswith(
        "; try more epochs (about 100 epochs, 300 steps) or a higher learning rate (now 1e-07; e.g. 3e-07)."
    )


def test_prepare_train_eval(capsys, base, tmp_path):
    csv_path = make_shapes(tmp_path / "images", per_class=4)
    code, out, err = run_cli(capsys, "tune", "prepare", "--images", tmp_path / "images", "--captions", csv_path,
                             "--name", "small", "--shard-size", "10", *base)  # fmt: skip
    assert code == 0, err
    (line,) = out.strip().splitlines()
    prepared = json.loads(line)
    assert prepared["dataset"] == "small" and prepared["samples"] == 36
    assert prepared["splits"] == {"train": 29, "val": 4, "test": 3, "mini_train": 29}
    assert prepared["written_shards"] == 3 + 1 + 1 + 3
    assert "dataset 'small': 36 pairs (train 29, val 4, test 3); 0 dropped" in err.splitlines()

    code, out, err = run_cli(capsys, "tune", "train", "small", "--name", "small-text", "--epochs", "2",
                             "--min-steps", "0", "--batch-size", "8", "--accumulate", "2", "--lr", "1e-3",
                             "--scenario", "text_lora", *base)  # fmt: skip
    assert code == 0, err
    trained = json.loads(out)
    assert trained["adapter"] == "small-text" and trained["scenario"] == "text_lora"
    assert trained["steps"] == 2 * 2 and trained["epochs"] == 2 and trained["resumed_from"] is None
    assert str(base[3]) not in out  # no folder of the engine's in what it says

    code, out, err = run_cli(capsys, "tune", "eval", "small-text", "--data", "small", "-k", "1,5,10", *base)
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["adapter"] == "small-text" and metrics["split"] == "test" and metrics["samples"] == 3
    assert set(metrics["base"]) == set(metrics["tuned"]) == {"text_to_image", "image_to_image"}
    assert set(metrics["tuned"]["text_to_image"]) == {"R@1", "R@5", "R@10"}
    assert metrics["tuned"] == trained["metrics"]["tuned"]


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
        "missing folder": (["prepare", "--images", tmp_path / "nope", "--captions", csv_path], "images folder"),
        "missing csv": (["prepare", "--images", images, "--captions", tmp_path / "nope.csv"], "does not exist"),
        "no columns": (["prepare", "--images", images, "--captions", tmp_path / "wrong.csv"],
                       "wrong.csv needs an image column"),
        "too few": (["prepare", "--images", images, "--captions", csv_path], "9 usable pairs are too few"),
        "no images": (["prepare", "--images", broken, "--captions", broken / "captions.csv"], "too few"),
        "no data": (["prepare"], "needs data"),
        "library and folder": (["prepare", "--library", "--images", images, "--captions", csv_path],
                               "--library prepares the engine's style library on its own"),
        "bad share": (["prepare", "--images", images, "--captions", csv_path, "--val", "0.9"], "val"),
        "unknown scenario": (["train", "images", "--scenario", "full_finetune"], "unknown scenario 'full_finetune'"),
        "negative min steps": (["train", "images", "--min-steps", "-1"], "--min-steps must be 0 or more"),
        "not prepared": (["train", "images"], "no dataset 'images'"),
        "a path": (["train", tmp_path / "images"], "is not a dataset name"),
        "no adapter": (["eval", "images"], "no adapter 'images'"),
        "bad k": (["eval", "images", "-k", "1,five"], "-k takes"),
        "use nothing": (["use"], "tune use takes an ADAPTER"),
        "use unknown": (["use", "nope"], "no adapter 'nope'"),
    }  # fmt: skip


def test_bad_input_is_one_line(capsys, base, tmp_path):
    for what, (args, message) in bad_inputs(tmp_path).items():
        code, out, err = run_cli(capsys, "tune", *args, *base)
        assert code == 2, (what, err)
        assert out == "" and len(err.strip().splitlines()) == 1, (what, err)
        assert err.startswith("error: ") and message in err, (what, err)
    code, out, err = run_cli(capsys, "tune", "eval", "images", "--remote", "http://127.0.0.1:9", *base)
    assert code == 2 and "set up an engine in this process, not the one at --remote" in err
