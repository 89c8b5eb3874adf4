"""Studio: draw or drop a sketch, say what you want, get the render beside its sketch and its style; this session's
renders stay side by side in a gallery, newest first.

The page is a few sections, each a function: the sketch (canvas or upload) and its edges, the words and the style,
the render settings, Generate, the live canvas, and the result (the latest run and the gallery)."""

from __future__ import annotations

import hashlib
import time
from functools import partial
from typing import get_args

import streamlit as st
from PIL import Image

from engine import images as imgs
from engine.api import ControlPreview, JobInfo, RenderResult
from engine.errors import BadInput, EngineError
from engine.images import UPLOAD_TYPES
from engine.rules.controlnets import CONTROLS, DEFAULT_CONTROL, MAX_UNITS
from engine.rules.modes import MODES, switch
from engine.schema import SCHEDULERS, ControlName, GenerateRequest, Progress
from ui import canvas as canvas_ui
from ui import describe as describe_ui
from ui import jobs, start_image
from ui import models as models_ui
from ui import regions as regions_ui
from ui.jobs import job_panel, timing
from ui.live import LiveScheduler
from ui.shared import (
    DEFAULTS,
    FIELD_TO_PARAM,
    current_sketch,
    engine_or_stop,
    md,
    number,
    random_seed,
    remote,
    short_ref,
    style_thumb,
)

engine = engine_or_stop()
state = st.session_state
MAX_PREVIEW_PIXELS = 64_000_000
PREVIEW_SIDE = 256  # the short side of the sketch previews (the upload's and the edges')
GALLERY_COLUMNS = 3
GALLERY_MAX = 48  # renders a session's gallery keeps (the oldest leave it first; the History keeps them all)
ERROR_KEYS = ("error", "live_error", "regions_error")  # every error line a new render makes stale
MODE_LABELS = {"quality": "Quality", "fast": "Fast", "live": "Draft"}
# Streamlit's page starts 6rem down: the Studio needs the room for the canvas, the live frame and Generate
TIGHTER = "<style>.block-container {padding-top: 2.5rem !important}</style>"


# ---- the request --------------------------------------------------------------------------------------------------
def retrieve_auto_styles() -> None:
    """The styles the prompt retrieves (top 3, the first ticked), asked again whenever the prompt changed. Generate
    calls it too: a click right after typing brings the new words with it, before the page has shown their styles."""
    prompt = state["prompt"]
    if not prompt.strip() or state.get("auto_for") == prompt:
        return
    try:
        state["auto_hits"] = engine.styles.search(text=prompt, k=3)
        state.pop("auto_error", None)
    except EngineError as exc:
        state["auto_hits"], state["auto_error"] = [], str(exc)
    state["auto_for"] = prompt
    for i, hit in enumerate(state["auto_hits"]):
        state[f"use_{hit.id}"] = i == 0


def run_set() -> dict[str, str | None]:
    """The run set the render joins (the Dashboard's Compare tab and the Arena compare two): a label, in a batch
    ("studio" unless named). Without either, each render is its own set, as before."""
    label, batch = state["run_label"].strip(), state["run_batch"].strip()
    return {"label": label, "batch": batch or ("studio" if label else None)}


def build_request(**changes) -> GenerateRequest:
    """The request the page's fields make, with `changes` (a live frame: its mode, not kept)."""
    sketch, _ = current_sketch()
    style, blend = None, []
    if state["style_mode"] == "From library":
        style = state["library_style"]
    elif state["style_mode"] == "Auto":
        retrieve_auto_styles()
        picks = [(h.name, state.get(f"w_{h.id}", 1.0)) for h in state.get("auto_hits", []) if state.get(f"use_{h.id}")]
        if len(picks) > 1:
            blend = [{"style": n, "weight": w} for n, w in picks]
        elif picks:
            style = picks[0][0]
    start = start_image.request_fields()
    if "outpaint" in start:  # extending follows the image's own edges: no sketch, no regions drawn on it
        sketch = None
    fields = {param: state[name] for name, param in FIELD_TO_PARAM.items()} | {"source": "studio"}
    fields["mode"] = fields["mode"] or "quality"
    fields = switch(fields, changes.get("mode", fields["mode"]))  # another mode brings its own steps and sampler
    return GenerateRequest.build(
        prompt=state["prompt"],
        negative_prompt=state["negative"],
        sketch=sketch,
        edge_mode=state["edge_mode"],
        canny_low=state["canny_low"],
        canny_high=state["canny_high"],
        style=style,
        blend=blend,
        use_style=state["style_mode"] != "None",
        seed=state["seed"],
        regions=[] if "outpaint" in start else regions_ui.request_regions(),
        aspect=state.get("aspect") if state["source"] == "Draw" else None,  # a text-only render's shape
        **start,
        **models_ui.request_fields(),
        **control_units(),
        **run_set(),
        **{**fields, **changes},
    )


def clear_errors() -> None:
    """A new render starts: the error lines of earlier ones go."""
    for key in (*ERROR_KEYS, "error_cause"):
        state.pop(key, None)


# A refusal names the request field it is about ("prompt: the prompt is empty"): the Studio fields behind each
CAUSES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt",),
    "negative_prompt": ("negative",),
    "sketch": ("source", "sketch"),
    "seed": ("seed",),
    "canny_low": ("canny_low", "canny_high"),
    "canny_high": ("canny_low", "canny_high"),
    "style": ("style_mode", "library_style"),
    "blend": ("style_mode",),
    **{param: (field,) for field, param in FIELD_TO_PARAM.items()},
}


def input_fingerprint(fields: tuple[str, ...] | None = None) -> str:
    """What the designer has set (`fields` of it; all: every Studio field, the sketch and the start image)."""
    keys = fields or tuple(k for k in DEFAULTS if k not in ("remote_url", "remote_token")) + ("sketch", "init")
    digest = hashlib.sha1()
    for key in keys:
        if key == "sketch":
            value = current_sketch()[0]
        elif key == "init":
            value = state.get("init_image")
        else:
            value = state.get(key)
        digest.update(hashlib.sha1(value).digest() if isinstance(value, bytes) else repr(value).encode())
    return digest.hexdigest()


