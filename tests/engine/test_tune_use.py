"""`tune use`: retrieval switches to a tuned adapter (ranks change, metadata names it) and back (ranks exact)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import BadInput
from engine.schema import GenerateRequest
from engine.tune.bench import make_shapes
from engine.tune.data import prepare
from engine.tune.train import TrainConfig, train
from tests.conftest import line_sketch, make_engine, png

QUERIES = ["warm walnut wood", "neon city at night", "pale watercolor wash", "a red circle", "blueprint lines"]


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, tiny_models) -> Path:
    """A short dual_lora run on coloured shapes with the tiny CLIP."""
    from engine.settings import Settings
    from tests.conftest import make_data_dir

    root = tmp_path_factory.mktemp("tune-use")
    data = make_data_dir(root / "engine-data", tiny_models, warm=True)
    captions = make_shapes(root / "shapes", per_class=6)
    prepare(root / "shards", images=root / "shapes", captions=captions, shard_size=32)
    settings = Settings(profile="tiny", data_dir=data, device="cpu")
    config = TrainConfig(epochs=2, min_steps=0, batch_size=8, lr=5e-3, val_split="none")  # short; the last epoch
    train(root / "shards", root / "run", settings, config, device="cpu")
    return root / "run"


def ranks(engine) -> list[list[tuple[str, float]]]:
    return [[(h.name, round(h.score, 6)) for h in engine.styles.search(text=q, k=8)] for q in QUERIES]


def test_use_switches_retrieval_and_back_exactly(fresh_engine, tuned_run, tmp_path):
    engine = fresh_engine
    base = ranks(engine)
    assert engine.retrieval.label() == "base CLIP"

    switched = engine.retrieval.use(tuned_run)
    assert switched["changed"] and switched["retrieval"]["name"] == "run"
    assert switched["styles"]["embedded"] == len(engine.styles.list(include_hidden=True))
    tuned = ranks(engine)
    assert tuned != base  # the tuned model scores the styles differently
    assert any([n for n, _ in t] != [n for n, _ in b] for t, b in zip(tuned, base, strict=True))  # and ranks them so
    assert engine.retrieval.label() == "tuned: run (dual_lora)"

    # every result names the adapter that retrieved its style
    result = engine.generate(
        GenerateRequest.build(prompt="a walnut chair", sketch=png(line_sketch()), steps=1, size=64)
    )
    assert result.metadata["models"]["retrieval_adapter"]["name"] == "run"
    assert result.metadata["models"]["retrieval_adapter"]["scenario"] == "dual_lora"

    # the choice persists: a new process over the same data folder retrieves with the adapter
    again = make_engine(engine.data_dir)
    assert ranks(again) == tuned and again.retrieval.label().startswith("tuned")

    back = engine.retrieval.use(None)
    assert back["changed"] and back["styles"] == {"embedded": 0, "removed": 0, "hidden_changed": 0}
    assert back["history"]["embedded"] == 1  # the render made while tuned joins the base index
    assert ranks(engine) == base  # exactly the base ranks and scores
    plain = engine.generate(GenerateRequest.build(prompt="a walnut chair", steps=1, size=64))
    assert plain.metadata["models"]["retrieval_adapter"] is None


def test_changes_made_while_tuned_follow_the_switch_back(fresh_engine, tuned_run):
    from PIL import Image

    engine = fresh_engine
    engine.retrieval.use(tuned_run)
    engine.styles.add(png(Image.new("RGB", (64, 64), (20, 90, 40))), "Moss", tags=["green"])
    engine.styles.hide("Terrazzo")
    back = engine.retrieval.use(None)
    assert back["styles"] == {"embedded": 1, "removed": 0, "hidden_changed": 1}
    names = {s.name: s.hidden for s in engine.styles.list(include_hidden=True)}
    assert names["Moss"] is False and names["Terrazzo"] is True
    assert engine.retrieval.use(None)["changed"] is False  # already on the base


def test_use_refuses_a_folder_without_an_adapter(fresh_engine, tmp_path):
    with pytest.raises(BadInput, match="is not a folder"):
        fresh_engine.retrieval.use(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="holds no trained adapter"):
        fresh_engine.retrieval.use(tmp_path / "empty")


def test_the_arena_compares_base_and_tuned_top4_blind(fresh_engine, tuned_run):
    import random

    engine = fresh_engine
    contest = engine.retrieval.contest(engine.arena.store, tuned_run, QUERIES + ["", "  ", QUERIES[0]], k=4)
    assert (contest["a_set"], contest["b_set"]) == ("base CLIP", "tuned: run")
    assert contest["pairs"] == len(QUERIES)  # blank and repeated queries dropped
    pairs = engine.arena.pairs(contest["id"])
    for p in pairs:
        query = p["match_key"].split("|")[1]
        assert [s["name"] for s in p["a"]["styles"]] == [h.name for h in engine.styles.search(text=query, k=4)]
        assert len(p["b"]["styles"]) == 4
        assert p["left"] in (p["a"], p["b"]) and p["right"] in (p["a"], p["b"]) and p["left"] != p["right"]
    assert engine.retrieval.label() == "base CLIP"  # comparing does not switch
    rng = random.Random(0)
    for p in pairs:
        engine.arena.vote(contest["id"], p["position"], rng.choice(["left", "right", "tie"]))
    stats = engine.arena.stats(contest["id"])
    assert stats["votes"] == len(QUERIES) and stats["a_wins"] + stats["b_wins"] + stats["ties"] == len(QUERIES)
    with pytest.raises(BadInput, match="at least one query"):
        engine.retrieval.contest(engine.arena.store, tuned_run, [" "])


def test_cli_tune_use_and_back(tuned_run, tmp_path, tiny_models, capsys):
    """`tune eval NAME`, then `tune use NAME` and `tune use --base`: the adapter is one the engine holds (here
    placed in its data folder as `tune train --name run` would leave it)."""
    import json
    import shutil

    from engine.cli import main
    from tests.conftest import make_data_dir

    data = make_data_dir(tmp_path / "cli-data", tiny_models, warm=True)
    shutil.copytree(tuned_run, data / "runs" / "tune" / "runs" / "run")
    common = ["--profile", "tiny", "--data-dir", str(data), "--device", "cpu"]
    assert main(["tune", "use", "run", *common]) == 2  # not measured yet: refused in one line
    assert "has no recall scores" in capsys.readouterr().err
    assert main(["tune", "eval", "run", *common]) == 0
    assert json.loads(capsys.readouterr().out)["adapter"] == "run"
    assert main(["tune", "use", "run", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] and out["retrieval_now"] == "tuned: run (dual_lora)" and out["styles"]["embedded"] >= 12
    assert main(["tune", "use", "--base", *common]) == 0
    assert json.loads(capsys.readouterr().out)["retrieval_now"] == "base CLIP"
    for args, message in (([], "tune use takes an ADAPTER"), (["nope"], "no adapter 'nope'"),
                          ([str(tmp_path)], "is not an adapter name")):  # fmt: skip
        assert main(["tune", "use", *args, *common]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
