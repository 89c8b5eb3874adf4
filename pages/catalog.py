"""Catalog: a product sheet in, a product photo per row out, with attributes, prompts, CLIP scores and a report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from engine.catalog.prompts import DEFAULT_TEMPLATE, DESCRIPTION_TEMPLATE, FIELDS
from engine.catalog.runner import CatalogOptions, CatalogRun, past_runs, resume
from engine.catalog.sheets import guess_columns, items, read_sheet, safe_name
from engine.errors import EngineError
from ui.jobs import job_panel, start_task, timing
from ui.shared import engine_or_stop, local_only
from ui.tagging import render as render_tagging

engine = engine_or_stop()
state = st.session_state
LANGUAGES = {"de": "German", "en": "English (no translation)", "fr": "French", "it": "Italian", "es": "Spanish",
             "nl": "Dutch"}  # fmt: skip
LLMS = {"local": "Local model", "server": "OpenAI-compatible server", "none": "None: use the description"}
NONE = "—"

st.title("Catalog")
local_only("catalog runs")
st.caption(
    "A sheet of product descriptions (often German) → translation → attributes from an LLM → a product-photo "
    "prompt → one image per row with its CLIP score. Runs are kept in folders and resume where they stopped."
)


def options() -> CatalogOptions:
    pick = {k: (None if state[f"cat_{k}"] == NONE else state[f"cat_{k}"]) for k in ("id", "name", "category")}
    return CatalogOptions.build(
        text_column=state["cat_text"],
        id_column=pick["id"],
        name_column=pick["name"],
        category_column=pick["category"],
        source_lang=state["cat_lang"],
        llm=state["cat_llm"],
        llm_url=state["cat_llm_url"].strip() or None,
        llm_model=state["cat_llm_model"].strip() or "local-model",
        template=state["cat_template"],
        seed=state["cat_seed"],
        steps=state["cat_steps"],
        size=state["cat_size"],
        style=None if state["cat_style"] == NONE else state["cat_style"],
        model=state["cat_model"],
        guidance=0.0 if state["cat_model"] == "flux" else 7.5,
        limit=state["cat_limit"] or None,
    )


def new_run(folder: Path) -> CatalogRun:
    upload = state["cat_sheet"]
    data = upload.getvalue()
    return CatalogRun(engine, folder, read_sheet(data, upload.name), data, options(), engine.catalog_models)


def on_preview() -> None:
    state.pop("cat_error", None)
    try:
        run = new_run(engine.catalog_dir / "preview")  # a preview writes nothing
        state["cat_preview"] = run.preview(3)
    except EngineError as exc:
        state["cat_error"] = str(exc)


def on_start(resume_folder: str | None = None) -> None:
    state.pop("cat_error", None)
    try:
        if resume_folder:
            run = resume(engine, Path(resume_folder), engine.catalog_models)
        else:
            stem = safe_name(Path(state["cat_sheet"].name).stem)
            run = new_run(engine.catalog_dir / f"{stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}")
    except EngineError as exc:
        state["cat_error"] = str(exc)
        return
    state["cat_folder"] = str(run.folder)
    state["cat_job"] = start_task(lambda progress, cancel: run.run(on_progress=progress, cancel=cancel))


def on_llm_change() -> None:
    """Without an LLM there are no attributes: swap the shipped template for the one that uses the description."""
    if state["cat_llm"] == "none" and state["cat_template"] == DEFAULT_TEMPLATE:
        state["cat_template"] = DESCRIPTION_TEMPLATE
    elif state["cat_llm"] != "none" and state["cat_template"] == DESCRIPTION_TEMPLATE:
        state["cat_template"] = DEFAULT_TEMPLATE


def on_model_change() -> None:
    """FLUX.1-schnell is distilled for a few steps; SD 1.5 wants about 20."""
    state["cat_steps"] = 4 if state["cat_model"] == "flux" else 20
    if state["cat_model"] == "flux":
        state["cat_style"] = NONE


def on_dashboard(run_id: str) -> None:
    state["dash_sets"] = [run_id]
    state["goto_dashboard"] = True


if state.pop("goto_dashboard", False):
    st.switch_page("pages/dashboard.py")

for key, value in {"cat_lang": "de", "cat_llm": "local", "cat_llm_url": "", "cat_llm_model": "local-model",
                   "cat_template": DEFAULT_TEMPLATE, "cat_seed": 42, "cat_steps": 20, "cat_size": 512,
                   "cat_style": NONE, "cat_limit": 0, "cat_model": "sd15"}.items():  # fmt: skip
    state.setdefault(key, value)

sheet_tab, runs_tab, tag_tab = st.tabs(["New run", "Runs", "Tag photos"])
with sheet_tab:
    st.file_uploader("Product sheet (.xlsx or .csv)", type=["xlsx", "csv"], key="cat_sheet")
    upload = state.get("cat_sheet")
    sheet = None
    if upload is not None:
        try:
            sheet = read_sheet(upload.getvalue(), upload.name)
        except EngineError as exc:
            st.error(str(exc))
    if sheet is not None:
        if state.get("cat_for") != upload.name:  # a new sheet: guess its columns once
            guess = guess_columns(sheet.columns)
            state.update(cat_for=upload.name, cat_text=guess["text"] or sheet.columns[-1],
                         cat_id=guess["id"] or NONE, cat_name=guess["name"] or NONE,
                         cat_category=guess["category"] or NONE)  # fmt: skip
            state.pop("cat_preview", None)
        c = st.columns(4)
        c[0].selectbox("Description column", sheet.columns, key="cat_text")
        c[1].selectbox("Id column", [NONE, *sheet.columns], key="cat_id", help="row numbers when none")
        c[2].selectbox("Name column", [NONE, *sheet.columns], key="cat_name")
        c[3].selectbox("Category column", [NONE, *sheet.columns], key="cat_category")
        rows = items(sheet, state["cat_text"], None if state["cat_id"] == NONE else state["cat_id"])
        broken = [r for r in rows if r.error]
        st.caption(f"{len(rows)} rows" + (f" · {len(broken)} will be reported as failed" if broken else ""))
        st.dataframe(pd.DataFrame(sheet.rows[:8]), hide_index=True, key="cat_rows")
        for r in broken[:5]:
            st.warning(r.error)

        left, right = st.columns(2)
        with left:
            st.selectbox("Sheet language", list(LANGUAGES), format_func=LANGUAGES.get, key="cat_lang")
            st.segmented_control(
                "Attributes from", list(LLMS), format_func=LLMS.get, key="cat_llm", on_change=on_llm_change
            )
            if state["cat_llm"] == "server":
                st.text_input("Server URL", key="cat_llm_url", placeholder="http://127.0.0.1:1234/v1")
                st.text_input("Model name", key="cat_llm_model")
            st.text_area("Prompt template", key="cat_template", height=110,
                         help="fields: " + ", ".join(f"{{{f}}}" for f in FIELDS))  # fmt: skip
        with right:
            g = st.columns(3)
            g[0].number_input("Seed", 0, 2**31, key="cat_seed", help="row i renders with seed + i")
            g[1].number_input("Steps", 1, 150, key="cat_steps")
            g[2].selectbox("Size", [256, 384, 512, 768], key="cat_size")
            st.segmented_control("Model", ["sd15", "flux"], key="cat_model", on_change=on_model_change,
                                 format_func={"sd15": "SD 1.5", "flux": "FLUX.1-schnell + LoRA"}.get)  # fmt: skip
            names = [s.name for s in engine.list_styles()]
            st.selectbox("Style for every row", [NONE, *names], key="cat_style", disabled=state["cat_model"] == "flux",
                         help="SD 1.5 only: FLUX renders from the prompt alone")  # fmt: skip
            st.number_input("Only the first rows (0: all)", 0, 10_000, key="cat_limit")
        b1, b2, _ = st.columns([1, 1, 3])
        b1.button("Preview prompts", on_click=on_preview, key="cat_preview_btn", help="the first 3 rows, no images")
        b2.button("Start run", type="primary", on_click=on_start, disabled=state.get("cat_job") is not None,
                  key="cat_start")  # fmt: skip
        if state.get("cat_preview"):
            shown = [
                {"row": p["row"], "id": p["id"], "translation": p["translation"],
                 "product_type": (p.get("attributes") or {}).get("product_type", ""), "prompt": p.get("prompt", ""),
                 "error": p.get("error", "")}
                for p in state["cat_preview"]
            ]  # fmt: skip
            st.dataframe(pd.DataFrame(shown), hide_index=True, key="cat_preview_table")
    if state.get("cat_error"):
        st.error(state["cat_error"])


def describe_run(p) -> str:
    if p is None:
        return "Loading the models…"
    what = "Translating" if p.stage == "translate" else "Rows"
    return f"{what} {p.step}/{p.total}{timing(p)}"


with sheet_tab:
    job_panel("cat_job", describe_run, on_done=lambda job: state.update(cat_shown=state.get("cat_folder")),
              error_key="cat_error")  # fmt: skip


def show_run(run: dict, where: str) -> None:
    folder, summary = Path(run["folder"]), run["summary"]
    key = f"{where}_{folder.name}"
    m = st.columns(4)
    m[0].metric("Rows", run["rows"])
    m[1].metric("Rendered", summary.get("done", "–"))
    m[2].metric("Failed", summary.get("failed", "–"))
    clip = summary.get("clip_score", {})
    m[3].metric("CLIP score (mean)", f"{clip['mean']:.1f}" if clip.get("n") else "–")
    if not run["complete"]:
        st.info(f"{run['written']} of {run['rows']} rows are done; resume to finish.")
        st.button("Resume", on_click=on_start, args=(run["folder"],), key=f"resume_{key}",
                  disabled=state.get("cat_job") is not None)  # fmt: skip
    if summary.get("failures"):
        st.dataframe(pd.DataFrame(summary["failures"]), hide_index=True, key=f"fail_{key}")
    results = folder / "results.csv"
    if results.is_file():
        table = pd.read_csv(results, dtype=str, keep_default_na=False)
        done = table[table["status"] == "done"]
        cols = st.columns(6)
        for i, (_, r) in enumerate(done.head(24).iterrows()):
            with cols[i % 6]:
                st.image(str(folder / r["image"]), width="stretch")
                st.caption(f"{r['id']} · CLIP {float(r['clip_score']):.1f}")
        d = st.columns(4)
        d[0].download_button("results.csv", results.read_bytes(), f"{folder.name}.csv", "text/csv",
                             key=f"csv_{key}")  # fmt: skip
        d[1].download_button("results.xlsx", (folder / "results.xlsx").read_bytes(), f"{folder.name}.xlsx",
                             key=f"xlsx_{key}")  # fmt: skip
        d[2].download_button("report.md", (folder / "report.md").read_bytes(), f"{folder.name}.md",
                             key=f"md_{key}")  # fmt: skip
        d[3].button("Open in the Dashboard", on_click=on_dashboard, args=(run["run_id"],), key=f"dash_{key}")


runs = past_runs(engine.catalog_dir)
with sheet_tab:
    shown = next((r for r in runs if r["folder"] == state.get("cat_shown")), None)
    if shown is not None:
        st.subheader(f"{shown['sheet']} · {shown['run_id']}")
        show_run(shown, "new")
with runs_tab:
    if not runs:
        st.info("No catalog runs yet.")
    else:
        picked = st.selectbox(
            "Run", runs, key="cat_pick",
            format_func=lambda r: f"{r['sheet']} · {r['created_at'][:16].replace('T', ' ')} · "
            f"{r['written']}/{r['rows']} rows" + ("" if r["complete"] else " · unfinished"),
        )  # fmt: skip
        show_run(picked, "list")

with tag_tab:
    render_tagging(engine)
