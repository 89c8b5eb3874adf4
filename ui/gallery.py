"""History's gallery: every run as a card in a grid (newest first) with its prompt, style and numbers, filters, a star
to keep favourites, and two runs side by side with the settings that differ marked. A search by meaning shows its hits
as the same cards, under the same filters, with the same buttons.

Widget keys are stable so a browser test can find them: `star-<run id>`, `compare-<run id>`, `restore_<run id>`,
`like_<run id>`, the filters `history_text`, `history_style`, `history_set`, `history_starred`, the comparison's
panel `compare_panel`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from engine.api import Engine, RunRecord
from engine.errors import EngineError
from ui.shared import md, output_thumbs

COLUMNS = 4  # cards per row
PAGE = 40  # cards per "Show more"
ANY_STYLE = "Any style"
ALL_SETS = "All run sets"
# The numbers a card shows, short, and the comparison's long words for them
NUMBERS = {"clip_score": "fidelity", "style_similarity": "style similarity", "edge_f1": "edge F1"}
NUMBER_NAMES = {"clip_score": "Prompt fidelity", "style_similarity": "Style similarity", "edge_f1": "Edge F1"}
# The comparison's rows from the generation parameters, in this order, with their words; other parameters (a later
# version's) follow under their own names
PARAMS = {
    "steps": "Steps",
    "guidance": "Guidance",
    "structure_strength": "Structure strength",
    "style_strength": "Style strength",
    "style_only": "Style only",
    "scheduler": "Scheduler",
    "mode": "Mode",
    "model": "Model",
    "variations": "Images",
    "k": "Styles retrieved (k)",
}
COVERED_PARAMS = {"size", "style", "blend", "use_style", "hires", "hires_strength"}  # rows of their own
# Top-level metadata that is no setting (or has its own row); any other key with a value gets a row
NOT_SETTINGS = {
    "version", "run_id", "kind", "created_at", "prompt", "negative_prompt", "seed", "seeds", "width", "height",
    "edge_mode", "canny", "sketch_hash", "batch", "label", "params", "styles", "regions", "models", "profile",
    "device", "dtype", "timings", "metrics", "measured", "executor", "index", "source", "ref", "init_hash", "mask_hash",
}  # fmt: skip
# Pictures a run started from, by their hash in the metadata: a row says whether there was one, and the comparison
# whether the two runs had the same one (a hash is no word for a person)
PICTURES = {
    "Sketch": ("sketch_hash", "a sketch", "another sketch", "none (text only)"),
    "Start picture": ("init_hash", "a picture", "another picture", "—"),
    "Brushed area": ("mask_hash", "a mask", "another mask", "—"),
}
NOT_MEASURED = "not measured yet"  # a run kept before its numbers (its measure job runs, or did not finish)

state = st.session_state


def short_id(run_id: str) -> str:
    """A run as a person reads it: "…abcd1234", the end of its id (the whole id stays in tooltips and JSON)."""
    return f"…{run_id[-8:]}"


RUN_ID = re.compile(r"(frame-)?\d{8}-\d{6}-[0-9a-f]{8}")  # a run's id, as the engine makes them


def set_name(name: str) -> str:
    """A run set as a person reads it: a run that belongs to no batch is its own set, named by its short id."""
    return short_id(name) if RUN_ID.fullmatch(name) else name


def image_name(run_id: str, index: int) -> str:
    """One image of a run as a person reads it: "…abcd1234 · 2", its number counted from 1."""
    return f"{short_id(run_id)} · {index + 1}"


def number(value: float) -> str:
    """Two decimals, never "-0.00"."""
    return f"{round(float(value), 2) + 0.0:.2f}"


def styles_used(meta: dict[str, Any]) -> str:
    return ", ".join(s["name"] for s in meta.get("styles", []) if s.get("used")) or "no style"


def first_metrics(meta: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a run's first output (what its card shows)."""
    return ((meta.get("metrics") or [{}])[0]) or {}


def numbers_line(meta: dict[str, Any], names: dict[str, str] = NUMBERS) -> str:
    """The first output's numbers, short; a run kept before it was measured says so instead of showing none."""
    if meta.get("measured") is False:
        return NOT_MEASURED
    got = first_metrics(meta)
    return " · ".join(f"{word} {number(got[m])}" for m, word in names.items() if got.get(m) is not None)


def run_set_name(meta: dict[str, Any]) -> str:
    batch, label = meta.get("batch") or "", meta.get("label") or ""
    return f"{batch} · {label}" if batch and label else batch or "—"


