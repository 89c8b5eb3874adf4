"""The Studio's **Describe**: a prompt written by the engine from an image (the uploaded sketch, the start image, a
render) fills the prompt box, where it stays editable; the words' CLIP scores are a hover away, under the box."""

from __future__ import annotations

import streamlit as st

from engine.api import Description
from engine.errors import EngineError
from ui.shared import md, number

HELP = "write a prompt from this image: CLIP matches it to the studio's words and your styles' tags"
CATEGORY_NAMES = {"object": "Object", "medium": "Medium", "style": "Style", "material": "Material", "colour": "Colour"}


def on_describe(engine, data: bytes, label: str) -> None:
    """Button callback (it runs before the page redraws, so it may set the prompt box): the engine's description of
    `data` becomes the prompt; the words it replaced can be had back. A refusal is one line under the box."""
    state = st.session_state
    try:
        found = engine.styles.describe(data)
    except EngineError as exc:
        state["describe_error"] = f"Describe {label}: {exc}"
        return
    state.pop("describe_error", None)
    before = state.get("prompt", "")
    if before.strip() and before != found.prompt:
        state["prompt_before_describe"] = before
    state["prompt"] = found.prompt
    state["described"] = {"label": label, "description": found}


def button(engine, data: bytes, label: str, key: str, where=st) -> None:
    where.button("Describe", key=key, on_click=on_describe, args=(engine, data, label), help=HELP)


def scores_help(found: Description) -> str:
    """Each category's top words with their CLIP cosine and share, the words the prompt says in bold."""
    lines = []
    for category, terms in found.terms.items():
        shown = [
            (f"**{md(t.term)}**" if t.picked else md(t.term))
            + f" {number(t.score)} ({t.confidence * 100:.0f} %)"
            + (" · your library" if t.source == "library" else "")
            for t in terms
        ]
        lines.append(f"{CATEGORY_NAMES.get(category, category)}: " + ", ".join(shown))
    lines.append(f"CLIP cosine (share of its category) · {md(found.model)} · {found.seconds * 1000:.0f} ms")
    return "\n\n".join(lines)


def undo() -> None:
    state = st.session_state
    if "prompt_before_describe" in state:
        state["prompt"] = state.pop("prompt_before_describe")
    state.pop("described", None)


def caption() -> None:
    """Under the prompt box: where the words came from (their scores on hover) and a way back to one's own, or the
    line saying why an image could not be described."""
    state = st.session_state
    if state.get("describe_error"):
        st.error(state["describe_error"])
    described = state.get("described")
    if not described:
        return
    found: Description = described["description"]
    edited = " (edited since)" if state.get("prompt") != found.prompt else ""
    c1, c2 = st.columns([4, 1], vertical_alignment="center")
    c1.caption(f"Prompt written from {md(described['label'])}{edited} · hover for the scores", help=scores_help(found))
    if state.get("prompt_before_describe"):
        c2.button("Undo", key="describe_undo", on_click=undo, help="bring back the words the description replaced")
