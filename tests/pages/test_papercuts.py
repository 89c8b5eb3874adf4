"""Papercuts a new user met on the Dashboard, Sweeps, Catalog and History pages, each pinned as they see it (AppTest,
Local and Remote)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from engine.schema import GenerateRequest
from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, settle
from ui.shared import md


def open_page(app_env, page: str, **state) -> AppTest:
    at = app_env.app()
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    return ok(at.switch_page(page).run())


def render(engine, prompt: str, **kw) -> str:
    """A render as the Studio makes one (its default strengths unless given): its run id."""
    request = GenerateRequest.build(prompt=prompt, size=64, steps=1, seed=5, source="studio", **kw)
    return engine.generate(request).run_id


def charts(at: AppTest) -> dict[str, dict]:
    """The page's plotly figures by their title."""
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {f["layout"].get("title", {}).get("text", ""): f for f in figures}


def values(trace: dict, axis: str) -> list:
    """A trace's x or y values (plotly sends numeric arrays as base64 with their dtype)."""
    data = trace[axis]
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def progress_lines(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


# ---- Dashboard -------------------------------------------------------------------------------------------------
def test_the_trade_off_charts_show_something_when_every_render_used_the_default_strengths(app_env):
    engine = app_env.engine
    for prompt in ("a wooden chair", "a brass lamp"):
        render(engine, prompt, sketch=png(line_sketch()), variations=2)
    rows = engine.history.rows()
    assert len({r["structure_strength"] for r in rows}) == 1 and len({r["style_strength"] for r in rows}) == 1
    at = open_page(app_env, "pages/dashboard.py")
    shown = charts(at)
    # no strength → metric scatter: with one strength it is a vertical line
    assert not [t for t in shown if "strength →" in t], list(shown)
    for title, metric in (("Edge F1 per run set", "edge_f1"), ("Style similarity per run set", "style_similarity")):
        assert title in shown, list(shown)
        points = [y for trace in shown[title]["data"] for y in values(trace, "y")]
        assert sorted(points) == pytest.approx(sorted(r[metric] for r in rows))  # every image, one point each
    said = " ".join(captions(at))
    assert f"All 4 images here used structure strength {rows[0]['structure_strength']:g}" in said
    assert f"All 4 images here used style strength {rows[0]['style_strength']:g}" in said


def test_the_trade_off_charts_plot_against_the_strength_where_it_varies(app_env):
    engine = app_env.engine
    for structure in (0.5, 1.5):
        render(engine, "a wooden chair", sketch=png(line_sketch()), structure_strength=structure)
    shown = charts(open_page(app_env, "pages/dashboard.py"))
    structure = next(f for t, f in shown.items() if t.startswith("Structure strength →"))
    assert sorted(x for trace in structure["data"] for x in values(trace, "x")) == [0.5, 1.5]


def test_the_compare_tab_points_to_what_the_studio_offers(app_env):
    render(app_env.engine, "a blue sofa")
    at = open_page(app_env, "pages/dashboard.py")
    hint = next(i.value for i in at.info if "run sets" in i.value)
    assert "**Run set label**" in hint and "**Advanced**" in hint and "**Studio**" in hint
    assert hint.index("Run set label") < hint.index("--label")  # the command line second


def test_the_run_set_filter_and_the_counts_agree_after_opening_a_sweep(app_env):
    engine = app_env.engine
    render(engine, "a blue sofa")
    request = GenerateRequest.build(prompt="a lounge chair", size=64, steps=1, seed=3)
    job = engine.sweeps.start(request, [0.5, 1.5], [0.3], [1])
    while not (job := engine.jobs.wait(job.id, timeout=5)).done:
        pass
    batch = job.result["batch"]
    at = open_page(app_env, "pages/sweeps.py", sweep_result=batch)
    next(b for b in at.button if b.label == "Open in the Dashboard").click().run()
    ok(at)
    assert at.title[0].value == "Dashboard"
    assert sorted(at.multiselect(key="dash_sets").value) == sorted(engine.sweeps.get(batch)["sets"])
    assert at.metric[0].value == "2"
    assert f"Counting **2 of 3** images: the 2 run sets of {md(batch)}." in captions(at)

    ok(at.switch_page("pages/dashboard.py").run())  # AppTest reruns the page it was sent to, not the one it landed on
    at.button(key="dash_all_sets").click().run()
    ok(at)
    assert at.multiselect(key="dash_sets").value == [] and at.metric[0].value == "3"
    assert "Counting all **3** images: all run sets." in captions(at)
    assert not [b for b in at.button if b.key == "dash_all_sets"]


# ---- Sweeps ----------------------------------------------------------------------------------------------------
def test_a_sweeps_progress_waits_its_turn_and_never_counts_past_the_last_cell(app_env, monkeypatch):
    """Queued (behind another job), the line says so, not 'Cell 0/0'; running, it counts cells up to the total; when
    every cell is rendered and the contact sheet is being written, it says that, never 'Cell 3/2'."""
    import engine.sweep
    import ui.jobs

    jobs = app_env.engine.jobs
    sheet_may_be_written = threading.Event()
    write_outputs = engine.sweep.write_outputs

    def held(*args, **kw):
        sheet_may_be_written.wait(60)
        return write_outputs(*args, **kw)

    monkeypatch.setattr(engine.sweep, "write_outputs", held)
    monkeypatch.setattr(ui.jobs, "follow_jobs", lambda every=0: None)  # each at.run() draws the line once
    jobs.stop()
    jobs.start = lambda: None  # the queue takes the sweep, no worker runs it yet
    try:
        at = open_page(app_env, "pages/sweeps.py")
        at.text_area(key="sweep_prompt").input("a lounge chair").run()
        at.text_input(key="sweep_structure").input("0.5, 1.5").run()
        at.text_input(key="sweep_styles").input("0.3").run()
        at.text_input(key="sweep_steps").input("1").run()
        at.selectbox(key="sweep_size").select(256).run()
        at.button(key="run_sweep").click().run()
        ok(at)
        assert progress_lines(at) == ["Waiting for the GPU (position 1)"]
    finally:
        del jobs.start
    jobs.start()
    seen = []
    deadline = time.time() + 120
    while not any(line.startswith("All 2 cells rendered") for line in seen) and time.time() < deadline:
        time.sleep(0.1)
        seen += progress_lines(ok(at.run()))
    sheet_may_be_written.set()
    ok(settle(at, "sweep_job"))
    assert at.session_state["sweep_result"] and not progress_lines(at)
    counts = [tuple(map(int, m.groups())) for line in seen if (m := re.match(r"Cell (\d+)/(\d+)", line))]
    assert all(1 <= cell <= total == 2 for cell, total in counts), seen
    assert re.fullmatch(r"All 2 cells rendered · writing the contact sheet · \d+s", seen[-1]), seen


# ---- Catalog ---------------------------------------------------------------------------------------------------
CSV = "Artikelnummer;Beschreibung\nK-1;Rotes Baumwoll-T-Shirt\nK-2;Weiße Sneaker aus Wildleder\n".encode()


def test_the_catalog_preview_says_what_it_is_doing(app_env):
    """The first preview with the local model loads the translation model and the LLM (~20 s on a CPU; the spin a new
    user waited through in silence): a status names each step while it runs, and says when it is done. (The tiny
    profile's LLM is random: the page defaults to the description there, so the test picks the local model itself.)"""
    at = open_page(app_env, "pages/catalog.py")
    at.file_uploader(key="cat_sheet").set_value(("produkte.csv", CSV, "text/csv")).run()
    at.session_state["cat_llm"] = "local"
    at.button(key="cat_preview_btn").click().run()
    status = at.main.status
    assert len(status) == 1, [s.label for s in status]
    assert status[0].label == "The preview failed for all 2 rows (the first reason is below)"  # random LLM: no ✓
    assert status[0].state == "error"
    assert [m.value for m in status[0].markdown] == [
        "Translating from German (the first time also loads the translation model)…",
        "Reading the attributes with the local model (the first time loads it: ~20 s on a CPU)…",
        "Writing each row's prompt…",
    ]
    assert not at.exception
    at.run()
    assert not at.exception and not at.main.status  # it belongs to the run that made the preview


# ---- History ---------------------------------------------------------------------------------------------------
def test_history_search_hits_show_prompt_style_and_thumbnail(app_env):
    engine = app_env.engine
    run = render(engine, "a red chair", style="Blueprint")
    render(engine, "a green lamp", use_style=False)
    at = open_page(app_env, "pages/history.py")
    at.text_input(key="history_query").input("red chair").run()
    ok(at)
    hits = [c for c in at.main.container if c.get("button") and any("similarity" in x.value for x in c.caption)]
    assert len(hits) == 2
    for card in hits:
        words = " ".join([m.value for m in card.markdown] + [c.value for c in card.caption])
        assert len(card.get("image")) == 1, words  # the output itself
        assert ("a red chair" in words and "Blueprint" in words) or ("a green lamp" in words and "no style" in words)
        assert "similarity" in words and run not in words
    at.text_input(key="history_query").input("").run()
    next(b for b in at.button if b.key == f"like_{run}").click().run()
    ok(at)
    more = next(c.value for c in at.caption if c.value.startswith("More like"))
    assert more == "More like **a red chair**" and run not in more
