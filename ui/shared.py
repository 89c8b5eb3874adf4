"""One engine per process, the session's fields, background generation jobs and the sidebar."""

from __future__ import annotations

import base64
import io
import secrets
from typing import Any

import streamlit as st
from PIL import Image

from engine.engine import Engine, LocalEngine
from engine.errors import EngineError
from engine.remote import RemoteEngine
from engine.schema import MAX_SEED, GenerateRequest
from engine.settings import Settings
from ui.jobs import Job, start_task

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
    "pen_width": 4,
    "pen_color": "#000000",
    "draw_mode": "freedraw",
    "engine_mode": "Local",
    "remote_url": "http://127.0.0.1:8000",
    "remote_token": "",
    "regions_on": False,
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
}


@st.cache_resource(show_spinner="Loading models…")
def get_engine() -> LocalEngine:
    """The local engine, loaded once per process and shared by every session."""
    engine = LocalEngine(Settings())
    engine.load()
    return engine


@st.cache_resource(show_spinner=False, max_entries=4)
def get_remote_engine(url: str, token: str) -> RemoteEngine:
    return RemoteEngine(url, token or None)


def init_state() -> None:
    """Keep every field alive across pages and reruns (Streamlit drops keys of widgets not drawn)."""
    for key, value in DEFAULTS.items():
        st.session_state[key] = st.session_state.get(key, value)


def _engine_picker() -> None:
    with st.sidebar:
        st.segmented_control("Engine", ["Local", "Remote"], key="engine_mode")
        if st.session_state["engine_mode"] == "Remote":
            st.text_input("Server URL", key="remote_url", help="`python -m engine serve` or its ngrok URL")
            st.text_input("Token", key="remote_token", type="password")
            if st.button("Test connection"):
                try:
                    health = _current_engine().health()
                    st.success(f"Connected: {health['device']} · profile {health['profile']}")
                except EngineError as exc:
                    st.error(str(exc))


def _current_engine() -> Engine:
    state = st.session_state
    if state.get("engine_mode") == "Remote":
        return get_remote_engine(state["remote_url"].strip(), state["remote_token"].strip())
    return get_engine()


def engine_or_stop() -> Engine:
    """The engine this session uses (local or remote), with the sidebar; or a banner with the fix."""
    init_state()
    _engine_picker()
    try:
        engine = _current_engine()
        health = engine.health()
    except EngineError as exc:
        st.error(f"**The engine could not start.** {exc.message}")
        if exc.fix:
            st.info(f"How to fix: {exc.fix}")
        st.stop()
    _status(health, remote=st.session_state["engine_mode"] == "Remote")
    return engine


def _status(health: dict[str, Any], remote: bool) -> None:
    with st.sidebar:
        if health["profile"] == "tiny":
            st.warning("**Tiny profile** — random-weight demo models: images are noise, the workflow is real.")
        where = "remote " if remote else ""
        st.caption(f"{where}Device **{health['device']}** · {health['dtype']} · profile **{health['profile']}**")
        if health.get("retrieval"):
            st.caption(f"Retrieval: **{health['retrieval']}**")
        loaded = [name for name, ok in health["loaded"].items() if ok]
        st.caption("Models loaded: " + (", ".join(loaded) or "none yet"))
        with st.expander("Models"):
            for role, model_id in health["models"].items():
                st.caption(f"{role}: `{model_id}`")


def start_job(engine: Engine, request: GenerateRequest) -> Job:
    """One generation in the background."""
    return start_task(lambda progress, cancel: engine.generate(request, on_progress=progress, cancel=cancel), request)


def current_sketch() -> tuple[bytes | None, str]:
    """The sketch the Studio's next generation uses, and where it came from."""
    state = st.session_state
    if state.get("sketch_override"):
        return state["sketch_override"], state.get("sketch_override_label", "restored sketch")
    if state["source"] == "Upload":
        upload = state.get("upload")
        return (upload.getvalue(), upload.name) if upload is not None else (None, "")
    return state.get("drawn_png"), "drawing"


def local_only(what: str) -> None:
    """Pages that read this machine's data folder say so, and stop, when the session renders remotely."""
    if st.session_state.get("engine_mode") == "Remote":
        st.info(f"This session renders on a remote engine: {what} is kept on that machine; open this page there.")
        st.stop()


@st.cache_data(show_spinner=False, max_entries=5000)
def thumbnail_uri(path: str, px: int = 96) -> str | None:
    """A small JPEG of an output as a data URI, for image columns in tables."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((px, px))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=80)
    except OSError:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED) + 1
