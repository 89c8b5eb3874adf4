"""Tune retrieval: teach the retrieval CLIP your own words (LoRA on image–text pairs), measure recall, switch."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from engine.errors import Cancelled, EngineError
from engine.retrieval import find_runs
from ui.jobs import job_panel, start_task, timing
from ui.shared import engine_or_stop, local_only

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
SOURCES = ["Style library", "Folder + captions CSV", "Tagged catalog CSV"]
DATA_DIR = engine.tune_dir / "data"

st.title("Tune retrieval")
local_only("tuning")
st.caption(
    'The base CLIP does not know your studio\'s or your shop\'s words (house style names, "teak" vs "mid-century'
    ' walnut"), so it can retrieve the wrong reference. Train a small LoRA adapter on your own image–text pairs,'
    " check recall@k on held-out pairs (and blind in the **Arena**), then switch retrieval to it. Switching back"
    " is instant: the base collections stay."
)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-")[:60]


def datasets() -> list[Path]:
    return sorted((p.parent for p in DATA_DIR.glob("*/manifest.json")), key=lambda p: -p.stat().st_mtime)


def cancellable(progress, cancel):
    """A progress callback that also stops the work at its next report when Cancel is pressed."""

    def report(p) -> None:
        progress(p)
        if cancel.is_set():
            raise Cancelled("cancelled; training resumes from its last checkpoint when started again")

    return report


# ---- 1 · data -------------------------------------------------------------------------------------------------
def on_prepare() -> None:
    from engine.tune.data import prepare

    state.pop("tune_error", None)
    name = slug(state["tune_data_name"]) or f"data-{datetime.now():%Y%m%d-%H%M%S}"
    source = state["tune_source"]
    kw: dict = {}
    if source == "Style library":
        kw["library"] = engine.library
    elif source == "Folder + captions CSV":
        kw["images"] = Path(state["tune_images"].strip()).expanduser()
        kw["captions"] = Path(state["tune_captions"].strip()).expanduser()
    else:
        kw["tagging"] = Path(state["tune_tagging"].strip()).expanduser()
    limits = {"max_pixels": engine.settings.max_input_pixels, "max_bytes": engine.settings.max_upload_bytes}
    state["tune_data_job"] = start_task(
        lambda progress, cancel: prepare(DATA_DIR / name, **kw, **limits, on_progress=cancellable(progress, cancel))
    )


def describe_prepare(p) -> str:
    return f"{p.stage} {p.step}/{p.total}" if p else "Reading the pairs…"


def on_prepared(job) -> None:
    if job.result is not None:
        state["tune_data_done"] = job.result


with st.expander("1 · Data: image–text pairs", expanded=not datasets()):
    st.segmented_control("Pairs from", SOURCES, key="tune_source", default=SOURCES[0])
    source = state.get("tune_source") or SOURCES[0]
    if source == "Style library":
        st.caption(
            f"{len(engine.list_styles(include_hidden=True))} styles: each image with its name, description "
            "and tags. Add your own styles first; a few dozen pairs is a minimum."
        )
    elif source == "Folder + captions CSV":
        st.text_input("Image folder (on this machine)", key="tune_images", placeholder="/data/furniture/images")
        st.text_input("Captions CSV (columns: file, caption; optional label)", key="tune_captions",
                      placeholder="/data/furniture/captions.csv")  # fmt: skip
    else:
        st.text_input("Tagging CSV (Catalog → Tag photos → results.csv)", key="tune_tagging",
                      placeholder="/data/runs/tags/results.csv")  # fmt: skip
    st.text_input("Name", key="tune_data_name", placeholder="e.g. studio-styles")
    st.caption(
        "Unreadable images and empty captions are dropped, duplicates removed by content; a stratified "
        "80/10/10 split with a fixed seed is written as WebDataset shards. An interrupted prepare resumes."
    )
    st.button("Prepare data", on_click=on_prepare, disabled=state.get("tune_data_job") is not None)
    job_panel("tune_data_job", describe_prepare, on_done=on_prepared, error_key="tune_error")
done = state.get("tune_data_done")
if done:
    counts = " · ".join(f"{k} {v['samples']}" for k, v in done["splits"].items())
    st.success(
        f"Prepared **{Path(done['folder']).name}**: {done['samples']} pairs ({counts}); {done['dropped']} dropped"
    )

# ---- 2 · train ------------------------------------------------------------------------------------------------
found = datasets()


def on_train(data_dir: str) -> None:
    from engine.tune.evaluate import evaluate
    from engine.tune.train import TrainConfig, train

    state.pop("tune_error", None)
    config = TrainConfig(
        scenario=state["tune_scenario"],
        epochs=int(state["tune_epochs"]),
        batch_size=int(state["tune_batch"]),
        lr=float(state["tune_lr"]),
    )
    run_dir = engine.tune_dir / "runs" / (slug(state["tune_run_name"]) or f"{Path(data_dir).name}-{config.scenario}")
    settings, device = engine.settings, engine.models.device

    def work(progress, cancel):
        report = cancellable(progress, cancel)
        train(Path(data_dir), run_dir, settings, config, device=device, on_progress=report)
        return evaluate(run_dir, settings, device=device, on_progress=report)

    state["tune_train_job"] = start_task(work)


def describe_training(p) -> str:
    if p is None:
        return "Loading the model…"
    if p.stage == "evaluate":
        return f"Measuring recall {p.step}/{p.total}"
    loss_value = getattr(p, "loss", None)
    loss = f" · loss {loss_value:.3f}" if loss_value is not None and loss_value == loss_value else ""
    return f"{p.stage} step {p.step}/{p.total}{loss}{timing(p)}"


with st.expander("2 · Train an adapter", expanded=bool(found)):
    if not found:
        st.info("Prepare data first (step 1).")
    else:
        data_choice = st.selectbox("Data", [str(p) for p in found], format_func=lambda p: Path(p).name, key="tune_data")
        manifest = json.loads((Path(data_choice) / "manifest.json").read_text())
        st.caption(" · ".join(f"{k}: {v.get('samples', v) if isinstance(v, dict) else v}"
                              for k, v in manifest.get("splits", {}).items()))  # fmt: skip
        c1, c2 = st.columns(2)
        c1.selectbox("Scenario", list(SCENARIOS), format_func=lambda s: f"{s} — {SCENARIOS[s]}", key="tune_scenario")
        c2.text_input("Run name", key="tune_run_name", placeholder="default: DATA-SCENARIO")
        c3, c4, c5 = st.columns(3)
        c3.number_input("Epochs", 1, 200, 5, key="tune_epochs")
        c4.number_input("Batch size", 2, 1024, 32, key="tune_batch")
        c5.select_slider("Learning rate", LEARNING_RATES, value=1e-4, format_func=lambda v: f"{v:g}", key="tune_lr")
        st.caption(
            "AdamW with warm-up and cosine decay, gradient clipping, mixed precision on a GPU; a checkpoint"
            " every epoch, so a stopped run continues where it stopped. Recall is measured when it ends."
        )
        st.button("Start training", type="primary", on_click=on_train, args=(data_choice,),
                  disabled=state.get("tune_train_job") is not None)  # fmt: skip
    job_panel("tune_train_job", describe_training, error_key="tune_error")

if state.get("tune_error"):
    st.error(state["tune_error"])


# ---- 3 · results and switching ------------------------------------------------------------------------------
def on_use(run_dir: str | None) -> None:
    state.pop("tune_error", None)
    try:
        out = engine.use_retrieval(Path(run_dir) if run_dir else None)
    except EngineError as exc:
        state["tune_error"] = str(exc)
        return
    where = out["retrieval"]["name"] if out["retrieval"] else "the base CLIP"
    st.toast(f"Retrieval now uses {where} ({out['seconds']:.1f}s)")


def on_evaluate(run_dir: str) -> None:
    from engine.tune.evaluate import evaluate

    state.pop("tune_error", None)
    settings, device = engine.settings, engine.models.device
    state["tune_train_job"] = start_task(lambda progress, cancel: evaluate(Path(run_dir), settings, device=device,
                                                                           on_progress=progress))  # fmt: skip


st.subheader("Adapters")
runs = find_runs(engine.tune_dir)
active = (engine.retrieval or {}).get("id")
st.caption(f"Retrieval uses **{engine.health()['retrieval']}** now.")
if active:
    st.button("Back to the base CLIP", on_click=on_use, args=(None,), key="tune_use_base")
if not runs:
    st.caption("No adapter trained yet.")
rows = []
for r in runs:
    metrics_path = Path(r["run_dir"]) / "metrics.json"
    m = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    row = {"adapter": r["name"], "scenario": r["scenario"], "active": r["id"] == active}
    for direction, short in (("text_to_image", "text→image"), ("image_to_image", "image→image")):
        for k in ("R@1", "R@5", "R@10"):
            base = m["base"][direction][k] if m else None
            tuned = m["tuned"][direction][k] if m else None
            row[f"{short} {k}"] = f"{base:.2f} → {tuned:.2f}" if base is not None and tuned is not None else "–"
    rows.append(row)
    cols = st.columns([3, 1, 1], vertical_alignment="center")
    cols[0].markdown(f"**{r['name']}** · {r['scenario']}" + (" · *active*" if r["id"] == active else ""))
    cols[1].button("Use", key=f"tune_use_{r['id']}", on_click=on_use, args=(r["run_dir"],), disabled=r["id"] == active)
    cols[2].button("Measure recall", key=f"tune_eval_{r['id']}", on_click=on_evaluate, args=(r["run_dir"],),
                   disabled=state.get("tune_train_job") is not None)  # fmt: skip
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="tune_recall_table")
    st.caption(
        "Recall@k on the held-out test split, base → tuned (text→image: a caption finds its image;"
        " image→image: an image finds another with the same label). Compare them blind in the **Arena**."
    )
