"""The Studio's drawing canvas: its tools (pen, eraser, line, box, circle, polygon), aspect-ratio presets that set the
canvas's size and so the render's aspect, and what it sends back (the drawing as a PNG, kept in `drawn_png`).

The render's short side is the Studio's Size; its aspect is the sketch's, so a drawing made on a 16:9 canvas renders
at 16:9. Changing the aspect fits the drawing so far into the new canvas (scaled, centred) rather than dropping it."""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

from engine import images as imgs
from engine.errors import BadInput
from engine.images import UPLOAD_TYPES

# Canvas pixels for each preset: the long side 448, as the 4:3 canvas always was.
ASPECTS: dict[str, tuple[int, int]] = {
    "1:1": (448, 448),
    "4:3": (448, 336),
    "3:4": (336, 448),
    "16:9": (448, 252),
    "9:16": (252, 448),
}
DEFAULT_ASPECT = "4:3"
MAX_TRACE_PIXELS = 64_000_000
TOOLS: dict[str, str] = {
    "freedraw": "Pen",
    "eraser": "Eraser",
    "line": "Line",
    "rect": "Box",
    "circle": "Circle",
    "polygon": "Polygon",
}
PAPER = "#ffffff"  # the canvas's background; the eraser paints it over the lines
NO_FILL = "rgba(0, 0, 0, 0)"  # boxes, circles and polygons are outlines, as a designer draws them
HINTS = {
    "eraser": "The eraser paints the paper's white over the lines (its width is the Width slider's).",
    "polygon": "Click each corner, then the first corner again to close the polygon.",
}


def canvas_size(aspect: str | None) -> tuple[int, int]:
    return ASPECTS.get(aspect or DEFAULT_ASPECT, ASPECTS[DEFAULT_ASPECT])


def canvas_png(image_data: np.ndarray | None) -> bytes | None:
    """The drawing as PNG bytes, or None while the canvas is blank (or erased back to paper)."""
    if image_data is None:
        return None
    rgba = np.asarray(image_data, dtype=np.uint8)
    inked = (rgba[..., 3] > 0) & (rgba[..., :3].min(axis=-1) < 245)
    if not inked.any():
        return None
    return imgs.png_bytes(Image.fromarray(rgba, "RGBA"))


def _fit(old: tuple[int, int], new: tuple[int, int]) -> tuple[float, float, float]:
    """The scale and offset that fit a canvas of size `old` into `new`, centred."""
    scale = min(new[0] / old[0], new[1] / old[1])
    return scale, (new[0] - old[0] * scale) / 2, (new[1] - old[1] * scale) / 2


def carry_drawing(drawing: dict[str, Any], old: tuple[int, int], new: tuple[int, int]) -> dict[str, Any]:
    """A canvas drawing (Fabric.js JSON) fitted into a canvas of another size: every object scaled and moved by the
    same similarity transform, so the drawing keeps its proportions (a copy; `drawing` is left as it was)."""
    scale, dx, dy = _fit(old, new)
    moved = copy.deepcopy(drawing)
    for obj in moved.get("objects", []):
        obj["left"] = obj.get("left", 0) * scale + dx
        obj["top"] = obj.get("top", 0) * scale + dy
        obj["scaleX"] = obj.get("scaleX", 1) * scale
        obj["scaleY"] = obj.get("scaleY", 1) * scale
    return moved


def fit_png(data: bytes, new: tuple[int, int]) -> bytes:
    """The canvas's PNG fitted into a canvas of size `new` the same way (transparent around it)."""
    with Image.open(io.BytesIO(data)) as src:
        img = src.convert("RGBA")
    scale, dx, dy = _fit(img.size, new)
    out = Image.new("RGBA", new, (0, 0, 0, 0))
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    out.paste(img.resize(size, Image.Resampling.LANCZOS), (round(dx), round(dy)))
    return imgs.png_bytes(out)


def on_aspect_change() -> None:
    """Another aspect: a fresh canvas of its size, with the drawing so far fitted into it."""
    state = st.session_state
    old, new = state.get("canvas_size") or canvas_size(None), canvas_size(state.get("aspect"))
    if old == new:
        return
    drawing = state.get("canvas_json")
    state["canvas_initial"] = carry_drawing(drawing, old, new) if drawing and drawing.get("objects") else None
    state["canvas_json"] = state["canvas_initial"]
    if state.get("drawn_png"):
        state["drawn_png"] = fit_png(state["drawn_png"], new)
    state["canvas_size"] = new
    state["canvas_rev"] = state.get("canvas_rev", 0) + 1  # remount: a canvas takes its size when it mounts


def render_size_note(width: int, height: int, size: int) -> str:
    w, h = imgs.fit_size(width, height, size)
    return f"renders at {w}×{h}"


def panel() -> None:
    """The tools, the aspect, the canvas; the drawing goes to `drawn_png` (None while blank)."""
    state = st.session_state
    st.segmented_control("Tool", list(TOOLS), key="draw_mode", format_func=TOOLS.get, required=True)
    row = st.columns([2, 1], vertical_alignment="bottom")
    row[0].segmented_control(
        "Aspect",
        list(ASPECTS),
        key="aspect",
        required=True,
        on_change=on_aspect_change,
        help="The canvas's shape, and so the render's: the Size is its short side. The drawing so far is fitted "
        "into the new shape.",
    )
    row[1].slider("Width", 1, 40, key="pen_width")
    row = st.columns([5, 1])
    trace = row[0].file_uploader("Trace over an image (optional)", type=UPLOAD_TYPES)
    row[1].color_picker("Colour", key="pen_color")

    background = None
    if trace is not None:
        try:
            background = imgs.decode(trace.getvalue(), MAX_TRACE_PIXELS, name=trace.name)
        except BadInput as exc:
            st.error(str(exc))

    tool = state["draw_mode"] or "freedraw"
    width, height = canvas_size(state.get("aspect"))
    state["canvas_size"] = (width, height)
    canvas = st_canvas(
        stroke_width=state["pen_width"],
        stroke_color=PAPER if tool == "eraser" else state["pen_color"],
        fill_color=NO_FILL,
        background_color=PAPER,
        background_image=background,
        background_image_fit="contain",
        drawing_mode="freedraw" if tool == "eraser" else tool,
        initial_drawing=state.get("canvas_initial"),
        width=width,
        height=height,
        key=f"canvas_{state.get('canvas_rev', 0)}",
        return_image_data=True,
    )
    if canvas.json_data is not None:
        state["canvas_json"] = canvas.json_data
    drawn = canvas_png(canvas.image_data)
    if drawn is not None:
        state["drawn_png"] = drawn
    elif canvas.image_data is not None:
        state.pop("drawn_png", None)

    size = state["size"]
    note = (
        f"{state.get('aspect') or DEFAULT_ASPECT} · canvas {width}×{height} · {render_size_note(width, height, size)}"
    )
    if not state.get("drawn_png"):
        note += " (the words alone too)"
    st.caption(f"{note}. Hover over the canvas for undo, redo and clear.")
    if tool in HINTS:
        st.caption(HINTS[tool])
