"""Issue 31: `python -m engine tune prepare|train|eval|use --remote URL --token TOKEN` against a served engine. The
images and captions go up as a zip and a CSV; the dataset and the adapter are named and live on the engine; bad
input is one line and exit 2, as on the engine in this process."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.tune.bench import make_shapes
from tests.conftest import TOKEN, Server, make_data_dir, make_engine


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_models):
    """A tiny engine served on 127.0.0.1 with a token, and its data folder."""
    data_dir = make_data_dir(tmp_path_factory.mktemp("tune-remote"), tiny_models, warm=True)
    with Server(make_engine(data_dir)) as srv:
        yield srv.url, data_dir


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_prepare_train_eval_use_over_remote(capsys, served, tmp_path):
    url, data_dir = served
    remote = ["--remote", url, "--token", TOKEN]
    captions = make_shapes(tmp_path / "shapes", per_class=2)  # 18 tiny captioned images, made here

    code, out, err = run_cli(capsys, "tune", "prepare", "--images", tmp_path / "shapes", "--captions", captions,
                             "--name", "shapes", *remote)  # fmt: skip
    assert code == 0, err
    prepared = json.loads(out)
    assert prepared["dataset"] == "shapes" and prepared["samples"] == 18 and prepared["dropped"] == 0
    assert any(line.startswith("dataset 'shapes': 18 pairs") for line in err.splitlines()), err

    code, out, err = run_cli(capsys, "tune", "train", "shapes", "--name", "shapes-quick", "--epochs", "1",
                             "--min-steps", "0", "--batch-size", "8", *remote)  # fmt: skip
    assert code == 0, err
    trained = json.loads(out)
    assert trained["adapter"] == "shapes-quick" and trained["dataset"] == "shapes" and trained["epochs"] == 1
    assert "adapter 'shapes-quick' trained on dataset 'shapes'" in err.splitlines()
    assert str(data_dir) not in out  # the engine's folders stay the engine's

    code, out, err = run_cli(capsys, "tune", "eval", "shapes-quick", "-k", "1,5", *remote)
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["adapter"] == "shapes-quick" and metrics["split"] == "test" and metrics["samples"] >= 2
    for side in ("base", "tuned"):
        assert set(metrics[side]["text_to_image"]) == {"R@1", "R@5"}
        assert all(0 <= v <= 1 for v in metrics[side]["text_to_image"].values())
    assert metrics["recall_change"] in ("improved", "unchanged", "worse") and metrics["verdict"] in err.splitlines()

    code, out, err = run_cli(capsys, "tune", "use", "shapes-quick", *remote)
    assert code == 0, err
    assert json.loads(out)["retrieval_now"] == "tuned: shapes-quick (dual_lora)"
    code, out, err = run_cli(capsys, "tune", "use", "--base", *remote)
    assert code == 0, err
    assert json.loads(out)["retrieval_now"] == "base CLIP"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "nowhere"], "no dataset 'nowhere'"),
        (["eval", "nothing-trained"], "no adapter 'nothing-trained'"),
        (["use", "nothing-trained"], "no adapter 'nothing-trained'"),
    ],
)
def test_bad_input_over_remote_is_one_line(capsys, served, args, message):
    url, _ = served
    code, out, err = run_cli(capsys, "tune", *args, "--remote", url, "--token", TOKEN)
    assert code == 2, err
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: ") and message in err, err


def test_a_wrong_token_is_one_line(capsys, served, tmp_path):
    url, _ = served
    code, out, err = run_cli(capsys, "tune", "eval", "any", "--remote", url, "--token", "not-the-token")
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
