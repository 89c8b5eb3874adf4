"""Depth and tile ControlNets, and several ControlNets at once, through the interface on the tiny profile: what each
render records (the PNG's own metadata, its A1111 `parameters`, the sidecar and the history row say the same), the
depth map made engine-side (the preview operation locally and over HTTP), and the CLI's repeatable `--control`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.errors import BadInput
from engine.metadata import read_png
from engine.remote import RemoteEngine
from engine.schema import GenerateRequest
from tests.conftest import TOKEN, Server, line_sketch, make_data_dir, make_engine, png

SIZE = 64


def photo(seed: int = 3) -> bytes:
    """A 'photo': smooth colour blobs, no drawing."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    return png(Image.fromarray(small).resize((96, 96), Image.Resampling.BICUBIC))


def request(**kw) -> GenerateRequest:
    values = {"prompt": "a timber cabin", "seed": 5, "size": SIZE, "steps": 2, "use_style": False, **kw}
    return GenerateRequest.build(**values)


@pytest.fixture(scope="module")
def eng(tmp_path_factory, tiny_models):
    engine = make_engine(make_data_dir(tmp_path_factory.mktemp("data"), tiny_models, warm=True))
    yield engine
    engine.close()


def everywhere(engine, result) -> dict:
    """The run's metadata as its PNG, its sidecar and its history row hold it, checked to be the same."""
    [path] = sorted(Path(engine.settings.data_dir).glob(f"outputs/*/{result.run_id}-0.png"))
    in_png = read_png(path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    row = engine.history.get(result.run_id).metadata
    assert in_png == sidecar
    assert {k: v for k, v in in_png.items() if k not in ("seed", "index", "metrics")} == {
        k: v for k, v in row.items() if k not in ("seed", "index", "metrics")
    }
    return in_png


def parameters(result) -> str:
    with Image.open(io.BytesIO(result.png[0])) as im:
        return im.text["parameters"]


@pytest.mark.parametrize("control", ["depth", "tile"])
def test_depth_and_tile_render_from_a_photo_and_record_their_type(eng, control):
    result = eng.generate(request(sketch=photo(), control=control))
    meta = everywhere(eng, result)
    assert meta["params"]["control"] == control and meta["edge_mode"] == control
    assert meta["params"]["controls"] == [
        {"type": control, "weight": 1.5, "start": 0.0, "end": 1.0, "image_hash": None, "module": control}
    ]
    folder = {"depth": "control_v11f1p_sd15_depth", "tile": "control_v11f1e_sd15_tile"}[control]
    assert meta["models"]["controlnet"].endswith(folder) and meta["models"]["controlnets"] == [
        meta["models"]["controlnet"]
    ]
    # the depth map comes from the engine's depth estimator, named in the record; tile needs no model
    estimator = meta["models"]["depth_estimator"]
    assert (estimator or "").endswith("Depth-Anything-V2-Small-hf") == (control == "depth")
    assert f'ControlNet 0: "Module: {control}, Model: {folder}, Weight: 1.5' in parameters(result)
    assert "edge_f1" not in meta["metrics"]  # edge fidelity is for line maps, not a depth map or an image
    assert result.edges is not None  # the map it followed, for the result view
    assert eng.capabilities().loaded[f"controlnet_{control}"]
    assert control in eng.capabilities().controls


def test_two_controlnets_at_once_record_both_with_their_weights(eng):
    units = [{"type": "canny", "weight": 1.0}, {"type": "depth", "weight": 0.5, "start": 0.0, "end": 0.6}]
    result = eng.generate(request(sketch=photo(), controls=units))
    meta = everywhere(eng, result)
    assert [(u["type"], u["weight"], u["start"], u["end"]) for u in meta["params"]["controls"]] == [
        ("canny", 1.0, 0.0, 1.0), ("depth", 0.5, 0.0, 0.6),
    ]  # fmt: skip
    assert (meta["params"]["control"], meta["params"]["structure_strength"]) == ("canny", 1.0)  # the first one's
    text = parameters(result)
    assert (
        'ControlNet 0: "Module: canny, Model: sd-controlnet-canny, Weight: 1, Guidance Start: 0, Guidance End: 1"'
        in text
    )
    assert 'ControlNet 1: "Module: depth, Model: control_v11f1p_sd15_depth, Weight: 0.5, Guidance Start: 0, ' in text
    assert "edge_f1" in meta["metrics"]  # the first map is edges: measured against them
    # the second ControlNet changes the render; the same request gives the same pixels again
    one = eng.generate(request(sketch=photo(), controls=units[:1]))
    assert not np.array_equal(np.asarray(one.images()[0]), np.asarray(result.images()[0]))
    again = eng.generate(request(sketch=photo(), controls=units))
    assert np.array_equal(np.asarray(again.images()[0]), np.asarray(result.images()[0]))
    # a unit's own image is kept by its hash, beside the sketch
    own = eng.generate(request(sketch=png(line_sketch(96, 96)), controls=[units[0], {**units[1], "image": photo(4)}]))
    kept = everywhere(eng, own)["params"]["controls"][1]["image_hash"]
    assert kept and (Path(eng.settings.data_dir) / "sketches" / f"{kept}.png").is_file()


def test_tile_restyles_a_render_at_a_low_strength(eng):
    """The upscaler's refine and a detail-preserving re-style: a start image, the tile ControlNet, a low strength."""
    start = eng.generate(request(sketch=photo()))
    tiled = eng.generate(request(init_image=start.png[0], control="tile", strength=0.3))
    meta = everywhere(eng, tiled)
    assert meta["kind"] == "img2img" and meta["params"]["control"] == "tile" and meta["params"]["strength"] == 0.3
    assert np.abs(np.asarray(tiled.images()[0]).astype(int) - np.asarray(start.images()[0]).astype(int)).mean() < 40


def test_the_depth_preview_is_made_on_the_engine_locally_and_over_http(eng):
    local = eng.renders.control_preview(photo(), control="depth")
    assert (local.used, local.width, local.height) == ("depth", 96, 96)
    assert len(np.unique(np.asarray(local.image()))) > 8  # a continuous map, not edges
    with Server(eng) as server:
        remote = RemoteEngine(server.url, TOKEN).renders.control_preview(photo(), control="depth")
    assert remote.png == local.png  # the same map, made where the model is
    with pytest.raises(BadInput, match="ControlNet 'depthy' is unknown"):
        eng.renders.control_preview(photo(), control="depthy")


def test_the_cli_takes_several_controlnets_with_their_weights(eng, capsys, tmp_path):
    sketch = tmp_path / "photo.png"
    sketch.write_bytes(photo())
    base = ["generate", "--profile", "tiny", "--data-dir", str(eng.settings.data_dir), "--sketch", str(sketch),
            "--size", "64", "--steps", "2", "--prompt", "a cabin", "--no-style"]  # fmt: skip
    assert main([*base, "--control", "canny:1.0", "--control", "depth:0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(u["type"], u["weight"]) for u in report["controls"]] == [("canny", 1.0), ("depth", 0.5)]
    assert read_png(Path(report["output"]))["params"]["controls"][1]["weight"] == 0.5
    assert main([*base, "--control", "tile"]) == 0
    assert json.loads(capsys.readouterr().out)["control"] == "tile"
    for bad, said in (("depthy", "ControlNet 'depthy' is unknown"), ("depth:x", "not a number"),
                      ("depth:1:0.5", "TYPE:WEIGHT:START:END")):  # fmt: skip
        assert main([*base, "--control", bad]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_sweep_varies_the_controlnet_type_as_one_more_axis(eng):
    job = eng.sweeps.start(request(sketch=photo()), [1.0], [0.5], [2], controls=["canny", "tile"])
    sweep = eng.sweeps.get(eng.follow(job).result["batch"])
    assert [(c["control"], c["structure_strength"]) for c in sweep["cells"]] == [("canny", 1.0), ("tile", 1.0)]
    assert [r["control"] for r in sweep["table"]] == ["canny", "tile"]
    assert sweep["sets"][1].endswith("structure 1 · style 0.5 · 2 steps · tile")
    runs = [eng.history.get(c["run_id"]).metadata for c in sweep["cells"]]
    assert [m["params"]["control"] for m in runs] == ["canny", "tile"] and {m["seed"] for m in runs} == {5}
    with pytest.raises(BadInput, match="ControlNet 'edges' is unknown|control"):
        eng.sweeps.start(request(sketch=photo()), [1.0], [0.5], controls=["edges"])
