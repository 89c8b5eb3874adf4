"""Each page as a user meets it, through Streamlit's AppTest on the tiny profile, in Local and in Remote mode."""

from __future__ import annotations

import io

import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, line_sketch, png
from tests.pages.conftest import ok, settle, texts

APP = str(REPO / "app.py")


def studio(app_env, **fields) -> AppTest:
    at = app_env.app().run()
    for key, value in fields.items():
        at.session_state[key] = value
    return ok(at.run())


def generate(at: AppTest) -> AppTest:
    """Click Generate, then redraw until the render is on the page."""
    return settle(next(b for b in at.button if b.label == "Generate").click().run())


def test_pages_navigate_and_the_tiny_profile_is_flagged(app_env):
    at = app_env.app().run()
    assert not at.exception
    assert at.title[0].value == "Studio"
    assert any("Tiny profile" in w.value for w in at.sidebar.warning)
    for page, title in (("pages/styles.py", "Style library"), ("pages/history.py", "History")):
        at.switch_page(page).run()
        assert not at.exception and at.title[0].value == title
    shown = texts(at.switch_page("pages/styles.py").run())
    assert "**Cyberpunk neon**" in shown and "**Terrazzo**" in shown


def test_a_generation_fills_the_three_result_columns(app_env):
    at = studio(
        app_env,
        sketch_override=png(line_sketch()),
        prompt="a timber cabin at dusk",
        steps=2,
        size=256,
        seed_locked=True,
        seed=9,
    )
    assert at.segmented_control(key="style_mode").value == "Auto"
    assert len([c for c in at.checkbox if c.key.startswith("use_")]) == 3  # the top 3 retrieved styles
    at = ok(generate(at))
    shown = texts(at)
    for column in ("**Sketch**", "**Style**", "**Latest render**"):
        assert column in shown
    assert "seed 9" in shown and "similarity" in shown
    assert at.session_state["result"].metadata["edge_mode"] == "lines"
    assert [b.label for b in at.button if b.key and b.key.startswith("vary_")] == ["Vary"]
    assert at.session_state["result"].images()[0].size == (384, 256)


def test_text_only_generation_and_two_variations(app_env):
    at = generate(studio(app_env, prompt="a teal armchair", steps=2, size=256, variations=2, style_mode="None"))
    assert not at.error
    shown = texts(at)
    assert "text only" in shown and "no style reference" in shown
    assert len([b for b in at.button if b.key and b.key.startswith("vary_")]) == 2


def test_vary_keeps_the_settings_with_a_new_seed(app_env):
    fields = {"prompt": "a brass lamp", "steps": 2, "size": 256, "seed_locked": True, "seed": 5, "style_mode": "None"}
    at = generate(studio(app_env, **fields))
    first = at.session_state["result"]
    ok(settle(next(b for b in at.button if b.key and b.key.startswith("vary_")).click().run()))
    second = at.session_state["result"]
    assert second.seeds != first.seeds
    assert second.metadata["params"] == first.metadata["params"]


def test_styles_add_search_hide_and_remove(app_env):
    at = app_env.app().run()
    at.switch_page("pages/styles.py").run()
    red, blue = png(Image.new("RGB", (64, 64), (200, 30, 30))), png(Image.new("RGB", (64, 64), (30, 30, 200)))
    at.file_uploader[0].set_value([("red.png", red, "image/png"), ("blue.png", blue, "image/png")]).run()
    at.text_input(key="new_style_name").input("Signal").run()
    at.text_input(key="new_style_tags").input("bold, flat").run()
    next(b for b in at.button if b.label == "Add to library").click().run()
    assert any("Added “Signal 1”, “Signal 2”." in s.value for s in at.success)
    shown = texts(at)
    assert "**Signal 1**" in shown and "**Signal 2**" in shown and "#bold #flat" in shown
    assert at.text_input(key="new_style_name").value == ""  # the form is ready for the next one

    at.text_input(key="style_query").input("neon night city").run()
    shown = sorted(m.value for m in at.markdown if m.value.startswith("**"))
    expected = app_env.engine.styles.search(text="neon night city", k=8)  # the Studio's own retrieval
    assert shown == sorted(f"**{h.name}** · {h.score:.2f}" for h in expected)

    at.text_input(key="style_query").input("").run()
    for _ in range(2):
        next(b for b in at.button if b.label == "Remove").click().run()
    assert "**Signal 1**" not in texts(at) and "**Signal 2**" not in texts(at)
    hide = next(b for b in at.button if b.label == "Hide")
    hidden_key = hide.key
    hide.click().run()
    assert len([b for b in at.button if b.label == "Hide"]) == 11
    at.toggle(key="show_hidden").set_value(True).run()
    assert any(b.label == "Unhide" and b.key == hidden_key for b in at.button)