def refused(exc: EngineError) -> None:
    """A request the engine refuses: one line beside Generate, which goes as soon as its cause is changed."""
    state["error"] = str(exc)
    if isinstance(exc, BadInput):
        fields = CAUSES.get(str(exc).split(":", 1)[0].strip())  # what it is about, where it says so; else anything
        state["error_cause"] = (fields, input_fingerprint(fields))


def drop_stale_error() -> None:
    """The refusal's cause was changed (a prompt typed, a setting moved): its line goes."""
    cause = state.get("error_cause")
    if cause and cause[1] != input_fingerprint(cause[0]):
        state.pop("error", None)
        state.pop("error_cause", None)


def submit(request: GenerateRequest) -> None:
    """Queue the render on the engine; a request the engine refuses is one line beside Generate."""
    clear_errors()
    try:
        jobs.start("job", engine.renders.submit(request))
        state["pending_request"] = request
    except EngineError as exc:
        refused(exc)


def on_generate(new_seed: bool = False) -> None:
    """Button callback: runs before the page redraws, so it may set widget values (the seed)."""
    clear_errors()
    if new_seed or not state["seed_locked"]:
        state["seed"] = random_seed()
    try:
        request = build_request()
    except EngineError as exc:
        refused(exc)
        return
    submit(request)


def on_keep() -> None:
    """The live frame, rendered again in quality mode with the same seed and settings, into the History."""
    clear_errors()
    try:
        request = build_request(mode="quality", variations=1)
    except EngineError as exc:
        refused(exc)
        return
    submit(request)


def on_mode_change() -> None:
    """A mode brings its own steps, guidance and sampler: the render settings show them (and can still be changed)."""
    state.update(MODES[state["mode"] or "quality"].defaults())


# ---- the gallery's entries and their actions ----------------------------------------------------------------------
def gallery() -> list[dict]:
    """This session's renders, newest first: each {"result": RenderResult, "request": GenerateRequest | None}."""
    return state.setdefault("gallery", [])


def add_to_gallery(result: RenderResult, request: GenerateRequest | None) -> None:
    entries = gallery()
    entries.insert(0, {"result": result, "request": request})
    while len(entries) > 1 and sum(len(e["result"].png) for e in entries) > GALLERY_MAX:
        entries.pop()


def entry_of(run_id: str) -> dict | None:
    return next((e for e in gallery() if e["result"].run_id == run_id), None)


def on_vary(run_id: str) -> None:
    """That render's exact request again, with a new seed; it joins the gallery, the others stay."""
    entry = entry_of(run_id)
    if entry is None or entry["request"] is None:
        return on_generate(new_seed=True)
    submit(entry["request"].model_copy(update={"seed": random_seed(), "variations": 1}))


def on_start_from(run_id: str, index: int, extend: bool = False) -> None:
    """A render becomes the image the next one starts from (image-to-image, or inpainting with a mask), or the one
    to extend (`extend`: outpainting, its borders set in the panel)."""
    entry = entry_of(run_id)
    if entry is not None:
        start_image.set_start(entry["result"].png[index], f"render {run_id} · {index + 1}", extend=extend)


def on_star(run_id: str) -> None:
    """Star a render (or take the star off), kept by the engine: the History's Starred filter finds it."""
    starred = state.setdefault("starred", {})
    try:
        starred[run_id] = engine.history.star(run_id, not starred.get(run_id, False)).starred
    except EngineError as exc:
        state["error"] = str(exc)


def on_use_as_sketch(run_id: str, index: int) -> None:
    """A render's edges become the next sketch (dark lines on white); they are line art, so the edge mode is
    switched to lines, and the page says so."""
    entry = entry_of(run_id)
    if entry is None:
        return
    control, _ = imgs.edges(entry["result"].images()[index], "canny")
    state["sketch_override"] = imgs.png_bytes(Image.eval(control, lambda v: 255 - v))
    state["sketch_override_label"] = f"the edges of {short_ref(run_id, index)}"
    was = state["edge_mode"] or "auto"
    state["sketch_override_note"] = (
        f"Edge mode switched to lines (was {was}): a render's edges are line art already." if was != "lines" else None
    )
    state["edge_mode"] = "lines"


def on_upscale(run_id: str, index: int, factor: int) -> None:
    """Upscale a render ×2 or ×4 on the engine (a job: its progress above the latest render); the result joins the
    gallery as a new render, linked to this one."""
    state.pop("upscale_error", None)
    entry = entry_of(run_id)
    try:
        jobs.start("upscale_job", engine.renders.upscale(run_id, index, factor, bool(state.get("upscale_refine"))))
    except EngineError as exc:
        state["upscale_error"] = str(exc)
        return
    state["upscale_request"] = entry["request"] if entry is not None else None  # Vary on it varies the source


def describe_upscale(p: Progress | None) -> str:
    if p is None or p.stage == "loading the upscaler":
        return "Upscaling: loading the upscaler…"
    if p.stage == "queued":
        return f"Upscaling: waiting for the GPU (position {p.step})"
    if p.stage == "upscaling":
        return f"Upscaling · tile {p.step}/{p.total}{timing(p)}"
    return f"Upscaling: refining · step {p.step}/{p.total}{timing(p)}"


def on_upscale_done(job: JobInfo) -> None:
    """The upscale is the latest render now (large, with what it followed), and first in the gallery."""
    show_result(job, "upscale_request", "upscale_error")


