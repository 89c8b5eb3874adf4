"""Sweeps: one sketch and prompt over a grid of structure × style strength, as a contact sheet with numbers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.errors import EngineError
from engine.images import UPLOAD_TYPES
from engine.schema import GenerateRequest
from engine.sweep import MAX_CELLS, parse_values
from ui import jobs
from ui.jobs import job_panel, timing
from ui.shared import current_sketch, engine_or_stop, md, random_seed

engine = engine_or_stop()
state = st.session_state
AUTO, NO_STYLE = "Auto (retrieved for the prompt)", "No style"

st.title("Sweeps")
st.caption(
    "One sketch and one prompt over a grid of **structure strength** (how closely the render follows the sketch)"
    " × **style strength** (how much of the reference's look it takes), with the same seed and style in every"
    " cell: find the setting before a catalog run, with the numbers under each image."
)


def studio_sketch() -> tuple[bytes | None, str]:
    try:
        return current_sketch()
    except KeyError:
        return None, ""


def build() -> tuple[GenerateRequest, list[float], list[float], list[int]]:
    upload = state.get("sweep_upload")
    sketch = upload.getvalue() if upload is not None else studio_sketch()[0]
    style = state["sweep_style"]
    request = GenerateRequest.build(
        prompt=state["sweep_prompt"],
        sketch=sketch,
        style=None if style in (AUTO, NO_STYLE) else style,
        use_style=style != NO_STYLE,
        seed=state["sweep_seed"],
        size=state["sweep_size"],
        variations=state["sweep_variations"],
    )
    structures = parse_values(state["sweep_structure"], "Structure strengths")
    styles = parse_values(state["sweep_styles"], "Style strengths")
    steps = parse_values(state["sweep_steps"], "Steps", int)
    return request, structures, styles, steps


def on_run() -> None:
    state.pop("sweep_error", None)
    try:
        request, structures, styles, steps = build()
        if len(structures) * len(styles) * len(steps) > MAX_CELLS:
            raise EngineError(f"at most {MAX_CELLS} cells; use fewer values per axis")
    except EngineError as exc:
        state["sweep_error"] = str(exc)
        return
    try:
        jobs.start("sweep_job", engine.sweeps.start(request, structures, styles, steps))
    except EngineError as exc:
        state["sweep_error"] = str(exc)


def on_open_dashboard(sets: list[str]) -> None:
    state["dash_sets"] = sets
    state["goto_dashboard"] = True


if state.pop("goto_dashboard", False):
    st.switch_page("pages/dashboard.py")

state.setdefault("sweep_prompt", state.get("prompt", ""))
for key, value in {
    "sweep_structure": "0.5, 1.0, 1.5",
    "sweep_styles": "0.2, 0.6, 1.0",
    "sweep_steps": "20",
    "sweep_style": AUTO,
    "sweep_size": 512,
    "sweep_variations": 1,
}.items():
    state.setdefault(key, value)
if "sweep_seed" not in state:
    state["sweep_seed"] = random_seed()

inputs, axes = st.columns([3, 2], gap="large")
with inputs:
    st.text_area("Prompt", key="sweep_prompt", height=80, placeholder="a lounge chair, product photo")
    st.file_uploader("Sketch (optional)", type=UPLOAD_TYPES, key="sweep_upload")
    sketch, where = studio_sketch()
    if state.get("sweep_upload") is None:
        st.caption(f"Using the Studio's sketch ({where})." if sketch else "No sketch: the grid is text-to-image.")
    try:
        names = [s.name for s in engine.styles.list()]
    except EngineError as exc:
        names = []
        st.error(str(exc))
    st.selectbox("Style", [AUTO, NO_STYLE, *names], key="sweep_style")
with axes:
    st.text_input("Structure strengths", key="sweep_structure", help="comma-separated, each 0–3")
    st.text_input("Style strengths", key="sweep_styles", help="comma-separated, each 0–2")
    st.text_input("Steps", key="sweep_steps", help="one value, or several for a third axis")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Seed", 0, 2**32 - 1, key="sweep_seed")
    c2.selectbox("Size", [256, 384, 512, 768], key="sweep_size")
    c3.number_input("Variations", 1, 4, key="sweep_variations", help="seeds per cell; metrics are their mean")
    try:
        n = len(parse_values(state["sweep_structure"], "s")) * len(parse_values(state["sweep_styles"], "s"))
        n *= len(parse_values(state["sweep_steps"], "s", int))
        st.caption(f"{n} cells · {n * state['sweep_variations']} renders")
    except EngineError:
        st.caption("Give comma-separated numbers.")

job = state.get("sweep_job")
st.button(
    "Run sweep",
    type="primary",
    on_click=on_run,
    disabled=job is not None or not state["sweep_prompt"].strip(),
    key="run_sweep",
)
if state.get("sweep_error"):
    st.error(state["sweep_error"])


def describe_sweep(p) -> str:
    """The cell being rendered (`p.step` cells are done), never past the last one."""
    if p is None or (p.stage != "queued" and not p.total):
        return "Preparing…"
    if p.stage == "queued":
        return f"Waiting for the GPU (position {p.step})"
    if p.step >= p.total:
        return f"All {p.total} cells rendered · writing the contact sheet · {p.elapsed:.0f}s"
    return f"Cell {p.step + 1}/{p.total}{timing(p)}"


def on_sweep_done(job) -> None:
    if job.state == "done":
        state["sweep_result"] = job.result["batch"]


job_panel(engine, "sweep_job", describe_sweep, on_done=on_sweep_done, error_key="sweep_error")


def sweep_file(batch: str, name: str) -> bytes | None:
    """A sweep's file, fetched once per session."""
    cache = state.setdefault("_sweep_files", {})
    if (id(engine), batch, name) not in cache:
        try:
            cache[(id(engine), batch, name)] = engine.sweeps.file(batch, name)
        except EngineError:
            return None
    return cache[(id(engine), batch, name)]


