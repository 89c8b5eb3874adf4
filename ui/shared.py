"""One engine per process (local, or remote per the sidebar), the session's fields and the sidebar."""

from __future__ import annotations

import base64
import os
import re
import secrets
from typing import Any

import streamlit as st

from engine.api import Capabilities, Engine
from engine.errors import EngineError
from engine.schema import MAX_SEED

# Every Studio field, with its default. Pages read and write these keys; widgets use them as keys.
DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative": "",
    "source": "Draw",
    "edge_mode": "auto",
    "canny_low": 50,
    "canny_high": 150,
    "style_mode": "Auto",
    "library_style": None,
    "steps": 20,
    "guidance": 7.5,
    "structure": 1.5,
    "style_strength": 0.8,
    "style_only": False,
    "seed": 0,
    "seed_locked": False,
    "size": 512,
    "variations": 1,
    "scheduler": "unipc",
    "mode": "quality",
    "live": False,
    "pen_width": 4,
    "pen_color": "#000000",
    "draw_mode": "freedraw",
    "aspect": "4:3",
    "run_label": "",
    "run_batch": "",
    "engine_mode": "Local",
    "remote_url": "http://127.0.0.1:8000",
    "remote_token": "",
    "regions_on": False,
    "control": "canny",
    "hires": 1.0,
    "hires_strength": 0.35,
    "init_on": False,
    "strength": 0.6,
    "inpaint_on": False,
}


# Studio fields that map one-to-one onto the request's generation parameters (and the metadata's
# `params`), so building a request and restoring one from the history read the same table.
FIELD_TO_PARAM: dict[str, str] = {
    "steps": "steps",
    "guidance": "guidance",
    "structure": "structure_strength",
    "style_strength": "style_strength",
    "style_only": "style_only",
    "size": "size",
    "variations": "variations",
    "scheduler": "scheduler",
    "mode": "mode",
    "control": "control",
    "hires": "hires",
    "hires_strength": "hires_strength",
}


@st.cache_resource(show_spinner="Loading models…")
def get_engine() -> Engine:
    """The local engine, loaded once per process and shared by every session."""
    from engine.hub import check_render_models
    from engine.settings import Settings

    settings = Settings()
    check_render_models(settings)  # offline without the weights: said at once, before the heavy imports
    from engine.local import LocalEngine

    engine = LocalEngine(settings)
    try:
        engine.load(freeze=True)
    except BaseException:
        engine.close()  # not cached: the next page load tries again (after a download, say), without this one's threads
        raise
    return engine


@st.cache_resource(show_spinner=False, max_entries=4)
def get_remote_engine(url: str, token: str) -> Engine:
    from engine.remote import RemoteEngine

    return RemoteEngine(url, token or None)


def init_state() -> None:
    """Keep every field alive across pages and reruns (Streamlit drops keys of widgets not drawn). A laptop that
    always renders on one server says so once (DESIGN_STUDIO_REMOTE_URL, _REMOTE_TOKEN): every session starts in
    Remote mode there, and the laptop never tries to load models it may not have."""
    state = st.session_state
    if "engine_mode" not in state and os.environ.get("DESIGN_STUDIO_REMOTE_URL", "").strip():
        state["engine_mode"] = "Remote"
        state["remote_url"] = os.environ["DESIGN_STUDIO_REMOTE_URL"].strip()
        state["remote_token"] = os.environ.get("DESIGN_STUDIO_REMOTE_TOKEN", "").strip()
    for key, value in DEFAULTS.items():
        state[key] = state.get(key, value)


def _engine_picker() -> None:
    with st.sidebar:
        st.segmented_control("Engine", ["Local", "Remote"], key="engine_mode")
        if st.session_state["engine_mode"] == "Remote":
            st.text_input("Server URL", key="remote_url", help="`python -m engine serve` or its ngrok URL")
            st.text_input("Token", key="remote_token", type="password")
            if st.button("Test connection"):
                try:
                    found = current_engine().capabilities()
                    st.success(
                        f"Connected: {found.device} · profile {found.profile} · {found.precision or found.dtype}"
                    )
                except EngineError as exc:
                    st.error(str(exc))


def remote() -> bool:
    return st.session_state.get("engine_mode") == "Remote"


