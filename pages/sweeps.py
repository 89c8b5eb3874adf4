"""Sweeps: one sketch and prompt over a grid of structure × style strength, as a contact sheet with numbers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.errors import EngineError, NotFound
from engine.evaluation import METRICS, column_name
from engine.images import UPLOAD_TYPES
from engine.rules.controlnets import CONTROLS
from engine.schema import GenerateRequest
from engine.sweep import MAX_CELLS, parse_values
from ui import jobs
from ui import models as models_ui
from ui.gallery import short_id
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


def on_upload() -> None:
    """Keep the uploaded sketch itself: a file uploader forgets its file when the page is left."""
    upload = state.get("sweep_upload")
    if upload is not None:
        state["sweep_sketch"] = (upload.getvalue(), upload.name)
    else:  # the user took the file away
        state.pop("sweep_sketch", None)


def offered_controls() -> list[str]:
    """The ControlNet types this engine renders with (its capabilities), among those this page knows."""
    caps = state.get("capabilities")
    said = [c for c in (caps.controls if caps is not None else []) if c in CONTROLS]
    return said or list(CONTROLS)


def build() -> tuple[GenerateRequest, list[float], list[float], list[int]]:
    kept = state.get("sweep_sketch")
    sketch = kept[0] if kept else studio_sketch()[0]
    style = state["sweep_style"]
    request = GenerateRequest.build(
        prompt=state["sweep_prompt"],
        sketch=sketch,
        style=None if style in (AUTO, NO_STYLE) else style,
        use_style=style != NO_STYLE,
        seed=state["sweep_seed"],
        size=state["sweep_size"],
        variations=state["sweep_variations"],
        loras=[{"name": state["sweep_lora"], "weight": 1.0}] if state.get("sweep_lora") else [],
    )
    structures = parse_values(state["sweep_structure"], "Structure strengths")
    styles = parse_values(state["sweep_styles"], "Style strengths")
    steps = parse_values(state["sweep_steps"], "Steps", int)
    return request, structures, styles, steps


def lora_weights() -> list[float] | None:
    """The LoRA weight axis: the weights typed, when a LoRA is picked (else none)."""
    if not state.get("sweep_lora"):
        return None
    return parse_values(state.get("sweep_lora_weights") or "1", "LoRA weights")


def on_run() -> None:
    state.pop("sweep_error", None)
    try:
        request, structures, styles, steps = build()
        controls = [c for c in state.get("sweep_controls") or [] if c in offered_controls()] or None
        weights = lora_weights()
        if len(structures) * len(styles) * len(steps) * len(controls or [None]) * len(weights or [None]) > MAX_CELLS:
            raise EngineError(f"at most {MAX_CELLS} cells; use fewer values per axis")
    except EngineError as exc:
        state["sweep_error"] = str(exc)
        return
    try:
        jobs.start("sweep_job", engine.sweeps.start(request, structures, styles, steps, controls, weights))
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
    "sweep_lora": None,
    "sweep_lora_weights": "0, 0.5, 1",
}.items():
    state.setdefault(key, value)
if "sweep_seed" not in state:
    state["sweep_seed"] = random_seed()

# The form's fields live for the whole session (persist_state): leaving the page and coming back finds them as typed.
KEEP = "session"
inputs, axes = st.columns([3, 2], gap="large")
with inputs:
    st.text_area("Prompt", key="sweep_prompt", height=80, placeholder="a lounge chair, product photo",
                 persist_state=KEEP)  # fmt: skip
    st.file_uploader("Sketch (optional)", type=UPLOAD_TYPES, key="sweep_upload", on_change=on_upload)
    kept = state.get("sweep_sketch")
    sketch, where = studio_sketch()
    if kept and state.get("sweep_upload") is None:  # uploaded before the page was left: still the one used
        note, drop = st.columns([4, 1], vertical_alignment="center")
        note.caption(f"Using the uploaded sketch **{md(kept[1])}**.")
        drop.button("Use the Studio's" if sketch else "No sketch", key="sweep_drop_sketch",
                    on_click=lambda: state.pop("sweep_sketch", None))  # fmt: skip
    elif not kept:
        st.caption(f"Using the Studio's sketch ({where})." if sketch else "No sketch: the grid is text-to-image.")
    try:
        names = [s.name for s in engine.styles.list()]
    except EngineError as exc:
        names = []
        st.error(str(exc))
    if state.get("sweep_style") not in (AUTO, NO_STYLE, *names):  # a style this engine's library does not have
        state["sweep_style"] = AUTO
    st.selectbox("Style", [AUTO, NO_STYLE, *names], key="sweep_style", persist_state=KEEP)
with axes:
    st.text_input("Structure strengths", key="sweep_structure", help="comma-separated, each 0–3", persist_state=KEEP)
    st.text_input("Style strengths", key="sweep_styles", help="comma-separated, each 0–2", persist_state=KEEP)
    st.text_input("Steps", key="sweep_steps", help="one value, or several for a third axis", persist_state=KEEP)
    state["sweep_controls"] = [c for c in state.get("sweep_controls") or [] if c in offered_controls()]
    st.multiselect(
        "ControlNet types", offered_controls(), key="sweep_controls", format_func=lambda c: CONTROLS[c].label,
        placeholder="the default only", help="several for one more axis: the same cell in each type",
        persist_state=KEEP,
    )  # fmt: skip
    loras = [m["name"] for m in models_ui.listing(engine).get("loras", [])]
    if state.get("sweep_lora") not in [None, *loras]:  # gone from this engine
        state["sweep_lora"] = None
    l1, l2 = st.columns([1, 1])
    l1.selectbox(
        "LoRA", [None, *loras], key="sweep_lora", format_func=lambda n: n or "none",
        help="one of the engine's LoRAs (the Studio's sidebar adds them); its weights below are one more axis",
        persist_state=KEEP,
    )  # fmt: skip
    l2.text_input("LoRA weights", key="sweep_lora_weights", disabled=not state.get("sweep_lora"),
                  help="comma-separated, each −2…2: the same cell at each weight", persist_state=KEEP)  # fmt: skip
    c1, c2, c3 = st.columns(3)
    c1.number_input("Seed", 0, 2**32 - 1, key="sweep_seed", persist_state=KEEP)
    c2.selectbox("Size", [256, 384, 512, 768], key="sweep_size", persist_state=KEEP)
    c3.number_input("Variations", 1, 4, key="sweep_variations", help="seeds per cell; metrics are their mean",
                    persist_state=KEEP)  # fmt: skip
    try:
        n = len(parse_values(state["sweep_structure"], "s")) * len(parse_values(state["sweep_styles"], "s"))
        n *= len(parse_values(state["sweep_steps"], "s", int)) * max(1, len(state["sweep_controls"]))
        n *= len(lora_weights() or [None])
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


def shown_table(rows: list[dict]) -> pd.DataFrame:
    """The sweep's table as a person reads it: words for its columns, a short id for each cell's run, and no column
    for a number no cell measured (a text-only sweep has no edge F1). The CSV keeps the machine names."""
    table = pd.DataFrame(rows)
    unmeasured = [m for m in METRICS if m in table and table[m].isna().all()]
    table = table.drop(columns=unmeasured).assign(run_id=[short_id(r) for r in table["run_id"]])
    return table.rename(columns=column_name)


batch = state.get("sweep_result")
result = None
if batch:
    try:
        result = engine.sweeps.get(batch)
    except NotFound:  # another engine's sweep, or one removed since: say so once, then forget it
        state.pop("sweep_result", None)
        st.warning(f"The sweep {md(batch)} is not on this engine (any more), so its results cannot be shown.")
    except EngineError as exc:
        st.error(str(exc))
if result is not None:
    st.subheader(md(result["prompt"]))
    sheet = sweep_file(batch, "contact.png")
    if sheet:
        st.image(sheet, width="content")
    st.caption(
        f"Sweep {md(batch)} · style reference **{md(result['style'])}**. Rows: **structure strength**; columns:"
        " **style strength**. Under each image: its prompt fidelity (CLIP), edge F1 where there is a sketch, its"
        " **style similarity** to the reference, and the seconds it took."
    )
    table = pd.DataFrame(result["table"])
    best = table.loc[table["edge_f1"].idxmax()] if table["edge_f1"].notna().any() else None
    if best is not None:
        st.caption(
            f"Most faithful to the sketch: structure strength {best.structure_strength:g}, style strength"
            f" {best.style_strength:g} (edge F1 {best.edge_f1:.2f})."
        )
    st.dataframe(shown_table(result["table"]), hide_index=True, key="sweep_table")
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
