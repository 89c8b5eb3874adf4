"""History: every past render with its recipe, as a gallery (filters, stars, two compared side by side: ui/gallery.py);
restore one into the Studio, or find work by meaning (the hits as the same cards, under the same filters)."""

from __future__ import annotations

import streamlit as st

from engine.errors import EngineError
from engine.rules.controlnets import CONTROLS
from engine.schema import Progress, StyleHit
from ui import gallery, jobs
from ui import regions as regions_ui
from ui.gallery import short_id
from ui.shared import DEFAULTS, FIELD_TO_PARAM, engine_or_stop, md, output_thumbs

engine = engine_or_stop()
state = st.session_state


def on_restore(run_id: str) -> None:
    """Put a run's settings and its sketch back into the Studio's fields."""
    meta = engine.history.get(run_id).metadata
    params = meta["params"]
    # a setting the run did not use (None) or did not know yet (older runs): the Studio's default
    state.update(
        {name: v if (v := params.get(param)) is not None else DEFAULTS[name] for name, param in FIELD_TO_PARAM.items()}
    )
    edge_mode = meta.get("edge_mode")
    state.update(
        prompt=meta["prompt"],
        negative=meta.get("negative_prompt", ""),
        seed=meta["seed"],
        seed_locked=True,
        edge_mode=edge_mode if edge_mode in ("auto", "lines", "canny") else "auto",  # not a preprocessor's name
        run_label=meta.get("label") or "",
        run_batch=meta.get("batch") or "",
    )
    if meta.get("canny"):
        state.update(canny_low=meta["canny"][0], canny_high=meta["canny"][1])
    used = [s for s in meta["styles"] if s.get("used")]
    if not params.get("use_style", True) or not used:
        state["style_mode"] = "None"
    elif len(used) == 1:
        state.update(style_mode="From library", library_style=used[0]["name"])
    else:  # a blend: the same references with the same weights, ticked under Auto
        hits = [StyleHit(x["id"], x["name"], x["score"], weight=x["weight"], used=True) for x in used]
        state.update(style_mode="Auto", auto_for=meta["prompt"], auto_hits=hits)
        for h in hits:
            state[f"use_{h.id}"] = True
            state[f"w_{h.id}"] = h.weight
    sketch = engine.history.sketch(run_id)
    if sketch:
        state.update(sketch_override=sketch, sketch_override_label=f"sketch of {short_id(run_id)}")
    else:
        state.pop("sketch_override", None)
    regions_ui.restore(meta, sketch)
    restore_control_rows(params.get("controls") or [])
    state["goto_studio"] = True


def restore_control_rows(units: list[dict]) -> None:
    """A run that followed several ControlNets (or one over part of the steps): the Studio's rows again, the first
    one being `control` at the Structure strength (a unit's own image stays with the run: that row follows the
    sketch)."""
    for row in state.get("control_rows") or []:
        for key in (f"cn_type_{row}", f"cn_weight_{row}", f"cn_range_{row}"):
            state.pop(key, None)
    state["control_rows"] = []
    known = [u for u in units if u.get("type") in CONTROLS]
    if len(known) < 2 and all((u["start"], u["end"]) == (0, 1) for u in known):
        return
    state["control_range"] = (float(known[0]["start"]), float(known[0]["end"]))
    for row, unit in enumerate(known[1:], start=1):
        state[f"cn_type_{row}"] = unit["type"]
        state[f"cn_weight_{row}"] = float(unit["weight"])
        state[f"cn_range_{row}"] = (float(unit["start"]), float(unit["end"]))
    state["control_rows"] = list(range(1, len(known)))
    state["_cn_next"] = len(known)


def on_like(run_id: str, index: int) -> None:
    state["history_like"] = (run_id, index)
    state["history_query"] = ""


def on_upscale(run_id: str, index: int, factor: int) -> None:
    """Upscale an output on the engine (a job, its progress at the top); the new run then heads the History."""
    state.pop("history_upscale_error", None)
    try:
        jobs.start("history_upscale_job", engine.renders.upscale(run_id, index, factor))
    except EngineError as exc:
        state["history_upscale_error"] = str(exc)


def describe_upscale(p: Progress | None) -> str:
    if p is None or p.stage != "upscaling":
        return (
            "Upscaling…" if p is None or p.stage != "queued" else f"Upscaling: waiting for the GPU (position {p.step})"
        )
    return f"Upscaling · tile {p.step}/{p.total}{jobs.timing(p)}"


if state.pop("goto_studio", False):
    st.switch_page("pages/studio.py")

st.title("History")
query = st.text_input("Search by meaning", key="history_query", placeholder="blue watercolor chairs")
like = state.get("history_like")

found = None  # no search: the gallery of every run, newest first (ui/gallery.py)
try:
    if query.strip():
        state.pop("history_like", None)
        found = engine.history.search(text=query, k=12)
        st.caption("The images closest in meaning to these words, closest first; the filters below apply to them.")
    elif like:
        found = engine.history.search(like_run=like[0], like_index=like[1], k=12)
        source, words = st.columns([1, 7], vertical_alignment="center")
        if picture := output_thumbs(engine, [f"{like[0]}#{like[1]}"], 96)[f"{like[0]}#{like[1]}"]:
            source.image(picture, width="stretch")
        words.caption(f"More like **{md(engine.history.get(like[0]).metadata['prompt'][:80])}**")
        words.button("Show all", on_click=lambda: state.pop("history_like", None))
except EngineError as exc:
    st.error(str(exc))
    found = []

if state.get("history_upscale_error"):
    st.error(state["history_upscale_error"])
jobs.job_panel(engine, "history_upscale_job", describe_upscale, error_key="history_upscale_error")
gallery.show(engine, on_restore, on_like, hits=found, on_upscale=on_upscale)