def show_result(job: JobInfo, request_key: str, error_key: str) -> None:
    """A finished render job's result as the latest render and first in the gallery, its numbers followed while
    they are measured; a result that cannot be read, one line under `error_key`."""
    if job.state != "done":
        return
    try:
        result = engine.renders.result(job.id)
    except EngineError as exc:
        state[error_key] = str(exc)
        return
    state["result"] = result
    state["result_request"] = state.get(request_key)
    add_to_gallery(result, state.get(request_key))
    if result.measure_job and not result.measured:  # shown now; its numbers follow (the tile's line)
        state[measure_key(result.run_id)] = result.measure_job


def upscale_section() -> None:
    """An upscale's progress and its error line, above the latest render it will become."""
    if state.get("upscale_error"):
        st.error(state["upscale_error"])
    job_panel(engine, "upscale_job", describe_upscale, on_done=on_upscale_done, error_key="upscale_error")


def on_clear_gallery() -> None:
    for entry in gallery():
        state.pop(measure_key(entry["result"].run_id), None)  # nothing left on the page to follow them for
    for key in ("gallery", "result", "result_request", "result_sketch"):
        state.pop(key, None)


# ---- jobs ---------------------------------------------------------------------------------------------------------
def describe_render(p: Progress | None) -> str:
    if p is None:
        return "Preparing…"
    if p.stage == "queued":
        return f"Waiting for the GPU (position {p.step})"
    return f"Step {p.step}/{p.total}{timing(p)}"


def describe_live(p: Progress | None) -> str:
    if p is None or p.stage == "queued":
        return "Live: updating…" if p is None else f"Live: waiting for the GPU (position {p.step})"
    return f"Live: updating · step {p.step}/{p.total}"


def on_render_done(job: JobInfo) -> None:
    show_result(job, "pending_request", "error")


def measure_key(run_id: str) -> str:
    """Where the session keeps the measure job of a render it shows, while that job runs."""
    return f"measure_{run_id}"


def describe_measure(p: Progress | None) -> str:
    return "measuring…"


def on_measured(run_id: str, job: JobInfo) -> None:
    """A render's measure job ended: the run read again (its numbers, and the PNGs that now carry them)."""
    entry = entry_of(run_id)
    latest = state.get("result")
    shown = entry["result"] if entry is not None else latest if latest is not None and latest.run_id == run_id else None
    if shown is None:
        return
    try:
        run = engine.history.get(run_id)
        pngs = [engine.history.image(run_id, i) for i in range(len(shown.png))]
    except EngineError as exc:
        if entry is not None:
            entry["measure_error"] = str(exc)
        return
    measured = shown.model_copy(update={"metadata": run.metadata, "png": pngs})
    if entry is not None:
        entry["result"] = measured
        if not measured.measured:
            entry["measure_error"] = job.error or f"the measuring {job.state}"
    if latest is not None and latest.run_id == run_id:
        state["result"] = measured


def measuring_line(entry: dict) -> str:
    """What a render kept before its numbers says in their place."""
    if state.get(measure_key(entry["result"].run_id)):
        return "measuring…"
    return f"not measured: {entry['measure_error']}" if entry.get("measure_error") else "not measured yet"


def on_live_done(job: JobInfo) -> None:
    live = live_scheduler()
    if job.state == "done":
        try:
            state["live_frame"] = engine.renders.result(job.id)
            live.finish(ok=True)
            return
        except EngineError as exc:
            state["live_error"] = str(exc)
    live.finish(ok=False)


def live_scheduler() -> LiveScheduler:
    return state.setdefault("_live", LiveScheduler())


def live_tick(box) -> None:
    """With Live on: render the page's inputs as they change, one render at a time, the newest input once it has
    been still for a moment; the last frame stays on screen meanwhile (drawn in `box`)."""
    live = live_scheduler()
    try:
        request = build_request(mode="live", keep=False, variations=1, source="live")
    except EngineError as exc:
        box.caption(f"Live is waiting: {exc}")
        return
    live.see(hashlib.sha1(request.model_dump_json().encode()).hexdigest(), time.monotonic())
    if live.running is not None and state.get("live_job") is None:  # its job ended while the page was elsewhere
        live.finish(ok=False)
    elif live.running is not None and live.wanted != live.running:  # superseded: withdrawn if it has not started
        try:
            stale = engine.jobs.get(state["live_job"])
            if stale.state == "queued" and engine.jobs.cancel(stale.id).state == "cancelled":
                state.pop("live_job", None)
                live.drop()
        except EngineError:
            pass  # it ended meanwhile: its panel tells
    while (left := live.wait(time.monotonic())) is not None and left > 0:
        time.sleep(min(left, 0.05))
        state.get("live")  # Streamlit stops this run here if the designer draws or types again
    if live.wait(time.monotonic()) == 0:
        live.start()
        try:
            jobs.start("live_job", engine.renders.submit(request))
            state.pop("live_error", None)
        except EngineError as exc:
            live.finish(ok=False)
            state["live_error"] = str(exc)
    with box:
        job_panel(engine, "live_job", describe_live, on_done=on_live_done, error_key="live_error", cancel_button=False)


# ---- the sketch ---------------------------------------------------------------------------------------------------
def sketch_preview(data: bytes) -> tuple[Image.Image, tuple[int, int]]:
    """A sketch at preview size (short side 256) and its own size, decoded once per content: the upload's preview and
    the edge preview share it. Raises BadInput for a file that is no image."""
    key = hashlib.sha1(data).hexdigest()
    cached = state.get("_sketch_preview")
    if cached is None or cached[0] != key:
        try:
            full = imgs.decode(data, MAX_PREVIEW_PIXELS)
            cached = (key, imgs.fit(full, PREVIEW_SIDE), full.size, None)
        except BadInput as exc:
            cached = (key, None, None, str(exc))
        state["_sketch_preview"] = cached
    if cached[3] is not None:
        raise BadInput(cached[3])
    return cached[1], cached[2]