def shown(value: Any) -> str:
    """A setting as the comparison table reads it."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value):  # LoRAs: name (weight)
        return ", ".join(f"{v['name']} ({shown(v.get('weight'))})" if "weight" in v else str(v["name"]) for v in value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def model_name(value: Any) -> str:
    """A model by its name: the last part of a folder on the engine's machine (never the whole path, nor the one
    relative to its data folder, `models/tiny/taesd`) or a hub id (`owner/name`); a list (several ControlNets):
    each of them."""
    if isinstance(value, list):
        return ", ".join(model_name(v) for v in value) or "none"
    folder = value.startswith(("/", "~")) or value.count("/") > 1 if isinstance(value, str) else False
    if isinstance(value, str) and (folder or re.match(r"^[A-Za-z]:[\\/]", value)):
        return re.split(r"[\\/]", value.rstrip("/\\"))[-1]
    return shown(value)


def hires(params: dict[str, Any]) -> str:
    """The hires fix as a person reads it: "off" at 1 (render size), else the upscale and its strength."""
    factor = params.get("hires") or 1
    if factor <= 1:
        return "off"
    strength = params.get("hires_strength")
    return f"×{factor:g}" + (f", strength {strength:g}" if strength is not None else "")


def settings_of(meta: dict[str, Any]) -> dict[str, str]:
    """A run's recipe as (setting → value) rows, in reading order."""
    params = meta.get("params", {})
    used = [s for s in meta.get("styles", []) if s.get("used")]
    rows = {
        "Prompt": meta.get("prompt", ""),
        "Negative prompt": shown(meta.get("negative_prompt")),
        "Styles": ", ".join(f"{s['name']} ({shown(float(s.get('weight', 1.0)))})" for s in used) or "no style",
        "Seed": shown((meta.get("seeds") or [meta.get("seed")])[0]),
        "Size": f"{meta.get('width')}×{meta.get('height')}",
    }
    for key, word in PARAMS.items():
        if key in params:
            rows[word] = shown(params[key])
    if "hires" in params:
        rows["Hires"] = hires(params)
    for key in sorted(set(params) - set(PARAMS) - COVERED_PARAMS):
        rows[key.replace("_", " ").capitalize()] = shown(params[key])
    canny = meta.get("canny")
    rows["Edges"] = shown(meta.get("edge_mode")) + (f" ({canny[0]}–{canny[1]})" if canny else "")
    for row, (key, some, _, none) in PICTURES.items():
        rows[row] = some if meta.get(key) else none
    for key in sorted(set(meta) - NOT_SETTINGS):
        if meta[key] not in (None, "", [], {}):
            rows[key.replace("_", " ").capitalize()] = shown(meta[key])
    rows["Run set"] = run_set_name(meta)
    for key, value in sorted((meta.get("models") or {}).items()):
        rows[f"Model: {key.replace('_', ' ')}"] = model_name(value)
    return rows


def compare_settings(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, str]]:
    """Two runs' recipes row by row, each marked "≠" where they differ. Left out: settings neither has, and model
    rows where they agree (a profile's models are the same for every run it made)."""
    left, right = settings_of(a), settings_of(b)
    for row, (key, _, other, _) in PICTURES.items():  # two pictures: the same one, or not
        if a.get(key) and b.get(key) and a[key] != b[key]:
            right[row] = other
    out = []
    for name in dict.fromkeys([*left, *right]):
        va, vb = left.get(name, "—"), right.get(name, "—")
        if va == vb and (va == "—" or name.startswith("Model: ")):
            continue
        out.append({"≠": "≠" if va != vb else "", "Setting": name, "A": va, "B": vb})
    return out


# ---- callbacks (run before the page redraws) -------------------------------------------------------------------


def on_star(engine: Engine, run_id: str, starred: bool) -> None:
    try:
        engine.history.star(run_id, starred)
    except EngineError as exc:
        state["history_error"] = str(exc)


def on_pick(run_id: str) -> None:
    """Tick or untick a run for the comparison; a third tick lets go of the first."""
    picks = [p for p in state.get("compare_picks", []) if p != run_id]
    if state.get(f"compare-{run_id}"):
        picks.append(run_id)
    state["compare_picks"] = picks[-2:]


def on_clear_picks() -> None:
    state["compare_picks"] = []


def on_more() -> None:
    state["history_limit"] = state.get("history_limit", PAGE) + PAGE


# ---- the page's parts -------------------------------------------------------------------------------------------


