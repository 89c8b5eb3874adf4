"""Studio: draw or drop a sketch, say what you want, get the render beside its sketch and its style."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import streamlit as st
from PIL import Image
from streamlit_drawable_canvas import st_canvas

from engine import images as imgs
from engine.api import JobInfo
from engine.errors import BadInput, EngineError
from engine.images import UPLOAD_TYPES
from engine.render.modes import MODES, switch
from engine.schema import SCHEDULERS, GenerateRequest, Progress
from ui import jobs
from ui import regions as regions_ui
from ui.jobs import job_panel, timing
from ui.live import LiveScheduler
from ui.shared import FIELD_TO_PARAM, current_sketch, engine_or_stop, md, random_seed, remote, style_thumb

engine = engine_or_stop()
state = st.session_state
CANVAS_W, CANVAS_H = 448, 336
MAX_PREVIEW_PIXELS = 64_000_000


def canvas_png(image_data: np.ndarray | None) -> bytes | None:
    """The drawing as PNG bytes, or None while the canvas is blank."""
    if image_data is None:
        return None
    rgba = np.asarray(image_data, dtype=np.uint8)
    inked = (rgba[..., 3] > 0) & (rgba[..., :3].min(axis=-1) < 245)
    if not inked.any():
        return None
    return imgs.png_bytes(Image.fromarray(rgba, "RGBA"))


def build_request(**changes) -> GenerateRequest:
    """The request the page's fields make, with `changes` (a live frame: its mode, not kept)."""
    sketch, _ = current_sketch()
    style, blend = None, []
    if state["style_mode"] == "From library":
        style = state["library_style"]
    elif state["style_mode"] == "Auto":
        picks = [(h.name, state.get(f"w_{h.id}", 1.0)) for h in state.get("auto_hits", []) if state.get(f"use_{h.id}")]
        if len(picks) > 1:
            blend = [{"style": n, "weight": w} for n, w in picks]
        elif picks:
            style = picks[0][0]
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
        regions=regions_ui.request_regions(),
        **{**fields, **changes},
    )


def submit(request: GenerateRequest) -> None:
    """Queue the render on the engine; a request the engine refuses is one line beside Generate."""
    state.pop("error", None)
    try:
        jobs.start("job", engine.renders.submit(request))
        state["pending_request"] = request
    except EngineError as exc:
        state["error"] = str(exc)


def on_generate(new_seed: bool = False) -> None:
    """Button callback: runs before the page redraws, so it may set widget values (the seed)."""
    state.pop("error", None)
    if new_seed or not state["seed_locked"]:
        state["seed"] = random_seed()
    try:
        request = build_request()
    except EngineError as exc:
        state["error"] = str(exc)
        return
    submit(request)


def on_vary() -> None:
    """The last result's exact request again, with a new seed."""
    last = state.get("result_request")
    if last is None:
        return on_generate(new_seed=True)
    submit(last.model_copy(update={"seed": random_seed(), "variations": 1}))


def on_use_as_sketch(index: int) -> None:
    result = state["result"]
    control, _ = imgs.edges(result.images()[index], "canny")
    state["sketch_override"] = imgs.png_bytes(Image.eval(control, lambda v: 255 - v))  # dark lines on white
    state["sketch_override_label"] = f"edges of {result.run_id} #{index}"
    state["edge_mode"] = "lines"


def on_mode_change() -> None:
    """A mode brings its own steps, guidance and sampler: the Advanced fields show them (and can still be changed)."""
    state.update(MODES[state["mode"] or "quality"].defaults())


def on_keep() -> None:
    """The live frame, rendered again in quality mode with the same seed and settings, into the History."""
    state.pop("error", None)
    try:
        request = build_request(mode="quality", variations=1)
    except EngineError as exc:
        state["error"] = str(exc)
        return
    submit(request)


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


def on_clear_override() -> None:
    state.pop("sketch_override", None)


st.title("Studio")
left, right = st.columns([1, 1], gap="large")

