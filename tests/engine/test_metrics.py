"""The numbers behind "is it faithful": checked on cases whose answers are known."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from PIL import Image

from engine.embeddings import ClipEmbeddings
from engine.metrics import aggregate, clip_score, edge_fidelity
from tests.conftest import line_sketch


def square(shift: int = 0, size: int = 64) -> np.ndarray:
    edges = np.zeros((size, size), bool)
    edges[16:48, 16 + shift] = edges[16:48, 47 + shift] = True
    edges[16, 16 + shift : 48 + shift] = edges[47, 16 + shift : 48 + shift] = True
    return edges


def test_identical_edges_score_one_disjoint_zero_and_a_small_shift_is_within_tolerance():
    same = edge_fidelity(square(), square())
    assert same["edge_f1"] == 1.0 and same["chamfer"] == 0.0
    disjoint = np.zeros((64, 64), bool)
    disjoint[2, 2] = True
    assert edge_fidelity(square(), disjoint)["edge_f1"] == 0.0
    shifted = edge_fidelity(square(), square(shift=1))
    assert shifted["edge_f1"] == 1.0 and 0 < shifted["chamfer"] <= 1.0
    far = edge_fidelity(square(), square(shift=6))
    assert far["edge_f1"] < 0.6 and far["chamfer"] > 1.0


def test_nothing_against_something_is_zero_and_nothing_against_nothing_is_one():
    empty = np.zeros((64, 64), bool)
    assert edge_fidelity(empty, empty)["edge_f1"] == 1.0
    assert edge_fidelity(square(), empty)["edge_f1"] == 0.0


def test_clip_score_equals_torchmetrics_clipscore_on_the_same_model(engine, tiny_models):
    from torchmetrics.multimodal.clip_score import CLIPScore

    model_dir = str(tiny_models / "clip-vit-base-patch32")
    emb: ClipEmbeddings = engine.retrieval.library.embeddings
    image = line_sketch(64, 64)
    prompt = "a small house with a door"
    ours = clip_score(emb.embed_images([image])[0], emb.embed_query(prompt))
    from transformers import CLIPModel, CLIPProcessor

    class TensorFeatures(torch.nn.Module):
        """torchmetrics 1.9 expects feature tensors; transformers 5 returns outputs holding them."""

        def __init__(self, model):
            super().__init__()
            self.model = model
            self.config = model.config

        def get_image_features(self, *args, **kwargs):
            return self.model.get_image_features(*args, **kwargs).pooler_output

        def get_text_features(self, *args, **kwargs):
            return self.model.get_text_features(*args, **kwargs).pooler_output

    # the same local tiny model, through torchmetrics' own hook for custom models
    reference = CLIPScore(
        model_name_or_path=lambda: (
            TensorFeatures(CLIPModel.from_pretrained(model_dir)),
            CLIPProcessor.from_pretrained(model_dir),
        )
    )
    pixels = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)
    theirs = float(reference(pixels, prompt))
    assert ours == pytest.approx(theirs, abs=0.05)


def test_aggregates_match_numpy_and_statistics():
    data = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    agg = aggregate(data)
    assert agg["n"] == 8
    assert agg["mean"] == pytest.approx(np.mean(data))
    assert agg["median"] == statistics.median(data)
    assert agg["std"] == pytest.approx(np.std(data, ddof=1))
    assert agg["p10"] == pytest.approx(np.percentile(data, 10)) and agg["p90"] == pytest.approx(np.percentile(data, 90))
    assert aggregate([]) == {"n": 0}
    assert aggregate([1.0, float("inf"), None])["n"] == 1


def test_a_render_that_keeps_its_sketch_scores_higher_than_one_that_does_not():
    from engine.images import edges
    from engine.metrics import edge_map

    sketch = line_sketch(96, 64)
    control, _ = edges(sketch, "lines")
    control_edges = np.asarray(control.convert("L")) > 127
    kept = Image.fromarray(255 - np.asarray(control))  # the same drawing, dark on light
    lost = Image.new("RGB", sketch.size, "white")
    assert edge_fidelity(control_edges, edge_map(kept))["edge_f1"] > 0.5
    assert edge_fidelity(control_edges, edge_map(lost))["edge_f1"] == 0.0


def test_recompute_restores_the_numbers_in_history_png_and_sidecar(fresh_engine, sketch_bytes, capsys):
    import json
    from pathlib import Path

    from engine.cli import main
    from engine.metadata import read_png
    from engine.schema import GenerateRequest

    result = fresh_engine.generate(
        GenerateRequest.build(prompt="a reading nook", sketch=sketch_bytes, size=64, steps=2, seed=5, variations=2)
    )
    measured = result.metadata["metrics"]
    stale = {**fresh_engine.history.get(result.run_id).metadata, "metrics": [{}, {}]}
    fresh_engine.history_store.update_metadata(result.run_id, stale)  # the numbers lost, as by an old version

    code = main(["metrics", "--profile", "tiny", "--data-dir", str(fresh_engine.data_dir), "--run", result.run_id])
    assert code == 0 and json.loads(capsys.readouterr().out)["recomputed"] == 1
    row = fresh_engine.history.get(result.run_id).metadata
    assert row["metrics"] == measured
    saved = sorted(Path(fresh_engine.settings.data_dir).glob(f"outputs/*/{result.run_id}-*.png"))  # the test's folder
    assert len(saved) == 2
    for i, path in enumerate(saved):
        assert read_png(Path(path))["metrics"] == measured[i]
        assert json.loads(Path(path).with_suffix(".json").read_text())["metrics"] == measured[i]
        assert read_png(Path(path))["seed"] == 5 + i
