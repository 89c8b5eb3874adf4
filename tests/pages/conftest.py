"""The app over a fresh data folder on the tiny profile, with Streamlit's caches cleared around each test."""

from __future__ import annotations

import pytest
import streamlit as st

from tests.conftest import make_data_dir


@pytest.fixture
def app_env(tmp_path, tiny_models, monkeypatch):
    """Yields the data folder the app under test uses."""
    data = make_data_dir(tmp_path / "data", tiny_models)
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "tiny")
    monkeypatch.setenv("DESIGN_STUDIO_DEVICE", "cpu")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(data))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield data
    st.cache_resource.clear()
