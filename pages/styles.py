"""Style library: the references retrieval can pick from, and your own."""

import streamlit as st

from engine.errors import EngineError
from ui.shared import engine_or_stop, sidebar

engine = engine_or_stop()
sidebar(engine)

st.title("Style library")
with st.expander("Add your own style"):
    with st.form("add-style", clear_on_submit=True):
        upload = st.file_uploader("Reference image", type=["png", "jpg", "jpeg", "webp"])
        name = st.text_input("Name")
        description = st.text_input("Description")
        tags = st.text_input("Tags (comma-separated)")
        if st.form_submit_button("Add style") and upload is not None:
            try:
                engine.add_style(upload.getvalue(), name, description, tags.split(","))
                st.success(f"Added “{name}”.")
            except EngineError as exc:
                st.error(str(exc))

styles = engine.list_styles()
cols = st.columns(4)
for i, style in enumerate(styles):
    with cols[i % 4]:
        st.image(engine.style_image(style.id), use_container_width=True)
        st.markdown(f"**{style.name}**" + (" · yours" if style.source == "user" else ""))
        st.caption(style.description)