# ---- input ------------------------------------------------------------------------------------
with left:
    if state.get("sketch_override"):
        try:
            shown = imgs.decode(state["sketch_override"], MAX_PREVIEW_PIXELS)
            st.image(shown, caption=f"Sketch: {state.get('sketch_override_label')}", width=320)
        except BadInput as exc:
            st.error(str(exc))
        st.button("Clear this sketch", on_click=on_clear_override)
    else:
        st.segmented_control("Sketch", ["Draw", "Upload"], key="source")
        if state["source"] == "Upload":
            st.file_uploader("Sketch or photo", type=UPLOAD_TYPES, key="upload")
        else:
            tools = st.columns([4, 3, 2])
            tools[0].segmented_control(
                "Tool",
                ["freedraw", "line", "rect"],
                key="draw_mode",
                format_func={"freedraw": "Pen", "line": "Line", "rect": "Box"}.get,
            )
            tools[1].slider("Pen width", 1, 20, key="pen_width")
            tools[2].color_picker("Colour", key="pen_color")
            trace = st.file_uploader("Trace over an image (optional)", type=UPLOAD_TYPES)
            canvas = st_canvas(
                stroke_width=state["pen_width"],
                stroke_color=state["pen_color"],
                fill_color="rgba(0, 0, 0, 0)",
                background_color="#ffffff",
                background_image=Image.open(trace) if trace else None,
                drawing_mode=state["draw_mode"] or "freedraw",
                width=CANVAS_W,
                height=CANVAS_H,
                key="canvas",
                return_image_data=True,
            )
            drawn = canvas_png(canvas.image_data)
            if drawn is not None:
                state["drawn_png"] = drawn
            elif canvas.image_data is not None:
                state.pop("drawn_png", None)
            st.caption("Hover over the canvas for undo, redo and clear.")

    sketch, sketch_label = current_sketch()
    with st.expander("Edges", expanded=sketch is not None):
        st.segmented_control("Edge mode", ["auto", "lines", "canny"], key="edge_mode")
        if state["edge_mode"] == "canny" or state["edge_mode"] is None:
            c1, c2 = st.columns(2)
            c1.slider("Canny low", 0, 255, key="canny_low")
            c2.slider("Canny high", 0, 255, key="canny_high")
        if sketch is not None:
            try:
                preview = imgs.fit(imgs.decode(sketch, MAX_PREVIEW_PIXELS), 256)
                control, used = imgs.edges(
                    preview, state["edge_mode"] or "auto", state["canny_low"], state["canny_high"]
                )
                st.image(control, caption=f"What ControlNet will follow ({used})", width=240)
            except BadInput as exc:
                st.error(str(exc))
        else:
            st.caption("No sketch yet: the render will come from the words alone.")

    last = state.get("result")
    regions_ui.panel(engine, sketch, last.png[0] if last is not None and last.png else None)


# ---- progress ---------------------------------------------------------------------------------
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


def on_render_done(job: JobInfo) -> None:
    if job.state == "done":
        try:
            state["result"] = engine.renders.result(job.id)
            state["result_request"] = state.get("pending_request")
        except EngineError as exc:
            state["error"] = str(exc)


with right:
    st.text_area("Prompt", key="prompt", placeholder="a timber cabin at dusk, warm light in the windows")
    st.text_input("Negative prompt", key="negative", placeholder="blurry, text, watermark")

    st.segmented_control("Style", ["Auto", "From library", "None"], key="style_mode")
    if state["style_mode"] == "Auto":
        if state["prompt"].strip():
            if state.get("auto_for") != state["prompt"]:
                try:
                    state["auto_hits"] = engine.styles.search(text=state["prompt"], k=3)
                except EngineError as exc:
                    state["auto_hits"] = []
                    st.error(str(exc))
                state["auto_for"] = state["prompt"]
                for i, hit in enumerate(state["auto_hits"]):
                    state[f"use_{hit.id}"] = i == 0
            cols = st.columns(3)
            for col, hit in zip(cols, state.get("auto_hits", []), strict=False):
                with col:
                    thumb = style_thumb(engine, hit.id)
                    if thumb:
                        st.image(thumb, width="stretch")
                    st.checkbox(f"{hit.name} · {hit.score:.2f}", key=f"use_{hit.id}")
                    if sum(bool(state.get(f"use_{h.id}")) for h in state["auto_hits"]) > 1:
                        state.setdefault(f"w_{hit.id}", 1.0)
                        st.slider("Weight", 0.1, 2.0, step=0.1, key=f"w_{hit.id}")
            st.caption("Retrieved from your library for these words; tick several to blend them.")
        else:
            st.caption("Type a prompt to see the styles it retrieves.")
    elif state["style_mode"] == "From library":
        names = [s.name for s in engine.styles.list()]
        if state["library_style"] not in names:
            state["library_style"] = names[0] if names else None
        st.selectbox("Library style", names, key="library_style")

    m1, m2 = st.columns([3, 2], vertical_alignment="bottom")
    m1.segmented_control(
        "Mode", list(MODES), key="mode", format_func=str.capitalize, on_change=on_mode_change,
        help="\n\n".join(f"**{m.name.capitalize()}**: {m.summary}" for m in MODES.values()),
    )  # fmt: skip
    m2.toggle(
        "Live canvas", key="live", help="re-render (fast, small) whenever the sketch, prompt, style or a strength "
        "changes; the seed stays fixed; **Keep** renders the frame in quality mode into the History",
    )  # fmt: skip
    st.caption(MODES[state["mode"] or "quality"].summary)

    with st.expander("Advanced"):
        a1, a2 = st.columns(2)
        a1.slider("Steps", 1, 100, key="steps")
        a2.slider("Guidance", 0.0, 20.0, step=0.5, key="guidance")
        a1.slider("Structure strength (ControlNet)", 0.0, 2.5, step=0.05, key="structure")
        a2.slider("Style strength (IP-Adapter)", 0.0, 2.0, step=0.05, key="style_strength")
        a1.select_slider("Size (short side)", [256, 384, 512, 640, 768, 1024], key="size")
        a2.slider("Variations", 1, 8, key="variations")
        a1.selectbox("Scheduler", list(SCHEDULERS), key="scheduler")
        a2.checkbox("Style only (look, not layout)", key="style_only")
        s1, s2, s3 = st.columns([3, 1, 1], vertical_alignment="bottom")
        s1.number_input("Seed", min_value=0, max_value=2**32 - 1, key="seed")
        s2.checkbox("Lock", key="seed_locked", help="keep this seed; unlocked, every Generate picks a new one")
        s3.button("Randomise", on_click=lambda: state.update(seed=random_seed()))

    job = state.get("job")
    st.button("Generate", type="primary", on_click=on_generate, disabled=job is not None, width="stretch")
    if state.get("error"):
        st.error(state["error"])
    job_panel(engine, "job", describe_render, on_done=on_render_done, error_key="error", preview=True)

