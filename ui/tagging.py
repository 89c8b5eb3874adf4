"""The Catalog page's "Tag photos" tab: a zip of product photos → attributes, listings, review, export, and
similar-product search."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.catalog.tagging import DEFAULT_VOCAB, parse_vocabulary
from engine.errors import EngineError
from engine.tables import csv_bytes, xlsx_bytes
from ui import jobs
from ui.jobs import job_panel
from ui.shared import data_uri, md

LLMS = {"local": "Local model", "server": "OpenAI-compatible server", "none": "None (attributes only)"}


def _start(engine) -> None:
    state = st.session_state
    state.pop("tag_error", None)
    upload = state.get("tag_zip")
    try:
        if upload is None:
            raise EngineError("upload a .zip of product photos first")
        parse_vocabulary(state["tag_vocab"], "the vocabulary")
        url = state["tag_llm_url"].strip() if state["tag_llm"] == "server" else None
        model = state["tag_llm_model"].strip() or "local-model"
        jobs.start("tag_job", engine.catalog.tag(upload.getvalue(), state["tag_vocab"], state["tag_llm"], url, model))
    except EngineError as exc:
        state["tag_error"] = str(exc)


def _describe(p) -> str:
    if p is None:
        return "Reading the photos…"
    return f"{ {'tag': 'Tagging', 'listings': 'Writing listings'}.get(p.stage, p.stage) } {p.step}/{p.total}"


def _tagged(engine):
    def done(job) -> None:
        if job.state != "done":
            return
        result = engine.catalog.tagged(job.result["run"])
        st.session_state["tag_result"] = result
        st.session_state["tag_table"] = pd.DataFrame(result["rows"]).assign(approved=False)

    return done


def photo(engine, key: str) -> bytes | None:
    """A tagged photo's thumbnail, fetched once per session."""
    cache = st.session_state.setdefault("_product_thumbs", {})
    if (id(engine), key) not in cache:
        try:
            cache[(id(engine), key)] = engine.catalog.product_image(key, 96)
        except EngineError:
            return None
    return cache[(id(engine), key)]


def render(engine) -> None:
    state = st.session_state
    state.setdefault("tag_vocab", DEFAULT_VOCAB.read_text())
    for key, value in {"tag_llm": "none", "tag_llm_url": "", "tag_llm_model": "local-model"}.items():
        state.setdefault(key, value)
    left, right = st.columns([3, 2])
    with left:
        st.file_uploader("Product photos (.zip)", type=["zip"], key="tag_zip",
                         help="png, jpg or webp inside; unreadable files are listed and skipped")  # fmt: skip
        st.segmented_control("Listings from", list(LLMS), format_func=LLMS.get, key="tag_llm")
        if state["tag_llm"] == "server":
            st.text_input("Server URL", key="tag_llm_url", placeholder="http://127.0.0.1:1234/v1")
            st.text_input("Model name", key="tag_llm_model")
        st.button("Tag photos", type="primary", on_click=_start, args=(engine,), key="tag_start",
                  disabled=state.get("tag_job") is not None or state.get("tag_zip") is None)  # fmt: skip
    with right:
        hint = "attributes and their values; add a family by copying the file and changing `item`"
        st.text_area("Vocabulary (YAML)", key="tag_vocab", height=260, help=hint)
    if state.get("tag_error"):
        st.error(state["tag_error"])
    job_panel(engine, "tag_job", _describe, on_done=_tagged(engine), error_key="tag_error")

    result = state.get("tag_result")
    if result is None:
        return
    st.subheader(f"{result['images']} photos tagged")
    for s in result["skipped"]:
        st.warning(f"Skipped {s['name']}: {s['reason']}")
    table = state["tag_table"]
    shown = table.assign(photo=[data_uri(photo(engine, key)) for key in table["thumbnail"]])
    columns = ["approved", "photo", *[c for c in result["columns"] if c in table.columns]]
    edited = st.data_editor(
        shown,
        column_order=columns,
        column_config={
            "photo": st.column_config.ImageColumn("Photo", width="small"),
            "approved": st.column_config.CheckboxColumn("Approve"),
            **{
                c: st.column_config.NumberColumn(c, format="%.2f", disabled=True)
                for c in result["columns"]
                if c.endswith("_confidence")
            },  # fmt: skip
        },
        disabled=["photo", "image", "status", "error"],
        hide_index=True,
        key="tag_editor",
        row_height=56,
    )
    approved = edited[edited["approved"]]
    rows = (approved if len(approved) else edited).drop(columns=["photo"]).to_dict("records")
    label = f"{len(approved)} approved" if len(approved) else f"all {len(edited)}"
    c1, c2 = st.columns(2)
    csv_bytes, xlsx_bytes = _export(rows, ["approved", *result["columns"]])
    c1.download_button(f"Export CSV ({label})", csv_bytes, "product-tags.csv", "text/csv", key="tag_csv")
    c2.download_button(f"Export .xlsx ({label})", xlsx_bytes, "product-tags.xlsx", key="tag_xlsx")

    st.subheader("Similar products")
    s1, s2 = st.columns([2, 3])
    pick = s1.selectbox("Like this photo", [None, *table["image"]], key="tag_like", format_func=lambda n: n or "—")
    words = s2.text_input("Or describe it", key="tag_words", placeholder="red floral midi dress")
    try:
        if pick:
            row = table[table["image"] == pick].iloc[0]
            found = engine.catalog.similar(image=engine.catalog.product_image(row["thumbnail"], 0), k=6)
        elif words.strip():
            found = engine.catalog.similar(text=words, k=6)
        else:
            found = []
    except EngineError as exc:
        st.error(str(exc))
        found = []
    cols = st.columns(6)
    for i, hit in enumerate(found):
        with cols[i % 6]:
            picture = photo(engine, hit["thumbnail"])
            if picture:
                st.image(picture, width="stretch")
            st.caption(f"{md(hit['name'])} · {hit['score']:.2f}")


def _export(rows: list[dict], columns: list[str]) -> tuple[bytes, bytes]:
    """The reviewed rows as CSV and .xlsx bytes (the engine's own table writer: formulas stay text)."""
    return csv_bytes(rows, columns, bom=True), xlsx_bytes(rows, columns, "tags")
