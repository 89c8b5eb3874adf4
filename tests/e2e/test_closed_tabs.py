"""A closed browser tab leaves no traceback in the app server's log."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import streamlit as st
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, make_data_dir
from tools.studio_driver import draw_house, open_studio, streamlit_app, tiny_env


def race_a_closing_tab() -> BaseException | None:
    """Streamlit's own websocket endpoint, driven through what a tab that closes right after a click does: the page's
    next message to it fails (it is gone), then the click it sent just before is read. Returns what the endpoint
    raised (what uvicorn then logs as "Exception in ASGI application" with its traceback)."""
    from starlette.websockets import WebSocket
    from streamlit.runtime.session_manager import SessionClientDisconnectedError
    from streamlit.web.server.starlette.starlette_websocket import create_websocket_handler

    click = BackMsg()
    click.rerun_script.query_string = ""

    class Runtime:  # a session that answers every message with one to draw, as a rerun does
        def connect_session(self, client, user_info, existing_session_id):
            self.client = client
            return "session"

        def handle_backmsg(self, session_id, msg, client=None):
            with contextlib.suppress(SessionClientDisconnectedError):  # as a session does
                self.client.write_forward_msg(ForwardMsg())

        def disconnect_session(self, session_id, client=None):
            pass

    async def run() -> BaseException | None:
        incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "bytes": click.SerializeToString()},
                    {"type": "websocket.receive", "bytes": click.SerializeToString()},
                    {"type": "websocket.disconnect", "code": 1001}]  # fmt: skip

        async def receive():
            if len(incoming) == 2:
                await asyncio.sleep(0.05)  # the tab's last click is on its way while the page draws
            return incoming.pop(0)

        async def send(message):
            if message["type"] == "websocket.send":
                raise OSError("the tab is gone")  # as uvicorn's ClientDisconnected

        scope = {"type": "websocket", "path": "/_stcore/stream", "headers": [], "query_string": b""}
        try:
            await create_websocket_handler(Runtime())(WebSocket(scope, receive, send))
        except Exception as exc:
            return exc
        return None

    return asyncio.run(run())


def test_the_app_keeps_that_error_out_of_its_log_and_logs_every_other(tmp_path, tiny_models, monkeypatch):
    from starlette.websockets import WebSocketDisconnected

    raised = race_a_closing_tab()
    assert isinstance(raised, WebSocketDisconnected), raised  # raised in Streamlit's endpoint, not this app's code
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "tiny")
    monkeypatch.setenv("DESIGN_STUDIO_DEVICE", "cpu")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(make_data_dir(tmp_path / "data", tiny_models, warm=True)))
    st.cache_resource.clear()
    try:
        for _ in range(2):  # the app as it starts, twice: one filter, not one a run
            assert not AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run().exception
    finally:
        st.cache_resource.clear()
    uvicorn = logging.getLogger("uvicorn.error")  # where uvicorn logs an error its ASGI app raised
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = logged.append
    uvicorn.addHandler(handler)
    other = RuntimeError("something else went wrong")
    try:
        for exc in (raised, other):
            try:
                raise exc
            except Exception:
                uvicorn.exception("Exception in ASGI application\n")
    finally:
        uvicorn.removeHandler(handler)
    assert [r.exc_info[1] for r in logged] == [other], [repr(r.exc_info[1]) for r in logged]
    assert len([f for f in uvicorn.filters if type(f).__name__ == "ClosedTabFilter"]) == 1


def test_closing_tabs_leaves_no_traceback_in_the_server_log(tmp_path, tiny_models, browser):
    """Tabs closed on a quiet page, right after a stroke on the canvas, and while the Dashboard is still drawing."""
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    log = tmp_path / "streamlit.log"
    with streamlit_app(tiny_env(data), log=log) as (url, _pid):
        page = open_studio(browser, url)
        page.wait_for_timeout(1000)
        page.close()
        page = open_studio(browser, url)
        draw_house(page)
        page.close()
        page = open_studio(browser, url)
        page.get_by_role("link", name="Dashboard").click()
        page.wait_for_timeout(300)  # it is still drawing
        page.close()
        open_studio(browser, url).close()  # the server still serves
    text = log.read_text()
    assert "Traceback" not in text and "WebSocketDisconnected" not in text, text[-3000:]
