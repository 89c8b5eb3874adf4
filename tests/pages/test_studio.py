"""The Studio's canvas, its gallery of this session's renders and the papercuts a new user hit, through AppTest on
the tiny profile, in Local and in Remote mode."""

from __future__ import annotations

import io
import json

from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.evaluation import run_set
from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, settle, texts
from tests.pages.test_app import generate, studio

QUICK = {"steps": 1, "size": 256, "seed_locked": True}  # 256: the smallest Size the page offers


def canvas(at: AppTest) -> dict:
    """What the page asked the drawable canvas for (its size, tool, colours)."""
    (found,) = [c for c in at.get("bidi_component") if "canvasWidth" in c.proto.json]
    return json.loads(found.proto.json)


def click(at: AppTest, label: str, nth: int = 0) -> AppTest:
    return [b for b in at.button if b.label == label][nth].click().run()


def put(at: AppTest, **values) -> AppTest:
    for key, value in values.items():
        at.session_state[key] = value
    return at


def seeds_shown(at: AppTest) -> list[int]:
    """The gallery's tiles, in page order, by the "seed N" line under each."""
    return [int(c.value.split()[1]) for c in at.caption if c.value.startswith("seed ") and c.value[5:].isdigit()]


# ---- canvas ---------------------------------------------------------------------------------------------------------


def test_aspect_presets_set_the_canvas_and_the_renders_aspect(app_env):
    at = studio(app_env)
    assert (canvas(at)["canvasWidth"], canvas(at)["canvasHeight"]) == (448, 336)  # 4:3, as before
    assert at.segmented_control(key="aspect").options == ["1:1", "4:3", "3:4", "16:9", "9:16"]
    at.segmented_control(key="aspect").set_value("16:9").run()
    ok(at)
    assert (canvas(at)["canvasWidth"], canvas(at)["canvasHeight"]) == (448, 252)
    assert "renders at 912×512" in texts(at)  # the short side is the size; the aspect is the canvas's
    at.segmented_control(key="aspect").set_value("9:16").run()
    assert (canvas(at)["canvasWidth"], canvas(at)["canvasHeight"]) == (252, 448)

    # what the canvas sends (here: a drawing of its size) renders at its aspect
    at.session_state["drawn_png"] = png(line_sketch(252, 448))
    put(at, prompt="a tall cabinet", style_mode="None", **QUICK)
    at = ok(generate(at.run()))
    result = at.session_state["result"]
    assert result.images()[0].size == (256, 456) == (result.metadata["width"], result.metadata["height"])


def test_the_canvas_has_an_eraser_a_circle_and_a_polygon(app_env):
    at = studio(app_env)
    tools = at.segmented_control(key="draw_mode")
    assert tools.options == ["Pen", "Eraser", "Line", "Box", "Circle", "Polygon"]
    tools.set_value("eraser").run()
    ok(at)
    drawn = canvas(at)
    assert drawn["drawingMode"] == "freedraw" and drawn["strokeColor"] == drawn["backgroundColor"] == "#ffffff"
    for tool in ("circle", "polygon"):
        at.segmented_control(key="draw_mode").set_value(tool).run()
        assert canvas(at)["drawingMode"] == tool and canvas(at)["strokeColor"] == "#000000"
    assert "close the polygon" in texts(at)


def test_changing_the_aspect_keeps_the_drawing_fitted_into_the_new_canvas():
    from ui.canvas import carry_drawing, fit_png

    drawing = {"objects": [{"type": "path", "left": 100, "top": 50, "scaleX": 1, "scaleY": 1, "path": []}]}
    moved = carry_drawing(drawing, (448, 336), (448, 252))
    (obj,) = moved["objects"]
    scale = 252 / 336
    assert obj["scaleX"] == obj["scaleY"] == scale
    assert (obj["left"], obj["top"]) == (100 * scale + (448 - 448 * scale) / 2, 50 * scale)
    assert drawing["objects"][0]["left"] == 100  # the old canvas's drawing is left as it was
    refit = Image.open(io.BytesIO(fit_png(png(line_sketch(448, 336)), (252, 448))))
    assert refit.size == (252, 448)


