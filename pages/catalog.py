"""Catalog: a product sheet in, a product photo per row out, with attributes, prompts, CLIP scores and a report."""

from __future__ import annotations

import hashlib
import time

import pandas as pd
import streamlit as st

from engine.api import SheetInfo
from engine.catalog.options import CatalogOptions
from engine.catalog.prompts import DEFAULT_TEMPLATE, DESCRIPTION_TEMPLATE, FIELDS
from engine.errors import BadInput, EngineError
from engine.rules.models import rules
from ui import jobs
from ui.jobs import job_panel, timing
from ui.shared import engine_or_stop, md
from ui.tagging import render as render_tagging

engine = engine_or_stop()
state = st.session_state
LANGUAGES = {"de": "German", "en": "English (no translation)", "fr": "French", "it": "Italian", "es": "Spanish",
             "nl": "Dutch"}  # fmt: skip
LLMS = {"local": "Local model", "server": "OpenAI-compatible server", "none": "None: use the description"}
NONE = "—"
PREVIEW_ROWS = 3
ROLES = ("text", "id", "name", "category")

st.title("Catalog")
st.caption(
    "A sheet of product descriptions (often German) → translation → attributes from an LLM → a product-photo "
    "prompt → one image per row with its CLIP score. Runs are kept on the engine and resume where they stopped."
)


def uploaded():
    """The sheet in the uploader: (its bytes, its name, its identity), or None."""
    upload = state.get("cat_sheet")
    if upload is None:
        return None
    data = upload.getvalue()
    return data, upload.name, hashlib.sha256(data).hexdigest()[:12]


def mapping_key(role: str, sheet_id: str) -> str:
    # Every sheet gets its own mapping widgets: a new sheet can never show one mapping and use another.
    return f"cat_{role}_{sheet_id}"


def mapping(sheet_id: str) -> dict[str, str | None]:
    """The mapping the dropdowns show, which is the one the preview, the run and its run.json use."""
    picked = {role: state.get(mapping_key(role, sheet_id)) for role in ROLES}
    return {role: (None if value in (None, NONE) else value) for role, value in picked.items()}


def options(sheet_id: str) -> CatalogOptions:
    columns = mapping(sheet_id)
    return CatalogOptions.build(
        text_column=columns["text"] or "",
        id_column=columns["id"],
        name_column=columns["name"],
        category_column=columns["category"],
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
        guidance=rules(state["cat_model"]).guidance,
        limit=state["cat_limit"] or None,
    )


def on_preview() -> None:
    state.pop("cat_error", None)
    state.pop("cat_preview", None)
    state["cat_preview_wanted"] = uploaded()[2]  # made in the page's run, under a status that says what it does


def preview_settings(sheet_id: str) -> str | None:
    """Everything a preview depends on (the sheet and every option), so that a preview is shown only under the
    settings that made it; None while the options cannot be built."""
    try:
        return f"{sheet_id}:{options(sheet_id).model_dump_json()}"
    except EngineError:
        return None


def preview_verdict(rows: list[dict]) -> tuple[str, str]:
    """("ok" | "partial" | "failed", the line saying how many rows failed and the first reason)."""
    failed = [p for p in rows if p.get("error")]
    if not failed:
        return "ok", ""
    first = failed[0]["error"]
    first = md(first if len(first) <= 160 else first[:160] + "…")  # it may quote an LLM's reply
    if len(failed) == len(rows):
        return "failed", f"All {len(rows)} preview rows failed; the first: {first}"
    return (
        "partial",
        f"{len(rows) - len(failed)} of {len(rows)} rows previewed; {len(failed)} failed, the first: {first}",
    )


def preview_steps() -> list[str]:
    """What a preview does, in the order it does it: the first one also loads the models, which takes a while."""
    steps = []
    if state["cat_lang"] != "en":
        steps.append(
            f"Translating from {LANGUAGES[state['cat_lang']]} (the first time also loads the translation model)"
        )
    if state["cat_llm"] == "local":
        steps.append("Reading the attributes with the local model (the first time loads it: ~20 s on a CPU)")
    elif state["cat_llm"] == "server":
        steps.append(f"Asking the LLM server at {md(state['cat_llm_url'].strip() or '(no URL)')} for the attributes")
    return [*steps, "Writing each row's prompt"]


