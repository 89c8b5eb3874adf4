"""The Studio's drawing canvas: its tools (pen, eraser, line, box, circle, polygon), aspect-ratio presets that set the
canvas's size and so the render's aspect, and what it sends back (the drawing as a PNG, kept in `drawn_png`).

The render's short side is the Studio's Size; its aspect is the sketch's, so a drawing made on a 16:9 canvas renders
at 16:9. Changing the aspect fits the drawing so far into the new canvas (scaled, centred) rather than dropping it.

A sketch brought from elsewhere (a render's edges by "As sketch", a run's sketch by the History's Restore, kept in
`sketch_override`) becomes the canvas's picture: the canvas takes its aspect, the designer draws over it, and the
sketch sent is the picture with the strokes on top. The drawing it replaced is kept: "Back to my previous drawing"
brings it back (the last few replacements, newest first)."""

from __future__ import annotations

import copy
import hashlib
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


LONG_SIDE = 448  # the canvas's long side, whatever its shape
UNDO_DEPTH = 5  # drawings replaced by a brought-in sketch that can still be brought back


def canvas_size(aspect: str | None) -> tuple[int, int]:
    return ASPECTS.get(aspect or DEFAULT_ASPECT, ASPECTS[DEFAULT_ASPECT])


def picture_canvas_size(width: int, height: int) -> tuple[int, int]:
    """The canvas for drawing over a picture: the picture's own aspect, the long side 448."""
    scale = LONG_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draw_over(picture: Image.Image, strokes: np.ndarray | None) -> bytes:
    """The sketch a picture with strokes drawn over it makes, at the picture's own size: every painted pixel of the
    canvas (pen, shapes, the eraser's white) over the picture. Without strokes, the picture itself."""
    base = picture.convert("RGB")
    if strokes is not None:
        layer = Image.fromarray(np.asarray(strokes, dtype=np.uint8), "RGBA")
        if layer.getchannel("A").getbbox() is not None:
            layer = layer.resize(base.size, Image.Resampling.LANCZOS)
            base.paste(layer, (0, 0), layer)
    return imgs.png_bytes(base)


def _picture(data: bytes) -> Image.Image | None:
    """The brought-in sketch, decoded once per content (None when it is no image: the Studio says so)."""
    key = hashlib.sha1(data).hexdigest()
    cached = st.session_state.get("_canvas_picture")
    if cached is None or cached[0] != key:
        try:
            cached = (key, imgs.decode(data, MAX_TRACE_PIXELS).convert("RGB"))
        except BadInput:
            cached = (key, None)
        st.session_state["_canvas_picture"] = cached
    return cached[1]


def _remount(initial: dict[str, Any] | None, drawn: bytes | None = None) -> None:
    """A fresh canvas with `initial` on it, and `drawn` its sketch until the designer draws again (a canvas sends
    its pixels only once drawn on)."""
    state = st.session_state
    state["canvas_initial"] = initial
    state["canvas_json"] = initial
    for key in ("drawn_png", "_strokes_png", "_drawn_over"):
        state.pop(key, None)
    if drawn is not None:
        state["drawn_png"] = drawn
    state["canvas_rev"] = state.get("canvas_rev", 0) + 1


def _current_drawing() -> dict[str, Any]:
    """What the canvas holds now, as an undo entry."""
    state = st.session_state
    return {
        "canvas_json": state.get("canvas_json"),
        "drawn_png": state.get("drawn_png"),
        "strokes_png": state.get("_strokes_png"),
        "picture": state.get("_canvas_base"),
        "label": state.get("_canvas_base_label"),
        "size": state.get("canvas_size"),
    }


def _push_undo(entry: dict[str, Any]) -> None:
    state = st.session_state
    state["sketch_undo"] = [entry, *state.get("sketch_undo", [])][:UNDO_DEPTH]


def _fitted(
    drawing: dict[str, Any] | None, png: bytes | None, old: tuple[int, int] | None, new: tuple[int, int]
) -> tuple[dict[str, Any] | None, bytes | None]:
    """A drawing and its PNG from a canvas of size `old` fitted into one of size `new` (as they are, same size)."""
    if not old or tuple(old) == tuple(new):
        return drawing, png
    return (
        carry_drawing(drawing, old, new) if drawing and drawing.get("objects") else None,
        fit_png(png, new) if png else None,
    )


def _notice_brought_sketch() -> None:
    """A sketch just brought in (As sketch, Restore): the drawing it replaces goes on the undo list, and the canvas
    starts afresh over the new picture."""
    state = st.session_state
    brought = state.get("sketch_override")
    if brought == state.get("_canvas_base"):
        return
    if brought is not None:
        previous = _current_drawing()
        if previous["picture"] is not None or previous["drawn_png"] or (previous["canvas_json"] or {}).get("objects"):
            _push_undo(previous)
        _remount(None)
    state["_canvas_base"] = brought
    state["_canvas_base_label"] = state.get("sketch_override_label")


