"""Generative Design Studio: the Streamlit router (`streamlit run app.py`)."""

import streamlit as st

st.set_page_config(page_title="Generative Design Studio", page_icon="✏️", layout="wide")

pages = [
    st.Page("pages/studio.py", title="Studio", icon="✏️", default=True),
    st.Page("pages/styles.py", title="Style library", icon="🎨"),
]
st.navigation(pages).run()
