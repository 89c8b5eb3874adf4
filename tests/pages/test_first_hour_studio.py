"""A designer's first hour in the Studio (issue 29): what a newcomer met, each pinned, in Local and Remote mode; and one
session that switches between a local and a remote engine."""

from __future__ import annotations

import re

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import TOKEN, Server, free_port, line_sketch, make_data_dir, make_engine, png
from tests.pages.conftest import APP, ok, settle, texts

QUICK = {"steps": 2, "size": 256, "seed_locked": True, "seed": 5}


def studio(app_env, **fields) -> AppTest:
    at = app_env.app().run()
    for key, value in fields.items():
        at.session_state[key] = value
    return ok(at.run())


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    return at.run()


def put(at: AppTest, **fields) -> AppTest:
    for key, value in fields.items():
        at.session_state[key] = value
    return at


def generate(at: AppTest) -> AppTest:
    return ok(settle(click(at, "Generate")))


# ---- item 7: the first steps, where a newcomer looks ------------------------------------------------------------
def test_the_first_steps_are_on_top_and_a_refusal_goes_with_its_cause(app_env):
    at = studio(app_env)
    assert at.info and at.info[0].value.startswith("**Start here:**")  # the first thing under the title
    assert "Generate" in at.info[0].value
    assert at.text_input(key="negative").value == "blurry, text, watermark"  # a real default, not a grey placeholder
    assert at.text_area(key="prompt").placeholder.startswith("Describe what to render, for example")

    at = click(at, "Generate")  # nothing typed yet
    assert not at.exception and len(at.error) == 1 and "prompt" in at.error[0].value.lower()
    at.text_area(key="prompt").input("a timber cabin").run()  # its cause is gone: so is the line
    ok(at)

    put(at, style_mode="None", **QUICK)
    at = generate(at.run())
    assert at.session_state["result"].metadata["negative_prompt"] == "blurry, text, watermark"  # applied
    assert not any(i.value.startswith("**Start here:**") for i in at.info)  # it has done its work


# ---- item 11: the tiny banner says what is random ---------------------------------------------------------------
def test_the_tiny_banner_says_retrieval_and_scores_are_random_too(app_env):
    at = studio(app_env)
    banner = next(w.value for w in at.sidebar.warning if "Tiny profile" in w.value)
    assert "retrieval" in banner and "scores are random" in banner
    models = [c.value for c in at.sidebar.caption if re.match(r"\w+: `", c.value)]  # the Model ids list
    assert models and not any(str(app_env.data) in m or "None" in m for m in models)  # names, not engine paths


# ---- item 4: Render as I draw, named apart from the modes, beside the canvas ----------------------------------
def test_render_as_i_draw_is_not_confused_with_a_mode(app_env):
    at = studio(app_env, prompt="a chair", sketch_override=png(line_sketch()), size=256)
    assert [t.label for t in at.toggle if t.key == "live"] == ["Render as I draw"]
    mode = at.segmented_control(key="mode")
    assert [mode.format_func(o) for o in mode.options] == ["Quality", "Fast", "Draft"]
    assert "Live canvas" not in [t.label for t in at.toggle]
    at.session_state["live"] = True
    at = ok(settle(at.run(), key="live_job"))
    assert at.session_state["live_frame"] is not None


# ---- items 5 and 6: the newest render large, and a brought-in sketch drawn over --------------------------------
def test_the_latest_render_is_large_and_as_sketch_keeps_the_drawing(app_env):
    drawn = png(line_sketch())  # what the canvas sent (AppTest runs no canvas: the browser test draws for real)
    at = studio(app_env, prompt="a stool", style_mode="None", drawn_png=drawn, **QUICK)
    at = generate(at)
    run_id = at.session_state["result"].run_id
    assert "**Latest render**" in texts(at)
    assert "Renders** · this session" not in texts(at)  # the only render is the large one, not a tile below it
    at = click(at, "Vary")
    at = ok(settle(at))
    assert "(1 before the latest)" in texts(at)  # the earlier one moves down into the gallery

    vary_id = at.session_state["result"].run_id
    next(b for b in at.button if b.key == f"as_sketch_{vary_id}_0").click()
    at = ok(at.run())
    assert at.session_state["sketch_override"][:8] == b"\x89PNG\r\n\x1a\n"
    assert at.session_state["source"] == "Draw"  # drawn over on the canvas, not a static picture
    assert "Drawing over **the edges of …" in texts(at) and f"{vary_id[-8:]} · 1" in texts(at)
    assert not (at.session_state["canvas_json"] or {}).get("objects")  # a fresh layer over the picture
    kept = at.session_state["sketch_undo"][0]  # the drawing it replaced is kept
    assert kept["drawn_png"] == drawn

    at = ok(click(at, "Back to my previous drawing"))
    assert "sketch_override" not in at.session_state
    assert at.session_state["drawn_png"] == drawn  # the sketch the next render uses is the drawing again
    assert run_id  # the first render is still in the gallery (Back changes only the canvas)
    assert "(1 before the latest)" in texts(at)


