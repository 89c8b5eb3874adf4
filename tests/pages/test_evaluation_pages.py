"""Dashboard, Sweeps and Arena as a user meets them, through AppTest over a seeded history (tiny profile)."""

from __future__ import annotations

import pytest
import streamlit as st
from scipy.stats import binomtest
from streamlit.testing.v1 import AppTest

from engine.evaluation import compare, filter_rows, image_rows
from engine.schema import GenerateRequest
from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, settle


@pytest.fixture
def seeded(app_env):
    """Two settings (A, B) over the same two sketches and prompts with two seeds each, and one Studio run, made by
    the engine the app talks to (the server's, in Remote mode)."""
    engine = app_env.engine
    for k, prompt in enumerate(["a wooden chair", "a brass lamp"]):
        sketch = png(line_sketch(96 + 32 * k, 64))
        for label, structure in (("A", 0.4), ("B", 1.6)):
            engine.generate(GenerateRequest.build(
                prompt=prompt, sketch=sketch, size=64, steps=1, seed=11, variations=2, structure_strength=structure,
                batch="ab", label=label, source="cli",
            ))  # fmt: skip
    engine.generate(GenerateRequest.build(prompt="a blue sofa", size=64, steps=1, seed=3, source="studio"))
    return app_env


def open_page(app_env, page: str) -> AppTest:
    at = app_env.app().run()
    return ok(at.switch_page(page).run())


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def images_table(at: AppTest):
    return next(d for d in at.dataframe if "thumbnail" in d.value.columns).value


def downloads(at: AppTest) -> list[str]:
    return [d.proto.label for d in at.get("download_button")]


def test_dashboard_charts_table_filters_and_export(seeded):
    app_env = seeded
    at = open_page(app_env, "pages/dashboard.py")
    assert not at.exception
    assert at.title[0].value == "Dashboard"
    assert charts(at) == 5  # histogram, box per style, two trade-off scatters, the comparison's box
    table = images_table(at)
    assert len(table) == 9 and at.metric[0].value == "9"
    assert table["thumbnail"].str.startswith("data:image/jpeg;base64,").all()
    assert "Export CSV (9 images)" in downloads(at)

    at.text_input(key="dash_text").input("lamp").run()
    assert len(images_table(at)) == 4 and set(images_table(at)["prompt"]) == {"a brass lamp"}
    assert "Export CSV (4 images)" in downloads(at)

    at.text_input(key="dash_text").input("").run()
    at.multiselect(key="dash_sets").select("ab · B").run()
    assert set(images_table(at)["set"]) == {"ab · B"} and len(images_table(at)) == 4
    at.multiselect(key="dash_sources").select("studio").run()
    assert at.warning[0].value == "No image matches these filters."


def test_dashboard_compares_two_sets_with_a_bootstrap_interval(seeded):
    app_env = seeded
    at = open_page(app_env, "pages/dashboard.py")
    at.selectbox(key="dash_cmp_a").select("ab · A").run()
    at.selectbox(key="dash_cmp_b").select("ab · B").run()
    at.selectbox(key="dash_cmp_metric").select("edge_f1").run()
    rows = image_rows(seeded.engine.history_store.list(limit=100))
    want = compare(*([r["edge_f1"] for r in filter_rows(rows, sets=[s])] for s in ("ab · A", "ab · B")))
    shown = " ".join(m.value for m in at.markdown)
    assert f"[{want['ci_low']:+.3f}, {want['ci_high']:+.3f}]" in shown
    assert any(m.value == f"{want['diff']:+.3f}" for m in at.metric)


def sweep_form(app_env, structure: str) -> AppTest:
    """The Sweeps page with a prompt, the structure strengths `structure`, one style strength and one step."""
    at = open_page(app_env, "pages/sweeps.py")
    at.text_area(key="sweep_prompt").input("a lounge chair").run()
    at.text_input(key="sweep_structure").input(structure).run()
    at.text_input(key="sweep_styles").input("0.3").run()
    at.text_input(key="sweep_steps").input("1").run()
    return at


def test_a_sweep_from_the_page_shows_its_sheet_and_table_and_opens_in_the_dashboard(app_env):
    at = sweep_form(app_env, "0.5, 1.5")
    assert "2 cells · 2 renders" in [c.value for c in at.caption]
    at.button(key="run_sweep").click().run()
    ok(settle(at, "sweep_job"))
    batch = at.session_state["sweep_result"]
    assert (app_env.data / "runs" / "sweeps" / batch / "contact.png").is_file()  # on the engine's machine
    table = next(d for d in at.dataframe).value
    assert list(table["Structure strength"]) == [0.5, 1.5] and table["Prompt fidelity"].notna().all()
    assert {"Contact sheet (PNG)", "Table (CSV)"} <= set(downloads(at))
    next(b for b in at.button if b.label == "Open in the Dashboard").click().run()
    assert at.title[0].value == "Dashboard"
    assert len(images_table(at)) == 2