def upload_section() -> bool:
    """The uploader and the uploaded sketch itself; True when it was shown (or what is wrong with it)."""
    st.file_uploader("Sketch or photo", type=UPLOAD_TYPES, key="upload")
    upload = state.get("upload")
    if upload is None:
        return False
    try:
        shown, (w, h) = sketch_preview(upload.getvalue())
    except BadInput as exc:
        st.error(str(exc))
        return True
    st.image(shown, caption=f"{upload.name} · {w}×{h}", width=320)
    describe_ui.button(engine, upload.getvalue(), f"the upload {upload.name}", key="describe_upload")
    st.caption(f"An upload keeps its own aspect: {canvas_ui.render_size_note(w, h, state['size'])}.")
    return True


def sketch_section() -> bool:
    """Where the sketch comes from: the canvas (over a brought-in sketch, if any) or an upload. True when the sketch
    was previewed here (or what is wrong with it said)."""
    brought = state.get("sketch_override")
    if brought is not None and brought != state.get("_canvas_base"):
        state["source"] = "Draw"  # a sketch just brought in (As sketch, Restore) is drawn over on the canvas
        state["_brought_at"] = hashlib.sha1(brought).hexdigest()
    with st.container(key="sketch_panel"):
        st.segmented_control("Sketch", ["Draw", "Upload"], key="source", required=True)
        if state["source"] == "Upload":
            return upload_section()
        canvas_ui.panel()
        canvas_ui.back_buttons()
        if state.get("_brought_at"):
            scroll_once("sketch_panel", state["_brought_at"])
    return False


def offered_controls() -> list[str]:
    """The ControlNet types this engine renders with, as its capabilities say (a remote engine may hold fewer or more
    than this Studio knows: the ones both know); an engine too old to say: the types this Studio knows."""
    said = [c for c in state["capabilities"].controls if c in CONTROLS]  # a request can name only these
    return said or list(get_args(ControlName))


def offered_modes() -> list[str]:
    """The render modes this engine runs, as its capabilities say, among those this Studio can describe."""
    said = [m for m in MODES if m in state["capabilities"].modes]
    return said or list(MODES)


def edges_section(sketch: bytes | None, previewed: bool) -> None:
    """Which ControlNets follow the sketch, and what each will follow: one row by default (its type; its weight is
    the Structure strength), more rows on demand (type, weight, range of the steps, each with its map's preview)."""
    with st.expander("Edges and ControlNet", expanded=sketch is not None):
        controls = models_ui.controls(engine)  # name → (label, what it expects), from the engine
        if state["control"] is not None and state["control"] not in offered_controls():  # the engine lacks it
            state["control"] = offered_controls()[0]
        st.segmented_control(
            "ControlNet", offered_controls(), key="control", required=True,
            format_func=lambda c: controls.get(c, (c, ""))[0],
            help="\n\n".join(f"**{label}**: {expects}" for label, expects in controls.values()),
        )  # fmt: skip
        control_type = state["control"] or DEFAULT_CONTROL
        label, expects = controls.get(control_type, (control_type, ""))
        if expects:
            st.caption(f"{label} expects {expects}.")
        if CONTROLS[control_type].preprocess == "edges":  # the edge settings shape its map
            st.segmented_control("Edge mode", ["auto", "lines", "canny"], key="edge_mode")
            if state["edge_mode"] == "canny" or state["edge_mode"] is None:
                c1, c2 = st.columns(2)
                c1.slider("Canny low", 0, 255, key="canny_low")
                c2.slider("Canny high", 0, 255, key="canny_high")
        rows = extra_rows()
        if rows:
            st.slider("Range of the steps", 0.0, 1.0, step=0.05, key="control_range",
                      help="the fraction of the steps this ControlNet acts in: 0–1 all of them")  # fmt: skip
        drawing_warning([control_type, *(state[f"cn_type_{r}"] for r in rows)], sketch)
        preview_map(control_type, sketch, previewed, width=240)
        for n, row in enumerate(rows, start=2):
            control_row(n, row, controls, sketch)
        if len(rows) + 1 < MAX_UNITS:
            st.button(
                "Add a ControlNet", key="cn_add", on_click=add_row, icon=":material/add:",
                help=f"follow up to {MAX_UNITS} maps at once, e.g. Canny edges and Depth, each with its weight",
            )  # fmt: skip


def extra_rows() -> list[int]:
    """The ControlNet rows after the first, by their ids (their widgets' keys), offered types only."""
    rows = state.setdefault("control_rows", [])
    for row in rows:  # (a widget's value leaves the session while its page is not shown: set again here)
        if state.get(f"cn_type_{row}") not in offered_controls():
            state[f"cn_type_{row}"] = offered_controls()[0]
        state.setdefault(f"cn_weight_{row}", 0.8)
        state.setdefault(f"cn_range_{row}", (0.0, 1.0))
    if rows:
        state.setdefault("control_range", (0.0, 1.0))
    return rows


def add_row() -> None:
    rows = state.setdefault("control_rows", [])
    if len(rows) + 1 >= MAX_UNITS:
        return
    row = state.get("_cn_next", 1)
    state["_cn_next"] = row + 1
    used = {state["control"], *(state.get(f"cn_type_{r}") for r in rows)}
    offered = offered_controls()
    state[f"cn_type_{row}"] = next((c for c in offered if c not in used), offered[0])
    rows.append(row)


def remove_row(row: int) -> None:
    state["control_rows"] = [r for r in state.get("control_rows", []) if r != row]
    for key in (f"cn_type_{row}", f"cn_weight_{row}", f"cn_range_{row}"):
        state.pop(key, None)


def control_row(n: int, row: int, controls: dict, sketch: bytes | None) -> None:
    """One more ControlNet: its type, weight and range of the steps, a remove button, and what it will follow."""
    with st.container(border=True, key=f"cn_row_{row}"):
        c1, c2, c3, c4 = st.columns([3, 3, 3, 1], vertical_alignment="bottom")
        c1.selectbox(f"ControlNet {n}", offered_controls(), key=f"cn_type_{row}",
                     format_func=lambda c: controls.get(c, (c, ""))[0])  # fmt: skip
        c2.slider("Weight", 0.0, 2.5, step=0.05, key=f"cn_weight_{row}")
        c3.slider("Range", 0.0, 1.0, step=0.05, key=f"cn_range_{row}", help="the fraction of the steps it acts in")
        c4.button("", key=f"cn_remove_{row}", icon=":material/close:", on_click=remove_row, args=(row,),
                  help=f"remove ControlNet {n}")  # fmt: skip
        preview_map(state[f"cn_type_{row}"], sketch, True, width=160, name=f"ControlNet {n}")


