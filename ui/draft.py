"""The unfinished work, kept in the browser across a reload: the Studio's fields (prompt, settings, engine and server
URL), the canvas's drawing and its aspect, and the styles picked for the prompt.

A reload starts a new Streamlit session, which knew nothing of the last one. So every run hands the current draft to
a tiny invisible component (ui/draft_component/index.html) that writes it to the browser's localStorage when it
changed; on a session's first runs the component reads it back, once, and `keep()` puts it into the session before
the page draws its widgets, and says so. Per browser, not per account; the Remote token is never written there.

What comes back from the browser is the user's to change, so it is checked field by field against what the widgets
accept: a field of the wrong type or out of range, an unknown key, or an oversized draft is dropped, never raised."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import streamlit as st
import streamlit.components.v1 as components

from engine import images as imgs
from engine.errors import BadInput
from engine.rules.modes import MODES
from engine.schema import MAX_SEED, SCHEDULERS, ControlName, StyleHit
from ui.canvas import ASPECTS, TOOLS, canvas_size, carry_drawing, fit_png
from ui.shared import DEFAULTS

FOLDER = Path(__file__).with_name("draft_component")
COMPONENT_KEY = "draft_keeper"  # the component's widget key (its value: what the browser had stored)
LOADED = "_draft_loaded"  # set once the browser has answered, in this session
SLOT = "_draft_slot"  # this run's place for the component (made before the page, filled after it)
MAX_CHARS = 500_000  # a larger draft (stored or to store) is left alone; localStorage holds about 5 MB
MAX_PNG_CHARS = 400_000  # the drawing's PNG, as base64 (a line drawing on a 448-pixel canvas: a few kB)
MAX_PNG_PIXELS = 1024 * 1024
MAX_OBJECTS = 2_000  # canvas objects kept
MAX_TEXT = 10_000
HIDE = "<style>.st-key-draft_keeper{position:absolute;width:0;height:0;overflow:hidden}</style>"
NOT_KEPT = {
    "remote_token": "a secret: never written to the browser's storage",
    "live": "a live canvas starts rendering at once: switched on again by hand",
    "regions_on": "the regions themselves are not kept",
    "init_on": "the start image is not kept",
    "inpaint_on": "the mask is not kept",
    "extend_on": "the start image is not kept",
    "extend_left": "belongs to the start image, which is not kept",
    "extend_top": "belongs to the start image, which is not kept",
    "extend_right": "belongs to the start image, which is not kept",
    "extend_bottom": "belongs to the start image, which is not kept",
}
# Shapes the Studio's tools draw (Fabric.js types); anything else in a stored drawing is dropped.
CANVAS_TYPES = {"path", "line", "rect", "circle", "ellipse", "polygon", "polyline", "triangle"}
COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def _choice(*options: Any) -> Callable[[Any], bool]:
    return lambda v: type(v) in {type(o) for o in options} and v in options


def _integer(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and low <= v <= high


def _number(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: type(v) in (int, float) and math.isfinite(v) and low <= v <= high


def _text(limit: int = MAX_TEXT) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and len(v) <= limit


def _boolean(v: Any) -> bool:
    return type(v) is bool


# Every kept field and what its widget accepts (pages/studio.py, ui/canvas.py, ui/shared.py).
CHECKS: dict[str, Callable[[Any], bool]] = {
    "prompt": _text(),
    "negative": _text(),
    "source": _choice("Draw", "Upload"),
    "edge_mode": _choice("auto", "lines", "canny"),
    "canny_low": _integer(0, 255),
    "canny_high": _integer(0, 255),
    "style_mode": _choice("Auto", "From library", "None"),
    "library_style": lambda v: v is None or _text(200)(v),
    "steps": _integer(1, 100),
    "guidance": _number(0.0, 20.0),
    "structure": _number(0.0, 2.5),
    "style_strength": _number(0.0, 2.0),
    "style_only": _boolean,
    "seed": _integer(0, MAX_SEED),
    "seed_locked": _boolean,
    "size": _choice(256, 384, 512, 640, 768, 1024),
    "variations": _integer(1, 8),
    "scheduler": _choice(*SCHEDULERS),
    "mode": _choice(*MODES),
    "pen_width": _integer(1, 40),
    "pen_color": lambda v: isinstance(v, str) and COLOUR.fullmatch(v) is not None,
    "draw_mode": _choice(*TOOLS),
    "aspect": _choice(*ASPECTS),
    "run_label": _text(80),
    "run_batch": _text(80),
    "engine_mode": _choice("Local", "Remote"),
    "remote_url": lambda v: _text(500)(v) and v.strip().lower().startswith(("http://", "https://")),
    "control": _choice(*get_args(ControlName)),
    "hires": _choice(1.0, 1.25, 1.5, 1.75, 2.0),
    "hires_strength": _number(0.05, 1.0),
    "strength": _number(0.0, 1.0),
}


# ---- what is kept -------------------------------------------------------------------------------------------------
def snapshot(state: Any) -> dict[str, Any]:
    """The draft of a session: its kept fields, drawing, aspect and style picks (only what it has)."""
    fields = {k: state[k] for k in CHECKS if k in state and CHECKS[k](state[k])}
    draft: dict[str, Any] = {"fields": fields}
    if (drawn := _drawing(state)) is not None:
        draft["canvas"] = drawn
    hits = state.get("auto_hits") or []
    if hits and state.get("auto_for") == state.get("prompt"):
        draft["styles"] = {
            "for": state["auto_for"],
            "hits": [[h.id, h.name, h.score] for h in hits],
            "use": [h.id for h in hits if state.get(f"use_{h.id}")],
            "weights": {h.id: state[f"w_{h.id}"] for h in hits if f"w_{h.id}" in state},
        }
    gallery = [e for e in state.get("gallery") or [] if isinstance(e, dict)]
    renders = sum(len(getattr(e.get("result"), "png", None) or []) for e in gallery)
    if renders:
        draft["renders"] = renders
    return draft


def _drawing(state: Any) -> dict[str, Any] | None:
    """The canvas's drawing, its size, and the PNG it sent (not over a brought-in picture: that is the picture's)."""
    drawing = state.get("canvas_json")
    if not isinstance(drawing, dict) or not drawing.get("objects"):
        return None
    drawn = {"drawing": drawing, "size": list(state.get("canvas_size") or canvas_size(None))}
    if state.get("drawn_png") and state.get("sketch_override") is None:
        drawn["png"] = base64.b64encode(state["drawn_png"]).decode()
    return drawn


# ---- what comes back: checked -------------------------------------------------------------------------------------
def _canvas(kept: Any, aspect: str | None) -> dict[str, Any] | None:
    """A stored drawing (Fabric.js JSON, and the PNG the canvas had sent of it), fitted to the canvas of `aspect`, or
    None: its objects must be the tools' shapes, placed by numbers (anything else in it is dropped), and the PNG an
    image of a canvas's size."""
    if not isinstance(kept, dict):
        return None
    drawing, size = kept.get("drawing"), kept.get("size")
    if not isinstance(drawing, dict) or not isinstance(drawing.get("objects"), list):
        return None
    objects = [o for o in drawing["objects"][:MAX_OBJECTS] if _shape(o)]
    if not objects:
        return None
    clean: dict[str, Any] = {"drawing": {"version": str(drawing.get("version", ""))[:20], "objects": objects}}
    target = canvas_size(aspect)
    fitted = isinstance(size, list) and len(size) == 2 and all(_integer(1, 10_000)(v) for v in size)
    if fitted and tuple(size) != target:  # drawn over a picture of another shape
        clean["drawing"] = carry_drawing(clean["drawing"], (size[0], size[1]), target)
    if (png := _png(kept.get("png"))) is not None:
        clean["png"] = fit_png(png, target) if fitted and tuple(size) != target else png
    return clean


