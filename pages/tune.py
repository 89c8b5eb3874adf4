"""Tune retrieval: teach the retrieval CLIP your own words (LoRA on image–text pairs), measure recall, switch."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.errors import EngineError
from engine.tune.splits import MIN_HELD_OUT, min_pairs
from ui import jobs
from ui.jobs import job_panel, timing
from ui.shared import engine_or_stop, md

engine = engine_or_stop()
state = st.session_state

SCENARIOS = {
    "dual_lora": "LoRA on both towers (images and words)",
    "vision_lora": "LoRA on the image tower",
    "text_lora": "LoRA on the text tower",
    "linear_probe": "only the two projection heads",
    "zero_shot": "no training (the base model, as a baseline)",
}
LEARNING_RATES = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3]
# the engine's training defaults (engine/tune/__init__.py; the page test checks they agree)
DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_MIN_STEPS = 5, 1e-3, 100
SOURCES = {"library": "Style library", "upload": "Images (.zip) + captions CSV", "tagging": "A tagging run"}

st.title("Tune retrieval")
st.caption(
    'The base CLIP does not know your studio\'s or your shop\'s words (house style names, "teak" vs "mid-century'
    ' walnut"), so it can retrieve the wrong reference. Train a small LoRA adapter on your own image–text pairs,'
    " check recall@k on held-out pairs (and blind in the **Arena**), then switch retrieval to it. Switching back"
    " is instant: the base collections stay."
)


def run_job(key: str, start) -> None:
    """Start a job from a button; a refusal is one line."""
    state.pop("tune_error", None)
    try:
        jobs.start(key, start())
    except EngineError as exc:
        state["tune_error"] = str(exc)


# ---- 1 · data -------------------------------------------------------------------------------------------------
def on_prepare() -> None:
    state.pop("tune_data_done", None)  # a refused or failed prepare never stands under the last one's success
    source = state.get("tune_source") or "library"
    images, captions = state.get("tune_images"), state.get("tune_captions")
    run_job(
        "tune_data_job",
        lambda: engine.tuning.prepare(
            state["tune_data_name"],
            source,
            images=images.getvalue() if source == "upload" and images else None,
            captions=captions.getvalue() if source == "upload" and captions else None,
            tagging_run=state.get("tune_tagging") if source == "tagging" else None,
        ),
    )


def describe_prepare(p) -> str:
    return f"{p.stage} {p.step}/{p.total}" if p and p.total else "Reading the pairs…"


def on_prepared(job) -> None:
    if job.state == "done":
        state["tune_data_done"] = job.result


datasets = engine.tuning.datasets()
with st.expander("1 · Data: image–text pairs", expanded=not datasets):
    st.segmented_control("Pairs from", list(SOURCES), format_func=SOURCES.get, key="tune_source", default="library")
    source = state.get("tune_source") or "library"
    if source == "library":
        styles, need = len(engine.styles.list(include_hidden=True)), min_pairs()
        st.caption(
            f"{styles} styles: each image with its name, description and tags. "
            + (
                f"Recall is measured on held-out pairs ({MIN_HELD_OUT} for validation, {MIN_HELD_OUT} for test), "
                f"which takes at least {need} pairs: add {need - styles} more styles first, or upload pairs."
                if styles < need
                else "Add your own styles first; a few dozen pairs is a minimum."
            )
        )
    elif source == "upload":
        st.file_uploader("Images (.zip)", type=["zip"], key="tune_images")
        st.file_uploader("Captions CSV (columns: file, caption; optional label)", type=["csv"], key="tune_captions")
    else:
        runs = engine.catalog.tag_runs()
        if runs:
            st.selectbox(
                "Tagging run (Catalog → Tag photos)",
                [r["run"] for r in runs],
                key="tune_tagging",
                format_func=lambda n: f"{n} · {next(r['images'] for r in runs if r['run'] == n)} photos",
            )
        else:
            st.info("No tagging run yet: tag photos on the **Catalog** page first.")
    st.text_input("Name", key="tune_data_name", placeholder="e.g. studio-styles")
    st.caption(
        "Unreadable images and empty captions are dropped, duplicates removed by content; a stratified "
        "80/10/10 split with a fixed seed is written as WebDataset shards. An interrupted prepare resumes."
    )
    st.button("Prepare data", on_click=on_prepare, disabled=state.get("tune_data_job") is not None)
    job_panel(engine, "tune_data_job", describe_prepare, on_done=on_prepared, error_key="tune_error")
done = state.get("tune_data_done")
if done:
    counts = " · ".join(f"{k} {v}" for k, v in done["splits"].items())
    st.success(f"Prepared **{done['dataset']}**: {done['samples']} pairs ({counts}); {done['dropped']} dropped")


# ---- 2 · train ------------------------------------------------------------------------------------------------
def on_train(dataset: str) -> None:
    run_job(
        "tune_train_job",
        lambda: engine.tuning.train(
            dataset,
            state["tune_run_name"],
            state["tune_scenario"],
            int(state["tune_epochs"]),
            int(state["tune_batch"]),
            float(state["tune_lr"]),
        ),  # fmt: skip
    )


def describe_training(p) -> str:
    if p is None:
        return "Loading the model…"
    if p.stage == "evaluate":
        return f"Measuring recall {p.step}/{p.total}"
    return f"{p.stage} step {p.step}/{p.total}{timing(p)}"


with st.expander("2 · Train an adapter", expanded=bool(datasets)):
    if not datasets:
        st.info("Prepare data first (step 1).")
    else:
        by_name = {d["name"]: d for d in datasets}
        choice = st.selectbox("Data", list(by_name), key="tune_data")
        st.caption(" · ".join(f"{k}: {v}" for k, v in by_name[choice]["splits"].items()))
        c1, c2 = st.columns(2)
        c1.selectbox("Scenario", list(SCENARIOS), format_func=lambda s: f"{s} — {SCENARIOS[s]}", key="tune_scenario")
        c2.text_input("Run name", key="tune_run_name", placeholder="default: DATA-SCENARIO")
        c3, c4, c5 = st.columns(3)
        c3.number_input("Epochs", 1, 1000, DEFAULT_EPOCHS, key="tune_epochs")
        c4.number_input("Batch size", 2, 1024, 32, key="tune_batch")
        c5.select_slider("Learning rate", LEARNING_RATES, value=DEFAULT_LR, format_func=lambda v: f"{v:g}",
                         key="tune_lr")  # fmt: skip
        st.caption(
            f"At least {DEFAULT_MIN_STEPS} optimizer steps: a small set trains more epochs than asked. After every"
            " epoch recall is measured on the held-out validation pairs, and the adapter keeps the best epoch (the"
            " base model too, if nothing beat it). AdamW with warm-up and cosine decay, mixed precision on a GPU;"
            " a checkpoint every epoch, so a stopped run continues where it stopped. Recall on the test pairs is"
            " measured when it ends."
        )
        st.button("Start training", type="primary", on_click=on_train, args=(choice,),
                  disabled=state.get("tune_train_job") is not None)  # fmt: skip
    job_panel(engine, "tune_train_job", describe_training, error_key="tune_error")

if state.get("tune_error"):
    st.error(state["tune_error"])


# ---- 3 · results and switching ------------------------------------------------------------------------------
def on_use_done(job) -> None:
    if job.state == "done":
        st.toast(f"Retrieval now uses {job.result['label']} ({job.result['seconds']:.1f}s)")


st.subheader("Adapters")
adapters = engine.tuning.adapters()
active = next((a for a in adapters if a["active"]), None)
st.caption(f"Retrieval uses **{state['capabilities'].retrieval}** now.")
if active:
    st.button("Back to the base CLIP", on_click=run_job, args=("tune_use_job", lambda: engine.tuning.use(None)),
              key="tune_use_base", disabled=state.get("tune_use_job") is not None)  # fmt: skip
job_panel(engine, "tune_use_job", lambda p: f"Re-embedding {p.stage} {p.step}/{p.total}" if p and p.total
          else "Switching…", on_done=on_use_done, error_key="tune_error")  # fmt: skip
if not adapters:
    st.caption("No adapter trained yet.")
rows = []
for a in adapters:
    m = a["metrics"]
    row = {"adapter": a["name"], "scenario": a["scenario"], "active": a["active"]}
    for direction, short in (("text_to_image", "text→image"), ("image_to_image", "image→image")):
        for k in ("R@1", "R@5", "R@10"):
            base = m["base"][direction][k] if m else None
            tuned = m["tuned"][direction][k] if m else None
            row[f"{short} {k}"] = f"{base:.2f} → {tuned:.2f}" if base is not None and tuned is not None else "–"
    rows.append(row)
    cols = st.columns([3, 1, 1], vertical_alignment="center")
    cols[0].markdown(f"**{md(a['name'])}** · {md(a['scenario'])}" + (" · *active*" if a["active"] else ""))
    if a.get("usable", a["metrics"] is not None):
        cols[1].button("Use", key=f"tune_use_{a['id']}", on_click=run_job,
                       args=("tune_use_job", lambda name=a["name"]: engine.tuning.use(name)),
                       disabled=a["active"] or state.get("tune_use_job") is not None)  # fmt: skip
    elif a.get("failed"):  # never switched to: it has no scores to justify it
        cols[0].caption(f"Failed: {md(a['failed'])}. Not usable until its recall is measured.")
    else:
        cols[0].caption("Not measured yet: measure its recall before retrieval can use it.")
    cols[2].button("Measure recall", key=f"tune_eval_{a['id']}", on_click=run_job,
                   args=("tune_train_job", lambda name=a["name"]: engine.tuning.evaluate(name)),
                   disabled=state.get("tune_train_job") is not None)  # fmt: skip
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="tune_recall_table")
    st.caption(
        "Recall@k on the held-out test split, base → tuned (text→image: a caption finds its image;"
        " image→image: an image finds another with the same label). Compare them blind in the **Arena**."
    )
for a in adapters:  # whether each adapter changed recall, in one line, with what to try when it did not
    if a.get("verdict"):
        said = f"**{md(a['name'])}**: {a['verdict']}"
        if a["recall_change"] == "improved":
            st.success(said)
        else:
            st.warning(said)
    if a.get("note"):
        st.caption(a["note"])