def run_preview(data: bytes, name: str, sheet_id: str) -> None:
    """The first rows' translation, attributes and prompt (nothing rendered or written), under a status that names
    each step: the first preview loads models and can take half a minute."""
    with st.status(f"Previewing the first {PREVIEW_ROWS} rows…", expanded=True) as status:
        for step in preview_steps():
            st.write(f"{step}…")
        started = time.perf_counter()
        try:
            rows = engine.catalog.preview(data, name, options(sheet_id), PREVIEW_ROWS)
        except EngineError as exc:
            state["cat_error"] = str(exc)
            status.update(label="The preview failed (the reason is below)", state="error", expanded=False)
            return
        state["cat_preview"] = (preview_settings(sheet_id), rows)
        seconds = time.perf_counter() - started
        verdict, _ = preview_verdict(rows)
        failed = sum(1 for p in rows if p.get("error"))
        if verdict == "failed":  # never a ✓ over rows that all failed
            status.update(label=f"The preview failed for all {len(rows)} rows (the first reason is below)",
                          state="error", expanded=False)  # fmt: skip
        else:
            ready = f"{len(rows) - failed} of {len(rows)} rows" if failed else f"the first {len(rows)} rows"
            status.update(label=f"Preview of {ready} ready ({seconds:.0f} s)", state="complete", expanded=False)


def on_start() -> None:
    state.pop("cat_error", None)
    data, name, sheet_id = uploaded()
    try:
        jobs.start("cat_job", engine.catalog.start(data, name, options(sheet_id)))
    except EngineError as exc:
        state["cat_error"] = str(exc)


def on_resume(run: str) -> None:
    state.pop("cat_error", None)
    try:
        jobs.start("cat_job", engine.catalog.resume(run))
    except EngineError as exc:
        state["cat_error"] = str(exc)


def on_llm_change() -> None:
    """Without an LLM there are no attributes: swap the shipped template for the one that uses the description."""
    if state["cat_llm"] == "none" and state["cat_template"] == DEFAULT_TEMPLATE:
        state["cat_template"] = DESCRIPTION_TEMPLATE
    elif state["cat_llm"] != "none" and state["cat_template"] == DESCRIPTION_TEMPLATE:
        state["cat_template"] = DEFAULT_TEMPLATE


def on_model_change() -> None:
    """Each model's own default steps (FLUX.1-schnell is distilled for a few)."""
    state["cat_steps"] = rules(state["cat_model"]).steps
    if not rules(state["cat_model"]).styles:
        state["cat_style"] = NONE


def on_dashboard(run_id: str) -> None:
    state["dash_sets"] = [run_id]
    state["goto_dashboard"] = True


if state.pop("goto_dashboard", False):
    st.switch_page("pages/dashboard.py")

# Attributes from the local LLM only where the engine has a real one (not the tiny profile's random weights, and its
# weights downloaded): elsewhere each prompt uses the row's own description, which works offline.
HAS_LLM = bool(state["capabilities"].features.get("local_llm"))
for key, value in {"cat_lang": "en", "cat_llm": "local" if HAS_LLM else "none", "cat_llm_url": "",
                   "cat_llm_model": "local-model",
                   "cat_template": DEFAULT_TEMPLATE if HAS_LLM else DESCRIPTION_TEMPLATE, "cat_seed": 42,
                   "cat_steps": 20, "cat_size": 512, "cat_style": NONE, "cat_limit": 0,
                   "cat_model": "sd15"}.items():  # fmt: skip
    state.setdefault(key, value)


def no_llm_reason() -> str:
    """Why the attributes default to none here, in one caption."""
    if state["capabilities"].profile == "tiny":
        why = "The engine runs the tiny profile, whose local LLM has random weights"
    else:
        why = "The local LLM's weights are not downloaded on the engine (DESIGN_STUDIO_LLM_MODEL)"
    return (
        f"{why}, so the attributes default to none: each prompt uses the row's own description. For attributes,"
        " use an OpenAI-compatible server."
    )


