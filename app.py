"""Generative Design Studio: the Streamlit router (`streamlit run app.py`)."""

from pathlib import Path

import streamlit as st

from ui import draft
from ui.gate import require_password
from ui.jobs import begin_run, follow_jobs
from ui.logs import quiet_closed_tabs

quiet_closed_tabs()  # a tab closed mid-draw leaves a Streamlit-internal traceback in the server log; see ui/logs.py
# the icon ships with the app: a Material one would be fetched from a font CDN on every load (offline: a failed request)
st.set_page_config(
    page_title="Generative Design Studio", page_icon=str(Path(__file__).parent / "ui" / "icon.png"), layout="wide"
)
require_password()  # served beyond 127.0.0.1, the app asks for the team password first

pages = {
    "Create": [
        st.Page("pages/studio.py", title="Studio", icon=":material/draw:", default=True),
        st.Page("pages/styles.py", title="Style library", icon=":material/palette:"),
        st.Page("pages/catalog.py", title="Catalog", icon=":material/inventory_2:"),
        st.Page("pages/tune.py", title="Tune retrieval", icon=":material/tune:"),
    ],
    "Review": [
        st.Page("pages/history.py", title="History", icon=":material/history:"),
        st.Page("pages/dashboard.py", title="Dashboard", icon=":material/monitoring:"),
        st.Page("pages/sweeps.py", title="Sweeps", icon=":material/grid_view:"),
        st.Page("pages/arena.py", title="Arena", icon=":material/compare:"),
    ],
}
begin_run()
draft.keep()  # the unfinished sketch, prompt and settings come back after a reload (ui/draft.py)
st.navigation(pages).run()
draft.save()  # and are kept in the browser as the page left them
follow_jobs()  # while a job the page shows runs, keep its progress line current; returns at once otherwise