def test_upload_mode_shows_the_uploaded_sketch(app_env):
    at = studio(app_env, source="Upload")
    at.file_uploader(key="upload").set_value(("house.png", png(line_sketch(96, 64)), "image/png")).run()
    ok(at)
    captions = [c for img in at.image for c in img.captions]
    assert "house.png · 96×64" in captions, captions
    assert "renders at 768×512" in texts(at)  # an upload keeps its own aspect


def test_the_controlnet_preview_is_made_by_the_engine_for_each_type(app_env):
    """The map a ControlNet will follow, under the sketch, comes from the engine's `control_preview` (in Remote mode
    the server's, where a model-backed preprocessor has its model), and follows the chosen type."""
    at = studio(app_env, source="Upload")
    sketch = png(line_sketch(96, 64))
    at.file_uploader(key="upload").set_value(("house.png", sketch, "image/png")).run()
    ok(at)
    shown = {c for img in at.image for c in img.captions}
    assert "What ControlNet will follow (lines)" in shown, shown  # canny, edge mode auto: a drawing's own lines
    at = ok(put(at, control="softedge").run())
    shown = [(c, img) for img in at.image for c in img.captions if c.startswith("What ControlNet")]
    assert [c for c, _ in shown] == ["What ControlNet will follow (softedge)"]


# ---- gallery --------------------------------------------------------------------------------------------------------


def test_variations_and_vary_fill_a_gallery_newest_first(app_env):
    at = generate(studio(app_env, prompt="a brass lamp", style_mode="None", variations=2, seed=5, **QUICK))
    ok(at)
    assert seeds_shown(at) == [5, 6]  # side by side, in one row
    vary = [b for b in at.button if b.label == "Vary"]
    assert len(vary) == 2
    at = ok(settle(vary[1].click().run()))
    shown = seeds_shown(at)
    assert len(shown) == 3 and shown[1:] == [5, 6]  # the new one first, nothing replaced
    newest = at.session_state["gallery"][0]
    assert newest["result"].seeds == [shown[0]] and newest["result"].metadata["params"]["steps"] == 1

    # the gallery stays for the session: another page and back
    at.switch_page("pages/styles.py").run()
    at.switch_page("pages/studio.py").run()
    assert seeds_shown(ok(at)) == shown
    click(at, "Clear the gallery")
    assert seeds_shown(ok(at)) == [] and app_env.engine.history.list()  # the History keeps them


# ---- papercuts ------------------------------------------------------------------------------------------------------


def test_generate_right_after_typing_uses_the_new_words_and_their_styles(app_env):
    """The browser sends what was typed with the click (no blur first): the styles must be the new words'."""
    at = studio(app_env, prompt="neon night city", **QUICK)
    old = [h.id for h in at.session_state["auto_hits"]]
    words = "terrazzo floor, speckled stone"
    expected = app_env.engine.styles.search(text=words, k=3)
    assert expected[0].id != old[0]
    at.text_area(key="prompt").input(words)
    at = ok(settle(next(b for b in at.button if b.label == "Generate").click().run()))
    meta = at.session_state["result"].metadata
    assert meta["prompt"] == words
    assert [s["id"] for s in meta["styles"] if s["used"]] == [expected[0].id]
    assert [h.id for h in at.session_state["auto_hits"]] == [h.id for h in expected]

    at.text_area(key="prompt").input("")
    generate_button = next(b for b in at.button if b.label == "Generate")
    assert not generate_button.disabled  # never greyed out for an empty prompt: the click says what is missing
    generate_button.click().run()
    assert [e.value for e in at.error] == ["prompt: the prompt is empty; describe what you want to see"]


