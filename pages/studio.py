"""Studio: a sketch and words in, the render beside its sketch and its style out."""

import streamlit as st

from engine.errors import EngineError
from engine.schema import GenerateRequest
from ui.shared import engine_or_stop, sidebar

engine = engine_or_stop()
sidebar(engine)

st.title("Studio")
left, right = st.columns([1, 2])
with left:
    sketch = st.file_uploader("Sketch or photo", type=["png", "jpg", "jpeg", "webp"])
    prompt = st.text_area("What should it look like?", placeholder="a timber cabin at dusk, warm windows")
    style_names = ["Auto (retrieve from my library)"] + [s.name for s in engine.list_styles()]
    style = st.selectbox("Style", style_names)
    with st.expander("Advanced"):
        steps = st.slider("Steps", 1, 50, 20)
        structure = st.slider("Structure strength (ControlNet)", 0.0, 2.0, 1.5, 0.05)
        style_strength = st.slider("Style strength (IP-Adapter)", 0.0, 1.5, 0.8, 0.05)
        seed = st.number_input("Seed (0 = random)", min_value=0, max_value=2**32 - 1, value=0)
        size = st.select_slider("Size (short side)", [256, 384, 512, 640, 768], value=512)
    go = st.button("Generate", type="primary", disabled=not prompt.strip())

if go:
    try:
        request = GenerateRequest.build(
            prompt=prompt,
            sketch=sketch.getvalue() if sketch else None,
            style=None if style.startswith("Auto") else style,
            steps=steps,
            structure_strength=structure,
            style_strength=style_strength,
            seed=int(seed) or None,
            size=size,
        )
        bar = st.progress(0.0, text="Starting…")

        def on_progress(p):
            if p.stage == "queued":
                bar.progress(0.0, text=f"Waiting for the GPU (position {p.step})")
            else:
                bar.progress(p.step / p.total, text=f"Step {p.step}/{p.total} · {p.elapsed:.1f}s")

        st.session_state["last"] = engine.generate(request, on_progress=on_progress)
        bar.empty()
    except EngineError as exc:
        st.error(str(exc))

result = st.session_state.get("last")
with right:
    if result is None:
        st.info("Upload a sketch (or none, for text-to-image), describe the look, and press Generate.")
    else:
        cols = st.columns(3)
        if result.edges is not None:
            cols[0].image(result.edges, caption=f"Edges ({result.metadata['edge_mode']})")
        used = [s for s in result.styles if s.used]
        if used:
            cols[1].image(engine.style_image(used[0].id), caption=f"Style: {used[0].name} ({used[0].score:.2f})")
        cols[2].image(result.images[0], caption=f"Seed {result.seeds[0]}")
        st.caption(f"{result.metadata['timings']['total']:.1f}s · saved to `{result.paths[0]}`")
