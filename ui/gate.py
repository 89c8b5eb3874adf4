"""A shared-password gate for a Studio served beyond this machine.

On 127.0.0.1 (the default in .streamlit/config.toml) there is no gate: only this machine can reach the app. Served
on any other address (`streamlit run app.py --server.address 0.0.0.0`), the app asks for the password in
`DESIGN_STUDIO_UI_PASSWORD` before it draws a page, and refuses to run without one. This is one shared password for a
team behind a trusted network, not user accounts (Streamlit's `st.login` needs an OIDC provider); see
docs/security.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import streamlit as st

PASSWORD_ENV = "DESIGN_STUDIO_UI_PASSWORD"
MIN_PASSWORD = 12
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_PASSED = "_ui_gate_passed"


def _fingerprint(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


ROUTED = "_routed_by_app"


def through_the_router() -> None:
    """A page opened by its own address (`/history`) is run by Streamlit without app.py, so without this gate and
    the job follower: such a session is sent to the app's front door first (app.py marks the sessions it routes)."""
    if not st.session_state.get(ROUTED):
        st.switch_page("app.py")


def require_password() -> None:
    """Return when this session may see the app; otherwise draw the gate (or the refusal) and stop the script."""
    st.session_state[ROUTED] = True
    address = (st.get_option("server.address") or "").strip()
    password = os.environ.get(PASSWORD_ENV, "")
    if address in LOOPBACK and not password:
        return
    if len(password.strip()) < MIN_PASSWORD:
        where = address or "every network interface"
        st.error(
            f"This Studio is served on {where} without a password. Set {PASSWORD_ENV} (at least {MIN_PASSWORD} "
            "characters) before `streamlit run`, or serve it on 127.0.0.1 only."
        )
        st.stop()
    if st.session_state.get(_PASSED) == _fingerprint(password):
        return
    st.title("Generative Design Studio")
    with st.form("ui_gate"):
        given = st.text_input("Team password", type="password", key="ui_gate_password")
        sent = st.form_submit_button("Open the Studio", type="primary")
    if sent:
        if hmac.compare_digest(given.encode(), password.encode()):
            st.session_state[_PASSED] = _fingerprint(password)
            st.session_state.pop("ui_gate_password", None)
            st.rerun()
        st.error("Wrong password.")
    st.stop()