def test_a_bad_style_upload_is_one_error_line(app_env):
    at = app_env.app().run()
    at.switch_page("pages/styles.py").run()
    at.file_uploader[0].set_value(("notes.png", b"shopping list", "image/png")).run()
    at.text_input(key="new_style_name").input("Notes").run()
    next(b for b in at.button if b.label == "Add to library").click().run()
    assert [e.value for e in at.error] == [
        "notes.png: style image is not an image (PNG, JPEG, WebP, GIF, BMP or TIFF expected)"
    ]
    assert not at.exception


def test_history_lists_the_run_and_restore_fills_the_studio(app_env):
    sketch = png(line_sketch())
    at = generate(
        studio(
            app_env,
            sketch_override=sketch,
            prompt="a glass pavilion",
            negative="people",
            steps=3,
            size=256,
            seed_locked=True,
            seed=77,
            structure=1.1,
            style_mode="From library",
            library_style="Blueprint",
        )
    )
    # the user moves on: new words, another sketch source
    at.session_state["prompt"] = "something else"
    at.session_state["sketch_override"] = None
    at.switch_page("pages/history.py").run()
    assert "**a glass pavilion**" in texts(at)
    assert "Blueprint · seed 77" in texts(at)
    next(b for b in at.button if b.label == "Restore").click().run()
    assert at.title[0].value == "Studio"
    s = at.session_state
    assert (s["prompt"], s["negative"], s["steps"], s["seed"], s["seed_locked"]) == (
        "a glass pavilion",
        "people",
        3,
        77,
        True,
    )
    assert s["structure"] == 1.1 and s["style_mode"] == "From library" and s["library_style"] == "Blueprint"
    assert s["sketch_override"] == png(Image.open(io.BytesIO(sketch)).convert("RGB"))
    ok(at.run())


def test_history_search_by_meaning(app_env):
    at = generate(studio(app_env, prompt="a red chair", steps=2, size=256, style_mode="None"))
    at.switch_page("pages/history.py").run()
    at.text_input(key="history_query").input("red chair").run()
    assert any("similarity" in c.value for c in at.caption)
    at.text_input(key="history_query").input("").run()
    next(b for b in at.button if b.label == "More like this").click().run()
    assert any("similarity 1.00" in c.value for c in at.caption)


def test_a_bad_upload_shows_one_error_and_the_page_still_works(app_env):
    at = studio(app_env, source="Upload", prompt="a chair", steps=2, size=256)
    at.file_uploader(key="upload").set_value(("sketch.png", png(line_sketch())[:300], "image/png")).run()
    assert not at.exception
    assert any("is truncated or corrupt" in e.value for e in at.error)  # the edge preview says so at once
    at = generate(at)
    assert not at.exception
    assert any(e.value.startswith("sketch is truncated or corrupt") for e in at.error)
    assert at.session_state["prompt"] == "a chair"  # nothing typed is lost
    at.file_uploader(key="upload").set_value(("sketch.png", png(line_sketch()), "image/png")).run()
    at = generate(at)
    assert "**Latest render**" in texts(at) and not at.error


def test_two_sessions_generating_at_once_both_get_their_images(app_env):
    a = studio(app_env, prompt="first session", steps=3, size=256, style_mode="None")
    b = studio(app_env, prompt="second session", steps=3, size=256, style_mode="None")
    next(x for x in a.button if x.label == "Generate").click().run()
    next(x for x in b.button if x.label == "Generate").click().run()
    for at in (a, b):
        ok(settle(at))
    assert a.session_state["result"].metadata["prompt"] == "first session"
    assert b.session_state["result"].metadata["prompt"] == "second session"


