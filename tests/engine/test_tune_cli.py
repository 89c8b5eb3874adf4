"""`python -m engine tune ...`: one JSON line on success, exit 2 and one line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.tune.bench import make_shapes
from tests.conftest import make_data_dir


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_models) -> list[str]:
    data_dir = make_data_dir(tmp_path_factory.mktemp("tune-cli"), tiny_models)
    return ["--profile", "tiny", "--data-dir", str(data_dir), "--device", "cpu"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


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
                             "--batch-size", "8", "--accumulate", "2", "--lr", "1e-3", "--scenario", "text_lora",
                             *base)  # fmt: skip
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