def filters(engine: Engine) -> tuple[dict[str, Any], str | None]:
    """The filter row; returns the list's filters and the chosen batch (None: every run)."""
    try:
        facets = engine.history.facets()
    except EngineError as exc:
        st.error(str(exc))
        facets = {}
    styles = [ANY_STYLE, *facets.get("styles", [])]
    sets = [ALL_SETS, *facets.get("batches", [])]
    for key, options in (("history_style", styles), ("history_set", sets)):
        if state.get(key) not in options:  # a style or run set that is no longer in the history
            state[key] = options[0]
    text, style, batch, starred = st.columns([2.4, 2, 3, 1.4], vertical_alignment="bottom")
    words = text.text_input("Prompt contains", key="history_text", placeholder="chair")
    chosen_style = style.selectbox("Style", styles, key="history_style")
    chosen_set = batch.selectbox("Run set", sets, key="history_set")
    only_starred = starred.toggle("★ Starred only", key="history_starred")
    picked = {
        "starred": only_starred,
        "text": words.strip(),
        "style": None if chosen_style == ANY_STYLE else chosen_style,
    }
    return picked, None if chosen_set == ALL_SETS else chosen_set


def comparison(engine: Engine) -> None:
    """The two picked runs side by side, their numbers, and their settings with the differences marked."""
    picks = state.get("compare_picks", [])
    if len(picks) == 1:
        st.caption("Tick Compare on one more render to see the two side by side.")
    if len(picks) != 2:
        return
    runs: list[RunRecord] = []
    for run_id in picks:
        try:
            runs.append(engine.history.get(run_id))
        except EngineError:  # removed since it was picked
            state["compare_picks"] = [p for p in picks if p != run_id]
            return
    with st.container(border=True, key="compare_panel"):
        head, clear = st.columns([5, 1], vertical_alignment="center")
        head.subheader("Compare")
        clear.button("Clear", key="compare_clear", on_click=on_clear_picks)
        thumbs = output_thumbs(engine, [f"{r.id}#0" for r in runs], 512)
        for side, run, col in zip("AB", runs, st.columns(2), strict=True):
            meta = run.metadata
            if thumbs.get(f"{run.id}#0"):
                col.image(thumbs[f"{run.id}#0"], width=384)
            col.markdown(f"**{side}** · {md(meta['prompt'][:120])}")
            col.caption(f"{image_name(run.id, 0)} · {run.created_at.replace('T', ' ')[:16]} UTC", help=f"Run {run.id}")
            got = numbers_line(meta, NUMBER_NAMES)
            if got:
                col.caption(got)
        rows = compare_settings(runs[0].metadata, runs[1].metadata)
        differing = sum(1 for r in rows if r["≠"])
        st.caption(f"{differing} {'setting differs' if differing == 1 else 'settings differ'} (marked ≠)" if differing
                   else "The same settings.")  # fmt: skip
        table = pd.DataFrame(rows)
        marked = table.style.apply(
            lambda row: ["background-color: rgba(255, 190, 60, 0.35)" if row["≠"] else ""] * len(row), axis=1
        )
        # a static table: its cells wrap, so a long value (a sweep's run set, a prompt) is read whole, never cut
        st.table(marked, hide_index=True, width="stretch")


def card(
    engine: Engine,
    run: RunRecord,
    thumb: bytes | None,
    on_restore: Callable,
    on_like: Callable,
    hit: dict[str, Any] | None = None,
    on_upscale: Callable | None = None,
) -> None:
    """One run as a card; `hit`, a search's: the image it found (its index) and how close it is (its score). With
    `on_upscale(run_id, index, factor)`, its Upscale ×2 / ×4 buttons."""
    meta = run.metadata
    index = hit["index"] if hit else 0
    with st.container(border=True, key=f"card-{run.id}", height="stretch"):  # as tall as its row's tallest
        if thumb:
            st.image(thumb, width="stretch")
        prompt = meta["prompt"]
        st.markdown(f"**{md(prompt[:120])}**" + ("…" if len(prompt) > 120 else ""))
        more = f" · {run.images} images" if run.images > 1 else ""
        st.caption(
            f"{md(styles_used(meta))} · seed {meta['seed']} · {meta['width']}×{meta['height']}"
            f" · {meta['params']['steps']} steps{more} · {run.created_at.replace('T', ' ')[:16]} UTC"
            f" · {run.seconds:.1f}s"
        )
        if up := meta.get("upscale"):
            st.caption(f"upscaled ×{up['factor']} from {image_name(up['source']['run_id'], up['source']['index'])}")
        if hit:
            st.caption(f"similarity {hit['score']:.2f} · image {image_name(run.id, index)}", help=f"Run {run.id}")
        got = numbers_line(meta)
        if got:
            st.caption(got)
        if meta.get("batch"):
            st.caption(f"Run set {md(run_set_name(meta))}")
        st.space("stretch")  # the buttons at the foot of every card in the row
        with st.container(horizontal=True, gap="small"):
            st.button(
                "★ Starred" if run.starred else "☆ Star",
                key=f"star-{run.id}",
                on_click=on_star,
                args=(engine, run.id, not run.starred),
            )
            state[f"compare-{run.id}"] = run.id in state.get("compare_picks", [])
            st.checkbox("Compare", key=f"compare-{run.id}", on_change=on_pick, args=(run.id,))
        with st.container(horizontal=True, gap="small"):
            st.button("Restore", key=f"restore_{run.id}", on_click=on_restore, args=(run.id,))
            st.button("More like this", key=f"like_{run.id}", on_click=on_like, args=(run.id, index))
        if on_upscale is not None:
            with st.container(horizontal=True, gap="small"):
                for factor in (2, 4):
                    st.button(
                        f"Upscale ×{factor}", key=f"upscale{factor}-{run.id}", on_click=on_upscale,
                        args=(run.id, index, factor), disabled=state.get("history_upscale_job") is not None,
                        help=f"{factor}× its width and height (image {image_name(run.id, index)}), kept as a new run",
                    )  # fmt: skip
        with st.expander("Details"):
            # the whole recipe, ids in full; a model by its name, never its folder on the engine's machine
            models = {k: model_name(v) if v else v for k, v in (meta.get("models") or {}).items()}
            st.code(json.dumps({**meta, "models": models}, indent=2, ensure_ascii=False), language="json")
            for i in range(run.images):
                st.download_button(
                    f"Download {image_name(run.id, i)}",
                    lambda run_id=run.id, i=i: engine.history.image(run_id, i),
                    file_name=f"{run.id}-{i}.png",
                    mime="image/png",
                    key=f"dl_{run.id}_{i}",
                    on_click="ignore",
                )