def test_a_restored_sketch_can_be_drawn_over_and_removed(app_env):
    picture = png(line_sketch(96, 64))
    at = studio(app_env, prompt="a lamp", style_mode="None", sketch_override=picture, sketch_override_label="a run")
    assert at.session_state["drawn_png"]  # the picture is the sketch until something is drawn over it
    assert any(b.label == "Remove the picture" for b in at.button)
    assert at.segmented_control(key="aspect").disabled  # the canvas keeps the picture's shape
    at = ok(click(at, "Remove the picture"))
    assert "sketch_override" not in at.session_state and not at.segmented_control(key="aspect").disabled
    at = ok(click(at, "Back to my previous drawing"))  # the picture comes back
    assert at.session_state["sketch_override"] == picture


# ---- item 9: Remote before it is connected -------------------------------------------------------------------
def test_choosing_remote_says_not_connected_yet_not_could_not_start(tmp_path, monkeypatch):
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(tmp_path / "laptop"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["engine_mode"] = "Remote"
    at.session_state["remote_url"] = f"http://127.0.0.1:{free_port()}"  # as prefilled: nothing answers there yet
    at.run()
    assert not at.exception and not at.error  # not the designer's mistake: no red line
    assert "not connected yet" in at.info[0].value and "Test connection" in at.info[0].value
    at = click(at, "Test connection")  # tried: now the sidebar says what went wrong
    assert not at.exception and "cannot reach the engine" in at.sidebar.error[0].value
    st.cache_resource.clear()


def test_a_remote_engine_that_stops_answering_is_a_red_line(tmp_path, tiny_models, monkeypatch):
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(tmp_path / "laptop"))
    engine = make_engine(make_data_dir(tmp_path / "server", tiny_models, warm=True))
    engine.load()
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    with Server(engine) as server:
        put(at, engine_mode="Remote", remote_url=server.url, remote_token=TOKEN)
        ok(at.run())  # connected
    engine.jobs.stop()
    at.run()  # it was answering: now that it is gone, that is worth a red line
    assert not at.exception and "Lost the remote engine" in at.error[0].value
    st.cache_resource.clear()


# ---- item 1: a session that switches engines ------------------------------------------------------------------
@pytest.fixture
def two_engines(tmp_path, tiny_models, monkeypatch):
    local_data = make_data_dir(tmp_path / "local", tiny_models, warm=True)
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "tiny")
    monkeypatch.setenv("DESIGN_STUDIO_DEVICE", "cpu")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(local_data))
    st.cache_resource.clear()
    engine = make_engine(make_data_dir(tmp_path / "remote", tiny_models, warm=True))
    engine.load()
    with Server(engine) as server:
        yield server
    engine.jobs.stop()
    st.cache_resource.clear()


def test_switching_engines_sets_the_other_engines_work_aside(two_engines):
    at = AppTest.from_file(APP, default_timeout=120).run()
    put(at, prompt="a local lamp", style_mode="None", **QUICK)
    at = generate(at.run())
    local_run = at.session_state["result"].run_id
    at = ok(click(at, "☆ Star"))
    assert at.session_state["starred"] == {local_run: True}
    at.session_state["sweep_result"] = "no-such-sweep-on-the-other-engine"  # what a local sweep leaves
    assert "kept in the History" in texts(at)

    put(at, engine_mode="Remote", remote_url=two_engines.url, remote_token=TOKEN)
    at = ok(at.run())
    assert at.toast and "set aside" in at.toast[0].value and "the local engine" in at.toast[0].value
    assert "result" not in at.session_state and not at.session_state["gallery"]  # the local renders are hidden
    assert not any(b.key and local_run in b.key for b in at.button)  # so nothing can ask the remote about them
    assert "starred" not in at.session_state
    ok(at.switch_page("pages/sweeps.py").run())  # no "no sweep" from the local one
    ok(at.switch_page("pages/tune.py").run())

    at = ok(at.switch_page("pages/studio.py").run())
    put(at, prompt="a remote lamp", style_mode="None", **QUICK)
    at = generate(at.run())
    remote_run = at.session_state["result"].run_id
    assert "kept on the remote engine" in texts(at)
    at = ok(click(at, "☆ Star"))  # starred on the engine that made it
    assert two_engines.engine.history.get(remote_run).starred

    at.session_state["engine_mode"] = "Local"
    at = ok(at.run())
    assert at.session_state["result"].run_id == local_run  # the local session comes back as it was
    assert at.session_state["starred"] == {local_run: True}
    assert "kept in the History" in texts(at)
