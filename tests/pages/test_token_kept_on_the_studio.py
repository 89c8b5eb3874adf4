"""The engine token set on the Studio (DESIGN_STUDIO_REMOTE_TOKEN) stays on the Studio's side (issue 30, finding 14):
a widget's value and the session's state are sent to the browser, so neither may ever hold it. The sidebar says the
token is set, the engine is called with it server-side, a token typed in the sidebar replaces it for that session,
and a server URL typed in the sidebar never gets it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import TOKEN, Server, make_data_dir, make_engine
from tests.pages.conftest import APP, ok


@pytest.fixture
def studio_with_a_token(tmp_path, tiny_models, monkeypatch):
    """A laptop Studio set up for one render server (its URL and token in the environment), the server on loopback."""
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")  # the laptop's own engine could not load
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(tmp_path / "laptop"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = make_engine(make_data_dir(tmp_path / "server", tiny_models, warm=True))
    engine.load()
    st.cache_resource.clear()
    with Server(engine) as server:
        monkeypatch.setenv("DESIGN_STUDIO_REMOTE_URL", server.url)
        monkeypatch.setenv("DESIGN_STUDIO_REMOTE_TOKEN", TOKEN)
        yield server
    engine.jobs.stop()
    st.cache_resource.clear()


def _protos(node):
    """Every element the script sent to the browser, as its protobuf message."""
    if getattr(node, "proto", None) is not None:
        yield node.proto
    for child in getattr(node, "children", {}).values():
        yield from _protos(child)


def assert_token_not_sent(at: AppTest) -> None:
    sent = [str(p) for p in _protos(at._tree)]
    assert sent and not [p for p in sent if TOKEN in p], "the token is in an element sent to the browser"
    state = at.session_state
    assert not [k for k in state if TOKEN in repr(state[k])], "the token is in the session's state"
    assert all(TOKEN not in str(t.value) for t in at.text_input)


def test_the_token_set_on_the_studio_is_used_but_never_sent_to_the_browser(studio_with_a_token):
    at = ok(AppTest.from_file(APP, default_timeout=120).run())
    assert at.title[0].value == "Studio"
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "Remote engine: device **cpu**" in sidebar  # rendered through the remote engine, with the token
    assert "Token: set on this Studio" in sidebar
    assert at.text_input(key="remote_token").value == ""
    assert_token_not_sent(at)
    at = ok(at.switch_page("pages/history.py").run())
    assert_token_not_sent(at)


def test_a_typed_token_replaces_the_studios_for_that_session(studio_with_a_token):
    at = ok(AppTest.from_file(APP, default_timeout=120).run())
    at.text_input(key="remote_token").input("not-the-token").run()
    assert not at.exception
    assert "the engine refused the token (401)" in at.error[0].value.replace("\\", "")  # the typed one was sent
    assert "Token: set on this Studio" not in " ".join(c.value for c in at.sidebar.caption)
    at.text_input(key="remote_token").input("").run()  # cleared: the Studio's token again
    ok(at)
    assert "Remote engine: device **cpu**" in " ".join(c.value for c in at.sidebar.caption)


class _Recorder(BaseHTTPRequestHandler):
    """A stranger's server: notes the Authorization header of every request it gets."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.seen.append(self.headers.get("Authorization", ""))
        self.send_response(404)
        self.end_headers()

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


def test_a_url_typed_in_the_sidebar_never_gets_the_studios_token(studio_with_a_token):
    stranger = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=stranger.serve_forever, daemon=True)
    thread.start()
    try:
        at = ok(AppTest.from_file(APP, default_timeout=120).run())
        at.text_input(key="remote_url").input(f"http://127.0.0.1:{stranger.server_address[1]}").run()
        test = next(b for b in at.sidebar.button if b.label == "Test connection")
        test.click().run()
        assert not at.exception
    finally:
        stranger.shutdown()
        thread.join(timeout=10)
    assert _Recorder.seen, "the Studio did not call the typed URL"
    assert not [h for h in _Recorder.seen if TOKEN in h]
