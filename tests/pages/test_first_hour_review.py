"""What a new designer met on the Review pages and the Style library in their first hour (issue 29: items 12, 13, 14,
16), pinned as they see it through AppTest, in Local and in Remote mode."""

from __future__ import annotations

import re

from streamlit.testing.v1 import AppTest

from engine.schema import GenerateRequest
from engine.sweep import SweepCell
from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, settle
from ui.shared import md

RAW_NAME = re.compile(r"\b[a-z]+_[a-z_]+\b")  # a snake_case name (clip_score, run_id, edge_f1_mean …)
HEX = re.compile(r"\b[0-9a-f]{12,}\b")  # a hash or a full id


def open_page(app_env, page: str) -> AppTest:
    at = app_env.app().run()
    return ok(at.switch_page(page).run())


def render(app_env, prompt: str, **kw) -> str:
    """A run made behind the page (the server's engine in Remote mode): its run id."""
    values = {"prompt": prompt, "size": 64, "steps": 1, "seed": 11, "source": "cli"}
    return app_env.engine.generate(GenerateRequest.build(**{**values, **kw})).run_id


def table_words(frame) -> str:
    return " ".join([*map(str, frame.columns), *(str(v) for v in frame.to_numpy().ravel())])


def main_texts(at: AppTest) -> str:
    """The page's own words (the sidebar's engine status is another helper's)."""
    return " ".join([m.value for m in at.main.markdown] + [c.value for c in at.main.caption])


def warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.main.warning]


# ---- Sweeps (items 12, 14, 1) ----------------------------------------------------------------------------------
def test_the_sweeps_form_survives_other_pages_its_table_speaks_words_and_an_unknown_sweep_is_dropped(app_env):
    at = open_page(app_env, "pages/sweeps.py")
    at.text_area(key="sweep_prompt").input("a lounge chair").run()
    typed = {"sweep_structure": "0.5, 1.5", "sweep_styles": "0.3", "sweep_steps": "2"}
    for key, value in typed.items():
        at.text_input(key=key).input(value).run()
    at.selectbox(key="sweep_size").select(256).run()
    at.file_uploader(key="sweep_upload").set_value(("house.png", png(line_sketch()), "image/png")).run()
    seed = at.number_input(key="sweep_seed").value

    ok(at.switch_page("pages/history.py").run())  # away, and back
    ok(at.switch_page("pages/sweeps.py").run())
    assert at.text_area(key="sweep_prompt").value == "a lounge chair"
    assert {key: at.text_input(key=key).value for key in typed} == typed
    assert at.selectbox(key="sweep_size").value == 256 and at.number_input(key="sweep_seed").value == seed
    assert "Using the uploaded sketch **house\\.png**." in main_texts(at)  # the uploader forgot it; the page did not
    at.button(key="sweep_drop_sketch").click().run()
    assert "No sketch: the grid is text-to-image." in main_texts(ok(at))

    at.button(key="run_sweep").click().run()
    ok(settle(at, "sweep_job"))
    table = at.dataframe[0].value
    assert list(table.columns[:3]) == ["Structure strength", "Style strength", "Steps"], list(table.columns)
    assert {"Prompt fidelity", "Style similarity", "Run"} <= set(table.columns)
    # a text-only sweep measures no structure: its columns are left out, not filled with None
    assert not {"Edge F1", "Chamfer (px)"} & set(table.columns) and not table.isna().any().any()
    assert not RAW_NAME.search(" ".join(table.columns)) and "None" not in table_words(table)
    assert all(re.fullmatch(r"…[0-9a-f]{8}", run) for run in table["Run"]), list(table["Run"])
    legend = " ".join(c.value for c in at.caption)
    assert "style strength" in legend and "style similarity" in legend

    gone = "sweep-20000101-000000-abcdef"
    at.session_state["sweep_result"] = gone  # a sweep this engine does not know (another engine's, or deleted)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(warnings(at)) == 1 and md(gone) in warnings(at)[0]
    assert "sweep_result" not in at.session_state  # asked once, then forgotten
    ok(at.run())
    assert not warnings(at)


def test_the_contact_sheet_says_which_style_number_is_which():
    from engine.sweep import cell_lines

    cell = SweepCell(0.5, 0.8, 2, "20260101-000000-0123abcd", [1], [], 1.24, {"clip_score": 20.1,
                     "style_similarity": 0.71, "edge_f1": None, "chamfer": None})  # fmt: skip
    lines = cell_lines(cell)
    assert "style similarity 0.71" in " ".join(lines) and "CLIP 20.1" in lines[0]
    assert not any(re.search(r"\bstyle \d", line) for line in lines), lines  # "style 0.71" read as a strength
    assert all(line.isascii() or set(line) - set(map(chr, range(128))) <= {"·"} for line in lines), lines


# ---- Arena (item 13) -------------------------------------------------------------------------------------------
def picker(at: AppTest):
    return next(box for box in at.selectbox if box.label == "Comparison")


