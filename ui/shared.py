"""One engine per process, and the sidebar that says what it is running."""

from __future__ import annotations

import streamlit as st

from engine.engine import LocalEngine
from engine.errors import EngineError
from engine.settings import Settings


@st.cache_resource(show_spinner="Loading models…")
def get_engine() -> LocalEngine:
    engine = LocalEngine(Settings())
    engine.load()
    return engine


def engine_or_stop() -> LocalEngine:
    """The engine, or a one-line banner with the fix (missing weights, unreachable store) and a stopped page."""
    try:
        return get_engine()
    except EngineError as exc:
        st.error(f"**The engine could not start.** {exc.message}")
        if exc.fix:
            st.info(f"How to fix: {exc.fix}")
        st.stop()


def sidebar(engine: LocalEngine) -> None:
    health = engine.health()
    with st.sidebar:
        if health["profile"] == "tiny":
            st.warning("**Tiny profile** — random-weight demo models: images are noise, the workflow is real.")
        st.caption(f"Device **{health['device']}** · {health['dtype']} · profile **{health['profile']}**")
        with st.expander("Models"):
            for role, model_id in health["models"].items():
                st.caption(f"{role}: `{model_id}`")
