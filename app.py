"""Generative Design Studio: the Streamlit router (`streamlit run app.py`)."""

import streamlit as st

st.set_page_config(page_title="Generative Design Studio", page_icon=":material/draw:", layout="wide")

pages = [
    st.Page("pages/studio.py", title="Studio", icon=":material/draw:", default=True),
    st.Page("pages/styles.py", title="Style library", icon=":material/palette:"),
    st.Page("pages/history.py", title="History", icon=":material/history:"),
]
st.navigation(pages).run()