def follows_start_image(control_type: str) -> bool:
    """A type a drawing does not suit (depth) follows the start image instead of a drawn sketch, where there is one:
    Start from this under a render, with Depth, keeps that render's geometry in another style."""
    return (
        not CONTROLS[control_type].drawings
        and state["source"] == "Draw"
        and bool(start_image.request_fields().get("init_image"))
    )


def drawing_warning(types: list[str], sketch: bytes | None) -> None:
    """A drawn sketch has no depth: said when such a type would follow one."""
    for control_type in dict.fromkeys(types):
        kind = CONTROLS[control_type]
        if not kind.drawings and sketch is not None and state["source"] == "Draw":
            if follows_start_image(control_type):
                st.caption(f"{kind.label} follows the image you start from, not the drawing.")
            else:
                st.warning(
                    f"{kind.label} expects a photo or a render: a drawn sketch has no depth. Upload a photo, or press "
                    "**Start from this** under a render to keep its geometry in another style."
                )


def preview_map(control_type: str, sketch: bytes | None, previewed: bool, width: int, name: str = "ControlNet") -> None:
    """What a ControlNet will follow: its map of the sketch (or of the start image it follows), made by the engine."""
    source = sketch
    if follows_start_image(control_type) or sketch is None:
        source = start_image.request_fields().get("init_image") or sketch
    if source is None:
        st.caption("No sketch yet: the render will come from the words alone (or the start image's own edges).")
        return
    try:
        preview, _ = sketch_preview(source)
    except BadInput as exc:
        if not previewed:  # the sketch's own preview has said it already
            st.error(str(exc))
        return
    try:
        made = control_preview(preview, control_type)
        st.image(made.image(), caption=f"What {name} will follow ({made.used})", width=width)
    except EngineError as exc:
        st.error(str(exc))


def control_preview(preview: Image.Image, control_type: str) -> ControlPreview:
    """The map the ControlNet will follow, made by the engine (where a model-backed preprocessor has its model, in
    either mode), asked once per image and setting: a rerun of the page asks nothing again."""
    settings = (control_type, state["edge_mode"] or "auto", state["canny_low"], state["canny_high"])
    data = imgs.png_bytes(preview)
    key = (hashlib.sha1(data).hexdigest(), *settings)
    cache = state.setdefault("_control_previews", {})
    if key not in cache:
        made = engine.renders.control_preview(
            data, control=settings[0], edge_mode=settings[1], canny_low=settings[2], canny_high=settings[3]
        )
        while len(cache) >= 2 * MAX_UNITS:  # the rows' maps of the current sketch, and of the one before
            cache.pop(next(iter(cache)))
        cache[key] = made
    return cache[key]


def control_units() -> dict:
    """The request's `controls` when the Studio has more than one row or a range other than all the steps (else the
    plain `control` at the Structure strength, as ever)."""
    rows = state.get("control_rows") or []
    first = tuple(state.get("control_range") or (0.0, 1.0)) if rows else (0.0, 1.0)
    if not rows and not follows_start_image(state["control"] or DEFAULT_CONTROL):
        return {}
    init = start_image.request_fields().get("init_image")
    units = []
    for control_type, weight, (start, end) in [
        (state["control"] or DEFAULT_CONTROL, state["structure"], first),
        *(
            (state[f"cn_type_{r}"], state.get(f"cn_weight_{r}", 0.8), tuple(state.get(f"cn_range_{r}", (0.0, 1.0))))
            for r in rows
        ),
    ]:
        unit = {"type": control_type, "weight": weight, "start": start, "end": end}
        if follows_start_image(control_type) and init:
            unit["image"] = init
        units.append(unit)
    return {"controls": units}


# ---- words, style and render settings -----------------------------------------------------------------------------
def words_section() -> None:
    st.text_area(
        "Prompt", key="prompt", height=90,
        placeholder="Describe what to render, for example: a timber cabin at dusk, warm light in the windows",
    )  # fmt: skip
    describe_ui.caption()
    st.text_input("Negative prompt", key="negative", help="what the render should avoid (leave empty for nothing)")


def auto_styles() -> None:
    """The prompt's top 3 styles: tick one, or several to blend them (a weight under each ticked one)."""
    if not state["prompt"].strip():
        st.caption("Type a prompt to see the styles it retrieves.")
        return
    retrieve_auto_styles()
    if state.get("auto_error"):
        st.error(state["auto_error"])
    hits = state.get("auto_hits", [])
    blending = sum(bool(state.get(f"use_{h.id}")) for h in hits) > 1
    for col, hit in zip(st.columns(3), hits, strict=False):
        with col:
            thumb = style_thumb(engine, hit.id)
            if thumb:
                st.image(thumb, width="stretch")
            st.checkbox(md(hit.name), key=f"use_{hit.id}")  # no help icon: it took the room the name needs
            st.caption(f"similarity {number(hit.score)}")  # its own line: a long name is cut, never the score
            if blending and state.get(f"use_{hit.id}"):
                state.setdefault(f"w_{hit.id}", 1.0)
                st.slider("Weight", 0.1, 2.0, step=0.1, key=f"w_{hit.id}")
    st.caption("Retrieved from your library for these words; tick several to blend them.")


def style_section() -> None:
    st.segmented_control("Style", ["Auto", "From library", "None"], key="style_mode")
    if state["style_mode"] == "Auto":
        auto_styles()
    elif state["style_mode"] == "From library":
        names = [s.name for s in engine.styles.list()]
        if state["library_style"] not in names:
            state["library_style"] = names[0] if names else None
        st.selectbox("Library style", names, key="library_style")


