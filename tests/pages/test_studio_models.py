"""The Studio's image-to-image and inpainting, ControlNet choice, hires fix, the sidebar's checkpoints and LoRAs,
and the gallery's star, in Local and Remote mode, with the page looked at after every result."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.metadata import read_png
from engine.tiny import save_fast_lora
from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, settle, texts


def studio(app_env, **fields):
    at = app_env.app().run()
    for key, value in {"prompt": "a timber cabin", "steps": 2, "size": 256, "seed_locked": True, **fields}.items():
        at.session_state[key] = value
    return ok(at.run())


def click(at, label: str, key_prefix: str | None = None):
    button = next(b for b in at.button if b.label == label and (key_prefix is None or b.key.startswith(key_prefix)))
    return button.click().run()


def generate(at):
    return ok(settle(click(at, "Generate")))


def latest(at):
    return at.session_state["result"]


def test_start_from_a_render_then_inpaint_part_of_it(app_env):
    at = generate(studio(app_env, sketch_override=png(line_sketch(128, 128)), seed=4))
    first = latest(at)
    ok(click(at, "Start from this", f"start_{first.run_id}"))
    assert at.session_state["init_on"] and at.session_state["init_image"] == first.png[0]
    assert any(s.label == "Strength" for s in at.slider)
    at.session_state["strength"] = 0.7
    at.toggle(key="inpaint_on").set_value(True).run()
    assert "Paint or click the part to repaint" in texts(ok(at))
    w, h = first.images()[0].size  # the brush paints at the start image's size
    mask = np.zeros((h, w), bool)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    at.session_state["inpaint_mask"] = png(Image.fromarray(mask.astype(np.uint8) * 255))  # what the brush leaves
    at.session_state["style_mode"] = "From library"
    at.session_state["library_style"] = "Terrazzo"
    at = generate(ok(at.run()))
    assert "Repaints 25 % of the image" in texts(at)
    result = latest(at)
    meta = result.metadata
    assert (meta["kind"], meta["params"]["strength"]) == ("inpaint", 0.7)
    assert [s["name"] for s in meta["styles"] if s["used"]] == ["Terrazzo"]
    out, before = np.asarray(result.images()[0]).astype(int), np.asarray(first.images()[0]).astype(int)
    far = np.ones_like(mask)
    far[h // 4 - 12 : 3 * h // 4 + 12, w // 4 - 12 : 3 * w // 4 + 12] = False
    assert np.array_equal(out[far], before[far])  # the rest of the render is kept
    # both sit in the gallery, newest first
    assert [e["result"].run_id for e in at.session_state["gallery"]][:2] == [result.run_id, first.run_id]


def test_extend_a_render_by_an_aspect_then_by_numbers(app_env):
    """Extend under a render: the panel opens on it, an aspect sets the borders, the render is wider by them, the
    original kept beyond the seam, and the page shows the result without an error (both modes)."""
    at = generate(studio(app_env, sketch_override=png(line_sketch(128, 128)), seed=6))
    first = latest(at)
    ok(click(at, "Extend", f"extend_{first.run_id}"))
    assert at.session_state["init_on"] and at.session_state["extend_on"]
    assert at.session_state["init_image"] == first.png[0] and not any(s.label == "Strength" for s in at.slider)
    w, h = first.images()[0].size
    at.segmented_control(key="extend_aspect").set_value("16:9").run()
    pads = [at.session_state[k] for k in ("extend_left", "extend_top", "extend_right", "extend_bottom")]
    assert pads[1] == pads[3] == 0 and pads[0] + pads[2] == round(h * 16 / 9) - w
    at.session_state["extend_left"], at.session_state["extend_right"] = 64, 64  # then numbers of its own
    at = generate(ok(at.run()))
    result = latest(at)
    meta = result.metadata
    assert (meta["kind"], meta["params"]["outpaint"], meta["params"]["strength"]) == ("outpaint", [64, 0, 64, 0], 1.0)
    out, before = np.asarray(result.images()[0]).astype(int), np.asarray(first.images()[0]).astype(int)
    assert out.shape == (h, w + 128, 3)
    assert np.abs(out[:, 64 + 8 : 64 + w - 8] - before[:, 8:-8]).mean() <= 3  # the original, away from the seam
    assert f"{w + 128}×{h}" in texts(at)


def test_controlnet_choice_and_hires_fix(app_env):
    at = studio(app_env, sketch_override=png(line_sketch(128, 128)))
    at.segmented_control(key="control").set_value("scribble").run()
    assert "Scribble expects a rough drawing" in texts(ok(at))
    at.session_state["hires"] = 1.5
    at = generate(ok(at.run()))
    meta = latest(at).metadata
    assert (meta["params"]["control"], meta["params"]["hires"], meta["width"]) == ("scribble", 1.5, 384)
    assert meta["models"]["controlnet"].endswith("control_v11p_sd15_scribble")
    assert "384×384" in texts(at)


def test_a_lora_from_the_engine_in_the_sidebar_with_its_weight(app_env, tmp_path, tiny_models):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "stable-diffusion-v1-5", subfolder="unet")
    lora = save_fast_lora(unet, tmp_path / "lora", rank=4, scale=0.5)  # shaped for the tiny SD 1.5 UNet
    app_env.engine.renders.add_model("lora", "walnut", lora.read_bytes())
    at = studio(app_env, sketch_override=png(line_sketch(128, 128)))
    picker = at.sidebar.multiselect(key="loras")
    assert picker.options == ["walnut"]
    picker.set_value(["walnut"]).run()
    at.sidebar.slider(key="lora_weight_walnut").set_value(0.6).run()
    at = generate(ok(at))
    meta = latest(at).metadata
    assert meta["params"]["loras"] == [{"name": "walnut", "weight": 0.6}]
    assert read_png(app_env.data / "outputs" / meta["created_at"][:10] / f"{meta['run_id']}-0.png")["params"]["loras"]


def test_star_a_render_in_the_gallery_and_the_text_only_aspect(app_env):
    at = generate(studio(app_env, aspect="16:9"))
    result = latest(at)
    assert (result.metadata["width"], result.metadata["height"]) == (456, 256)  # no sketch: the preset's aspect
    at = ok(click(at, "☆ Star", f"tile_star_{result.run_id}"))
    assert any(b.label == "★ Starred" for b in at.button)
    assert app_env.engine.history.get(result.run_id).starred
