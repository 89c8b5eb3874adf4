"""The app under test, in both of its modes: Local (the engine in the app's process) and Remote (the app on a
"laptop" whose own engine could not even load, talking to a real uvicorn on loopback that serves the tiny
profile). Every page test runs in both; in Remote mode the laptop's data folder must stay empty."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, TOKEN, Server, make_data_dir, make_engine

APP = str(REPO / "app.py")


@dataclass
class Studio:
    """Where the app's engine keeps its things, and how to open the app in this mode."""

    remote: bool
    data: Path  # the engine's data folder: the server's in Remote mode
    engine: object  # that engine (LocalEngine), for checking what happened behind the page
    url: str | None = None
    laptop: Path | None = None  # the app's own data folder in Remote mode

    def app(self, timeout: float = 120) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=timeout)
        if self.remote:
            at.session_state["engine_mode"] = "Remote"
            at.session_state["remote_url"] = self.url
            at.session_state["remote_token"] = TOKEN
        return at


@pytest.fixture(params=["local", "remote"])
def app_env(request, tmp_path, tiny_models, monkeypatch):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    st.cache_resource.clear()
    st.cache_data.clear()
    if request.param == "local":
        monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "tiny")
        monkeypatch.setenv("DESIGN_STUDIO_DEVICE", "cpu")
        monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(data))
        from ui.shared import get_engine

        yield Studio(remote=False, data=data, engine=get_engine())
    else:
        laptop = tmp_path / "laptop"
        # the laptop's own engine would need weights it does not have: Remote mode must never touch it
        monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")
        monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(laptop))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        engine = make_engine(data)
        engine.load()
        with Server(engine) as server:
            yield Studio(remote=True, data=data, engine=engine, url=server.url, laptop=laptop)
        engine.jobs.stop()
        made = sorted(str(p.relative_to(laptop)) for p in laptop.rglob("*")) if laptop.exists() else []
        assert not made, f"Remote mode wrote on the laptop: {made[:5]}"
    st.cache_resource.clear()


def ok(at: AppTest) -> AppTest:
    """What every action that draws a result must leave: no exception, no error line."""
    assert not at.exception, at.exception[0].message if at.exception else ""
    assert not at.error, [e.value for e in at.error]
    return at


def settle(at: AppTest, key: str = "job", timeout: float = 120) -> AppTest:
    """Run the page until the job under `key` has ended and its result is drawn, as the progress line would."""
    deadline = time.time() + timeout
    while key in at.session_state and time.time() < deadline:
        time.sleep(0.1)
        at.run()
    assert key not in at.session_state, f"the job under {key} did not end in {timeout} s"
    return at


def texts(at: AppTest) -> str:
    return " ".join([m.value for m in at.markdown] + [c.value for c in at.caption])
