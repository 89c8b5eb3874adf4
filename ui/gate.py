"""A shared-password gate for a Studio served beyond this machine.

On 127.0.0.1 (the default in .streamlit/config.toml) there is no gate: only this machine can reach the app. Served
on any other address (`streamlit run app.py --server.address 0.0.0.0`), the app asks for the password in
`DESIGN_STUDIO_UI_PASSWORD` before it draws a page, and refuses to run without one. This is one shared password for a
team behind a trusted network, not user accounts (Streamlit's `st.login` needs an OIDC provider); see
docs/security.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import logging
import os
import threading
import time

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


def gate_on() -> bool:
    """Whether this Studio asks for the password: served beyond 127.0.0.1, or a password set for it."""
    address = (st.get_option("server.address") or "").strip()
    return not (address in LOOPBACK and not os.environ.get(PASSWORD_ENV, ""))


def require_password() -> None:
    """Return when this session may see the app; otherwise draw the gate (or the refusal) and stop the script."""
    st.session_state[ROUTED] = True
    guard = upload_guard()
    address = (st.get_option("server.address") or "").strip()
    password = os.environ.get(PASSWORD_ENV, "")
    if not gate_on():
        return
    if len(password.strip()) < MIN_PASSWORD:
        where = address or "every network interface"
        st.error(
            f"This Studio is served on {where} without a password. Set {PASSWORD_ENV} (at least {MIN_PASSWORD} "
            "characters) before `streamlit run`, or serve it on 127.0.0.1 only."
        )
        st.stop()
    if st.session_state.get(_PASSED) == _fingerprint(password):
        if guard is not None:
            guard.let_in(_session_id())  # (again on every run: a resumed session, a reloaded module)
        return
    st.title("Generative Design Studio")
    with st.form("ui_gate"):
        given = st.text_input("Team password", type="password", key="ui_gate_password")
        sent = st.form_submit_button("Open the Studio", type="primary")
    if sent:
        if hmac.compare_digest(given.encode(), password.encode()):
            st.session_state[_PASSED] = _fingerprint(password)
            if guard is not None:
                guard.let_in(_session_id())
            st.session_state.pop("ui_gate_password", None)
            st.rerun()
        st.error("Wrong password.")
    st.stop()


def _session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


# ---- Streamlit's upload endpoint, behind the gate ------------------------------------------------------------------
# Streamlit serves `PUT /_stcore/upload_file/{session_id}/{file_id}` for its file uploaders, and keeps each file in
# memory under the session that sent it (MemoryUploadedFileManager). Every websocket session has an id, the gate's
# too: a client that had passed nothing could fill the Studio's memory (issue 30, finding 12). And a session that ends
# by its tab closing is kept for a reconnect, then dropped from Streamlit's session storage without being shut down,
# so its uploads were never released. `streamlit run app.py` builds its web server before app.py first runs, so the
# guard is set on Streamlit's runtime objects instead, once per process, by the first run of app.py.

_GUARD = "_design_studio_upload_guard"
SWEEP_EVERY = 10.0  # seconds between looks for ended sessions
_install = threading.Lock()
_log = logging.getLogger(__name__)


class UploadGuard:
    """Which sessions may store uploads (all, when there is no gate; else those that typed the password), and the
    release of an ended session's uploads."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.files = runtime.uploaded_file_mgr
        self._passed: set[str] = set()
        self._lock = threading.Lock()
        self._is_active = runtime.is_active_session
        self._add_file = self.files.add_file

    def allows(self, session_id: str | None) -> bool:
        with self._lock:
            return not gate_on() or session_id in self._passed

    def let_in(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._passed.add(session_id)

    def install(self) -> None:
        """Put the guard in front of the upload route, drop what came before it, and start the sweeper."""
        # The route asks the runtime whether the session is active before it reads the body (it is the only caller
        # in Streamlit 1.67): a session behind the gate is refused there, 400, with nothing read.
        self.runtime.is_active_session = self._active_and_let_in
        self.files.add_file = self._add_file_if_let_in  # and should a later Streamlit not ask: 403, nothing kept
        for session_id in list(getattr(self.files, "file_storage", {})):  # sent before this first run: none passed
            if not self.allows(session_id):
                self.files.remove_session_files(session_id)
        threading.Thread(target=self._sweep_forever, name="upload-sweeper", daemon=True).start()

    def _active_and_let_in(self, session_id: str) -> bool:
        return self._is_active(session_id) and self.allows(session_id)

    def _add_file_if_let_in(self, session_id: str, file) -> None:
        if not self.allows(session_id):
            from starlette.exceptions import HTTPException

            raise HTTPException(status_code=403, detail="Type the team password first: uploads need it.")
        self._add_file(session_id=session_id, file=file)

    def _sweep_forever(self) -> None:
        """Every SWEEP_EVERY seconds, on Streamlit's event loop (where sessions are opened and closed)."""
        while True:
            time.sleep(SWEEP_EVERY)
            try:
                loop = self.runtime._get_async_objs().eventloop
                if loop.is_closed():
                    return
                loop.call_soon_threadsafe(self.sweep)
            except Exception:  # noqa: BLE001 (a runtime stopping, or a Streamlit whose internals moved)
                _log.debug("upload sweep skipped", exc_info=True)

    def sweep(self) -> int:
        """Release the uploads of every session that has ended: shut down the disconnected sessions whose time to
        reconnect (server.disconnectedSessionTTL) is over, as Streamlit does for a session closed at once, and drop
        the files of any session Streamlit no longer knows. Returns the number of sessions released."""
        sessions = self.runtime._session_mgr
        released = 0
        with contextlib.suppress(AttributeError):  # Streamlit's storage internals, as of 1.67
            with sessions._storage_lock:
                expired = sessions._session_storage._cache.expire()
            for _, info in expired:
                info.session.shutdown()  # its uploads, media files and caches
                released += 1
        for session_id in list(getattr(self.files, "file_storage", {})):
            if sessions.get_session_info(session_id) is None:
                self.files.remove_session_files(session_id)
                released += 1
        with self._lock:
            self._passed = {s for s in self._passed if sessions.get_session_info(s) is not None}
        if released:
            _give_back_freed_memory()
        return released


def _give_back_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise: the RSS would not come down)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def upload_guard() -> UploadGuard | None:
    """The process's guard on Streamlit's upload endpoint, set up by the first run; None without a Streamlit server
    (a test's AppTest)."""
    from streamlit import runtime

    if not runtime.exists():
        return None
    rt = runtime.get_instance()
    with _install:
        guard = getattr(rt, _GUARD, None)
        if guard is None:  # (kept on the runtime, not here: a reloaded ui.gate finds the same one)
            guard = UploadGuard(rt)
            guard.install()
            setattr(rt, _GUARD, guard)
    return guard
