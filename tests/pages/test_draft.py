"""The draft a reload brings back (ui/draft.py, issue 29 item 10): what the browser hands back is checked field by
field, so a tampered or broken localStorage restores what is valid and nothing else, and never breaks the page.
(The browser side, a real reload in Chromium, is tests/e2e/test_reload.py.)"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest
from PIL import Image, ImageDraw

from engine import images as imgs
from tests.pages.conftest import ok, texts
from ui.shared import DEFAULTS


def _import_draft():
    """ui.draft, imported once the canvas's component has been declared inside a Streamlit run (streamlit-drawable-
    canvas registers its frontend when imported, which needs a runtime; the app always imports it in one)."""
    from streamlit.testing.v1 import AppTest

    AppTest.from_string("import ui.canvas").run()
    from ui import draft

    return draft


draft = _import_draft()

HOUSE = {
    "version": "7.4.0",
    "objects": [
        {"type": "Path", "left": 220, "top": 155, "width": 280, "height": 208, "scaleX": 1, "scaleY": 1,
         "stroke": "#000000", "strokeWidth": 4, "fill": None,
         "path": [["M", 80, 260], ["L", 80, 140], ["L", 220, 50], ["L", 360, 140], ["L", 360, 260], ["L", 80, 260]]},
    ],
}  # fmt: skip


def house_png() -> str:
    img = Image.new("RGBA", (448, 336), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(80, 260), (80, 140), (220, 50), (360, 140), (360, 260), (80, 260)], "black", 4)
    return base64.b64encode(imgs.png_bytes(img)).decode()


def stored(fields: dict, **more) -> str:
    return json.dumps({"fields": fields, **more})


def test_every_studio_field_is_kept_or_left_out_on_purpose():
    assert set(draft.CHECKS) | set(draft.NOT_KEPT) == set(DEFAULTS)
    assert "remote_token" in draft.NOT_KEPT
    for key, check in draft.CHECKS.items():
        assert check(DEFAULTS[key]) or DEFAULTS[key] is None, f"the default of {key} would not come back"


@pytest.mark.parametrize(
    "text",
    [None, 42, "", "not json", "[1, 2]", '"a string"', "{", "[" * 100_000 + "]" * 100_000,
     json.dumps({"fields": "prompt"}), json.dumps({"fields": [1, 2]}),
     json.dumps({"fields": {"prompt": "x" * 50}, "pad": "y" * draft.MAX_CHARS})],
)  # fmt: skip
def test_a_broken_or_oversized_draft_restores_nothing_and_raises_nothing(text):
    found = draft.parse(text)
    assert found is None or found == {"fields": {}}


def test_only_valid_fields_come_back():
    found = draft.parse(
        stored(
            {
                "prompt": "a timber cabin",
                "steps": 10_000,  # beyond the slider
                "guidance": "7.5",  # a string where a number goes
                "hires_strength": float("nan"),
                "structure": 1.25,
                "seed": -1,
                "seed_locked": 1,  # not a bool
                "style_only": True,
                "variations": True,  # a bool is not a count
                "size": 999,
                "scheduler": "bogus",
                "aspect": "16:9",
                "pen_color": "red;background:url(x)",
                "remote_url": "javascript:alert(1)",
                "remote_token": "stolen",  # never restored, even when the storage has one
                "engine_mode": "Remote",
                "library_style": ["a list"],
                "canvas_rev": 99,  # not a Studio field
                "__class__": "x",
            },
            renders="many",
            unknown={"deep": [1, 2, 3]},
        )
    )
    assert found == {
        "fields": {
            "prompt": "a timber cabin",
            "structure": 1.25,
            "style_only": True,
            "aspect": "16:9",
            "engine_mode": "Remote",
        }
    }


def test_a_tampered_drawing_keeps_only_the_tools_shapes_and_a_bad_png_is_dropped():
    shapes = [
        *HOUSE["objects"],
        {"type": "Image", "src": "http://example.com/x.png", "left": 0, "top": 0},  # not a tool's shape
        {"type": "Rect", "left": "0; drop", "top": 0},  # placed by text
        {"type": "Circle", "left": 1e300, "top": 0},
        "a string",
        {"type": "Line", "left": 10, "top": 20, "x1": 0, "y1": 0, "x2": 30, "y2": 10},
    ]
    canvas = {"drawing": {"version": "7.4.0", "objects": shapes}, "size": [448, 336], "png": "%%%not base64"}
    found = draft.parse(stored({"aspect": "4:3"}, canvas=canvas))
    assert [o["type"] for o in found["canvas"]["drawing"]["objects"]] == ["Path", "Line"]
    assert "png" not in found["canvas"]
    not_an_image = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
    for png in (not_an_image, base64.b64encode(b"GIF89a").decode(), "A" * (draft.MAX_PNG_CHARS + 4)):
        canvas = {"drawing": HOUSE, "size": [448, 336], "png": png}
        assert "png" not in draft.parse(stored({}, canvas=canvas))["canvas"]
    for bad in ({"drawing": {"objects": "all"}}, {"drawing": []}, [HOUSE], {"drawing": {"objects": [{"type": 3}]}}):
        assert "canvas" not in draft.parse(stored({}, canvas=bad))


def test_styles_come_back_only_for_the_same_words_and_with_valid_ticks():
    hits = [["a1", "Mid-century walnut", 0.24], ["b2", "Terrazzo", 0.22]]
    styles = {"for": "a cabin", "hits": hits, "use": ["a1", "b2", "zz", 7], "weights": {"a1": 1.5, "b2": 9, "zz": 1}}
    found = draft.parse(stored({"prompt": "a cabin"}, styles=styles))["styles"]
    assert [h.name for h in found["hits"]] == ["Mid-century walnut", "Terrazzo"]
    assert found["use"] == {"a1", "b2"} and found["weights"] == {"a1": 1.5}
    assert "styles" not in draft.parse(stored({"prompt": "other words"}, styles=styles))
    for bad in ({**styles, "hits": [["a1", "x", "high"]]}, {**styles, "hits": "a1"}, {**styles, "hits": [[1, 2, 3]]}):
        assert "styles" not in draft.parse(stored({"prompt": "a cabin"}, styles=bad))


def test_a_draft_taken_from_a_session_comes_back_into_a_new_one():
    png = base64.b64decode(house_png())
    before = {**DEFAULTS, "prompt": "a cabin", "steps": 8, "aspect": "4:3", "remote_token": "secret",
              "canvas_json": HOUSE, "canvas_size": (448, 336), "drawn_png": png,
              "gallery": [{"result": SimpleNamespace(png=[png, png])}, {"result": SimpleNamespace(png=[png])}],
              }  # fmt: skip
    text = json.dumps(draft.snapshot(before))
    assert "secret" not in text
    after = dict(DEFAULTS)
    line = draft.restore(after, draft.parse(text))
    assert after["prompt"] == "a cabin" and after["steps"] == 8 and after["remote_token"] == ""
    assert after["canvas_initial"]["objects"][0]["path"] == HOUSE["objects"][0]["path"]
    assert after["canvas_rev"] == 1 and after["drawn_png"]
    assert line.startswith("Restored your unsaved sketch and settings") and "token" not in line
    assert line.endswith("The 3 renders you had made are in the History.")  # the images themselves are not kept
    assert draft.restore(dict(DEFAULTS), draft.parse(json.dumps(draft.snapshot(DEFAULTS)))) is None  # nothing new


def test_a_laptop_set_up_for_one_server_stays_on_it(monkeypatch):
    text = json.dumps(draft.snapshot({"engine_mode": "Local", "remote_url": "http://old:8000", "prompt": "a cabin"}))
    monkeypatch.setenv("DESIGN_STUDIO_REMOTE_URL", "http://render-box:8000")
    state = {"engine_mode": "Remote", "remote_url": "http://render-box:8000", "remote_token": "t"}
    draft.restore(state, draft.parse(text))
    assert state == {
        "engine_mode": "Remote",
        "remote_url": "http://render-box:8000",
        "remote_token": "t",
        "prompt": "a cabin",
    }


def answered(at, text: str):
    """The app as it is after the browser's answer: its draft already in the component's value."""
    at.session_state[draft.COMPONENT_KEY] = {"draft": text}
    return at


def test_a_reload_restores_the_draft_into_the_studio_and_ignores_what_is_not_valid(app_env):
    engine = {"engine_mode": "Remote", "remote_url": app_env.url} if app_env.remote else {"engine_mode": "Local"}
    fields = {**engine, "prompt": "a timber cabin at dusk", "steps": 4, "aspect": "16:9", "size": 256,
              "guidance": 1e9, "scheduler": "bogus", "remote_token": "stolen", "unknown": 1}  # fmt: skip
    canvas = {"drawing": HOUSE, "size": [448, 336], "png": house_png()}
    at = ok(answered(app_env.app(), stored(fields, canvas=canvas, renders=3)).run())
    assert at.text_area(key="prompt").value == "a timber cabin at dusk"
    assert at.slider(key="steps").value == 4 and at.slider(key="guidance").value == DEFAULTS["guidance"]
    assert at.selectbox(key="scheduler").value == DEFAULTS["scheduler"]
    assert at.session_state["aspect"] == "16:9" and at.session_state["canvas_rev"] == 1
    assert at.session_state["canvas_initial"]["objects"][0]["type"] == "Path"
    assert "(the words alone too)" not in texts(at)  # the drawing is the sketch again, not only on the canvas
    assert at.session_state["remote_token"] != "stolen"
    [toast] = [t.value for t in at.toast]
    assert toast.startswith("Restored your unsaved sketch and settings from this browser.")
    assert "The 3 renders you had made are in the History." in toast
    assert ("The Remote token is not kept" in toast) == app_env.remote
    at = ok(at.run())
    assert not at.toast and at.text_area(key="prompt").value == "a timber cabin at dusk"  # said once, kept


def test_a_tampered_draft_leaves_the_studio_as_it_was(app_env):
    at = app_env.app()
    fields = {"steps": "many", "size": [1], "aspect": "21:9", "control": None, "engine_mode": "Mars"}
    at = ok(answered(at, stored(fields, canvas={"drawing": {"objects": [{"type": "Image"}]}})).run())
    assert not at.toast and at.slider(key="steps").value == DEFAULTS["steps"]
    assert at.session_state["engine_mode"] == ("Remote" if app_env.remote else "Local")
    assert "canvas_initial" not in at.session_state or not at.session_state["canvas_initial"]