def current_engine() -> Engine:
    state = st.session_state
    if remote():
        return get_remote_engine(state["remote_url"].strip(), state["remote_token"].strip())
    return get_engine()


def engine_or_stop() -> Engine:
    """The engine this session uses (local or remote), with the sidebar; or a banner with the fix."""
    from ui.gate import through_the_router

    through_the_router()
    init_state()
    _engine_picker()
    try:
        engine = current_engine()
        found = engine.capabilities()
    except EngineError as exc:
        st.error(f"**The engine could not start.** {exc.message[:1].upper()}{exc.message[1:]}")
        if exc.fix_for("app"):
            st.info(f"How to fix: {exc.fix_for('app')}")
        st.stop()
    st.session_state["capabilities"] = found
    _status(found)
    return engine


def _status(found: Capabilities) -> None:
    with st.sidebar:
        if found.profile == "tiny":
            st.warning("**Tiny profile** — random-weight demo models: images are noise, the workflow is real.")
        where = "Remote engine: device" if found.remote else "Device"
        workers = f" · {found.workers} {found.executor} workers" if found.executor != "local" else ""
        precision = found.precision or found.dtype  # (an older server sends no precision)
        cpu = found.cpu or {}
        about = f"{cpu.get('model') or 'CPU'}, {cpu.get('isa') or 'unknown ISA'}" if found.device == "cpu" else None
        st.caption(
            f"{where} **{found.device}** · {precision} · profile **{found.profile}**{workers}",
            help=f"{about}. Precision is chosen from the hardware (DESIGN_STUDIO_DTYPE overrides it)."
            if about
            else None,
        )
        st.caption(f"Retrieval: **{found.retrieval}**")
        loaded = [name for name, ok in found.loaded.items() if ok]
        st.caption("Models loaded: " + (", ".join(loaded) or "none yet"))
        with st.expander("Model ids"):
            for role, model_id in found.models.items():
                st.caption(f"{role}: `{model_id}`")


def current_sketch() -> tuple[bytes | None, str]:
    """The sketch the Studio's next generation uses, and where it came from."""
    state = st.session_state
    if state.get("sketch_override"):
        return state["sketch_override"], state.get("sketch_override_label", "restored sketch")
    if state["source"] == "Upload":
        upload = state.get("upload")
        return (upload.getvalue(), upload.name) if upload is not None else (None, "")
    return state.get("drawn_png"), "drawing"


def data_uri(jpeg: bytes | None) -> str | None:
    """A small JPEG as a data URI, for image columns in tables."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode() if jpeg else None


def output_thumbs(engine: Engine, refs: list[str], px: int = 96) -> dict[str, bytes | None]:
    """JPEG thumbnails of outputs ("RUN_ID#INDEX"), fetched once each per session, many in one call."""
    cache: dict[tuple, bytes] = st.session_state.setdefault("_thumbs", {})
    wanted = [r for r in dict.fromkeys(refs) if (id(engine), r, px) not in cache]
    for start in range(0, len(wanted), 500):
        try:
            found = engine.history.thumbnails(wanted[start : start + 500], px)
        except EngineError:
            break
        for ref, jpeg in found.items():
            cache[(id(engine), ref, px)] = jpeg
    return {r: cache.get((id(engine), r, px)) for r in refs}


def style_thumb(engine: Engine, style_id: str, px: int = 256) -> bytes | None:
    """A style's picture for the page, fetched once per session (None when the style is gone)."""
    cache: dict[tuple, bytes | None] = st.session_state.setdefault("_style_thumbs", {})
    key = (id(engine), style_id, px)
    if key not in cache:
        try:
            cache[key] = engine.styles.image(style_id, px)
        except EngineError:
            return None
    return cache[key]


def number(value: float, places: int = 2) -> str:
    """A score for the page: fixed decimals, and never "-0.00" (a tiny negative reads as 0)."""
    return f"{round(float(value), places) + 0.0:.{places}f}"


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED) + 1


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md(text: object) -> str:
    """User text (a prompt, a style or file name, an id) as literal Markdown: no image a stranger's URL loads, no link,
    no colour directive, no emphasis; it reads as typed."""
    return _MARKDOWN.sub(r"\\\1", str(text))
