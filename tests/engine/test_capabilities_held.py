"""`about.capabilities()` says what *this* engine can render with: the ControlNet types and modes whose weights it
holds (offline), so a page offers only those; with the hub reachable or on the tiny profile, all of them."""

from __future__ import annotations

import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.local import LocalEngine
from engine.rules.controlnets import CONTROLS
from engine.rules.modes import MODES
from engine.settings import Settings
from tests.conftest import REPO, TOKEN, Server, make_data_dir, make_engine
from tests.pages.conftest import ok


def holding_two(tmp_path, tiny_models) -> Settings:
    """An engine's settings on the default profile, offline, holding the canny and lineart ControlNets only."""
    lineart = CONTROLS["lineart"].tiny_folder
    return Settings(
        profile="default", data_dir=tmp_path / "data", device="cpu",
        base_model=str(tiny_models / "stable-diffusion-v1-5"),
        controlnet_model=str(tiny_models / CONTROLS["canny"].tiny_folder),
        controlnets={"lineart": str(tiny_models / lineart)},  # the others stay hub ids, not on this machine
        ip_adapter_model=str(tiny_models / "IP-Adapter"), clip_model=str(tiny_models / "clip-vit-base-patch32"),
        taesd_model=str(tiny_models / "taesd"),
    )  # fmt: skip


def test_an_offline_engine_offers_the_controlnets_and_modes_it_holds(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing held but the folders
    engine = LocalEngine(holding_two(tmp_path, tiny_models))
    try:
        found = engine.capabilities()
        assert found.controls == ["canny", "lineart"]
        assert found.modes == ["quality"]  # fast and live need the few-step LoRA, which is not here
    finally:
        engine.close()
    tiny = make_engine(make_data_dir(tmp_path / "tiny", tiny_models))
    try:
        assert tiny.capabilities().controls == list(CONTROLS) and tiny.capabilities().modes == list(MODES)
    finally:
        tiny.close()


def test_the_studio_offers_what_a_remote_engine_holds(tmp_path, tiny_models, monkeypatch):
    """The design card: the laptop's Studio on a GPU box's engine that holds other models than the laptop knows of;
    its choices come from that engine."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")  # the laptop: no weights
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(tmp_path / "laptop"))
    engine = LocalEngine(holding_two(tmp_path, tiny_models))
    st.cache_resource.clear()
    with Server(engine) as server:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
        at.session_state["engine_mode"] = "Remote"
        at.session_state["remote_url"] = server.url
        at.session_state["remote_token"] = TOKEN
        at.session_state["control"] = "scribble"  # chosen before, on an engine that had it
        at.session_state["mode"] = "fast"
        at = ok(at.run())
        assert at.segmented_control(key="control").options == ["Canny edges", "Line art"]
        assert at.segmented_control(key="control").value == "canny"  # the first it holds
        assert at.segmented_control(key="mode").value == "quality"
        assert len(at.segmented_control(key="mode").options) == 1
    engine.close()
    st.cache_resource.clear()
