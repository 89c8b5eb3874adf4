"""The Studio's ControlNet rows (one by default; add up to 3, each with its type, weight, range and map preview;
remove them again) and depth's place (a drawn sketch has no depth: it says so, and follows the image started from),
through AppTest in Local and Remote mode."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.metadata import read_png
from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, texts
from tests.pages.test_app import generate, studio

QUICK = {"steps": 1, "size": 256, "seed_locked": True, "style_mode": "None", "prompt": "a timber cabin"}


def photo() -> bytes:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    return png(Image.fromarray(small).resize((128, 128), Image.Resampling.BICUBIC))


def captions(at) -> list[str]:
    return [c for img in at.image for c in img.captions if c.startswith("What ControlNet")]


def test_controlnet_rows_add_depth_from_the_start_image_and_render_both(app_env):
    at = studio(app_env, sketch_override=png(line_sketch(128, 128)), **QUICK)
    assert captions(at) == ["What ControlNet will follow (lines)"]  # the one row, as simple as before
    assert not [s for s in at.slider if s.key and s.key.startswith("cn_")]

    at = ok(next(b for b in at.button if b.key == "cn_add").click().run())
    (row,) = at.session_state["control_rows"]
    at.selectbox(key=f"cn_type_{row}").set_value("depth").run()
    at.slider(key=f"cn_weight_{row}").set_value(0.5).run()
    ok(at)
    assert any("a drawn sketch has no depth" in w.value for w in at.warning)  # depth on a drawing: said

    # the render started from follows depth instead of the drawing (Start from this keeps its geometry)
    at.session_state["init_image"], at.session_state["init_on"] = photo(), True
    at = ok(at.run())
    assert not any("no depth" in w.value for w in at.warning)
    assert "Depth follows the image you start from" in texts(at)
    assert captions(at) == ["What ControlNet will follow (lines)", "What ControlNet 2 will follow (depth)"]

    at = ok(generate(at))
    meta = at.session_state["result"].metadata
    units = meta["params"]["controls"]
    assert [(u["type"], u["weight"]) for u in units] == [("canny", 1.5), ("depth", 0.5)]
    assert units[1]["image_hash"] == meta["init_hash"]  # depth of the start image, not of the drawing
    kept = read_png(app_env.data / "outputs" / meta["created_at"][:10] / f"{meta['run_id']}-0.png")
    assert kept["params"]["controls"] == units

    at = ok(next(b for b in at.button if b.key == f"cn_remove_{row}").click().run())
    assert at.session_state["control_rows"] == [] and captions(at) == ["What ControlNet will follow (lines)"]

    # the History's Restore brings both rows back, with their weights
    at.switch_page("pages/history.py").run()
    at = ok(next(b for b in at.button if b.label == "Restore").click().run())
    assert at.title[0].value == "Studio"
    (restored,) = at.session_state["control_rows"]
    assert (at.session_state["control"], at.session_state["structure"]) == ("canny", 1.5)
    assert at.selectbox(key=f"cn_type_{restored}").value == "depth"
    assert at.slider(key=f"cn_weight_{restored}").value == 0.5


def test_at_most_three_rows(app_env):
    at = studio(app_env, sketch_override=png(line_sketch(128, 128)))
    for _ in range(2):
        at = ok(next(b for b in at.button if b.key == "cn_add").click().run())
    assert len(at.session_state["control_rows"]) == 2
    assert not [b for b in at.button if b.key == "cn_add"]  # three in all: no more to add
    assert [s.key for s in at.slider if s.key and s.key.startswith("cn_range_")] == [
        f"cn_range_{r}" for r in at.session_state["control_rows"]
    ]
    assert len(captions(at)) == 3