def test_a_weight_slider_shows_only_under_a_ticked_style(app_env):
    at = studio(app_env, prompt="a cosy reading corner")
    hits = at.session_state["auto_hits"]
    at.checkbox(key=f"use_{hits[1].id}").check().run()
    ok(at)
    assert sorted(s.key for s in at.slider if s.key.startswith("w_")) == sorted(f"w_{h.id}" for h in hits[:2])
    at.checkbox(key=f"use_{hits[0].id}").uncheck().run()
    assert [s.key for s in at.slider if s.key.startswith("w_")] == []  # one style: nothing to weigh


def test_style_scores_are_always_shown_and_never_read_minus_zero(app_env):
    at = studio(app_env, prompt="poster")
    hits = app_env.engine.styles.search(text="poster", k=3)
    hits[0].name = "Art deco poster with gold leaf and a very long name indeed"
    hits[0].score = -0.0004
    put(at, auto_for="poster", auto_hits=hits)
    at = ok(at.run())
    boxes = [c for c in at.checkbox if c.key.startswith("use_")]
    assert all("·" not in c.label for c in boxes)  # the name alone: a long one may be cut, never the score
    assert [c.value for c in at.caption if c.value.startswith("similarity ")] == [
        "similarity 0.00",
        *(f"similarity {h.score:.2f}" for h in hits[1:]),
    ]
    assert "-0.00" not in texts(at)

    from ui.shared import number

    assert (number(-0.0004), number(-0.004, 1), number(0.456), number(-0.2)) == ("0.00", "0.0", "0.46", "-0.20")


def test_as_sketch_says_the_edge_mode_changed(app_env):
    at = generate(studio(app_env, prompt="a stool", style_mode="None", **QUICK))
    assert at.session_state["edge_mode"] == "auto"
    click(at, "As sketch")
    ok(at)
    assert at.session_state["edge_mode"] == "lines"
    assert "Edge mode switched to lines (was auto)" in texts(at)
    click(at, "Remove the picture")
    assert "Edge mode switched" not in texts(ok(at))


def test_each_render_shows_its_prompt_style_and_edge_fidelity(app_env):
    at = studio(app_env, sketch_override=png(line_sketch()), prompt="a timber cabin", variations=2, **QUICK)
    at = ok(generate(at))
    at = ok(settle(at, f"measure_{at.session_state['result'].run_id}"))  # the numbers follow the render
    metrics = at.session_state["result"].metadata["metrics"]
    lines = [c.value for c in at.caption if c.value.startswith("prompt fidelity")]

    def fixed(value: float, places: int = 2) -> str:
        return f"{round(value, places) + 0.0:.{places}f}"

    assert lines == [
        f"prompt fidelity {fixed(m['clip_score'], 1)} · style similarity {fixed(m['style_similarity'])} · "
        f"edge F1 {fixed(m['edge_f1'])}"
        for m in metrics
    ]


def test_a_new_generate_clears_the_errors_before_it(app_env):
    at = studio(app_env, sketch_override=png(line_sketch(96, 64)), **QUICK)
    click(at, "Generate")  # no prompt: one error line
    at.toggle(key="regions_on").set_value(True).run()
    at.session_state["region_click"] = (500, 10)  # a click outside the sketch: a second
    at.run()
    assert len(at.error) == 2, [e.value for e in at.error]
    at.session_state["prompt"] = "a living room"
    at = ok(generate(at.run()))  # the new render, and no error from before it


def test_a_run_set_label_groups_studio_renders_for_the_compare_tab(app_env):
    at = studio(app_env, prompt="a lounge chair", style_mode="None", **QUICK)
    for label in ("A", "B"):
        at.text_input(key="run_label").input(label)
        at = ok(generate(at))
    at.text_input(key="run_batch").input("chairs").run()
    at = ok(generate(at))
    sets = [run_set(r.metadata) for r in app_env.engine.history.list()]
    assert sets == ["chairs · B", "studio · B", "studio · A"]  # newest first
    at.text_input(key="run_label").input("").run()
    at.text_input(key="run_batch").input("").run()
    at = ok(generate(at))
    meta = at.session_state["result"].metadata
    assert (meta["batch"], meta["label"]) == (None, "")  # no label: each render its own set, as before
