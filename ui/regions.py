"""The Studio's Regions mode: click the sketch (or the last render) to add a region, give it words or a style,
see its overlay; the request then carries each region's mask and its words."""

from __future__ import annotations

import hashlib
import html
import uuid
from typing import Any

import numpy as np
import streamlit as st

from engine import images as imgs
from engine.errors import EngineError
from engine.masks import REGION_COLORS, mask_png, overlay, rle_decode
from engine.schema import MAX_REGIONS
from ui.clicks import clicked
from ui.shared import style_thumb

RETRIEVE = "Retrieve by words"
MAX_PREVIEW_PIXELS = 64_000_000


def swatch(i: int) -> str:
    """A small square in region i's colour (the overlay, the list and the result use the same)."""
    color = REGION_COLORS[i % len(REGION_COLORS)]
    return (
        f'<span style="display:inline-block;width:14px;height:14px;border-radius:3px;background:{color};'
        f'vertical-align:middle;margin-right:6px"></span>'
    )


def target_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def set_target(data: bytes) -> None:
    """The image regions are picked on; another image clears them (their masks belong to the old one)."""
    state = st.session_state
    key = target_key(data)
    if state.get("regions_target") != key:
        if state.get("regions"):
            st.toast("Regions cleared: they were made on another image.")
        state["regions"] = []
        state["regions_target"] = key
        state["regions_rev"] = state.get("regions_rev", 0) + 1


def add_region(engine, image: bytes, x: float, y: float) -> None:
    """SAM2 at one click → a new region (or one error line)."""
    state = st.session_state
    state.pop("regions_error", None)
    if len(state["regions"]) >= MAX_REGIONS:
        state["regions_error"] = f"at most {MAX_REGIONS} regions; remove one to add another"
        return
    try:
        found = engine.renders.segment(image, [[x, y]], [1])
    except EngineError as exc:
        state["regions_error"] = str(exc)
        return
    state["regions"] = [
        *state["regions"],
        {"id": uuid.uuid4().hex[:8], "mask": found.mask(), "point": (round(x), round(y)), "score": found.score,
         "words": "", "style": None},
    ]  # fmt: skip
    state["regions_rev"] = state.get("regions_rev", 0) + 1


def remove_region(region_id: str) -> None:
    state = st.session_state
    state["regions"] = [r for r in state["regions"] if r["id"] != region_id]
    state["regions_rev"] = state.get("regions_rev", 0) + 1


def _sync(region_id: str, field: str, key: str) -> None:
    value = st.session_state.get(key)
    for r in st.session_state["regions"]:
        if r["id"] == region_id:
            r[field] = None if value == RETRIEVE else value


def request_regions() -> list[dict[str, Any]]:
    """The regions as the request wants them (empty when Regions mode is off)."""
    state = st.session_state
    if not state.get("regions_on"):
        return []
    regions = state.get("regions", [])
    return [{"mask": mask_png(r["mask"]), "words": r["words"] or "", "style": r["style"]} for r in regions]


def restore(meta: dict[str, Any], sketch: bytes | None) -> None:
    """A past run's regions back into the Studio (masks at the render's size, which the engine accepts)."""
    state = st.session_state
    regions = meta.get("regions") or []
    state["regions_on"] = bool(regions)
    state["regions"] = [
        {"id": uuid.uuid4().hex[:8], "mask": rle_decode(r["mask"]), "point": None, "score": None,
         "words": r["words"], "style": r["style"]["name"]}
        for r in regions
    ]  # fmt: skip
    if sketch:
        state["regions_target"] = target_key(sketch)
    state["regions_rev"] = state.get("regions_rev", 0) + 1


