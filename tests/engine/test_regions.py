"""Regions: SAM2 masks through the tiny profile, polygons, and per-region styles through IP-Adapter masks."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.errors import BadInput
from engine.masks import fill_polygons, mask_png, overlay, polygons, rle_decode, rle_encode
from engine.metadata import read_png
from engine.schema import GenerateRequest
from tests.conftest import line_sketch, make_data_dir, png


def _mask(w: int, h: int, box: tuple[slice, slice]) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[box] = True
    return m


# ---- masks, polygons, RLE --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["disc", "ring-ish", "two blobs"])
def test_polygons_cover_a_known_mask_within_two_percent(shape):
    canvas = np.zeros((240, 320), np.uint8)
    if shape == "disc":
        cv2.circle(canvas, (160, 120), 70, 1, -1)
    elif shape == "ring-ish":
        cv2.ellipse(canvas, (160, 120), (120, 60), 20, 0, 300, 1, -1)
    else:
        cv2.rectangle(canvas, (20, 30), (110, 200), 1, -1)
        cv2.circle(canvas, (230, 120), 50, 1, -1)
    mask = canvas.astype(bool)
    polys = polygons(mask)
    assert len(polys) == (2 if shape == "two blobs" else 1)
    filled = fill_polygons(polys, (320, 240))
    assert abs(int(filled.sum()) - int(mask.sum())) / mask.sum() < 0.02
    assert (filled & mask).sum() / (filled | mask).sum() > 0.98
    # simplified: far fewer vertices than boundary pixels
    assert (
        sum(len(p) for p in polys)
        < 0.5 * cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0].shape[0]
    )


def test_rle_round_trips_and_is_column_major():
    mask = _mask(5, 4, (slice(1, 3), slice(2, 4)))
    rle = rle_encode(mask)
    assert rle == {"size": [4, 5], "counts": [9, 2, 2, 2, 5]}
    assert np.array_equal(rle_decode(rle), mask)
    full = np.ones((3, 3), bool)
    assert rle_encode(full)["counts"] == [0, 9]
    with pytest.raises(BadInput, match="add up to"):
        rle_decode({"size": [3, 3], "counts": [1, 2]})


def test_overlay_tints_each_region_in_its_colour():
    img = Image.new("RGB", (40, 20), "white")
    left, right = _mask(40, 20, (slice(None), slice(0, 20))), _mask(40, 20, (slice(None), slice(20, 40)))
    out = np.asarray(overlay(img, [left, right]))
    assert out[10, 10, 0] > out[10, 10, 2]  # region 1 is red
    assert out[10, 30, 2] > out[10, 30, 0]  # region 3 would be blue; region 2 is green
    assert out[10, 30, 1] > out[10, 30, 0]


# ---- SAM2 in the engine ---------------------------------------------------------------------------------


def test_a_point_prompt_gives_a_mask_of_the_inputs_size(engine):
    sketch = png(line_sketch(200, 150))
    found = engine.renders.segment(sketch, [[60, 80]])
    assert found.mask().shape == (150, 200) and found.mask().dtype == bool
    assert found.mask().any() and 0.0 <= found.score <= 1.0
    assert found.polygons and all(len(p) >= 3 for p in found.polygons)
    again = engine.renders.segment(sketch, [[60, 80]])
    assert np.array_equal(again.mask(), found.mask())  # same image, same click, same mask (cached embedding)
    boxed = engine.renders.segment(sketch, box=[20, 20, 120, 140])
    assert boxed.mask().shape == (150, 200)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"points": [[200, 10]]}, r"the point \(200, 10\) is outside the image, which is 200×150"),
        ({"points": [[-1, 10]]}, "outside the image"),
        ({"box": [50, 50, 40, 100]}, "x0 < x1"),
        ({}, "needs a point or a box"),
        ({"points": [[10, 10]], "labels": [1, 0]}, "one label per point"),
    ],
)
def test_bad_prompts_are_one_line_errors(engine, kw, message):
    with pytest.raises(BadInput, match=message):
        engine.renders.segment(png(line_sketch(200, 150)), **kw)


def test_automatic_masks_carry_polygons_scores_and_concepts(engine):
    from engine.masks import rle_decode

    found = engine.renders.analyze(png(line_sketch(200, 150)), ["a house", "a tree"], k=2, grid=4, threshold=0.0)
    seg = found["segmentation"]
    assert (seg["width"], seg["height"]) == (200, 150)
    assert 1 <= len(seg["masks"]) <= 16
    scores = [s["score"] for s in seg["masks"]]
    assert scores == sorted(scores, reverse=True)
    masks = [rle_decode(s["rle"]) for s in seg["masks"]]
    for s, mask in zip(seg["masks"], masks, strict=True):
        assert mask.shape == (150, 200) and s["polygons"]
        assert {c["concept"] for c in s["concepts"]} == {"a house", "a tree"}
    # no two kept masks are near duplicates
    for i, a in enumerate(masks):
        for b in masks[i + 1 :]:
            assert (a & b).sum() / (a | b).sum() <= 0.7
    none = engine.renders.analyze(png(line_sketch(200, 150)), grid=4, threshold=1.01)
    assert none["segmentation"]["masks"] == []


# ---- per-region styles ----------------------------------------------------------------------------------


@pytest.fixture
def two_regions():
    sketch = line_sketch(96, 64)
    left = _mask(96, 64, (slice(None), slice(0, 48)))
    bottom_right = _mask(96, 64, (slice(32, None), slice(48, None)))
    return sketch, left, bottom_right


def _attention_spy(engine):
    """Record what the UNet's cross-attention receives (the real processors still run): measures an internal, the
    masks the pipeline hands the attention."""
    seen = []
    attn = engine.executor.generator("sd15").pipe.unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2
    handle = attn.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("ip_adapter_masks")), with_kwargs=True
    )
    return seen, handle


def test_two_regions_retrieve_two_references_and_reach_the_attention(fresh_engine, two_regions):
    engine = fresh_engine
    sketch, left, bottom_right = two_regions
    words = ["walnut", "terrazzo"]
    request = GenerateRequest.build(
        prompt="a living room",
        sketch=png(sketch),
        seed=5,
        steps=2,
        size=64,
        regions=[{"mask": mask_png(left), "words": words[0]}, {"mask": mask_png(bottom_right), "words": words[1]}],
    )
    seen, handle = _attention_spy(engine)
    try:
        result = engine.generate(request)
    finally:
        handle.remove()

    # each region's reference is the library's nearest style to its own words
    expected = [engine.styles.search(text=w, k=1)[0].name for w in words]
    assert [r["style"]["name"] for r in result.regions] == expected
    assert len(set(expected)) == 2

    # the pipeline's attention got three masks: the global style's (the rest) and one per region
    masks = [m for m in seen if m is not None]
    assert masks, "no IP-Adapter masks reached the attention"
    tensor = masks[0][0]
    w, h = result.images()[0].size
    assert tuple(tensor.shape) == (1, 3, h, w)
    scaled = [
        np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        for m in (left, bottom_right)
    ]
    assert np.array_equal(tensor[0, 1].numpy() > 0.5, scaled[0])
    assert np.array_equal(tensor[0, 2].numpy() > 0.5, scaled[1])
    assert np.array_equal(tensor[0, 0].numpy() > 0.5, ~(scaled[0] | scaled[1]))

    # PNG metadata, sidecar and history keep both regions: masks, words, styles and scores
    [path] = Path(engine.settings.data_dir).glob(f"outputs/*/{result.run_id}-0.png")  # the folder the test gave it
    for meta in (
        read_png(path),
        json.loads(path.with_suffix(".json").read_text()),
        engine.history.get(result.run_id).metadata,
    ):
        regions = meta["regions"]
        assert [r["words"] for r in regions] == words
        assert [r["style"]["name"] for r in regions] == expected
        assert all(isinstance(r["style"]["score"], float) and len(r["style_similarity"]) == 1 for r in regions)
        assert np.array_equal(rle_decode(regions[0]["mask"]), scaled[0])
        assert np.array_equal(rle_decode(regions[1]["mask"]), scaled[1])

    # Restore: the same request back from the metadata gives the same pixels
    again = engine.generate(GenerateRequest.from_metadata(result.metadata, png(sketch)))
    assert np.array_equal(np.asarray(again.images()[0]), np.asarray(result.images()[0]))
    # and the regions matter: without them the render differs
    plain = engine.generate(request.model_copy(update={"regions": []}))
    assert not np.array_equal(np.asarray(plain.images()[0]), np.asarray(result.images()[0]))


def test_an_explicit_region_style_is_used_as_named(fresh_engine, two_regions):
    sketch, left, _ = two_regions
    request = GenerateRequest.build(
        prompt="a chair", sketch=png(sketch), seed=1, steps=1, size=64,
        regions=[{"mask": mask_png(left), "style": "Terrazzo"}],
    )  # fmt: skip
    result = fresh_engine.generate(request)
    assert [r["style"]["name"] for r in result.regions] == ["Terrazzo"]


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (lambda: mask_png(np.zeros((64, 96), bool)), "region 1's mask is empty"),
        (lambda: mask_png(np.ones((10, 10), bool)), r"region 1's mask is 10×10 but must be 96×64"),
        (lambda: b"not an image at all", "region 1's mask"),
    ],
)
def test_bad_region_masks_are_clean_errors(engine, two_regions, mask, message):
    sketch, _, _ = two_regions
    request = GenerateRequest.build(prompt="a chair", sketch=png(sketch), steps=1, size=64,
                                    regions=[{"mask": mask(), "words": "oak"}])  # fmt: skip
    with pytest.raises(BadInput, match=message):
        engine.generate(request)


def test_a_region_without_words_or_style_and_a_covered_region_are_refused(engine, two_regions):
    sketch, left, _ = two_regions
    with pytest.raises(BadInput, match=r"^region 1: needs words \(e.g. .walnut veneer.\) or a style"):
        GenerateRequest.build(prompt="a chair", regions=[{"mask": mask_png(left), "words": "  "}])
    covered = GenerateRequest.build(
        prompt="a chair", sketch=png(sketch), steps=1, size=64,
        regions=[{"mask": mask_png(left), "words": "oak"}, {"mask": mask_png(left), "words": "steel"}],
    )  # fmt: skip
    with pytest.raises(BadInput, match="region 1 is entirely covered by a later region"):
        engine.generate(covered)


# ---- the CLI ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory, tiny_models) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("regions-cli"), tiny_models, warm=True)


def test_cli_segment_writes_the_mask_and_prints_polygons(cli_data, tmp_path, capsys):
    image = tmp_path / "sketch.png"
    image.write_bytes(png(line_sketch(200, 150)))
    out = tmp_path / "mask.png"
    code = main(["segment", str(image), "--point", "60,80", "--out", str(out), "--profile", "tiny",
                 "--data-dir", str(cli_data)])  # fmt: skip
    printed, err = capsys.readouterr()
    assert code == 0, err
    found = json.loads(printed)
    assert (found["width"], found["height"]) == (200, 150) and found["polygons"]
    with Image.open(out) as im:
        assert im.size == (200, 150) and im.mode == "L"

    # the mask feeds `generate --region` as is
    code = main(["generate", "--sketch", str(image), "--prompt", "a sofa", "--region", f"{out}=walnut",
                 "--steps", "1", "--size", "64", "--profile", "tiny", "--data-dir", str(cli_data)])  # fmt: skip
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert [r["words"] for r in json.loads(printed)["regions"]] == ["walnut"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--point", "999,10"], "error: the point (999, 10) is outside the image, which is 200×150; click inside it"),
        (["--point", "5"], "error: --point takes 2 comma-separated numbers, e.g. --point 120,80 (got '5')"),
        (["--box", "1,2,3"], "error: --box takes 4 comma-separated numbers"),
        ([], "error: segmenting needs a point or a box on the image"),
    ],
)
def test_cli_segment_bad_input_exits_2_with_one_line(cli_data, tmp_path, capsys, args, message):
    image = tmp_path / "sketch.png"
    image.write_bytes(png(line_sketch(200, 150)))
    code = main(["segment", str(image), *args, "--profile", "tiny", "--data-dir", str(cli_data)])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip().startswith(message) and len(err.strip().splitlines()) == 1


def test_cli_generate_region_errors_exit_2(cli_data, tmp_path, capsys):
    image = tmp_path / "sketch.png"
    image.write_bytes(png(line_sketch(96, 64)))
    small = tmp_path / "small.png"
    small.write_bytes(mask_png(np.ones((10, 10), bool)))
    empty = tmp_path / "empty.png"
    empty.write_bytes(mask_png(np.zeros((64, 96), bool)))
    base = ["generate", "--sketch", str(image), "--prompt", "a sofa", "--steps", "1", "--size", "64",
            "--profile", "tiny", "--data-dir", str(cli_data)]  # fmt: skip
    for region, message in [
        (str(image), "--region takes MASK.png=WORDS or MASK.png=style:NAME"),
        (f"{small}=oak", "region 1's mask is 10×10 but must be 96×64"),
        (f"{empty}=oak", "region 1's mask is empty"),
        (f"{tmp_path / 'missing.png'}=oak", "missing.png"),
    ]:
        code = main([*base, "--region", region])
        _, err = capsys.readouterr()
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_regions_work_with_variations_style_only_and_text_to_image(engine):
    left = _mask(96, 64, (slice(None), slice(0, 40)))
    varied = engine.generate(
        GenerateRequest.build(
            prompt="a sofa",
            sketch=png(line_sketch()),
            steps=1,
            size=64,
            variations=2,
            style_only=True,
            regions=[{"mask": mask_png(left), "words": "walnut"}],
        )  # fmt: skip
    )
    assert len(varied.images()) == 2 and len(varied.regions[0]["style_similarity"]) == 2
    square = _mask(64, 64, (slice(10, 40), slice(10, 40)))
    text_only = engine.generate(
        GenerateRequest.build(
            prompt="a sofa", steps=1, size=64, use_style=False, regions=[{"mask": mask_png(square), "words": "walnut"}]
        )  # fmt: skip
    )
    assert text_only.images()[0].size == (64, 64) and text_only.metadata["styles"] == []
    assert text_only.regions[0]["style"]["name"] == engine.styles.search(text="walnut", k=1)[0].name
