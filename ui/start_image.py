"""The Studio's image to start from (image-to-image) and the part of it to repaint (inpainting) or the room to add
around it (outpainting): an uploaded photo or a render (**Start from this** or **Extend** under a render), the
strength, and a mask brushed on the image, clicked (SAM2) or taken from a region. The request then carries
`init_image`, `strength` and `mask` (white = repaint), or `init_image` and `outpaint` (the four borders)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

from engine import images as imgs
from engine.errors import EngineError
from engine.images import UPLOAD_TYPES
from engine.masks import mask_png, overlay
from ui import describe as describe_ui
from ui.clicks import clicked

MAX_CANVAS = 448
MAX_PIXELS = 64_000_000
MASK_SOURCES = ("Brush", "Click (SAM2)", "Region")
SIDES = {"Left": "extend_left", "Top": "extend_top", "Right": "extend_right", "Bottom": "extend_bottom"}
ASPECTS = ("1:1", "4:3", "3:2", "16:9", "4:5", "2:3", "9:16")
BRUSH = "rgba(255, 64, 129, 0.55)"  # what the brush paints on screen; any paint is "repaint here"


def set_start(data: bytes, label: str, extend: bool = False) -> None:
    """Start the next render from `data` (a render's PNG or an upload); any mask made on another image goes.
    `extend`: to extend it (outpaint) rather than rework it."""
    state = st.session_state
    state["init_image"] = data
    state["init_label"] = label
    state["init_on"] = True
    state["extend_on"] = extend
    if extend:
        state["inpaint_on"] = False
    clear_mask()


def clear_mask() -> None:
    state = st.session_state
    state.pop("inpaint_mask", None)
    state["mask_rev"] = state.get("mask_rev", 0) + 1


def _upload() -> None:
    upload = st.session_state.get("init_upload")
    if upload is not None:
        set_start(upload.getvalue(), upload.name)


def request_fields() -> dict:
    """What the request gets from this panel (nothing when it is off or has no image). Extending sends the image and
    its four borders (the engine paints the border from noise and keeps the image)."""
    state = st.session_state
    if not state.get("init_on") or not state.get("init_image"):
        return {}
    if state.get("extend_on"):
        return {"init_image": state["init_image"], "outpaint": extension()}
    fields = {"init_image": state["init_image"], "strength": float(state.get("strength", 0.6))}
    if state.get("inpaint_on") and state.get("inpaint_mask"):
        fields["mask"] = state["inpaint_mask"]
    return fields


def _decoded(data: bytes) -> Image.Image | None:
    key = hashlib.sha256(data).hexdigest()
    cache = st.session_state.setdefault("_init_decoded", {})
    if key not in cache:
        try:
            cache.clear()
            cache[key] = imgs.decode(data, MAX_PIXELS).convert("RGB")
        except EngineError as exc:
            st.error(str(exc))
            return None
    return cache[key]


def panel(engine, regions: list[dict] | None = None) -> None:
    """The Studio's "Start from an image" section."""
    state = st.session_state
    st.toggle(
        "Start from an image (image-to-image, inpaint)",
        key="init_on",
        help="Rework a photo or a render instead of starting from noise. ControlNet still follows the sketch, or "
        "without one the image's own edges.",
    )
    if not state.get("init_on"):
        return
    st.file_uploader("Image to start from", type=UPLOAD_TYPES, key="init_upload", on_change=_upload)
    data = state.get("init_image")
    if not data:
        st.caption("Upload a photo, or press **Start from this** under a render.")
        return
    image = _decoded(data)
    if image is None:
        return
    describe_ui.button(engine, data, f"the start image ({state.get('init_label', 'an image')})", key="describe_init")
    st.toggle(
        "Extend the canvas (outpaint)", key="extend_on",
        help="Add room around the image: the new border is painted to continue it, the image itself is kept as it "
        "is. ControlNet follows the image's own edges (the sketch is not used).",
    )  # fmt: skip
    if state.get("extend_on"):
        extend_editor(image)
        return
    st.slider(
        "Strength",
        0.0,
        1.0,
        step=0.05,
        key="strength",
        help="How far back to noise the image goes: 0 keeps it as it is, 1 ignores it.",
    )
    st.toggle("Repaint only a part (inpaint)", key="inpaint_on", help="White in the mask = repaint; the rest is kept.")
    if state.get("inpaint_on"):
        mask_editor(engine, data, image, regions or [])
    else:
        st.image(image, caption=f"starting from {state.get('init_label', 'an image')}", width=MAX_CANVAS)


def extension() -> list[int]:
    """The borders to add, left, top, right, bottom, in pixels."""
    return [int(st.session_state.get(key) or 0) for key in SIDES.values()]


def aspect_pads(size: tuple[int, int], aspect: str) -> dict[str, int]:
    """The borders that bring an image to `aspect` ("16:9") by adding room on the two short sides, evenly."""
    w, h = size
    a, b = (int(v) for v in aspect.split(":"))
    if w * b < h * a:  # too narrow: widen
        extra = min(1024 * 2, round(h * a / b) - w)
        return {"Left": extra // 2, "Top": 0, "Right": extra - extra // 2, "Bottom": 0}
    extra = min(1024 * 2, round(w * b / a) - h)
    return {"Left": 0, "Top": extra // 2, "Right": 0, "Bottom": extra - extra // 2}


def _on_aspect() -> None:
    state = st.session_state
    preset, size = state.get("extend_aspect"), state.get("_extend_size")
    if preset and preset != "Custom" and size:
        for side, px in aspect_pads(size, preset).items():
            state[SIDES[side]] = min(1024, px)


def extend_editor(image: Image.Image) -> None:
    """Four borders in pixels, or an aspect to reach; a preview of the larger canvas (the new part shaded)."""
    state = st.session_state
    state["_extend_size"] = image.size
    st.segmented_control(
        "Extend to", ["Custom", *ASPECTS], key="extend_aspect", on_change=_on_aspect,
        help="An aspect adds room on the short sides, evenly; Custom: the four numbers below.",
    )  # fmt: skip
    for col, (side, key) in zip(st.columns(4), SIDES.items(), strict=True):
        col.number_input(f"{side} px", 0, 1024, step=8, key=key)
    left, top, right, bottom = extension()
    if not any((left, top, right, bottom)):
        st.caption("Give at least one side some pixels, or pick an aspect.")
    width, height = image.width + left + right, image.height + top + bottom
    preview = Image.new("RGB", (width, height), (200, 200, 205))
    preview.paste(image, (left, top))
    st.image(
        preview, width=MAX_CANVAS,
        caption=f"{image.width}×{image.height} → about {width}×{height} (each side's total rounded up to a multiple "
        "of 8); the grey part is painted",
    )  # fmt: skip


def _canvas_size(image: Image.Image) -> tuple[int, int]:
    """The brush canvas's size: the image fitted into MAX_CANVAS, never enlarged."""
    scale = min(MAX_CANVAS / image.width, MAX_CANVAS / image.height, 1.0)
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def mask_editor(engine, data: bytes, image: Image.Image, regions: list[dict]) -> None:
    """Brush the part to repaint, click an object (SAM2), or take a region's mask; the mask shows over the image."""
    state = st.session_state
    sources = list(MASK_SOURCES if regions else MASK_SOURCES[:2])
    if state.get("mask_source") not in sources:
        state["mask_source"] = sources[0]
    st.segmented_control("Mask", sources, key="mask_source")
    cw, ch = _canvas_size(image)
    rev = state.get("mask_rev", 0)
    current = _mask(state.get("inpaint_mask"))
    shown = overlay(image, [current]) if current is not None else image
    source = state["mask_source"]
    if source == "Brush":
        width = st.slider("Brush", 4, 80, 28, key="mask_brush")
        canvas = st_canvas(
            background_image=shown.resize((cw, ch)),
            drawing_mode="freedraw",
            stroke_width=width,
            stroke_color=BRUSH,
            width=cw,
            height=ch,
            key=f"mask_canvas_{rev}",
            return_image_data=True,
        )
        painted = _painted(canvas.image_data, image.size)
        if painted is not None:
            merged = painted if current is None else (painted | current)
            if current is None or not np.array_equal(merged, current):
                state["inpaint_mask"] = mask_png(merged)
    elif source == "Click (SAM2)":
        click = clicked(shown, f"mask_click_{rev}", "#ff4081")
        if click is not None:
            x, y = click
            state["mask_rev"] = rev + 1
            try:
                found = engine.renders.segment(data, [[x, y]], [1])
            except EngineError as exc:
                state["mask_error"] = str(exc)
            else:
                state.pop("mask_error", None)
                merged = found.mask() if current is None else (found.mask() | current)
                state["inpaint_mask"] = mask_png(merged)
            st.rerun()
    else:
        labels = [f"Region {i + 1}" + (f": {r['words']}" if r.get("words") else "") for i, r in enumerate(regions)]
        pick = st.selectbox("Repaint region", range(len(regions)), format_func=labels.__getitem__, key="mask_region")
        region = Image.fromarray(regions[pick]["mask"].astype(np.uint8) * 255).resize(image.size, Image.NEAREST)
        chosen = np.asarray(region) > 127
        if current is None or not np.array_equal(chosen, current):
            state["inpaint_mask"] = mask_png(chosen)
            st.rerun()
        st.image(shown, width=cw)
    if state.get("mask_error"):
        st.error(state["mask_error"])
    current = _mask(state.get("inpaint_mask"))
    info, clear = st.columns([3, 1], vertical_alignment="center")
    if current is None:
        info.caption("Paint or click the part to repaint; until then the whole image is reworked.")
    else:
        info.caption(f"Repaints {current.mean() * 100:.0f} % of the image; the rest is kept exactly.")
        clear.button("Clear mask", key="mask_clear", on_click=clear_mask)


def _mask(data: bytes | None) -> np.ndarray | None:
    if not data:
        return None
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L")) > 127


def _painted(image_data, size: tuple[int, int]) -> np.ndarray | None:
    """What the brush painted (any paint), at the image's size; None while nothing is painted."""
    if image_data is None:
        return None
    alpha = np.asarray(image_data, dtype=np.uint8)[..., 3]
    if not alpha.any():
        return None
    return np.asarray(Image.fromarray(alpha).resize(size, Image.NEAREST)) > 0
