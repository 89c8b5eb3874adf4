"""One engine per process (local, or remote per the sidebar), the session's fields and the sidebar."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

from engine.api import Capabilities, DoctorReport, Engine
from engine.errors import EngineError
from engine.rules.controlnets import DEFAULT_CONTROL
from engine.schema import MAX_SEED
from ui import doctor as doctor_ui

# Every Studio field, with its default. Pages read and write these keys; widgets use them as keys.
DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative": "blurry, text, watermark",  # a real default, applied (it was once a grey placeholder that was not)
    "source": "Draw",
    "edge_mode": "auto",
    "canny_low": 50,
    "canny_high": 150,
    "style_mode": "Auto",
    "library_style": None,
    "steps": 20,
    "guidance": 7.5,
    "structure": 1.5,
    "style_strength": 0.8,
    "style_only": False,
    "seed": 0,
    "seed_locked": False,
    "size": 512,
    "variations": 1,
    "scheduler": "unipc",
    "mode": "quality",
    "live": False,
    "pen_width": 4,
    "pen_color": "#000000",
    "draw_mode": "freedraw",
    "aspect": "4:3",
    "run_label": "",
    "run_batch": "",
    "engine_mode": "Local",
    "remote_url": "http://127.0.0.1:8000",
    "remote_token": "",
    "regions_on": False,
    "control": DEFAULT_CONTROL,
    "hires": 1.0,
    "hires_strength": 0.35,
    "init_on": False,
    "strength": 0.6,
    "inpaint_on": False,
    "extend_on": False,
    "extend_left": 0,
    "extend_top": 0,
    "extend_right": 0,
    "extend_bottom": 0,
}


# Studio fields that map one-to-one onto the request's generation parameters (and the metadata's
# `params`), so building a request and restoring one from the history read the same table.
FIELD_TO_PARAM: dict[str, str] = {
    "steps": "steps",
    "guidance": "guidance",
    "structure": "structure_strength",
    "style_strength": "style_strength",
    "style_only": "style_only",
    "size": "size",
    "variations": "variations",
    "scheduler": "scheduler",
    "mode": "mode",
    "control": "control",
    "hires": "hires",
    "hires_strength": "hires_strength",
}


@st.cache_resource(show_spinner="Loading models…")
def get_engine(profile: str | None = None) -> Engine:
    """The local engine, loaded once per process and shared by every session (one per profile: `tiny` where a
    session chose the demo models, else the settings')."""
    from engine.hub import check_render_models

    settings = local_settings(profile)
    check_render_models(settings)  # offline without the weights: said at once, before the heavy imports
    from engine.local import LocalEngine

    engine = LocalEngine(settings)
    try:
        engine.load(freeze=True)
    except BaseException:
        engine.close()  # not cached: the next page load tries again (after a download, say), without this one's threads
        raise
    return engine


def local_settings(profile: str | None = None):
    from engine.settings import Settings

    return Settings(profile=profile) if profile else Settings()


def local_doctor(profile: str | None = None) -> DoctorReport:
    """The local engine's models as the doctor finds them, without the engine: from the file system alone, so it
    answers where the engine could not start (the same report as `about.doctor`)."""
    from engine.doctor import diagnose

    return diagnose(local_settings(profile))


def local_profile() -> str | None:
    """The profile this session's local engine runs: the demo models' (tiny) once chosen, else the settings'."""
    return "tiny" if st.session_state.get(doctor_ui.DEMO) else None


@st.cache_resource(show_spinner=False, max_entries=4)
def get_remote_engine(url: str, token: str) -> Engine:
    from engine.remote import RemoteEngine

    return RemoteEngine(url, token or None)


REMOTE_URL_ENV, REMOTE_TOKEN_ENV = "DESIGN_STUDIO_REMOTE_URL", "DESIGN_STUDIO_REMOTE_TOKEN"


def _same_server(a: str, b: str) -> bool:
    return a.strip().rstrip("/") == b.strip().rstrip("/")


def studio_token(url: str) -> str:
    """The engine token set on this Studio's process (DESIGN_STUDIO_REMOTE_TOKEN), for the server it was set for
    (DESIGN_STUDIO_REMOTE_URL) only: a URL typed in the sidebar never gets it, or anyone past the gate could have it
    sent to their own server. It stays on the server side: never in session state nor in a widget, whose values are
    sent to the browser."""
    token = os.environ.get(REMOTE_TOKEN_ENV, "").strip()
    home = os.environ.get(REMOTE_URL_ENV, "").strip()
    return token if token and home and _same_server(url, home) else ""


def remote_token() -> str:
    """The token the remote engine is called with: the one typed in the sidebar; else the one set on this Studio."""
    state = st.session_state
    return state.get("remote_token", "").strip() or studio_token(state.get("remote_url", ""))


def init_state() -> None:
    """Keep every field alive across pages and reruns (Streamlit drops keys of widgets not drawn). A laptop that
    always renders on one server says so once (DESIGN_STUDIO_REMOTE_URL, _REMOTE_TOKEN): every session starts in
    Remote mode there, and the laptop never tries to load models it may not have. The token stays out of the
    session (see studio_token)."""
    state = st.session_state
    if "engine_mode" not in state and os.environ.get(REMOTE_URL_ENV, "").strip():
        state["engine_mode"] = "Remote"
        state["remote_url"] = os.environ[REMOTE_URL_ENV].strip()
    for key, value in DEFAULTS.items():
        state[key] = state.get(key, value)


def _engine_picker() -> None:
    with st.sidebar:
        st.segmented_control(
            "Engine", ["Local", "Remote"], key="engine_mode", required=True,
            help="Renders, sweeps, jobs and results belong to the engine that made them: switching sets them aside "
            "(nothing is lost) until you switch back.",
        )  # fmt: skip
        if st.session_state["engine_mode"] == "Remote":
            st.text_input("Server URL", key="remote_url", help="`python -m engine serve` or its ngrok URL")
            st.text_input("Token", key="remote_token", type="password")
            if not st.session_state["remote_token"].strip() and studio_token(st.session_state["remote_url"]):
                st.caption("Token: set on this Studio", help="A token typed above replaces it for this session.")
            if st.button("Test connection"):
                try:
                    found = current_engine().capabilities()
                    st.success(
                        f"Connected: {found.device} · profile {found.profile} · {found.precision or found.dtype}"
                    )
                except EngineError as exc:
                    st.error(str(exc))


# What a session keeps that belongs to one engine: its renders, jobs, results, and the errors and picks that name
# them. A switch (Local ↔ Remote, or another server) sets these aside under the engine that made them and brings back
# the other engine's, so nothing is ever shown or asked of the wrong engine. Only plain values and settable widgets
# are listed (a button's, an uploader's or a table's state cannot be restored).
_ENGINE_BOUND_WORDS = (
    # Studio
    "gallery result result_request result_sketch pending_request starred job live_job live_frame _live auto_hits "
    "auto_for auto_error error error_cause live_error regions_error mask_error models_error models_note loras "
    "checkpoint _region_hits library_style _thumbs _style_thumbs "
    # Sweeps, Arena, Dashboard, History
    "sweep_job sweep_result sweep_error sweep_past _sweep_files sweep_styles arena_contest arena_job arena_error "
    "arena_inputs arena_queries arena_a arena_b arena_tuned dash_sets dash_styles dash_sources dash_cmp_a dash_cmp_b "
    "sweep_style sweep_lora history_like history_set history_style compare_picks history_limit history_error "
    # Tune, Catalog, tagging, Style library
    "tune_data tune_data_done tune_data_job tune_error tune_train_job tune_use_job tune_use_base cat_job cat_preview "
    "cat_preview_wanted cat_error cat_shown _cat_thumbs cat_style cat_model tag_job tag_result tag_table tag_error "
    "_product_thumbs styles_message"
)
ENGINE_BOUND: frozenset[str] = frozenset(_ENGINE_BOUND_WORDS.split())
ENGINE_BOUND_PREFIXES = ("measure_", "use_", "w_")  # a render's measure job; the ticks and weights of retrieved styles
_ENGINE_FOR, _STASH, _CONNECTED = "_engine_for", "_engine_stash", "_remote_connected"


def engine_identity() -> str:
    """Which engine the session is on: "local", or "remote <url>" (a token change is the same engine)."""
    if not remote():
        return "local demo" if local_profile() else "local"
    return "remote " + st.session_state.get("remote_url", "").strip().rstrip("/")


def _engine_bound(key: str) -> bool:
    return key in ENGINE_BOUND or key.startswith(ENGINE_BOUND_PREFIXES)


def keep_engines_apart() -> str | None:
    """After a switch of engine: the session's items of the engine it left are set aside, the other's come back.
    Returns the engine switched from (once, on the run that switched), else None."""
    state = st.session_state
    now, was = engine_identity(), state.get(_ENGINE_FOR)
    state[_ENGINE_FOR] = now
    if was is None or was == now:
        return None
    stash: dict[str, dict] = state.setdefault(_STASH, {})
    stash[was] = {key: state[key] for key in list(state.keys()) if _engine_bound(key)}
    for key in stash[was]:
        del state[key]
    for key, value in stash.pop(now, {}).items():
        with contextlib.suppress(StreamlitAPIException):  # a widget that cannot be set any more: it starts afresh
            state[key] = value
    return was


def _engine_name(identity: str) -> str:
    if identity.startswith("local"):
        return "the local engine" + (" (demo models)" if identity == "local demo" else "")
    return f"the remote engine at {identity.split(' ', 1)[1]}"


def remote() -> bool:
    return st.session_state.get("engine_mode") == "Remote"


def current_engine() -> Engine:
    state = st.session_state
    if remote():
        return get_remote_engine(state["remote_url"].strip(), remote_token())
    profile = local_profile()
    return get_engine(profile) if profile else get_engine()  # (the same cache entry as a plain get_engine())


def engine_or_stop() -> Engine:
    """The engine this session uses (local or remote), with the sidebar; or a banner with the fix."""
    from ui.gate import through_the_router

    through_the_router()
    init_state()
    _engine_picker()
    switched_from = keep_engines_apart()
    if switched_from is not None:
        st.toast(
            f"Now on {_engine_name(engine_identity())}. What this session made on {_engine_name(switched_from)} is "
            "set aside, and comes back when you switch back."
        )
    connected = _remote_or_stop() if remote() else None
    try:
        engine = current_engine()
        found = connected or engine.capabilities()
    except EngineError as exc:
        if not remote():  # the first page of a machine without the models: what is missing and how to go on
            report = local_doctor(local_profile())
            if not report.ok:
                doctor_ui.first_page(report, exc)
                st.stop()
        st.error(f"**The engine could not start.** {exc.message[:1].upper()}{exc.message[1:]}")
        if exc.fix_for("app"):
            st.info(f"How to fix: {exc.fix_for('app')}")
        st.stop()
    st.session_state["capabilities"] = found
    _status(found, doctor_ui.report(engine, engine_identity()))
    return engine


def _remote_or_stop() -> Capabilities:
    """The remote engine's capabilities; or, when it does not answer, one line on the page and the script stops. Until
    this address has answered once, that line is a calm "not connected yet" with what to do (the prefilled address is
    only a guess, not the designer's mistake; Test connection says in the sidebar what went wrong)."""
    state = st.session_state
    ident = engine_identity()
    try:
        found = current_engine().capabilities()
    except EngineError as exc:
        url = md(state.get("remote_url", "").strip() or "(no URL)")
        if state.get(_CONNECTED) == ident:
            st.error(f"**Lost the remote engine at {url}.** {md(exc.message)}")
            if exc.fix_for("app"):
                st.info(f"How to fix: {exc.fix_for('app')}")
        else:
            st.info(
                "**Remote engine: not connected yet.** Type the server's URL and token in the sidebar (`python -m "
                "engine serve` prints both; a Colab notebook prints its ngrok URL), then press **Test connection**."
            )
            st.caption(f"{url} does not answer yet: {md(exc.message)}")
        st.stop()
    state[_CONNECTED] = ident
    return found


def _status(found: Capabilities, doctor: DoctorReport | None = None) -> None:
    with st.sidebar:
        if found.profile == "tiny":
            st.warning(
                "**Tiny profile**: random-weight demo models. Images are noise, and style retrieval, tags and scores "
                'are random too ("watercolor" may well bring back walnut); the workflow is real.'
            )
            if local_profile() and not remote():
                st.button("Leave the demo models", on_click=doctor_ui.leave_demo, help="Back to the real models")
        where = "Remote engine: device" if found.remote else "Device"
        workers = f" · {found.workers} {found.executor} workers" if found.executor != "local" else ""
        precision = found.precision or found.dtype  # (an older server sends no precision)
        cpu = found.cpu or {}
        about = f"{cpu.get('model') or 'CPU'}, {cpu.get('isa') or 'unknown ISA'}" if found.device == "cpu" else None
        st.caption(
            f"{where} **{found.device}** · {precision} · profile **{found.profile}**{workers}",
            help=f"{about}. Precision is chosen from the hardware (DESIGN_STUDIO_DTYPE overrides it)."
            if about
            else None,
        )
        st.caption(f"Retrieval: **{found.retrieval}**")
        loaded = [name for name, ok in found.loaded.items() if ok]
        st.caption("Models loaded: " + (", ".join(loaded) or "none yet"))
        doctor_ui.sidebar_line(doctor)
        with st.expander("Models"):
            if doctor is not None:  # each model the settings name, with where it stands (`python -m engine doctor`)
                for line in doctor_ui.listed(doctor, model_name):
                    st.caption(line)
            else:  # an engine without the doctor: the ids
                for role, model_id in found.models.items():
                    if model_id:  # (a role with no model, e.g. no LoRA, is not listed)
                        st.caption(f"{role}: `{model_name(model_id)}`")


def current_sketch() -> tuple[bytes | None, str]:
    """The sketch the Studio's next generation uses, and where it came from."""
    state = st.session_state
    if state["source"] == "Upload":
        upload = state.get("upload")
        return (upload.getvalue(), upload.name) if upload is not None else (None, "")
    if state.get("sketch_override"):  # drawn over on the canvas: the picture with the strokes, once the canvas drew
        label = state.get("sketch_override_label", "restored sketch")
        drawn_over = state.get("drawn_png") if state.get("_canvas_base") == state["sketch_override"] else None
        return (drawn_over or state["sketch_override"]), label
    return state.get("drawn_png"), "drawing"


def model_name(model_id: str) -> str:
    """A model as a designer reads it: a hub id as it is ("lllyasviel/sd-controlnet-canny"), a folder or file on the
    engine's machine by its last two parts, not the engine's absolute path."""
    path = str(model_id).replace("\\", "/").rstrip("/")
    if not path.startswith(("/", "~", ".")) and ":" not in path[:3]:
        return path
    parts = [p for p in path.split("/") if p]
    return "…/" + "/".join(parts[-2:]) if len(parts) > 2 else path


def data_uri(jpeg: bytes | None) -> str | None:
    """A small JPEG as a data URI, for image columns in tables."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode() if jpeg else None


def output_thumbs(engine: Engine, refs: list[str], px: int = 96) -> dict[str, bytes | None]:
    """JPEG thumbnails of outputs ("RUN_ID#INDEX"), fetched once each per session, many in one call."""
    cache: dict[tuple, bytes] = st.session_state.setdefault("_thumbs", {})
    wanted = [r for r in dict.fromkeys(refs) if (id(engine), r, px) not in cache]
    for start in range(0, len(wanted), 500):
        try:
            found = engine.history.thumbnails(wanted[start : start + 500], px)
        except EngineError:
            break
        for ref, jpeg in found.items():
            cache[(id(engine), ref, px)] = jpeg
    return {r: cache.get((id(engine), r, px)) for r in refs}


def style_thumb(engine: Engine, style_id: str, px: int = 256) -> bytes | None:
    """A style's picture for the page, fetched once per session (None when the style is gone)."""
    cache: dict[tuple, bytes | None] = st.session_state.setdefault("_style_thumbs", {})
    key = (id(engine), style_id, px)
    if key not in cache:
        try:
            cache[key] = engine.styles.image(style_id, px)
        except EngineError:
            return None
    return cache[key]


def number(value: float, places: int = 2) -> str:
    """A score for the page: fixed decimals, and never "-0.00" (a tiny negative reads as 0)."""
    return f"{round(float(value), places) + 0.0:.{places}f}"


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED) + 1


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md(text: object) -> str:
    """User text (a prompt, a style or file name, an id) as literal Markdown: no image a stranger's URL loads, no link,
    no colour directive, no emphasis; it reads as typed."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def short_ref(run_id: str, index: int | None = None) -> str:
    """A render as a person reads it: "…9cd5aeac · 2" (the run id's last 8 characters, the 1-based image number)."""
    tail = f"…{run_id[-8:]}" if len(run_id) > 8 else run_id
    return tail if index is None else f"{tail} · {index + 1}"