def mode_label(name: str) -> str:
    """A mode as the page names it ("live" is the Draft mode: the one Render as I draw uses, kept apart by name)."""
    return MODE_LABELS.get(name, name.capitalize())


def generate_section() -> None:
    """The mode and Generate, right under the words (greyed out only while a render runs: an empty prompt is one
    line on the click), the mode's cost, the error line and the render's progress."""
    m1, m2 = st.columns([3, 2], vertical_alignment="bottom")
    if state["mode"] is not None and state["mode"] not in offered_modes():  # an engine switched to that lacks it
        state["mode"] = offered_modes()[0]
        on_mode_change()
    m1.segmented_control(
        "Mode", offered_modes(), key="mode", format_func=mode_label, on_change=on_mode_change,
        help="\n\n".join(f"**{mode_label(m)}**: {MODES[m].summary}" for m in offered_modes()),
    )  # fmt: skip
    m2.button("Generate", type="primary", on_click=on_generate, disabled=state.get("job") is not None, width="stretch")
    st.caption(MODES[state["mode"] or "quality"].summary)
    if state.get("error"):
        st.error(state["error"])
    job_panel(engine, "job", describe_render, on_done=on_render_done, error_key="error", preview=True)


def render_settings() -> None:
    """The Advanced fields: steps, strengths, size, sampler, seed, and the run set the render joins."""
    with st.expander("Advanced", key="advanced"):  # a key: it stays open when styles appear above it
        a1, a2 = st.columns(2)
        a1.slider("Steps", 1, 100, key="steps")
        a2.slider("Guidance", 0.0, 20.0, step=0.5, key="guidance")
        a1.slider("Structure strength (ControlNet)", 0.0, 2.5, step=0.05, key="structure")
        a2.slider("Style strength (IP-Adapter)", 0.0, 2.0, step=0.05, key="style_strength")
        a1.select_slider("Size (short side)", [256, 384, 512, 640, 768, 1024], key="size")
        a2.slider("Variations", 1, 8, key="variations")
        a1.selectbox("Scheduler", list(SCHEDULERS), key="scheduler")
        a2.checkbox("Style only (look, not layout)", key="style_only")
        a1.select_slider(
            "Hires fix", [1.0, 1.25, 1.5, 1.75, 2.0], key="hires", format_func=lambda v: "off" if v == 1 else f"{v:g}×",
            help="render, upscale the image, and refine it by image-to-image (ControlNet follows the upscaled map)",
        )  # fmt: skip
        a2.slider("Hires strength", 0.05, 1.0, step=0.05, key="hires_strength", disabled=state["hires"] == 1,
                  help="how much the refine pass may change: low keeps the composition")  # fmt: skip
        a1.checkbox(
            "Refine upscales", key="upscale_refine",
            help="Upscale ×2/×4 then re-renders the upscaled image at low strength (0.3) with the tile ControlNet "
            "where the engine has it, for the detail of large prints (up to 1024 px a side)",
        )  # fmt: skip
        s1, s2, s3 = st.columns([3, 1, 1], vertical_alignment="bottom")
        s1.number_input("Seed", min_value=0, max_value=2**32 - 1, key="seed")
        s2.checkbox("Lock", key="seed_locked", help="keep this seed; unlocked, every Generate picks a new one")
        s3.button("Randomise", on_click=lambda: state.update(seed=random_seed()))
        r1, r2 = st.columns(2)
        r1.text_input(
            "Run set label", key="run_label", max_chars=80, placeholder="e.g. A",
            help="Renders with the same label (in the same batch) form one run set: the Dashboard's Compare tab and "
            "the Arena compare two sets, e.g. label A, then change a setting and render with label B.",
        )  # fmt: skip
        r2.text_input(
            "Batch", key="run_batch", max_chars=80, placeholder="studio",
            help="The experiment the sets belong to (letters, digits, '.', '_' or '-'); 'studio' when only a label "
            "is given. Leave both empty and each render is its own set.",
        )  # fmt: skip


# ---- live ---------------------------------------------------------------------------------------------------------
def live_section():
    """Render as I draw: its switch, and with it on the live frame and Keep, at the top of the column beside the
    canvas, where the designer is looking while drawing; returns the box its progress goes in (None when off)."""
    st.toggle(
        "Render as I draw", key="live", help="a quick small render (Draft mode: 2 steps) whenever the sketch, prompt, "
        "style or a strength changes, shown here; the seed stays fixed; **Keep** renders the frame in Quality mode "
        "into the History",
    )  # fmt: skip
    if not state["live"]:  # off: a frame in flight is let go, and the next switch-on starts afresh
        if state.get("live_job"):
            jobs.cancel(engine, "live_job")
            state.pop("live_job", None)
        state.pop("_live", None)
        return None
    with st.container(border=True, key="live_frame_box"):
        frame = state.get("live_frame")
        if frame is not None:
            fm = frame.metadata
            st.image(frame.png[0], width="stretch")
            st.caption(
                f"Live frame · {fm['timings']['total']:.2f}s · {fm['width']}×{fm['height']} · "
                f"{fm['params']['steps']} steps · seed {fm['seed']}"
            )
        else:
            st.caption("The first frame appears here a moment after you draw or type.")
        k1, k2 = st.columns([1, 3], vertical_alignment="center")
        k1.button(
            "Keep", type="primary", on_click=on_keep, disabled=frame is None or state.get("job") is not None,
            help="render this frame in quality mode (same seed and settings) and add it to the History",
        )  # fmt: skip
        box = k2.container()
        if state.get("live_error"):
            st.error(state["live_error"])
    return box