# ---- live -------------------------------------------------------------------------------------
live_box = None
if state["live"]:
    with right, st.container(border=True):  # beside the canvas, where the designer is looking
        frame = state.get("live_frame")
        if frame is not None:
            fm = frame.metadata
            st.image(frame.png[0], width="stretch")
            st.caption(
                f"Live frame · {fm['timings']['total']:.2f}s · {fm['width']}×{fm['height']} · "
                f"{fm['params']['steps']} steps · seed {fm['seed']}"
            )
        else:
            st.caption("Live canvas: the first frame appears a moment after you draw or type.")
        k1, k2 = st.columns([1, 3], vertical_alignment="center")
        k1.button(
            "Keep", type="primary", on_click=on_keep, disabled=frame is None or state.get("job") is not None,
            help="render this frame in quality mode (same seed and settings) and add it to the History",
        )  # fmt: skip
        live_box = k2.container()
        if state.get("live_error"):
            st.error(state["live_error"])
else:  # Live off: a frame in flight is let go, and the next switch-on starts afresh
    if state.get("live_job"):
        jobs.cancel(engine, "live_job")
        state.pop("live_job", None)
    state.pop("_live", None)

# ---- result -----------------------------------------------------------------------------------
result = state.get("result")
st.divider()
if result is None:
    st.info("Draw or upload a sketch (or none, for text-to-image), describe the look, and press **Generate**.")
else:
    meta = result.metadata
    c1, c2, c3 = st.columns(3)
    with c1:
        st.markdown("**Sketch**")
        if result.edges is not None:
            k1, k2 = st.columns(2)
            restored = state.get("result_sketch")
            if restored is None or restored[0] != result.run_id:
                try:
                    restored = (result.run_id, engine.history.sketch(result.run_id))
                except EngineError:
                    restored = (result.run_id, None)
                state["result_sketch"] = restored
            if restored[1]:
                k1.image(restored[1], caption="sketch", width="stretch")
            k2.image(result.edges, caption=f"edges ({meta['edge_mode']})", width="stretch")
        else:
            st.caption("text only")
    with c2:
        st.markdown("**Style**")
        used = [s for s in result.styles if s.used]
        for s in used:
            thumb = style_thumb(engine, s.id)
            if thumb:
                st.image(thumb, width="stretch")
            weight = f" · weight {s.weight:g}" if len(used) > 1 else ""
            where = " · outside the regions" if result.regions else ""
            st.caption(f"{md(s.name)} · similarity {s.score:.2f}{weight}{where}")
        if not used:
            st.caption("no style reference" + (" outside the regions" if result.regions else ""))
        regions_ui.result_regions(engine, result)
    with c3:
        st.markdown("**Render**")
        for i, (png, seed) in enumerate(zip(result.png, result.seeds, strict=True)):
            st.image(png, width="stretch")
            st.caption(f"seed {seed}")
            b1, b2, b3 = st.columns(3)
            name = f"{result.run_id}-{i}.png"
            b1.download_button("PNG", png, file_name=name, mime="image/png", key=f"dl_{result.run_id}_{i}")
            b2.button("Vary", key=f"vary_{result.run_id}_{i}", on_click=on_vary, help="same settings, new seed")
            b3.button(
                "As sketch",
                key=f"use_{result.run_id}_{i}",
                on_click=on_use_as_sketch,
                args=(i,),
                help="its edges become the next sketch",
            )
    t = meta["timings"]
    where = "on the remote engine" if remote() else "in the History"
    st.caption(
        f"{t['total']:.1f}s in all · denoise {t.get('denoise', 0):.1f}s · {meta['width']}×{meta['height']} · "
        f"{meta['params']['steps']} steps · run `{result.run_id}`, kept {where}"
    )

if live_box is not None:  # last: its short wait for a still input must not hold up the rest of the page
    live_tick(live_box)
