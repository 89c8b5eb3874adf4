"""The app starts: Studio and Style library render on the tiny profile; missing weights give a banner."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, make_data_dir


@pytest.fixture
def app_env(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "tiny")
    monkeypatch.setenv("DESIGN_STUDIO_DEVICE", "cpu")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(make_data_dir(tmp_path / "data", tiny_models)))
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def test_studio_and_style_library_render_with_the_tiny_badge(app_env):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Studio"
    assert any("Tiny profile" in w.value for w in at.sidebar.warning)
    assert "Auto (retrieve from my library)" in at.selectbox[0].options
    at.switch_page("pages/styles.py").run()
    assert not at.exception
    assert at.title[0].value == "Style library"
    shown = " ".join(m.value for m in at.markdown)
    assert "**Cyberpunk neon**" in shown and "**Terrazzo**" in shown


def test_text_prompt_generates_in_the_studio(app_env):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    at.text_area[0].input("a teal armchair").run()
    at.slider[0].set_value(2).run()
    at.select_slider[0].set_value(256).run()
    at.button[0].click().run()
    assert not at.exception
    assert not at.error
    assert any("saved to" in c.value for c in at.caption)


def test_missing_weights_show_one_banner_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    st.cache_resource.clear()
    assert not at.exception
    assert "The engine could not start" in at.error[0].value
    assert "openai/clip-vit-base-patch32" in at.error[0].value
    assert "hf download" in at.info[0].value
