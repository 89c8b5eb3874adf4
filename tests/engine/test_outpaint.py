"""Outpainting: an image extended by pixels on each side, the new border painted by the inpainting pipeline, the image
kept, ControlNet following the image's own edges; the CLI's `--outpaint`, and one line for each wrong request."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from engine import images as imgs
from engine.errors import BadInput
from engine.metadata import read_png
from engine.schema import GenerateRequest
from tests.conftest import REPO, line_sketch, make_data_dir, png


def photo(w: int = 96, h: int = 64, seed: int = 2) -> Image.Image:
    """Smooth colour blobs: something with tones to continue and edges to follow."""
    small = np.random.default_rng(seed).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def far_from_seam(out: np.ndarray, image: np.ndarray, left: int, top: int, margin: int = 8) -> float:
    """Mean absolute difference between the image and where it sits in the output, `margin` pixels in from the seam."""
    h, w = image.shape[:2]
    inside = out[top + margin : top + h - margin, left + margin : left + w - margin].astype(int)
    return float(np.abs(inside - image[margin:-margin, margin:-margin].astype(int)).mean())


@pytest.mark.parametrize(
    ("size", "pads", "expected"),
    [
        ((96, 64), (64, 0, 64, 0), (64, 0, 64, 0)),  # multiples of 8 already
        ((96, 64), (3, 5, 0, 0), (8, 8, 0, 0)),  # only left/top grow: the rounding goes there
        ((101, 62), (10, 10, 10, 10), (10, 10, 17, 16)),  # right/bottom take the rounding
        ((100, 60), (0, 0, 0, 16), (0, 0, 4, 20)),  # an axis not extended still reaches a multiple of 8
    ],
)
def test_each_sides_total_is_rounded_up_to_a_multiple_of_8(size, pads, expected):
    got = imgs.outpaint_pads(size, pads)
    assert got == expected
    assert (size[0] + got[0] + got[2]) % 8 == 0 and (size[1] + got[1] + got[3]) % 8 == 0


def test_the_canvas_holds_the_image_untouched_and_a_border_continuing_its_tones():
    image = photo()
    pads = (40, 8, 200, 0)  # a border wider than the image mirrors the mirror
    canvas, mask = imgs.outpaint_canvas(image, pads)
    a = np.asarray(canvas)
    assert canvas.size == (96 + 240, 72) and mask.shape == (72, 336)
    assert np.array_equal(a[8:72, 40:136], np.asarray(image))
    assert mask.sum() == 336 * 72 - 96 * 64 and not mask[8:72, 40:136].any()
    # next to the image the border takes its edge colours (not a flat grey)
    edge = np.asarray(image)[:, 0].astype(int)
    assert np.abs(a[8:72, 39].astype(int) - edge).mean() < 20


def test_a_render_extended_by_64_each_side_keeps_the_image_and_records_it(engine):
    image = photo()
    result = engine.generate(
        GenerateRequest.build(
            prompt="a cabin", seed=4, steps=2, use_style=False, init_image=png(image), outpaint=[64, 0, 64, 0]
        )  # fmt: skip
    )
    out = np.asarray(result.images()[0])
    assert out.shape == (64, 96 + 128, 3)
    assert far_from_seam(out, np.asarray(image), 64, 0) <= 3
    meta = read_png(io.BytesIO(result.png[0]))
    assert (meta["kind"], meta["params"]["outpaint"], meta["params"]["strength"]) == ("outpaint", [64, 0, 64, 0], 1.0)
    assert meta["init_hash"] and meta["edge_mode"] == "canny"
    with Image.open(io.BytesIO(result.png[0])) as im:
        assert 'Outpaint: "left 64, top 0, right 64, bottom 0"' in im.text["parameters"]
    # the same seed, the same pixels
    again = engine.generate(
        GenerateRequest.build(
            prompt="a cabin", seed=4, steps=2, use_style=False, init_image=png(image), outpaint=[64, 0, 64, 0]
        )  # fmt: skip
    )
    assert np.array_equal(np.asarray(again.images()[0]), out)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"outpaint": [64, 0, 64, 0]}, "outpaint extends an image: give the init image to extend"),
        ({"init_image": b"x", "outpaint": [0, 0, 0, 0]}, "outpaint adds nothing"),
        ({"init_image": b"x", "outpaint": [8, 0, 0, 0], "mask": b"m"}, "leave out the mask"),
        ({"init_image": b"x", "outpaint": [8, 0, 0, 0], "sketch": b"s"}, "leave out the sketch"),
        ({"init_image": b"x", "outpaint": [8, 0, -8, 0]}, "outpaint.2"),
        ({"init_image": b"x", "outpaint": [8, 0, 2000, 0]}, "outpaint.2"),
        ({"init_image": b"x", "outpaint": [8, 0, 8]}, "outpaint"),
        ({"init_image": b"x", "outpaint": [8, 0, 0, 0], "model": "flux"}, "outpaint needs SD 1.5"),
    ],
)
def test_a_wrong_outpaint_request_is_one_line(fields, says):
    with pytest.raises(BadInput) as err:
        GenerateRequest.build(prompt="a cabin", **fields)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_too_large_an_extension_is_refused_before_rendering(engine):
    request = GenerateRequest.build(prompt="a cabin", init_image=png(photo(512, 512)), outpaint=[1024, 0, 1024, 0])
    with pytest.raises(BadInput, match=r"the extended image would be 2560×512; at most 2048 a side"):
        engine.generate(request)


def test_the_cli_extends_an_image_128_px_wider(tmp_path, tiny_models):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    image = photo(64, 64, seed=9)
    (tmp_path / "start.png").write_bytes(png(image))
    (tmp_path / "sketch.png").write_bytes(png(line_sketch(64, 64)))
    base = [sys.executable, "-m", "engine", "generate", "--profile", "tiny", "--data-dir", str(data), "--device",
            "cpu", "--prompt", "a cabin", "--seed", "3", "--steps", "2",
            "--init-image", str(tmp_path / "start.png")]  # fmt: skip
    out = subprocess.run([*base, "--outpaint", "64,0,64,0", "--out", str(tmp_path / "wide.png")], cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["size"] == [192, 64] and report["kind"] == "outpaint"
    with Image.open(tmp_path / "wide.png") as im:
        wide = np.asarray(im.convert("RGB"))
    assert far_from_seam(wide, np.asarray(image), 64, 0) <= 3
    for extra, says in (
        (["--outpaint", "64,0,64"], "--outpaint takes 4 comma-separated numbers"),
        (["--outpaint", "64,0,64,0", "--sketch", str(tmp_path / "sketch.png")], "leave out the sketch"),
    ):
        bad = subprocess.run([*base, *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and says in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
