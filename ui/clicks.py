"""The one SAM2 click widget: an image on a point canvas, and where the designer clicked, in the image's own pixels.
The Regions mode and the start image's "Click (SAM2)" mask both use it, so one click lands on the same pixel in both.

The drawable canvas's point tool draws a circle whose left edge sits `radius + strokeWidth / 2` left of the click,
vertically centred on it (originX "left", originY "center"): the click is (left + radius + strokeWidth / 2, top)."""

from __future__ import annotations

from PIL import Image

MAX_CANVAS = 448  # the canvas's longer side in the page's pixels: small images are shown larger, large ones smaller
RADIUS, STROKE = 5, 2


def fit(image: Image.Image) -> tuple[float, int, int]:
    """The canvas scale for `image` and the canvas's width and height."""
    scale = min(MAX_CANVAS / image.width, MAX_CANVAS / image.height)
    return scale, max(1, round(image.width * scale)), max(1, round(image.height * scale))


def click_at(obj: dict, scale: float, size: tuple[int, int]) -> tuple[float, float]:
    """A point-tool circle as the image pixel clicked (kept inside the image)."""
    x = (obj["left"] + obj.get("radius", RADIUS) + obj.get("strokeWidth", STROKE) / 2) / scale
    y = obj["top"] / scale
    return min(max(x, 0.0), size[0] - 1.0), min(max(y, 0.0), size[1] - 1.0)


def clicked(shown: Image.Image, key: str, fill: str) -> tuple[float, float] | None:
    """Show `shown` on a point canvas under `key`; the last click in `shown`'s pixels, or None. The caller changes
    `key` after using a click, so the next run starts a fresh canvas."""
    from streamlit_drawable_canvas import st_canvas  # (it declares its component: only inside a running page)

    scale, width, height = fit(shown)
    canvas = st_canvas(
        background_image=shown.convert("RGB").resize((width, height)),
        drawing_mode="point",
        point_display_radius=RADIUS,
        stroke_width=STROKE,
        stroke_color="#ffffff",
        fill_color=fill,
        width=width,
        height=height,
        key=key,
    )
    points = [o for o in (canvas.json_data or {}).get("objects", []) if o.get("type", "").lower() == "circle"]
    return click_at(points[-1], scale, shown.size) if points else None
