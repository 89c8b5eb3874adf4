"""The Studio's Regions mode through AppTest: clicks (fed through session state) add regions with overlays,
generating shows each region's style beside the render, and Restore brings the regions back."""

from __future__ import annotations

import numpy as np
from streamlit.testing.v1 import AppTest

from engine.masks import REGION_COLORS
from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, texts
from tests.pages.test_app import generate


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])


def click(at: AppTest, x: float, y: float) -> AppTest:
    at.session_state["region_click"] = (x, y)
    return at.run()


def regions_studio(app_env) -> AppTest:
    at = app_env.app().run()
    for key, value in dict(
        sketch_override=png(line_sketch(96, 64)), prompt="a living room", steps=2, size=64, seed_locked=True, seed=4
    ).items():
        at.session_state[key] = value
    at.run()
    at.toggle(key="regions_on").set_value(True).run()
    return at


def test_a_click_adds_a_region_with_its_overlay(app_env):
    at = regions_studio(app_env)
    assert not at.exception and at.session_state["regions"] == []
    at = click(at, 20, 30)
    regions = at.session_state["regions"]
    assert len(regions) == 1 and regions[0]["mask"].shape == (64, 96)
    assert regions[0]["point"] == (20, 30)
    # the overlay tints the region in its colour, semi-transparent over the sketch
    preview = np.asarray(at.session_state["regions_preview"]).astype(int)
    inside = preview[regions[0]["mask"]]
    tint = _rgb(REGION_COLORS[0])
    assert np.abs(inside.mean(0) - tint).sum() < np.abs(np.full(3, 255) - tint).sum()  # pulled towards the colour
    assert any("% of the image" in m.value for m in at.markdown)
    assert any(REGION_COLORS[0] in m.value for m in at.markdown)  # the list row wears the same colour

    # a click outside the image is one error line, and nothing is added
    at = click(at, 500, 10)
    assert [e.value for e in at.error] == ["the point (500, 10) is outside the image, which is 96×64; click inside it"]
    assert len(at.session_state["regions"]) == 1

    # Remove takes it away again
    next(b for b in at.button if b.label == "Remove").click().run()
    assert at.session_state["regions"] == []


def test_generating_with_two_regions_shows_their_styles_beside_the_render(app_env):
    at = click(click(regions_studio(app_env), 15, 20), 80, 50)
    regions = at.session_state["regions"]
    assert len(regions) == 2
    at.text_input(key=f"region_words_{regions[0]['id']}").set_value("walnut").run()
    at.selectbox(key=f"region_style_{regions[1]['id']}").set_value("Terrazzo").run()
    shown = texts(at)
    assert "retrieves **" in shown and "style **Terrazzo**" in shown
    at = ok(generate(at))
    result = at.session_state["result"]
    assert [r["words"] for r in result.regions] == ["walnut", ""]
    expected = at.session_state["result"].regions[0]["style"]["name"]
    shown = texts(at)
    assert "**Regions**" in shown
    assert f"Region 1: “walnut” → **{expected}**" in shown
    assert "Region 2: **Terrazzo**" in shown and "region match" in shown

    # the History's Restore brings the regions back into the Studio
    at.session_state["regions"] = []
    at.switch_page("pages/history.py").run()
    next(b for b in at.button if b.label == "Restore").click().run()
    assert at.title[0].value == "Studio"
    back = at.session_state["regions"]
    assert [r["words"] for r in back] == ["walnut", ""] and [r["style"] for r in back] == [expected, "Terrazzo"]
    assert at.session_state["regions_on"] is True
    at.switch_page("pages/studio.py")  # where the browser now is (AppTest keeps the page it was told last)
    at = ok(generate(at))
    again = at.session_state["result"]
    assert np.array_equal(np.asarray(again.images()[0]), np.asarray(result.images()[0]))


def test_a_region_without_words_or_style_is_one_error_line(app_env):
    at = click(regions_studio(app_env), 15, 20)
    at = generate(at)
    assert [e.value for e in at.error] == ["region 1: needs words (e.g. 'walnut veneer') or a style from the library"]


def test_region_words_that_look_like_html_are_shown_as_text(app_env):
    at = click(regions_studio(app_env), 15, 20)
    region = at.session_state["regions"][0]
    hostile = '<img src=x onerror="alert(1)"> walnut'
    at.text_input(key=f"region_words_{region['id']}").set_value(hostile).run()
    at = ok(generate(at))
    assert [r["words"] for r in at.session_state["result"].regions] == [hostile]
    shown = [m.value for m in at.markdown if "Region 1" in m.value]
    assert shown and all("<img" not in m for m in shown), shown  # the markup is built with unsafe_allow_html
    assert any('“&lt;img src=x onerror="alert(1)"&gt; walnut”' in m for m in shown), shown
