"""What happens to a designer's file before it reaches the model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.errors import BadInput
from engine.images import decode, edges, fit_size, is_line_art
from tests.conftest import line_sketch, png

LIMIT = 64_000_000


def test_canvas_rgba_strokes_on_transparency_become_dark_on_white():
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    img.putpixel((5, 5), (0, 0, 0, 255))
    out = decode(png(img), LIMIT)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((5, 5)) == (0, 0, 0)


def test_jpeg_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode(buf.getvalue(), LIMIT).size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "P", "LA", "I;16"])
def test_grayscale_palette_and_16_bit_decode_to_rgb(mode):
    base = Image.new("L", (16, 16), 200)
    img = base.convert(mode) if mode != "I;16" else Image.fromarray(np.full((16, 16), 51400, dtype=np.uint16))
    out = decode(png(img), LIMIT)
    assert out.mode == "RGB" and out.size == (16, 16)
    assert abs(out.getpixel((3, 3))[0] - 200) <= 1


def test_webp_is_accepted():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, format="WEBP")
    assert decode(buf.getvalue(), LIMIT).size == (16, 16)


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_gif_bmp_and_tiff_sketches_decode_like_a_png():
    sketch = line_sketch(64, 48)
    want = np.asarray(decode(png(sketch), LIMIT))
    black = Image.new("RGB", sketch.size, "black")
    for data in (
        encoded(sketch, "GIF", save_all=True, append_images=[black]),  # animated: the first frame is the sketch
        encoded(sketch, "BMP"),
        encoded(sketch, "TIFF", save_all=True, append_images=[black]),  # two pages: the first
        encoded(sketch, "TIFF", compression="tiff_lzw"),
    ):
        assert np.array_equal(np.asarray(decode(data, LIMIT)), want)


def test_16_bit_and_float_tiffs_scale_to_8_bit_without_float64():
    ramp16 = Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)  # 0…65535
    out = np.asarray(decode(encoded(ramp16, "TIFF"), LIMIT))[..., 0]
    assert np.array_equal(out.ravel(), np.arange(256))
    ramp_f = Image.fromarray(np.arange(256, dtype=np.float32).reshape(16, 16) / 255)  # 0…1
    out = np.asarray(decode(encoded(ramp_f, "TIFF"), LIMIT))[..., 0]
    assert np.array_equal(out.ravel(), np.arange(256))


def test_a_large_16_bit_image_decodes_within_a_small_multiple_of_its_pixels():
    import tracemalloc

    data = encoded(Image.new("I;16", (3000, 3000), 40000), "PNG")
    tracemalloc.start()
    try:
        out = decode(data, LIMIT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.size == (3000, 3000) and out.getpixel((0, 0)) == (156, 156, 156)
    assert peak < 9_000_000 * 8, f"{peak / 1e6:.0f} MB traced for a 9-megapixel image"  # float64 alone is 72 MB


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"this is a text file, not a picture", "is not an image"),
        (png(line_sketch())[:200], "truncated or corrupt"),
    ],
)
def test_bad_files_give_one_clear_line(data, message):
    with pytest.raises(BadInput, match=message):
        decode(data, LIMIT)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = png(Image.new("1", (20000, 20000)))
    assert len(bomb) < 200_000  # tiny file, 400 megapixels
    with pytest.raises(BadInput, match="400 megapixels; the limit is 64 megapixels"):
        decode(bomb, LIMIT)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((512, 512), (512, 512)), ((1000, 500), (1024, 512)), ((600, 800), (512, 680)), ((4000, 1000), (1024, 256))],
)
def test_fit_keeps_aspect_short_side_512_multiples_of_8_max_1024(size, expected):
    w, h = fit_size(*size)
    assert (w, h) == expected
    assert w % 8 == 0 and h % 8 == 0


def test_line_sketch_is_used_directly_white_on_black():
    control, mode = edges(line_sketch(), "auto")
    arr = np.asarray(control)
    assert mode == "lines"
    assert arr.shape == (64, 96, 3)
    # strokes are a minority of pixels and white; the page became black
    assert 0 < (arr[..., 0] == 255).mean() < 0.2
    assert arr[0, 0, 0] == 0


def test_photo_goes_through_canny_with_thresholds():
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((128, 128))
    assert not is_line_art(np.asarray(photo.convert("L")))
    loose, mode = edges(photo, "auto", 50, 150)
    strict, _ = edges(photo, "canny", 200, 250)
    assert mode == "canny"
    assert np.asarray(loose).shape == (128, 128, 3)
    assert np.asarray(loose).mean() > np.asarray(strict).mean()


def test_canny_thresholds_out_of_order_are_refused():
    with pytest.raises(BadInput, match="low \\(200\\) must not exceed high \\(100\\)"):
        edges(line_sketch(), "canny", 200, 100)