def panel(engine, sketch: bytes | None, last_render: bytes | None) -> None:
    """The Regions section of the Studio's left column."""
    state = st.session_state
    state.setdefault("regions", [])
    st.toggle(
        "Regions: a different style per part of the image",
        key="regions_on",
        help="Click an object to select it (SAM2); its style comes from its own words. ControlNet still "
        "follows the whole sketch; the rest of the image keeps the global style.",
    )
    if not state.get("regions_on"):
        return
    sources = (["Sketch"] if sketch else []) + (["Last render"] if last_render else [])
    if not sources:
        st.caption("Draw or upload a sketch first, then click on it to pick regions.")
        return
    if state.get("regions_source") not in sources:
        state["regions_source"] = sources[0]
    if len(sources) > 1:
        st.segmented_control("Pick regions on", sources, key="regions_source")
    data = sketch if state["regions_source"] == "Sketch" else last_render
    set_target(data)
    try:
        image = imgs.decode(data, MAX_PREVIEW_PIXELS)
    except EngineError as exc:
        st.error(str(exc))
        return

    pending = state.pop("region_click", None)
    if pending is not None:
        add_region(engine, data, *pending)

    regions = state["regions"]
    shown = overlay(image, [r["mask"] for r in regions]) if regions else image.convert("RGB")
    state["regions_preview"] = shown  # what the canvas shows under the clicks
    click = clicked(shown, f"regions_canvas_{state['regions_rev']}", REGION_COLORS[len(regions) % len(REGION_COLORS)])
    if click is not None:
        state["regions_rev"] += 1  # a fresh canvas next run, whether or not SAM2 finds something
        add_region(engine, data, *click)
        st.rerun()
    st.caption("Click an object to add it as a region. Each region's colour matches its row below.")
    if state.get("regions_error"):
        st.error(state["regions_error"])

    names = [s.name for s in engine.styles.list()]
    for i, r in enumerate(regions):
        cols = st.columns(2, vertical_alignment="bottom")
        wkey, skey = f"region_words_{r['id']}", f"region_style_{r['id']}"
        if wkey not in state:
            state[wkey] = r["words"] or ""
        if skey not in state:
            state[skey] = r["style"] if r["style"] in names else RETRIEVE
        cols[0].text_input(
            f"Region {i + 1}",
            key=wkey,
            placeholder="e.g. walnut veneer",
            on_change=_sync,
            args=(r["id"], "words", wkey),
        )
        cols[1].selectbox("Style", [RETRIEVE, *names], key=skey, on_change=_sync, args=(r["id"], "style", skey))
        note = f"{round(float(r['mask'].mean()) * 100)} % of the image"
        if r["style"]:
            note += f" · style **{r['style']}**"
        elif r["words"]:
            hit = retrieved(engine, r["words"])
            note += f" · retrieves **{hit.name}** ({hit.score:.2f})" if hit else " · the library is empty"
        else:
            note += " · type words or pick a style"
        info, remove = st.columns([4, 1], vertical_alignment="center")
        remove.button("Remove", key=f"region_remove_{r['id']}", on_click=remove_region, args=(r["id"],))
        with info:
            st.markdown(swatch(i) + html.escape(note, quote=False), unsafe_allow_html=True)


def result_regions(engine, result) -> None:
    """Beside the render: the regions over it, and each region's style with its scores."""
    regions = result.regions
    if not regions:
        return
    st.markdown("**Regions**")
    masks = [rle_decode(r["mask"]) for r in regions]
    st.image(overlay(result.images()[0], masks), caption="regions over the render", width="stretch")
    for r in regions:
        style = r["style"]
        c1, c2 = st.columns([1, 3], vertical_alignment="center")
        thumb = style_thumb(engine, style["id"])
        if thumb:
            c1.image(thumb, width="stretch")
        else:
            c1.caption("(removed)")
        label = f"“{r['words']}” → " if r["words"] else ""
        match = np.mean(r["style_similarity"]) if r.get("style_similarity") else None
        extra = f" · region match {match:.2f}" if match is not None else ""
        text = f"Region {r['index'] + 1}: {label}**{style['name']}** · similarity {style['score']:.2f}{extra}"
        c2.markdown(swatch(r["index"]) + html.escape(text, quote=False), unsafe_allow_html=True)


def retrieved(engine, words: str):
    """The style a region's words retrieve, asked once per words in a session."""
    cache = st.session_state.setdefault("_region_hits", {})
    key = (id(engine), words)
    if key not in cache:
        try:
            hits = engine.styles.search(text=words, k=1)
        except EngineError:
            return None
        cache[key] = hits[0] if hits else None
    return cache[key]
