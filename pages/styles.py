"""Style library: the references retrieval picks from — search them, add your own, hide or remove."""

from __future__ import annotations

import io

import streamlit as st
from PIL import Image, ImageOps

from engine.errors import EngineError
from engine.images import UPLOAD_TYPES
from ui.shared import engine_or_stop, md, style_thumb

engine = engine_or_stop()
state = st.session_state
COLUMNS = 4  # cards per row

st.title("Style library")


def on_add() -> None:
    files = state.get(uploader_key()) or []
    name = state.get("new_style_name", "").strip()
    tags = [t.strip() for t in state.get("new_style_tags", "").split(",") if t.strip()]
    added, errors = [], []
    for i, f in enumerate(files):
        style_name = name if len(files) == 1 and name else (f"{name} {i + 1}" if name else f.name.rsplit(".", 1)[0])
        try:
            added.append(engine.styles.add(f.getvalue(), style_name, state.get("new_style_description", ""), tags).name)
        except EngineError as exc:
            errors.append(f"{f.name}: {exc}")
    state["styles_message"] = (added, errors)
    if added and not errors:  # a fresh, empty form for the next one
        state["uploader_gen"] = state.get("uploader_gen", 0) + 1
        for key in ("new_style_name", "new_style_description", "new_style_tags"):
            state[key] = ""


def uploader_key() -> str:
    # A file uploader cannot be emptied through session state; a new key gives an empty one.
    return f"new_style_files_{state.get('uploader_gen', 0)}"


def square(jpeg: bytes | None) -> bytes | None:
    """A style's picture cropped to a square (its middle): every card's picture the same height, whatever its shape."""
    if not jpeg:
        return None
    with Image.open(io.BytesIO(jpeg)) as im:
        side = min(im.size)
        if im.width == im.height:
            return jpeg
        out = io.BytesIO()
        ImageOps.fit(im.convert("RGB"), (side, side)).save(out, format="JPEG", quality=90)
        return out.getvalue()


def card(style, score: float | None) -> None:
    """One style as a card as tall as its row's tallest (rows line up), the picture square, the name in full."""
    with st.container(border=True, height="stretch", key=f"style-card-{style.id}"):
        thumb = square(style_thumb(engine, style.id, 384))
        if thumb:
            st.image(thumb, width="stretch")
        st.markdown(f"**{md(style.name)}**" + (f" · {score:.2f}" if score is not None else ""))
        st.caption(("yours" if style.source == "user" else "shipped") + (" · hidden" if style.hidden else ""))
        if style.tags:
            st.caption(" ".join(f"#{md(t)}" for t in style.tags[:6]))
        st.space("stretch")  # the buttons at the foot of every card in the row
        if style.source == "user":
            st.button("Remove", key=f"rm_{style.id}", on_click=on_remove, args=(style.name,))
        else:
            label = "Unhide" if style.hidden else "Hide"
            st.button(label, key=f"hide_{style.id}", on_click=on_hide, args=(style.name, not style.hidden))


def on_remove(name: str) -> None:
    try:
        engine.styles.remove(name)
        state["styles_message"] = ([], [])
    except EngineError as exc:
        state["styles_message"] = ([], [str(exc)])


def on_hide(name: str, hidden: bool) -> None:
    try:
        engine.styles.hide(name, hidden)
    except EngineError as exc:
        state["styles_message"] = ([], [str(exc)])


with st.expander("Add styles"):
    st.file_uploader("Reference images", type=UPLOAD_TYPES, accept_multiple_files=True, key=uploader_key())
    st.text_input("Name", key="new_style_name", help="with several images, each gets this name and a number")
    st.text_input("Description", key="new_style_description")
    st.text_input("Tags (comma-separated)", key="new_style_tags")
    st.button("Add to library", on_click=on_add, disabled=not state.get(uploader_key()))

added, errors = state.pop("styles_message", ([], []))
if added:
    st.success("Added " + ", ".join(f"“{n}”" for n in added) + ".")
for line in errors:
    st.error(line)

query = st.text_input("Search by words", key="style_query", placeholder="warm wood, soft light")
show_hidden = st.toggle("Show hidden styles", key="show_hidden")

if query.strip():
    try:
        hits = engine.styles.search(text=query, k=8)
    except EngineError as exc:
        st.error(str(exc))
        hits = []
    st.caption("Ranked by CLIP similarity to your words — the same retrieval the Studio's Auto style uses.")
    by_id = {s.id: s for s in engine.styles.list(include_hidden=True)}
    styles = [by_id[h.id] for h in hits if h.id in by_id]
    scores = {h.id: h.score for h in hits}
else:
    styles, scores = engine.styles.list(include_hidden=show_hidden), {}

for start in range(0, len(styles), COLUMNS):  # row by row, so every row starts level
    for style, col in zip(styles[start : start + COLUMNS], st.columns(COLUMNS), strict=False):
        with col:
            card(style, scores.get(style.id))
if not styles:
    st.info("No styles match." if query.strip() else "The library is empty: add a reference image above.")