def browser_shows(box, before=None) -> str:
    """What the browser's select box shows: a value the page sets; else, for the same widget as `before` (id, text),
    the text the browser already shows (it keeps its own); else, a new widget's first choice."""
    if box.proto.set_value:
        return box.proto.raw_value
    if before and box.id == before[0]:
        return before[1]
    return box.options[box.proto.default]


def test_the_arena_counts_in_words_its_picker_follows_the_votes_and_a_mode_is_selected(app_env):
    sketch = png(line_sketch())
    for label, structure in (("A", 0.4), ("B", 1.6)):
        render(app_env, "a walnut stool", sketch=sketch, structure_strength=structure, batch="duo", label=label)
    at = open_page(app_env, "pages/arena.py")
    assert at.segmented_control(key="arena_mode").value == "Two run sets"
    at.selectbox(key="arena_a").select("duo · A").run()
    at.selectbox(key="arena_b").select("duo · B").run()
    assert "1 pair shares a sketch, prompt and seed." in [c.value for c in at.caption]
    next(b for b in at.button if b.label == "Start voting").click().run()
    ok(at)
    before = (picker(at).id, browser_shows(picker(at)))
    assert "0/1 voted" in before[1]

    at.button(key="vote_left").click().run()
    ok(at)
    assert "1/1 voted" in browser_shows(picker(at), before)
    said = " ".join([main_texts(at), *(s.value for s in at.success)])
    assert not re.search(r"\b1 (pairs|ties|votes|images)\b", said), said
    assert "None" not in said
    agreement = next(d.value for d in at.dataframe)
    assert "None" not in table_words(agreement) and not agreement.isna().any().any()
    assert "Chamfer distance (px)" not in set(agreement.iloc[:, 0]) or agreement.iloc[:, 1].min() > 0


# ---- Dashboard (item 14) ---------------------------------------------------------------------------------------
def test_the_dashboard_summary_speaks_words_and_leaves_out_what_was_not_measured(app_env):
    render(app_env, "a blue sofa")
    render(app_env, "a green sofa", seed=12)
    at = open_page(app_env, "pages/dashboard.py")
    assert at.segmented_control(key="dash_by").value is not None
    summary = next(d.value for d in at.dataframe if "Images" in d.value.columns)
    assert summary.columns[0] == "Run set", list(summary.columns)
    assert not RAW_NAME.search(" ".join(summary.columns)), list(summary.columns)
    assert "Prompt fidelity (mean)" in summary.columns
    assert not [c for c in summary.columns if "Chamfer" in c or "Edge F1" in c]  # no sketch: not measured
    assert all(re.fullmatch(r"…[0-9a-f]{8}", name) for name in summary["Run set"]), list(summary["Run set"])


# ---- History (items 14, 16) ------------------------------------------------------------------------------------
def compared(at: AppTest):
    (table,) = (t.value for t in at.table)
    return table.set_index("Setting")


def test_history_compare_shows_names_not_internals_and_a_meaning_search_keeps_the_filters_and_buttons(app_env):
    from ui.gallery import settings_of

    a = render(app_env, "a rattan chair", sketch=png(line_sketch()))
    b = render(app_env, "a rattan chair", hires=1.5)
    at = open_page(app_env, "pages/history.py")
    at.checkbox(key=f"compare-{a}").check().run()
    at.checkbox(key=f"compare-{b}").check().run()
    ok(at)
    table = compared(at)
    assert (table.loc["Hires", "A"], table.loc["Hires", "B"]) == ("off", "×1.5, strength 0.35")
    assert table.loc["Sketch", "≠"] == "≠" and table.loc["Sketch", "B"] == "none (text only)"
    words = table_words(table.reset_index()) + " " + main_texts(at)
    assert not HEX.search(words), HEX.findall(words)
    assert "None" not in words and str(app_env.data) not in words
    assert f"…{a[-8:]} · 1" in words and f"…{b[-8:]} · 1" in words
    paths = [v for v in settings_of(app_env.engine.history.get(a).metadata).values() if "/" in v]
    assert not paths, paths  # a model is named, never by its folder on the engine's machine
    labels = [d.proto.label for d in at.get("download_button")]
    assert f"Download …{a[-8:]} · 1" in labels, labels

    at.text_input(key="history_query").input("rattan chair").run()
    ok(at)
    for key in ("history_text", "history_style", "history_set"):
        assert at.get("text_input") and any(w.key == key for w in [*at.text_input, *at.selectbox]), key
    assert at.toggle(key="history_starred")
    assert compared(at).loc["Hires", "B"].startswith("×1.5")  # the comparison stays
    assert any("similarity" in c.value for c in at.caption)
    assert any(re.search(rf"…{a[-8:]} · [12]\b", c.value) for c in at.caption), [c.value for c in at.caption]
    at.button(key=f"star-{a}").click().run()
    ok(at)
    assert app_env.engine.history.get(a).starred and at.button(key=f"star-{a}").label == "★ Starred"
    at.toggle(key="history_starred").set_value(True).run()  # the filters apply to what the search found
    ok(at)
    assert [m.value for m in at.markdown if m.value.startswith("**a rattan")] == ["**a rattan chair**"]
    assert at.button(key=f"star-{a}") and not [x for x in at.button if x.key == f"star-{b}"]