def found_runs(engine: Engine, hits: list[dict[str, Any]], picked: dict[str, Any], batch: str | None) -> list:
    """A search's hits as (run, hit) pairs, best first, one card per run (its closest image), under the filters."""
    out, seen = [], set()
    words = picked["text"].casefold().split()
    for hit in hits:
        if hit["run_id"] in seen:
            continue
        seen.add(hit["run_id"])
        try:
            run = engine.history.get(hit["run_id"])
        except EngineError:  # removed since it was indexed
            continue
        meta = run.metadata
        used = {s["name"] for s in meta.get("styles", []) if s.get("used")}
        if (
            (picked["starred"] and not run.starred)
            or not all(w in meta.get("prompt", "").casefold() for w in words)
            or (picked["style"] and picked["style"] not in used)
            or (batch and meta.get("batch") != batch)
        ):
            continue
        out.append((run, hit))
    return out


def grid(
    engine: Engine, found: list, on_restore: Callable, on_like: Callable, on_upscale: Callable | None = None
) -> None:
    """(run, hit) pairs as cards, a row of COLUMNS at a time."""
    refs = {run.id: f"{run.id}#{hit['index'] if hit else 0}" for run, hit in found}
    thumbs = output_thumbs(engine, list(refs.values()), 256)
    for start in range(0, len(found), COLUMNS):
        for (run, hit), col in zip(found[start : start + COLUMNS], st.columns(COLUMNS), strict=False):
            with col:
                card(engine, run, thumbs.get(refs[run.id]), on_restore, on_like, hit, on_upscale)


def show(
    engine: Engine,
    on_restore: Callable,
    on_like: Callable,
    hits: list[dict[str, Any]] | None = None,
    on_upscale: Callable | None = None,
) -> None:
    """The gallery: filters, the comparison of two picked runs, and the grid of cards, newest first; or, given a
    search's `hits`, those, closest first, under the same filters and with the same buttons."""
    if "history_error" in state:
        st.error(state.pop("history_error"))
    picked, batch = filters(engine)
    comparison(engine)
    if hits is not None:
        found = found_runs(engine, hits, picked, batch)
        if found:
            grid(engine, found, on_restore, on_like, on_upscale)
        else:
            filtered = any(picked.values()) or batch
            st.info("Nothing found matches these filters." if hits and filtered else "Nothing found.")
        return
    limit = state.get("history_limit", PAGE)
    try:
        runs = engine.history.list(limit=limit, batch=batch, **picked)
        if batch:  # a batch comes whole, oldest first
            runs = runs[::-1]
    except EngineError as exc:
        st.error(str(exc))
        runs = []
    if not runs:
        if picked["starred"] and not picked["text"] and not picked["style"] and not batch:
            st.info("No starred renders yet: star one with ☆ Star.")
        elif any(picked.values()) or batch:
            st.info("No render matches these filters.")
        else:
            st.info("No renders yet. Make one in the Studio.")
        return
    grid(engine, [(run, None) for run in runs], on_restore, on_like, on_upscale)
    if not batch and len(runs) >= limit:
        st.button("Show more", key="gallery_more", on_click=on_more)