def on_back() -> None:
    """Back to the drawing (and picture) a brought-in sketch replaced."""
    state = st.session_state
    undo = state.get("sketch_undo") or []
    if not undo:
        return
    entry, state["sketch_undo"] = undo[0], undo[1:]
    if entry["picture"] is None:
        for key in ("sketch_override", "sketch_override_label", "sketch_override_note"):
            state.pop(key, None)
    else:
        state["sketch_override"], state["sketch_override_label"] = entry["picture"], entry["label"]
    state["_canvas_base"], state["_canvas_base_label"] = entry["picture"], entry["label"]
    drawing, drawn = entry["canvas_json"], entry["drawn_png"]
    if entry["picture"] is None:  # back on plain paper: the canvas has the aspect's shape
        drawing, drawn = _fitted(drawing, drawn, entry["size"], canvas_size(state.get("aspect")))
    _remount(drawing, drawn)
    state["_strokes_png"] = entry.get("strokes_png")


def on_remove_picture() -> None:
    """The brought-in picture goes; the strokes drawn over it stay, on white paper (Back brings the picture back)."""
    state = st.session_state
    previous = _current_drawing()
    _push_undo(previous)
    for key in ("sketch_override", "sketch_override_label", "sketch_override_note", "_canvas_base"):
        state.pop(key, None)
    new = canvas_size(state.get("aspect"))
    _remount(*_fitted(previous["canvas_json"], previous["strokes_png"], previous["size"], new))


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
    _remount(*_fitted(state.get("canvas_json"), state.get("drawn_png"), old, new))  # a canvas takes its size at mount
    state["canvas_size"] = new


def render_size_note(width: int, height: int, size: int) -> str:
    w, h = imgs.fit_size(width, height, size)
    return f"renders at {w}×{h}"


def picture_bar(picture: Image.Image | None) -> None:
    """Above a canvas with a brought-in picture: what it is, and the ways back."""
    state = st.session_state
    label = state.get("sketch_override_label") or "a brought-in sketch"
    if picture is None:
        st.error(f"The brought-in sketch ({label}) is not an image any more: remove it, or go back.")
    else:
        st.caption(
            f"Drawing over **{label}** ({picture.width}×{picture.height}): draw on it, or erase with the eraser."
        )
    if state.get("sketch_override_note") and state.get("edge_mode") == "lines":
        st.caption(state["sketch_override_note"])


def back_buttons() -> None:
    state = st.session_state
    b1, b2 = st.columns(2)
    undo = state.get("sketch_undo") or []
    b1.button(
        "Back to my previous drawing", on_click=on_back, disabled=not undo, width="stretch",
        help="the drawing (and picture) this one replaced" if undo else "nothing was replaced yet",
    )  # fmt: skip
    if state.get("sketch_override") is not None:
        b2.button(
            "Remove the picture", on_click=on_remove_picture, width="stretch",
            help="keep what you drew over it, on white paper",
        )  # fmt: skip


def panel() -> None:
    """The tools, the aspect, the canvas (over a brought-in picture, if any); the sketch goes to `drawn_png` (None
    while blank)."""
    state = st.session_state
    _notice_brought_sketch()
    brought = state.get("sketch_override")
    picture = _picture(brought) if brought is not None else None
    if brought is not None:
        picture_bar(picture)
    row = st.columns([5, 1], vertical_alignment="bottom")
    row[0].segmented_control("Tool", list(TOOLS), key="draw_mode", format_func=TOOLS.get, required=True)
    row[1].color_picker("Colour", key="pen_color")
    row = st.columns([2, 1], vertical_alignment="bottom")
    row[0].segmented_control(
        "Aspect",
        list(ASPECTS),
        key="aspect",
        required=True,
        on_change=on_aspect_change,
        disabled=brought is not None,
        help="The canvas's shape, and so the render's: the Size is its short side. The drawing so far is fitted "
        "into the new shape."
        + (" While drawing over a picture, the canvas keeps the picture's shape." if brought is not None else ""),
    )
    row[1].slider("Width", 1, 40, key="pen_width")
    trace = None
    if brought is None:  # folded away: most drawings need no guide, and the canvas must stay in view
        with st.expander("Trace over an image (optional)", expanded=state.get("trace") is not None):
            trace = st.file_uploader("Image to trace over", type=UPLOAD_TYPES, key="trace")

    background = picture
    if trace is not None:
        try:
            background = imgs.decode(trace.getvalue(), MAX_TRACE_PIXELS, name=trace.name)
        except BadInput as exc:
            st.error(str(exc))

    tool = state["draw_mode"] or "freedraw"
    width, height = picture_canvas_size(*picture.size) if picture is not None else canvas_size(state.get("aspect"))
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
    if picture is not None:  # the picture with the strokes over it; the picture alone until the canvas answers
        strokes = canvas.image_data
        if strokes is not None:
            key = (id(picture), hashlib.sha1(np.ascontiguousarray(strokes)).hexdigest())
            if state.get("_drawn_over") != key:
                state["drawn_png"], state["_drawn_over"] = draw_over(picture, strokes), key
                state["_strokes_png"] = canvas_png(strokes)
        elif not state.get("drawn_png"):
            state["drawn_png"] = draw_over(picture, None)
    else:
        drawn = canvas_png(canvas.image_data)
        if drawn is not None:
            state["drawn_png"] = drawn
        elif canvas.image_data is not None:
            state.pop("drawn_png", None)

    size = state["size"]
    shape = "the picture's shape" if picture is not None else state.get("aspect") or DEFAULT_ASPECT
    note = f"{shape} · canvas {width}×{height} · {render_size_note(width, height, size)}"
    if not state.get("drawn_png") and brought is None:
        note += " (the words alone too)"
    st.caption(f"{note}. Hover over the canvas for undo, redo and clear.")
    if tool in HINTS:
        st.caption(HINTS[tool])