# ---- the result: the latest run, and the gallery ------------------------------------------------------------------
def restored_sketch(result: RenderResult) -> bytes | None:
    """The latest run's sketch as the engine kept it, asked once per run."""
    restored = state.get("result_sketch")
    if restored is None or restored[0] != result.run_id:
        try:
            restored = (result.run_id, engine.history.sketch(result.run_id))
        except EngineError:
            restored = (result.run_id, None)
        state["result_sketch"] = restored
    return restored[1]


# Scroll to `key` now and again whenever the page's content changes size (images above it loading, on a busy
# machine seconds later), for 10 s or until the designer scrolls, types or clicks: then the page is theirs.
SCROLL_SCRIPT = (
    "let on = true; const go = () => on && document.querySelector(key)?.scrollIntoView({block: 'start'});"
    "const stop = () => { on = false; watch.disconnect(); clearInterval(tick); };"
    "const watch = new ResizeObserver(go);"
    "[document.querySelector('[data-testid=stMainBlockContainer]'), document.body].forEach(e => e && watch.observe(e));"
    "['wheel', 'touchmove', 'keydown', 'mousedown'].forEach(e => window.addEventListener(e, stop, {once: true}));"
    "const tick = setInterval(go, 250); setTimeout(() => clearInterval(tick), 3000);"  # a slow layout, too
    "go(); setTimeout(stop, 10000);"
)


def scroll_once(container_key: str, token: str) -> None:
    """Scroll the page to the container with key `container_key`, once per `token` (a new render, a sketch brought
    to the canvas): what the designer's click made is then in view, not a screen away."""
    if state.get(f"_scrolled_{container_key}") == token:
        return
    state[f"_scrolled_{container_key}"] = token
    st.html(  # run once per token (a block: scripts share the page's scope)
        f"<script>{{ /* {token} */ const key = '.st-key-{container_key}';" + SCROLL_SCRIPT + "}</script>",
        unsafe_allow_javascript=True,  # our own fixed script: no user text in it
    )


def followed(result: RenderResult) -> None:
    """What the latest run followed: its sketch and edges, its style(s) and regions, and how long it took."""
    meta = result.metadata
    st.markdown("**Sketch**")
    if result.edges is not None:
        k1, k2 = st.columns(2)
        sketch = restored_sketch(result)
        if sketch:
            k1.image(sketch, caption="sketch", width="stretch")
        k2.image(result.edges, caption=f"edges ({meta['edge_mode']})", width="stretch")
    else:
        st.caption("text only")
    st.markdown("**Style**")
    used = [s for s in result.styles if s.used]
    for column, s in zip(st.columns(max(2, len(used))), used, strict=False):
        with column:
            thumb = style_thumb(engine, s.id)
            if thumb:
                st.image(thumb, width="stretch")
            weight = f" · weight {s.weight:g}" if len(used) > 1 else ""
            where = " · outside the regions" if result.regions else ""
            st.caption(f"{md(s.name)} · similarity {number(s.score)}{weight}{where}")
    if not used:
        st.caption("no style reference" + (" outside the regions" if result.regions else ""))
    regions_ui.result_regions(engine, result)
    t = meta["timings"]
    where = "on the remote engine" if remote() else "in the History"
    st.caption(
        f"{t['total']:.1f}s in all · denoise {t.get('denoise', 0):.1f}s · {meta['width']}×{meta['height']} · "
        f"{meta['params']['steps']} steps · run {short_ref(result.run_id)}, kept {where}",
        help=f"run id `{result.run_id}`",
    )


def latest_run(result: RenderResult) -> None:
    """The newest render, large, beside what it followed; the page scrolls to it when it arrives."""
    entry = entry_of(result.run_id)
    with st.container(key="latest_render"):
        st.markdown(f"**Latest render** · {md(result.metadata.get('prompt', '')[:120])}")
        big, side = st.columns([2, 1], gap="medium")
        with big:
            count = len(result.png)
            for start in range(0, count, 2 if count > 1 else 1):
                row = range(start, min(start + (2 if count > 1 else 1), count))
                for col, i in zip(st.columns(len(row)) if count > 1 else [st.container()], row, strict=False):
                    with col:
                        tile(entry or {"result": result, "request": state.get("result_request")}, i)
        with side:
            followed(result)
        scroll_once("latest_render", result.run_id)


def settings_line(meta: dict) -> str:
    """What made a render, short: its style, mode, steps, strengths, size and run set."""
    p = meta.get("params", {})
    styles = " + ".join(md(s["name"]) for s in meta.get("styles", []) if s.get("used")) or "no style"
    parts = [styles, p.get("mode") or "quality", f"{p.get('steps')} steps"]
    for key, word in (
        ("guidance", "guidance"),
        ("structure_strength", "structure"),
        ("style_strength", "style strength"),
    ):
        if p.get(key) is not None:
            parts.append(f"{word} {p[key]:g}")
    if meta.get("kind") in ("img2img", "inpaint") and p.get("strength") is not None:
        parts.insert(0, f"{'inpainted' if meta['kind'] == 'inpaint' else 'image-to-image'} at {p['strength']:g}")
    if meta.get("kind") == "outpaint" and p.get("outpaint"):
        sides = zip(("left", "top", "right", "bottom"), p["outpaint"], strict=True)
        parts.insert(0, "extended " + " ".join(f"+{px} {side}" for side, px in sides if px))
    if (p.get("control") or DEFAULT_CONTROL) != DEFAULT_CONTROL:
        parts.append(p["control"])
    parts += [f"LoRA {md(lo['name'])} {lo['weight']:g}" for lo in p.get("loras") or []]
    if p.get("checkpoint"):
        parts.append(md(p["checkpoint"]))
    if (p.get("hires") or 1) > 1:
        parts.append(f"hires {p['hires']:g}×")
    if up := meta.get("upscale"):
        refined = f", refined at {up['refine']['strength']:g}" if up.get("refine") else ""
        parts.insert(0, f"upscaled ×{up['factor']}{refined}")
    line = " · ".join([*parts, f"{meta['width']}×{meta['height']}"])
    if meta.get("batch"):
        line += f" · set {md(meta['batch'])}" + (f" · {md(meta['label'])}" if meta.get("label") else "")
    return line


