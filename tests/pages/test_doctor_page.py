"""The model doctor in the app. A new machine without the weights opens on the doctor's page (every model, the one
command that fetches them, the demo models, the remote switch) instead of a red error; the sidebar says in one line
whether the active engine has its models, locally and remotely alike."""

from __future__ import annotations

import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import make_data_dir
from tests.pages.conftest import APP, ok


def test_the_first_page_without_weights_shows_the_doctor_and_the_demo_models_work(tmp_path, tiny_models, monkeypatch):
    """Local mode (a remote engine's weights are on its own machine). The data folder holds a built tiny profile, so
    the demo models start at once, as after their first build."""
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")
    monkeypatch.setenv("DESIGN_STUDIO_DEVICE", "cpu")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(make_data_dir(tmp_path / "data", tiny_models, warm=True)))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=120).run()
        assert not at.exception and not at.error  # no red "could not start": the page to go on from
        assert "not on this machine yet" in at.warning[0].value and "6 of the models" in at.warning[0].value
        assert [c.value for c in at.code] == ["python -m engine models pull"]  # the one command
        table = at.dataframe[0].value
        assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in list(table["Id"])
        assert len(table) >= 14 and set(table["Needed"]) == {"yes", "optional"}
        base = table[table["Id"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"].iloc[0]
        assert "missing" in base["Status"] and base["Fetch"].startswith("hf download stable-diffusion-v1-5/")
        assert {"Try the demo models", "Use a remote engine"} <= {b.label for b in at.button}
        assert at.sidebar.segmented_control(key="engine_mode").value == "Local"  # the remote switch is there too

        next(b for b in at.button if b.label == "Try the demo models").click().run()
        ok(at)
        banner = next(w.value for w in at.sidebar.warning if "Tiny profile" in w.value)
        assert "Images are noise" in banner
        assert any(c.value == "Models: all present" for c in at.sidebar.caption)
        assert any(b.label == "Generate" for b in at.button)  # the Studio itself

        next(b for b in at.sidebar.button if b.label == "Leave the demo models").click().run()
        assert not at.exception and "not on this machine yet" in at.warning[0].value

        next(b for b in at.button if b.label == "Use a remote engine").click().run()
        assert not at.exception and at.session_state["engine_mode"] == "Remote"
        assert any("not connected yet" in i.value for i in at.info)
    finally:
        st.cache_resource.clear()


def test_the_sidebar_says_whether_the_engine_has_its_models(app_env):
    at = ok(app_env.app().run())
    assert any(c.value == "Models: all present" for c in at.sidebar.caption)
    listed = [c.value for c in at.sidebar.caption if " · " in c.value and ": `" in c.value]  # the Models list
    assert listed[0].startswith("base: `") and "present" in listed[0] and len(listed) >= 14
    assert not any(str(app_env.data) in line for line in listed)  # names, never the engine's paths
