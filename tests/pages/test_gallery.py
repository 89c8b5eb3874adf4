"""History as a gallery, in Local and in Remote mode: the grid of runs with their prompts and numbers, filters, a star
kept in the engine, and two runs compared side by side with the settings that differ marked."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from engine.schema import GenerateRequest
from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, texts


def render(app_env, prompt: str, **kw) -> str:
    """A run made behind the page (the server's engine in Remote mode), as another session's would be."""
    values = {"prompt": prompt, "size": 64, "steps": 2, "seed": 11, "use_style": False}
    return app_env.engine.generate(GenerateRequest.build(**{**values, **kw})).run_id


def history(app_env) -> AppTest:
    at = app_env.app().run()
    return ok(at.switch_page("pages/history.py").run())


def prompts(at: AppTest) -> list[str]:
    """The cards' prompts, in the grid's order."""
    return [m.value.strip("*") for m in at.markdown if m.value.startswith("**")]


def compared(at: AppTest):
    """The comparison's table (the page's only one), by setting."""
    (table,) = at.table
    return table.value.set_index("Setting")


def test_history_shows_every_run_as_a_card_in_a_grid_newest_first_and_filters_it(app_env):
    style = app_env.engine.styles.list()[0].name
    desk = render(app_env, "a walnut desk", sketch=png(line_sketch()))
    lamp = render(app_env, "a brass lamp", style=style, use_style=True)
    at = history(app_env)
    assert prompts(at) == ["a brass lamp", "a walnut desk"]
    captions = [c.value for c in at.caption]
    assert any(c.startswith(f"{style} · seed 11 · 64×64") for c in captions), captions
    assert any(c.startswith("no style · seed 11 · 96×64") for c in captions), captions
    numbers = [c for c in captions if c.startswith("fidelity ")]
    assert len(numbers) == 2 and any(" · style " in c for c in numbers) and any(" · edge F1 " in c for c in numbers)
    assert "-0.00" not in texts(at)
    for run in (desk, lamp):  # stable keys a browser test can find
        assert at.button(key=f"star-{run}").label == "☆ Star"
        assert at.checkbox(key=f"compare-{run}").value is False
        assert at.button(key=f"restore_{run}").label == "Restore"

    at.text_input(key="history_text").input("WALNUT").run()
    assert prompts(ok(at)) == ["a walnut desk"]
    at.text_input(key="history_text").input("").run()
    assert at.selectbox(key="history_style").options == ["Any style", style]
    at.selectbox(key="history_style").select(style).run()
    assert prompts(ok(at)) == ["a brass lamp"]
    at.selectbox(key="history_style").select("Any style").run()
    at.text_input(key="history_text").input("velvet").run()
    assert prompts(ok(at)) == [] and [i.value for i in at.info] == ["No render matches these filters."]


def test_a_starred_run_is_found_under_starred_only(app_env):
    kept = render(app_env, "a linen armchair")
    render(app_env, "a marble table")
    at = history(app_env)
    at.toggle(key="history_starred").set_value(True).run()
    assert prompts(ok(at)) == [] and [i.value for i in at.info] == ["No starred renders yet: star one with ☆ Star."]
    at.toggle(key="history_starred").set_value(False).run()

    at.button(key=f"star-{kept}").click().run()
    ok(at)
    assert at.button(key=f"star-{kept}").label == "★ Starred"
    assert app_env.engine.history.get(kept).starred is True  # kept by the engine, not the page
    at.toggle(key="history_starred").set_value(True).run()
    assert prompts(ok(at)) == ["a linen armchair"]

    again = history(app_env)  # another session sees the star
    again.toggle(key="history_starred").set_value(True).run()
    assert prompts(ok(again)) == ["a linen armchair"]
    again.button(key=f"star-{kept}").click().run()
    assert prompts(ok(again)) == [] and app_env.engine.history.get(kept).starred is False


def test_two_picked_runs_are_compared_side_by_side_with_the_differing_settings_marked(app_env):
    a = render(app_env, "a rattan chair", steps=2)
    b = render(app_env, "a rattan chair", steps=3)
    c = render(app_env, "a rattan lamp", steps=2)
    at = history(app_env)
    assert not at.table
    at.checkbox(key=f"compare-{a}").check().run()
    ok(at)
    assert any("one more render" in x.value for x in at.caption)
    at.checkbox(key=f"compare-{b}").check().run()
    ok(at)
    assert at.subheader[0].value == "Compare"
    table = compared(at)
    assert table.loc["Steps", "≠"] == "≠" and (table.loc["Steps", "A"], table.loc["Steps", "B"]) == ("2", "3")
    for same in ("Prompt", "Seed", "Guidance", "Size", "Scheduler"):
        assert table.loc[same, "≠"] == "", same
    assert any(x.value == "1 setting differs (marked ≠)" for x in at.caption), [x.value for x in at.caption]
    shown = [m.value for m in at.markdown]
    assert "**A** · a rattan chair" in shown and "**B** · a rattan chair" in shown

    at.checkbox(key=f"compare-{c}").check().run()  # a third pick lets go of the first
    ok(at)
    assert at.checkbox(key=f"compare-{a}").value is False
    table = compared(at)
    assert table.loc["Prompt", "≠"] == "≠" and table.loc["Steps", "≠"] == "≠"
    at.button(key="compare_clear").click().run()
    ok(at)
    assert not at.table
    assert not any(x.value for x in at.checkbox if x.key and x.key.startswith("compare-"))