def _png(text: Any) -> bytes | None:
    """The drawing's PNG from its base64 text, decoded and encoded again (so only pixels come through), or None."""
    if not isinstance(text, str) or len(text) > MAX_PNG_CHARS:
        return None
    try:
        image = imgs.decode(base64.b64decode(text, validate=True), MAX_PNG_PIXELS)
    except (BadInput, ValueError):
        return None
    return imgs.png_bytes(image)


def _shape(obj: Any) -> bool:
    if not isinstance(obj, dict) or str(obj.get("type", "")).lower() not in CANVAS_TYPES:
        return False
    placed = ("left", "top", "scaleX", "scaleY", "width", "height")
    return all(_number(-1e6, 1e6)(obj[k]) for k in placed if k in obj)


def _styles(found: Any, prompt: str | None) -> dict[str, Any] | None:
    """The prompt's retrieved styles and which were ticked, or None (also when they were for other words)."""
    if not isinstance(found, dict) or prompt is None or found.get("for") != prompt or not isinstance(prompt, str):
        return None
    rows, use, weights = found.get("hits"), found.get("use"), found.get("weights", {})
    if not isinstance(rows, list) or not 0 < len(rows) <= 10 or not isinstance(use, list):
        return None
    hits = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and _text(200)(row[0]) and _text(200)(row[1])):
            return None
        if not _number(-1.0, 1.0)(row[2]):
            return None
        hits.append(StyleHit(id=row[0], name=row[1], score=float(row[2])))
    ids = {h.id for h in hits}
    weights = weights if isinstance(weights, dict) else {}
    return {
        "hits": hits,
        "use": {i for i in use if isinstance(i, str) and i in ids},
        "weights": {i: float(w) for i, w in weights.items() if i in ids and _number(0.1, 2.0)(w)},
    }