def numbers_line(meta: dict, index: int) -> str:
    """How a render measures (as the Dashboard reads it): prompt fidelity, style similarity, edge F1."""
    m = ((meta.get("metrics") or [])[index:] or [{}])[0] or {}
    parts = [
        f"prompt fidelity {number(m['clip_score'], 1)}" if m.get("clip_score") is not None else "",
        f"style similarity {number(m['style_similarity'])}" if m.get("style_similarity") is not None else "",
        f"edge F1 {number(m['edge_f1'])}" if m.get("edge_f1") is not None else "",
    ]
    return " · ".join(p for p in parts if p)


def tile(entry: dict, index: int) -> None:
    """One render of the gallery: the image, its seed, settings and numbers, and what can be done with it."""
    result = entry["result"]
    meta, run_id = result.metadata, result.run_id
    st.image(result.png[index], width="stretch")
    st.caption(f"seed {result.seeds[index]}")
    st.caption(settings_line(meta))
    if not result.measured:  # shown before its numbers: they follow, the page following its measure job
        if index == 0 and state.get(measure_key(run_id)):  # one follower per render, in its first tile's line
            job_panel(engine, measure_key(run_id), describe_measure, on_done=partial(on_measured, run_id),
                      cancel_button=False, caption=True)  # fmt: skip
        else:
            st.caption(measuring_line(entry))
    elif numbers := numbers_line(meta, index):
        st.caption(numbers)
    b1, b2, b3 = st.columns(3)
    b1.download_button("PNG", result.png[index], file_name=f"{run_id}-{index}.png", mime="image/png",
                       key=f"dl_{run_id}_{index}")  # fmt: skip
    b2.button("Vary", key=f"vary_{run_id}_{index}", on_click=on_vary, args=(run_id,), help="same settings, new seed")
    b3.button(
        "As sketch", key=f"as_sketch_{run_id}_{index}", on_click=on_use_as_sketch, args=(run_id, index),
        help="its edges become the next sketch",
    )  # fmt: skip
    c1, c2, c3 = st.columns([5, 4, 4])  # "Start from this" whole in a gallery tile
    c1.button(
        "Start from this", key=f"start_{run_id}_{index}", on_click=on_start_from, args=(run_id, index),
        help="image-to-image or inpaint from this render",
    )  # fmt: skip
    c2.button(
        "Extend", key=f"extend_{run_id}_{index}", on_click=on_start_from, args=(run_id, index, True),
        help="outpaint: add room around this render (set the borders under Start from an image)",
    )  # fmt: skip
    describe_ui.button(
        engine, result.png[index], f"render {short_ref(run_id, index)}", f"describe_{run_id}_{index}", c3
    )
    d1, d2, d3 = st.columns([5, 4, 4])
    starred = state.setdefault("starred", {}).get(run_id, False)
    d1.button("★ Starred" if starred else "☆ Star", key=f"tile_star_{run_id}_{index}", on_click=on_star,
              args=(run_id,), help="keep it as a favourite (History: Starred only)")  # fmt: skip
    busy = state.get("upscale_job") is not None
    for column, factor in zip((d2, d3), (2, 4), strict=True):
        column.button(
            f"Upscale ×{factor}", key=f"upscale{factor}_{run_id}_{index}", on_click=on_upscale,
            args=(run_id, index, factor), disabled=busy,
            help=f"{factor}× the width and height (Real-ESRGAN, in tiles), kept as a new render",
        )  # fmt: skip


def gallery_section(latest: str | None) -> None:
    """This session's other renders side by side, newest first (the latest is shown large above); Vary adds to
    them, nothing is replaced."""
    tiles = [
        (entry, i) for entry in gallery() if entry["result"].run_id != latest for i in range(len(entry["result"].png))
    ]
    if not tiles:
        return
    h1, h2 = st.columns([4, 1], vertical_alignment="bottom")
    h1.markdown(f"**Renders** · this session, newest first ({len(tiles)} before the latest)")
    h2.button("Clear the gallery", on_click=on_clear_gallery, help="empties this view; the History keeps them")
    st.caption(
        "Under each: prompt fidelity (CLIP score, 0–100), style similarity (CLIP cosine to its reference) and edge F1 "
        "(structure fidelity against the sketch, 2 px tolerance), as the Dashboard measures them."
    )
    for start in range(0, len(tiles), GALLERY_COLUMNS):
        for col, (entry, i) in zip(st.columns(GALLERY_COLUMNS), tiles[start : start + GALLERY_COLUMNS], strict=False):
            with col:
                tile(entry, i)


def result_section() -> None:
    st.divider()
    result = state.get("result")
    if result is None and not gallery():
        st.caption("Your renders appear here, the newest large, with what each followed.")
        return
    upscale_section()
    if result is not None:
        latest_run(result)
    gallery_section(result.run_id if result is not None else None)


# ---- the page -----------------------------------------------------------------------------------------------------
st.markdown(TIGHTER, unsafe_allow_html=True)
st.title("Studio")
if not gallery() and state.get("result") is None:
    st.info(
        "**Start here:** ① draw a sketch (or upload one) · ② describe what to render · ③ press **Generate**: the "
        "look comes from your style library."
    )
drop_stale_error()
models_ui.sidebar(engine)
left, right = st.columns([1, 1], gap="large")
with left:
    previewed = sketch_section()
    sketch, _ = current_sketch()
    edges_section(sketch, previewed)
    last = state.get("result")
    regions_ui.panel(engine, sketch, last.png[0] if last is not None and last.png else None)
    start_image.panel(engine, state.get("regions") if state.get("regions_on") else [])
with right:
    live_box = live_section()
    words_section()
    generate_section()
    style_section()
    render_settings()
result_section()
if live_box is not None:  # last: its short wait for a still input must not hold up the rest of the page
    live_tick(live_box)
