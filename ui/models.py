"""The sidebar's **Checkpoint and LoRAs**: the base checkpoint, the LoRAs with their weights (several at once),
adding a `.safetensors` file to the engine, and what each ControlNet type expects. Locally and remotely alike: the
engine keeps the files and lists them; the Studio names them."""

from __future__ import annotations

import streamlit as st

from engine.errors import EngineError
from engine.uploads import send_model

DEFAULT_CHECKPOINT = "Default (SD 1.5)"
MAX_UPLOAD_MB = 200  # a LoRA through the browser (sent on to the engine in parts of a few MB, whatever its limit)


def listing(engine, refresh: bool = False) -> dict:
    """The engine's models, asked once per session (and again after an upload)."""
    state = st.session_state
    key = ("_models", id(engine))
    if refresh or key not in state:
        try:
            state[key] = engine.renders.models()
        except EngineError as exc:
            state["models_error"] = str(exc)
            return {"checkpoints": [], "loras": [], "controls": [], "folders": {}}
    return state[key]


def _add(engine) -> None:
    state = st.session_state
    upload = state.get("model_upload")
    if upload is None:
        return
    kind = "lora" if state.get("model_kind", "LoRA") == "LoRA" else "checkpoint"
    bar = st.sidebar.progress(0.0, text=f"Sending {upload.name}")

    def sent(held: int, size: int) -> None:
        bar.progress(held / max(size, 1), text=f"Sending {upload.name}: {held / 1e6:.0f} of {size / 1e6:.0f} MB")

    try:  # in parts of a few MB: over the engine's request limit, and only what it lacks (engine/uploads.py)
        added = send_model(engine, kind, upload.name, upload, sent)
    except EngineError as exc:
        state["models_error"] = str(exc)
        return
    finally:
        bar.empty()
    state.pop("models_error", None)
    listing(engine, refresh=True)
    if kind == "lora":
        state["loras"] = [*dict.fromkeys([*state.get("loras", []), added["name"]])]
    else:
        state["checkpoint"] = added["name"]
    state["models_note"] = f"{'Added' if added['added'] else 'Already there:'} {kind} **{added['name']}**"


def sidebar(engine) -> None:
    state = st.session_state
    models = listing(engine)
    with st.sidebar.expander("Checkpoint and LoRAs", key="models_panel"):
        names = [m["name"] for m in models["checkpoints"]]
        if state.get("checkpoint") not in [DEFAULT_CHECKPOINT, *names]:
            state["checkpoint"] = DEFAULT_CHECKPOINT
        st.selectbox("Checkpoint", [DEFAULT_CHECKPOINT, *names], key="checkpoint", help="Your own SD 1.5 model")
        loras = [m["name"] for m in models["loras"]]
        state["loras"] = [n for n in state.get("loras", []) if n in loras]
        st.multiselect("LoRAs", loras, key="loras", placeholder="none", help="Several at once, each with a weight")
        for name in state["loras"]:
            st.slider(f"{name}", -2.0, 2.0, 1.0, 0.05, key=f"lora_weight_{name}", help="0 leaves the model as it is")
        st.radio("Add", ["LoRA", "Checkpoint"], key="model_kind", horizontal=True)
        st.file_uploader(
            "A .safetensors file",
            type=["safetensors"],
            key="model_upload",
            on_change=_add,
            args=(engine,),
            max_upload_size=MAX_UPLOAD_MB,
        )
        if state.get("models_note"):
            st.caption(state["models_note"])
        if state.get("models_error"):
            st.error(state["models_error"])
        folders = models.get("folders") or {}
        if folders:
            st.caption(
                "Files over {mb} MB: `--checkpoint FILE` / `--lora FILE` on the CLI (with `--remote`), or copy them "
                "into `{checkpoint}` or `{lora}` on the engine's machine.".format(mb=MAX_UPLOAD_MB, **folders)
            )


def request_fields() -> dict:
    state = st.session_state
    checkpoint = state.get("checkpoint")
    return {
        "checkpoint": None if checkpoint in (None, DEFAULT_CHECKPOINT) else checkpoint,
        "loras": [{"name": n, "weight": float(state.get(f"lora_weight_{n}", 1.0))} for n in state.get("loras", [])],
    }


def controls(engine) -> dict[str, tuple[str, str]]:
    """Each ControlNet type's label and what it expects, by name (as the engine describes them)."""
    return {c["name"]: (c["label"], c["expects"]) for c in listing(engine).get("controls", [])}
