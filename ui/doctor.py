"""The model doctor in the app: the first page a new machine shows when the engine's models are not there (the whole
table, the one command that fetches them, the demo models, the remote switch), and the sidebar's one line."""

from __future__ import annotations

import time

import streamlit as st

from engine.api import DoctorReport, Engine, ModelCheck
from engine.errors import EngineError

DEMO = "demo_profile"  # the session runs the local engine on the tiny profile (Try the demo models)
_CACHE = "_doctor"
FRESH_SECONDS = 30.0  # the sidebar asks the engine again after this long (a download may have finished)
# (plain words: a table draws on a canvas, where an emoji the machine has no font for is an empty box)
STATUS_WORDS = {
    "present": "present",
    "missing": "missing",
    "incomplete": "incomplete",
    "pickle-only": "pickle only (refused)",
    "to build": "built on first use",
}


def size(n: int | None, about: bool = False) -> str:
    if not n:
        return ""
    text = f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
    return f"about {text}" if about else text


def rows(report: DoctorReport) -> list[dict]:
    """The report as a table a person reads: the needed models first."""
    ordered = sorted(report.models, key=lambda m: (not m.needed, m.usable))
    return [
        {
            "Model": m.label,
            "Status": STATUS_WORDS.get(m.status, m.status),
            "Needed": "yes" if m.needed else "optional",
            "For": m.features,
            "Size": size(m.size) if m.size else size(m.download_size, about=True),
            "Format": m.format or "",
            "Id": m.model,
            "Fetch": m.download or m.fetch or m.note,
        }
        for m in ordered
    ]


def _use_demo() -> None:
    st.session_state[DEMO] = True


def _use_remote() -> None:
    st.session_state["engine_mode"] = "Remote"


def leave_demo() -> None:
    st.session_state.pop(DEMO, None)


def first_page(report: DoctorReport, error: EngineError | None = None) -> None:
    """What a machine without the engine's models shows instead of the page: every model and where it stands, the
    command that fetches them all, and two ways to go on now (the demo models; a remote engine)."""
    needed = [m for m in report.models if m.needed and not m.usable]
    total = sum(m.download_size or 0 for m in needed)
    st.subheader("Models needed")
    st.warning(
        f"**The engine's models are not on this machine yet**: {len(needed)} of the models every render needs"
        + (f" ({size(total, about=True)})" if total else "")
        + ". Fetch them once where the Hugging Face Hub is reachable, or go on now with the demo models or a remote "
        "engine."
    )
    if report.fetch_all:
        st.markdown(f"Fetch everything it needs (into the hub cache, `{report.cache}`):")
        st.code(report.fetch_all, language="bash")
        st.caption(
            "Then reload this page. No hub here? Run it on a machine that has one and copy the cache folder over, "
            "or point the settings (the `DESIGN_STUDIO_…` variables in the table) at folders that hold the models."
        )
    for m in needed:
        if m.source == "folder":
            st.markdown(f"**{m.label}**: {m.note or m.status} (`{m.model}`)")
    demo, far = st.columns(2)
    with demo:
        st.button("Try the demo models", type="primary", on_click=_use_demo, icon=":material/science:")
        st.caption(
            "Tiny random-weight models, built here in seconds: images are noise, but every page and workflow is "
            "real. To start with them every time: `DESIGN_STUDIO_PROFILE=tiny make run`."
        )
    with far:
        st.button("Use a remote engine", on_click=_use_remote, icon=":material/cloud:")
        st.caption("A GPU box or Colab running `python -m engine serve`: its models, its machine.")
    st.dataframe(rows(report), hide_index=True, width="stretch")
    if error is not None:
        st.caption(f"The engine said: {error.message}")


def report(engine: Engine, identity: str) -> DoctorReport | None:
    """The engine's doctor report, asked again at most every FRESH_SECONDS per session; None from an engine that
    cannot say (an older server)."""
    state = st.session_state
    cached = state.get(_CACHE)
    if cached and cached[0] == identity and time.monotonic() - cached[1] < FRESH_SECONDS:
        return cached[2]
    try:
        found = engine.about.doctor()
    except EngineError:
        found = None
    state[_CACHE] = (identity, time.monotonic(), found)
    return found


def sidebar_line(found: DoctorReport | None) -> None:
    """One short line: "models: all present", or "3 missing — see Models" (the expander below it)."""
    if found is None:
        return
    if found.ok:
        st.caption(found.summary[:1].upper() + found.summary[1:])
    else:
        st.caption(f":orange[**Models: {found.summary}**]")


def listed(found: DoctorReport, name) -> list[str]:
    """The Models expander's lines: each model by its role, id and status."""
    return [f"{m.name}: `{name(m.model)}` · {STATUS_WORDS.get(m.status, m.status)}{_optional(m)}" for m in found.models]


def _optional(m: ModelCheck) -> str:
    return "" if m.needed else " (optional)"