def parse(text: Any) -> dict[str, Any] | None:
    """A draft as the browser stored it, checked: only valid fields, drawing and styles; None if there is nothing
    usable (not text, too large, not JSON, not an object). Never raises."""
    if not isinstance(text, str) or not text or len(text) > MAX_CHARS:
        return None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    given = raw.get("fields")
    given = given if isinstance(given, dict) else {}
    fields = {k: v for k, v in given.items() if k in CHECKS and CHECKS[k](v)}
    draft: dict[str, Any] = {"fields": fields}
    if (drawing := _canvas(raw.get("canvas"), fields.get("aspect"))) is not None:
        draft["canvas"] = drawing
    if (styles := _styles(raw.get("styles"), fields.get("prompt"))) is not None:
        draft["styles"] = styles
    if _integer(1, 10_000)(raw.get("renders")):
        draft["renders"] = raw["renders"]
    return draft


def restore(state: Any, draft: dict[str, Any]) -> str | None:
    """Put a checked draft into the session (before any widget is drawn); the line that says so, or None when it
    brought nothing new."""
    fields = dict(draft["fields"])
    if os.environ.get("DESIGN_STUDIO_REMOTE_URL", "").strip():  # a laptop set up for one server stays on it
        fields.pop("engine_mode", None)
        fields.pop("remote_url", None)
    changed = [k for k, v in fields.items() if state.get(k, DEFAULTS.get(k)) != v]
    state.update(fields)
    if kept := draft.get("canvas"):
        state["canvas_initial"] = kept["drawing"]
        state["canvas_json"] = kept["drawing"]
        if "png" in kept:  # the sketch a render follows: the canvas sends its own only when drawn on again
            state["drawn_png"] = kept["png"]
        state["canvas_rev"] = state.get("canvas_rev", 0) + 1  # a remount: the canvas takes its drawing when it mounts
        changed.append("canvas")
    if styles := draft.get("styles"):
        state["auto_hits"] = styles["hits"]
        state["auto_for"] = fields["prompt"]
        for hit in styles["hits"]:
            state[f"use_{hit.id}"] = hit.id in styles["use"]
            if hit.id in styles["weights"]:
                state[f"w_{hit.id}"] = styles["weights"][hit.id]
    renders = draft.get("renders", 0)
    if not changed and not renders:
        return None
    line = "Restored your unsaved sketch and settings from this browser."
    if state.get("engine_mode") == "Remote":
        line += " The Remote token is not kept: if the server needs one, type it again in the sidebar."
    if renders:
        line += f" The {renders} render{'s' if renders != 1 else ''} you had made are in the History."
    return line


# ---- the page's side ----------------------------------------------------------------------------------------------
def _component():
    """The component, declared each run (cheap: Streamlit registers its folder by name, per server)."""
    return components.declare_component("draft", path=str(FOLDER))


def keep() -> None:
    """Before the page (app.py): once the browser has answered, restore its draft, once per session, and say so.
    Until then, ask it: here, before a page that may stop (an engine that cannot start) draws nothing after it."""
    state = st.session_state
    answer = state.get(COMPONENT_KEY)
    if not state.get(LOADED) and isinstance(answer, dict) and "draft" in answer:
        state[LOADED] = True
        draft = parse(answer["draft"])
        line = restore(state, draft) if draft else None
        if line:
            st.toast(line, icon=":material/restore:", duration=12)
    st.html(HIDE)
    slot = st.empty()  # one place for the component, every run: the page's elements after it never shift
    state[SLOT] = slot
    if not state.get(LOADED):
        with slot:
            _component()(want=True, key=COMPONENT_KEY, default=None)


def save() -> None:
    """After the page (app.py): hand the browser the draft as the page left it (the canvas's newest stroke is only
    known once the page has drawn the canvas). A page that stopped or was interrupted skips this; the next run saves."""
    state = st.session_state
    slot = state.pop(SLOT, None)
    if not state.get(LOADED) or slot is None:
        return
    try:
        text = json.dumps(snapshot(state), separators=(",", ":"), default=str)  # a few kB, about a millisecond
    except (AttributeError, TypeError, ValueError):  # a session field of a new shape: the last draft stays
        return
    if len(text) > MAX_CHARS:
        text = ""  # too large to keep: the last draft that fitted stays in the browser
    digest = hashlib.sha1(text.encode()).hexdigest()[:16] if text else ""
    with slot:  # where keep() asked: the same element, so the browser's frame is kept, not made again
        _component()(want=False, draft=text or None, hash=digest, key=COMPONENT_KEY, default=None)
