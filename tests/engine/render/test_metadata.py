"""The metadata kept in every output PNG (engine/metadata.py): our JSON chunk reads back exactly as written, the
`parameters` text other tools read, and what reading gives for a file without it."""

from __future__ import annotations

import pytest
from PIL import Image, UnidentifiedImageError

from engine.metadata import CHUNK, read_png, save_png


def meta(**changes) -> dict:
    """The shape a render records (engine/render/record.py), the parts `parameters` reads included."""
    values = {
        "run_id": "20250101-120000-abcd",
        "prompt": 'ein Kleid in Grün, 北京 — "quoted"',
        "negative_prompt": "blurry",
        "seed": 7,
        "seeds": [7, 8],
        "index": 0,
        "width": 96,
        "height": 64,
        "edge_mode": "lines",
        "canny": [50, 150],
        "params": {
            "steps": 2,
            "scheduler": "unipc",
            "guidance": 7.5,
            "structure_strength": 1.5,
            "style_strength": 0.8,
            "size": 64,
            "mode": "quality",
            "strength": None,
            "loras": [],
        },
        "models": {
            "base": "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "controlnet": "lllyasviel/sd-controlnet-canny",
            "ip_adapter_weight": "ip-adapter_sd15.safetensors",
        },
        "styles": [{"id": "abc", "name": "Walnut", "score": 0.21, "weight": 1.0, "source": "user", "used": True}],
        "metrics": {"clip_score": 21.5, "edge_f1": 0.25},
        "timings": {"denoise": 0.5, "steps": [0.25, 0.25]},
        "measured": True,
    }
    return {**values, **changes}


def image() -> Image.Image:
    return Image.new("RGB", (96, 64), (200, 120, 40))


def test_a_png_written_with_metadata_reads_back_the_same_dict(tmp_path):
    path = tmp_path / "outputs" / "run-0.png"  # its folder is made
    save_png(image(), path, meta())
    assert read_png(path) == meta()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (96, 64) and im.getpixel((5, 5)) == (200, 120, 40)


def test_other_tools_read_the_settings_from_the_parameters_text(tmp_path):
    save_png(image(), tmp_path / "a.png", meta())
    with Image.open(tmp_path / "a.png") as im:
        text = im.text["parameters"]
    assert text == (
        'ein Kleid in Grün, 北京 — "quoted"\n'
        "Negative prompt: blurry\n"
        "Steps: 2, Sampler: UniPC, CFG scale: 7.5, Seed: 7, Size: 96x64, Model: stable-diffusion-v1-5, "
        'ControlNet: "module: lines, model: sd-controlnet-canny, weight: 1.5", '
        'IP-Adapter: "ip-adapter_sd15.safetensors, weight: 0.8", Style: "Walnut (1)", Version: design-studio'
    )


def test_a_png_without_our_metadata_reads_as_empty(tmp_path):
    image().save(tmp_path / "plain.png")
    assert read_png(tmp_path / "plain.png") == {}


def test_an_image_of_another_format_reads_as_empty(tmp_path):
    image().save(tmp_path / "photo.jpg", format="JPEG")
    assert read_png(tmp_path / "photo.jpg") == {}


def test_bytes_that_are_no_image_raise_pils_error(tmp_path):
    (tmp_path / "fake.png").write_bytes(b"%PDF-1.7 not an image")
    with pytest.raises(UnidentifiedImageError):
        read_png(tmp_path / "fake.png")


def test_rewriting_replaces_the_metadata_and_a_failed_write_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "run-0.png"
    save_png(image(), path, meta())
    save_png(image(), path, meta(measured=False))
    assert read_png(path)["measured"] is False
    with pytest.raises(TypeError):  # not JSON: nothing is written
        save_png(image(), path, meta(measured={"a set"}))
    assert read_png(path) == meta(measured=False)
    assert [p.name for p in tmp_path.iterdir()] == ["run-0.png"]  # no temporary file left behind


def test_the_chunk_is_ours_alone(tmp_path):
    save_png(image(), tmp_path / "a.png", meta())
    with Image.open(tmp_path / "a.png") as im:
        assert set(im.text) == {"parameters", CHUNK}