def test_a_sweep_over_a_loras_weights_from_the_page(app_env, tmp_path, tiny_models):
    from diffusers import UNet2DConditionModel

    from engine.tiny import save_fast_lora

    unet = UNet2DConditionModel.from_pretrained(tiny_models / "stable-diffusion-v1-5", subfolder="unet")
    app_env.engine.renders.add_model("lora", "walnut", save_fast_lora(unet, tmp_path / "l", rank=4).read_bytes())
    at = sweep_form(app_env, "1")
    at.selectbox(key="sweep_lora").select("walnut").run()
    at.text_input(key="sweep_lora_weights").input("0, 1").run()
    assert "2 cells · 2 renders" in [c.value for c in at.caption]
    at.button(key="run_sweep").click().run()
    ok(settle(at, "sweep_job"))
    table = next(d for d in at.dataframe).value
    assert [c for c in table.columns if "LoRA" in c or "lora" in c], list(table.columns)
    sweep = app_env.engine.sweeps.get(at.session_state["sweep_result"])
    assert [c["lora_weight"] for c in sweep["cells"]] == [0.0, 1.0]


def test_sweep_page_bad_values_are_one_line(app_env):
    at = open_page(app_env, "pages/sweeps.py")
    at.text_area(key="sweep_prompt").input("a lounge chair").run()
    at.text_input(key="sweep_structure").input("0.5, 7").run()
    at.button(key="run_sweep").click().run()
    assert [e.value for e in at.error] == ["structure_strength: must be at most 3.0"]
    assert "sweep_job" not in at.session_state


def vote_all(at: AppTest, choices: list[str]) -> AppTest:
    keys = {"left": "vote_left", "right": "vote_right", "tie": "vote_tie"}
    for choice in choices:
        at.button(key=keys[choice]).click().run()
        assert not at.exception
    return at


def test_arena_votes_give_scipy_statistics_and_survive_a_restart(seeded):
    app_env = seeded
    arena = seeded.engine.arena
    at = open_page(app_env, "pages/arena.py")
    at.selectbox(key="arena_a").select("ab · A").run()
    at.selectbox(key="arena_b").select("ab · B").run()
    assert "4 pairs share a sketch, prompt and seed." in [c.value for c in at.caption]
    next(b for b in at.button if b.label == "Start voting").click().run()
    assert len(at.get("image")) == 2  # one pair at a time, both images
    assert "ab · A" not in " ".join(m.value for m in at.markdown)  # no labels while voting
    vote_all(at, ["left", "left", "right", "tie"])
    assert "All 4 pairs voted." in [s.value for s in at.success]

    contest = arena.contests()[0]
    pairs = arena.pairs(contest["id"])
    expected = ["A" if p["left_side"] == "A" else "B" for p in pairs[:2]]
    expected.append("B" if pairs[2]["left_side"] == "A" else "A")
    assert [p["choice"] for p in pairs] == [*expected, "tie"]
    a_wins = expected.count("A")
    stats = arena.stats(contest["id"])
    assert stats["p_value"] == pytest.approx(binomtest(a_wins, 3, 0.5).pvalue)
    assert stats["win_rate_a"] == pytest.approx(a_wins / 3) and stats["tie_rate"] == pytest.approx(0.25)
    shown = {m.label: m.value for m in at.metric}
    assert shown["A win rate"] == f"{a_wins / 3:.0%}" and shown["p-value"] == f"{stats['p_value']:.3g}"

    st.cache_resource.clear()  # a restart: a new engine, a new session
    again = open_page(app_env, "pages/arena.py")
    assert "All 4 pairs voted." in [s.value for s in again.success]
    assert {m.label: m.value for m in again.metric}["Votes"] == "4"
    again.button(key="vote_undo").click().run()
    assert len(again.get("image")) == 2 and arena.contest(contest["id"])["voted"] == 3


def test_arena_renders_two_settings_over_a_sets_inputs_and_opens_the_comparison(seeded):
    app_env = seeded
    arena = seeded.engine.arena
    at = open_page(app_env, "pages/arena.py")
    at.segmented_control(key="arena_mode").set_value("Two settings").run()
    at.selectbox(key="arena_inputs").select("ab · A").run()
    at.number_input(key="arena_A_structure_strength").set_value(0.2).run()
    at.number_input(key="arena_B_structure_strength").set_value(2.0).run()
    at.button(key="arena_render").click().run()
    ok(settle(at, "arena_job"))
    contest = arena.contest(at.session_state["arena_contest"])
    assert contest["pairs"] == 4  # two sketches × two seeds, each rendered with A and with B
    pairs = arena.pairs(contest["id"])
    a_meta = seeded.engine.history.get(pairs[0]["a"]["run_id"]).metadata
    b_meta = seeded.engine.history.get(pairs[0]["b"]["run_id"]).metadata
    assert (a_meta["params"]["structure_strength"], b_meta["params"]["structure_strength"]) == (0.2, 2.0)
    assert a_meta["prompt"] == b_meta["prompt"] and a_meta["seeds"] == b_meta["seeds"]
    assert a_meta["sketch_hash"] == b_meta["sketch_hash"] and a_meta["source"] == "arena"
    assert [s["id"] for s in a_meta["styles"] if s["used"]] == [s["id"] for s in b_meta["styles"] if s["used"]]
    assert len(at.get("image")) == 2 and "Pair 1 of 4" in [p.proto.text for p in at.get("progress")]


def test_arena_refuses_two_equal_settings(seeded):
    app_env = seeded
    at = open_page(app_env, "pages/arena.py")
    at.segmented_control(key="arena_mode").set_value("Two settings").run()
    at.button(key="arena_render").click().run()
    assert [e.value for e in at.error] == ["settings A and B are the same; change at least one value"]