def inspected(data: bytes, name: str, sheet_id: str, picked: dict[str, str | None] | None) -> SheetInfo:
    """The engine's reading of the sheet (`catalog.inspect`) under the columns picked (None: its guess), asked once
    per sheet and mapping: a rerun does not upload the sheet again. A sheet whose descriptions' column cannot be
    guessed is read without items (`text_column=""`), for its columns and the guess of the others. Raises the
    engine's one line (what is wrong with the sheet is kept too: it stays wrong)."""
    cached = state.get("_cat_inspected")
    if cached is None or cached[0] != (sheet_id, name):  # another sheet: the answers about the last one go
        cached = state["_cat_inspected"] = ((sheet_id, name), {})
    answers = cached[1]
    key = None if picked is None else tuple(picked[role] or "" for role in ROLES)
    if key not in answers:
        try:
            if picked is None:
                try:
                    info = engine.catalog.inspect(data, name)
                except BadInput:  # no column guessed for the descriptions (or a broken sheet: said again below)
                    info = engine.catalog.inspect(data, name, text_column="")
            else:
                columns = {f"{role}_column": column for role, column in zip(ROLES, key, strict=True)}
                info = engine.catalog.inspect(data, name, **columns)
        except BadInput as exc:
            answers[key] = str(exc)
            raise
        answers[key] = info
        if picked is None and info.mapping.text:  # the same answer as under the mapping it guessed
            answers[tuple(getattr(info.mapping, role) or "" for role in ROLES)] = info
    if isinstance(answers[key], str):
        raise BadInput(answers[key])
    return answers[key]


def mapping_widgets(info: SheetInfo, sheet_id: str) -> None:
    """The column dropdowns of this sheet, starting from the guess for its headers (the last column for the
    descriptions when none is guessed)."""
    guess = info.guess.model_dump()
    guess["text"] = guess["text"] or info.columns[-1]
    c = st.columns(4)
    labels = {"text": "Description column", "id": "Id column", "name": "Name column", "category": "Category column"}
    for col, role in zip(c, ROLES, strict=True):
        choices = info.columns if role == "text" else [NONE, *info.columns]
        default = guess[role] if guess[role] in choices else NONE
        col.selectbox(labels[role], choices, index=choices.index(default), key=mapping_key(role, sheet_id),
                      help="row numbers when none" if role == "id" else None)  # fmt: skip


def sheet_section() -> None:
    st.file_uploader("Product sheet (.xlsx or .csv)", type=["xlsx", "csv"], key="cat_sheet")
    found = uploaded()
    if found is None:
        return
    data, name, sheet_id = found
    try:
        mapping_widgets(inspected(data, name, sheet_id, None), sheet_id)
        info = inspected(data, name, sheet_id, mapping(sheet_id))
    except EngineError as exc:
        st.error(str(exc))
        return
    if state.get("cat_lang_sheet") != sheet_id:  # a new sheet: its language guessed from its descriptions
        state["cat_lang"] = info.language
        state["cat_lang_sheet"] = sheet_id
    st.caption(f"{info.rows} rows" + (f" · {info.failing} will be reported as failed" if info.failing else ""))
    st.dataframe(pd.DataFrame(info.head), hide_index=True, key="cat_rows")
    for error in info.errors:
        st.warning(error)
    settings_section()
    b1, b2, _ = st.columns([1, 1, 3])
    b1.button("Preview prompts", on_click=on_preview, key="cat_preview_btn",
              help=f"the first {PREVIEW_ROWS} rows, no images")  # fmt: skip
    b2.button("Start run", type="primary", on_click=on_start, disabled=state.get("cat_job") is not None,
              key="cat_start")  # fmt: skip
    if state.pop("cat_preview_wanted", None) == sheet_id:
        run_preview(data, name, sheet_id)
    preview = state.get("cat_preview")
    if preview and preview[0] != preview_settings(sheet_id):
        state.pop("cat_preview")  # made under other settings (or another sheet): it would show what they gave
    elif preview:
        verdict, line = preview_verdict(preview[1])
        if verdict == "failed":
            st.warning(line)
        elif verdict == "partial":
            st.caption(line)
        shown = [
            {"id": p["id"], "translation": p["translation"],
             "product_type": (p.get("attributes") or {}).get("product_type", ""), "prompt": p.get("prompt", ""),
             "error": p.get("error", "")}
            for p in preview[1]
        ]  # fmt: skip
        st.dataframe(pd.DataFrame(shown), hide_index=True, key="cat_preview_table")


def settings_section() -> None:
    left, right = st.columns(2)
    with left:
        st.selectbox("Sheet language", list(LANGUAGES), format_func=LANGUAGES.get, key="cat_lang",
                     help="guessed from the sheet's descriptions; English when nothing points elsewhere")  # fmt: skip
        st.segmented_control(
            "Attributes from", list(LLMS), format_func=LLMS.get, key="cat_llm", on_change=on_llm_change
        )
        if not HAS_LLM:
            st.caption(no_llm_reason())
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
        names = [s.name for s in engine.styles.list()]
        st.selectbox("Style for every row", [NONE, *names], key="cat_style",
                     disabled=not rules(state["cat_model"]).styles,
                     help="SD 1.5 only: FLUX renders from the prompt alone")  # fmt: skip
        st.number_input("Only the first rows (0: all)", 0, 10_000, key="cat_limit")


