"""The one SAM2 click widget (ui/clicks.py): a click on the point canvas lands on the same image pixel in the
Regions mode and in the start image's click mask, as the canvas's point tool draws it."""

from __future__ import annotations

import pytest
from PIL import Image

from ui.clicks import RADIUS, STROKE, click_at, fit


def drawn_at(cx: float, cy: float) -> dict:
    """The circle streamlit-drawable-canvas's point tool adds for a click at (cx, cy) on the canvas."""
    return {"type": "circle", "left": cx - (RADIUS + STROKE / 2), "top": cy, "radius": RADIUS, "strokeWidth": STROKE}


@pytest.mark.parametrize("size", [(96, 64), (448, 448), (1600, 900)])
def test_a_click_maps_back_to_the_image_pixel_under_it(size):
    image = Image.new("RGB", size)
    scale, width, height = fit(image)
    assert max(width, height) == 448  # small sketches are shown larger, large photos smaller
    for px, py in [(0, 0), (size[0] // 3, size[1] // 2), (size[0] - 1, size[1] - 1)]:
        x, y = click_at(drawn_at(px * scale, py * scale), scale, size)
        assert (x, y) == pytest.approx((px, py), abs=1e-6)


def test_a_click_past_the_edge_stays_inside_the_image():
    scale, _, _ = fit(Image.new("RGB", (200, 100)))
    assert click_at(drawn_at(-20, 999), scale, (200, 100)) == (0.0, 99.0)