batch = state.get("sweep_result")
result = None
if batch:
    try:
        result = engine.sweeps.get(batch)
    except EngineError as exc:
        st.error(str(exc))
if result is not None:
    st.subheader(f"{md(result['prompt'])} · {md(result['style'])}")
    sheet = sweep_file(batch, "contact.png")
    if sheet:
        st.image(sheet, caption=f"Contact sheet of {batch}", width="content")
    table = pd.DataFrame(result["table"])
    best = table.loc[table["edge_f1"].idxmax()] if table["edge_f1"].notna().any() else None
    if best is not None:
        st.caption(
            f"Most faithful to the sketch: structure {best.structure_strength:g}, style {best.style_strength:g}"
            f" (edge F1 {best.edge_f1:.2f})."
        )
    st.dataframe(table, hide_index=True, key="sweep_table")
    d1, d2, d3 = st.columns([1, 1, 2])
    d1.download_button("Contact sheet (PNG)", sheet or b"", f"{batch}.png", "image/png", disabled=not sheet)
    d2.download_button("Table (CSV)", lambda: sweep_file(batch, "table.csv") or b"", f"{batch}.csv", "text/csv",
                       on_click="ignore")  # fmt: skip
    d3.button("Open in the Dashboard", on_click=on_open_dashboard, args=(result["sets"],))

try:
    earlier = [s for s in engine.sweeps.list() if s["batch"] != batch]
except EngineError:
    earlier = []
if earlier:
    with st.expander(f"Earlier sweeps ({len(earlier)})"):
        pick = st.selectbox(
            "Sweep", earlier, format_func=lambda s: f"{s['batch']} · {s['prompt'][:60]}", key="sweep_past"
        )
        sheet = sweep_file(pick["batch"], "contact.png")
        if sheet:
            st.image(sheet, width="content")