def describe_run(p) -> str:
    if p is None:
        return "Loading the models…"
    what = "Translating" if p.stage == "translate" else "Rows"
    return f"{what} {p.step}/{p.total}{timing(p)}"


def on_run_done(job) -> None:
    if job.result:
        state["cat_shown"] = job.result["run"]


def thumb(run: str, item: str) -> bytes | None:
    cache = state.setdefault("_cat_thumbs", {})
    if (id(engine), run, item) not in cache:
        try:
            cache[(id(engine), run, item)] = engine.catalog.image(run, item, 192)
        except EngineError:
            return None
    return cache[(id(engine), run, item)]


def show_run(run: dict, where: str) -> None:
    name, summary = run["run"], run["summary"]
    key = f"{where}_{name}"
    m = st.columns(4)
    m[0].metric("Rows", run["rows"])
    m[1].metric("Rendered", summary.get("done", "–"))
    m[2].metric("Failed", summary.get("failed", "–"))
    clip = summary.get("clip_score", {})
    m[3].metric("CLIP score (mean)", f"{clip['mean']:.1f}" if clip.get("n") else "–")
    if not run["complete"]:
        st.info(f"{run['written']} of {run['rows']} rows are done; resume to finish.")
        st.button("Resume", on_click=on_resume, args=(name,), key=f"resume_{key}",
                  disabled=state.get("cat_job") is not None)  # fmt: skip
    if summary.get("failures"):  # the reason names the sheet row: no row numbers beside the ids
        failures = [{"id": f["id"], "error": f["error"]} for f in summary["failures"]]
        st.dataframe(pd.DataFrame(failures), hide_index=True, key=f"fail_{key}")
    if not summary:
        return
    try:
        results = engine.catalog.run(name)["results"]
    except EngineError as exc:
        st.error(str(exc))
        return
    cols = st.columns(6)
    for i, r in enumerate([r for r in results if r["status"] == "done"][:24]):
        with cols[i % 6]:
            picture = thumb(name, r["id"])
            if picture:
                st.image(picture, width="stretch")
            st.caption(f"{md(r['id'])} · CLIP {float(r['clip_score']):.1f}")
    d = st.columns(4)
    for col, file, mime in ((d[0], "results.csv", "text/csv"), (d[1], "results.xlsx", None),
                            (d[2], "report.md", "text/markdown")):  # fmt: skip
        col.download_button(file, lambda file=file: engine.catalog.file(name, file), f"{name}-{file}", mime,
                            key=f"{file}_{key}", on_click="ignore")  # fmt: skip
    d[3].button("Open in the Dashboard", on_click=on_dashboard, args=(run["run_id"],), key=f"dash_{key}")


sheet_tab, runs_tab, tag_tab = st.tabs(["New run", "Runs", "Tag photos"])
with sheet_tab:
    sheet_section()
    if state.get("cat_error"):
        st.error(state["cat_error"])
    job_panel(engine, "cat_job", describe_run, on_done=on_run_done, error_key="cat_error")

try:
    runs = engine.catalog.runs()
except EngineError as exc:
    st.error(str(exc))
    runs = []
with sheet_tab:
    shown = next((r for r in runs if r["run"] == state.get("cat_shown")), None)
    if shown is not None:
        st.subheader(f"{md(shown['sheet'])} · {shown['run_id']}")
        show_run(shown, "new")
with runs_tab:
    if not runs:
        st.info("No catalog runs yet.")
    else:
        by_name = {r["run"]: r for r in runs}  # the run's name is the choice: its counts change as it goes
        picked = st.selectbox(
            "Run", list(by_name), key="cat_pick",
            format_func=lambda n: f"{by_name[n]['sheet']} · {by_name[n]['created_at'][:16].replace('T', ' ')} · "
            f"{by_name[n]['written']}/{by_name[n]['rows']} rows" + ("" if by_name[n]["complete"] else " · unfinished"),
        )  # fmt: skip
        show_run(by_name[picked], "list")

with tag_tab:
    render_tagging(engine)