def test_missing_weights_show_the_models_page_with_the_fix(tmp_path, monkeypatch):
    """Local mode only: a remote engine has its weights on its own machine (tests/pages/test_doctor_page.py: the
    page itself)."""
    monkeypatch.setenv("DESIGN_STUDIO_PROFILE", "default")
    monkeypatch.setenv("DESIGN_STUDIO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    st.cache_resource.clear()
    assert not at.exception and not at.error
    assert "not on this machine yet" in at.warning[0].value
    assert "openai/clip-vit-base-patch32" in list(at.dataframe[0].value["Id"])
    said = " ".join(c.value for c in at.caption)
    assert "DESIGN_STUDIO_PROFILE=tiny make run" in said and "--profile" not in said  # the app's own words


def test_cancel_stops_the_run_and_says_so(app_env):
    at = studio(app_env, prompt="a long render", steps=60, size=256, style_mode="None")
    next(b for b in at.button if b.label == "Generate").click().run()
    next(b for b in at.button if b.label == "Cancel").click().run()
    settle(at)
    assert not at.exception
    assert any(e.value.startswith("cancelled after") and "of 60 steps" in e.value for e in at.error)
    assert "result" not in at.session_state or at.session_state["result"] is None
    assert next(b for b in at.button if b.label == "Generate").disabled is False


def test_use_as_sketch_feeds_the_render_back_as_the_next_sketch(app_env):
    at = generate(studio(app_env, prompt="a stool", steps=2, size=256, style_mode="None"))
    next(b for b in at.button if b.label == "As sketch").click().run()
    assert at.session_state["sketch_override"][:8] == b"\x89PNG\r\n\x1a\n"
    assert at.session_state["edge_mode"] == "lines"
    assert any(b.label == "Remove the picture" for b in at.button)  # drawn over on the canvas, or removed


def test_no_page_sets_a_rerun_timer_with_or_without_a_job(app_env, monkeypatch):
    """An open page costs nothing while nothing runs, and a running job is followed without reruns: no page ever
    asks the browser to rerun it on a timer (the old progress panels did, twice a second, on every Studio, Sweeps
    and Catalog tab, which starved renders on a small machine)."""
    from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

    timers: list[float] = []
    enqueue = ForwardMsgQueue.enqueue

    def spy(self, msg):
        if msg.WhichOneof("type") == "auto_rerun":
            timers.append(msg.auto_rerun.interval)
        return enqueue(self, msg)

    monkeypatch.setattr(ForwardMsgQueue, "enqueue", spy)
    at = app_env.app().run()
    for page in ("pages/sweeps.py", "pages/catalog.py", "pages/tune.py", "pages/arena.py", "pages/studio.py"):
        at.switch_page(page).run()
        assert not at.exception, page
    assert timers == []

    at = studio(app_env, prompt="a long render", steps=40, size=256, style_mode="None")
    next(b for b in at.button if b.label == "Generate").click().run()
    assert "job" in at.session_state and any(b.label == "Cancel" for b in at.button)
    assert not at.exception and timers == []
    ok(settle(at))
    assert "result" in at.session_state and timers == []


def test_progress_reads_step_time_and_a_sane_eta():
    from engine.schema import Progress
    from ui.jobs import timing

    assert Progress("denoise", 0, 20, 0.0).eta is None
    assert Progress("denoise", 20, 20, 9.0).eta == 0  # finished: nothing left
    assert Progress("denoise", 4, 20, 8.0).eta == 32.0  # 2 s a step, 16 steps to go
    assert Progress("denoise", 4, 20, 8.0, seconds_per_step=0.5).eta == 8.0  # the producer's own rate wins
    assert timing(Progress("rows", 3, 10, 12.4)) == " · 12s · about 29s left"
    assert timing(Progress("rows", 1, 10, 5.0)) == " · 5s"  # the first row also paid the set-up: no estimate yet


def test_a_prompt_with_markdown_in_it_reads_as_typed_in_the_history(app_env):
    """A team shares one engine: a prompt is shown to others, so its Markdown (an image from a stranger's server,
    a link, a colour directive) must stay text."""
    prompt = "![pixel](http://127.0.0.1:9/track.png) :red[loud] a chair"
    at = ok(generate(studio(app_env, sketch_override=png(line_sketch()), prompt=prompt, steps=2, size=64)))
    at.switch_page("pages/history.py").run()
    ok(at)
    shown = [m.value for m in at.markdown if "chair" in m.value]
    assert shown, texts(at)
    assert all("![pixel](" not in m and ":red[" not in m for m in shown), shown
    assert r"\!\[pixel\]\(http\://127\.0\.0\.1\:9/track\.png\) \:red\[loud\] a chair" in shown[0]
