"""Render modes and the live canvas in the Studio, as a designer uses them, in Local and in Remote mode."""

from __future__ import annotations

from PIL import ImageDraw

from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, settle, texts
from tests.pages.test_app import generate, studio


def stroke(n: int) -> bytes:
    """The house sketch with `n` more strokes: what the canvas reports as each stroke ends."""
    img = line_sketch(128, 96)
    d = ImageDraw.Draw(img)
    for i in range(n):
        d.line([(10 + 12 * i, 10), (20 + 12 * i, 40)], "black", 2)
    return png(img)


def test_fast_mode_sets_its_steps_and_renders_with_its_lora(app_env):
    at = studio(app_env, sketch_override=stroke(0), prompt="a timber cabin", size=128, seed_locked=True, seed=4)
    at.segmented_control(key="mode").set_value("fast").run()
    assert (at.session_state["steps"], at.session_state["guidance"], at.session_state["scheduler"]) == (4, 1.0, "lcm")
    at = ok(generate(at))
    meta = at.session_state["result"].metadata
    assert meta["params"]["mode"] == "fast" and meta["params"]["scheduler"] == "lcm"
    assert meta["models"]["lora"].rstrip("/").endswith("lcm-lora-sdv1-5")
    assert "4 steps" in " ".join(c.value for c in at.caption)
    at.segmented_control(key="mode").set_value("quality").run()
    assert (at.session_state["steps"], at.session_state["scheduler"]) == (20, "unipc")


def test_live_renders_each_new_input_once_and_keep_adds_one_quality_render(app_env):
    at = studio(app_env, prompt="a timber cabin", size=512, seed_locked=True, seed=11, sketch_override=stroke(0))
    assert at.session_state["live"] is False and at.session_state.get("live_frame") is None
    at.toggle(key="live").set_value(True).run()
    at = ok(settle(at, "live_job"))
    frame = at.session_state["live_frame"]
    assert frame.metadata["params"]["mode"] == "live" and frame.metadata["seed"] == 11
    assert frame.metadata["models"]["vae"].rstrip("/").endswith("taesd")
    assert frame.metadata["params"]["size"] == 256 == frame.metadata["height"]  # live is small on a CPU
    assert "Live frame" in " ".join(c.value for c in at.caption)
    assert app_env.engine.history.list() == []  # live frames do not flood the History
    first = frame.run_id

    # an unrelated rerun (nothing changed) renders nothing; a stroke renders once
    ok(settle(at.run(), "live_job"))
    assert at.session_state["live_frame"].run_id == first
    at.session_state["sketch_override"] = stroke(1)
    at = ok(settle(at.run(), "live_job"))
    second = at.session_state["live_frame"]
    assert second.run_id != first and second.metadata["seed"] == 11
    live = at.session_state["_live"]
    assert live.rendered == 2 and live.running is None

    # the same input again gives the same pixels (fixed seed): back to the first sketch
    at.session_state["sketch_override"] = stroke(0)
    at = ok(settle(at.run(), "live_job"))
    assert at.session_state["live_frame"].images()[0].tobytes() == frame.images()[0].tobytes()

    # Keep: one quality render of this frame's input, same seed, into the History
    next(b for b in at.button if b.label == "Keep").click().run()
    at = ok(settle(at))
    runs = app_env.engine.history.list()
    assert len(runs) == 1
    kept = at.session_state["result"].metadata
    assert kept["params"]["mode"] == "quality" and kept["seed"] == 11 and kept["params"]["steps"] == 20
    assert kept["params"]["size"] == 512 and kept["prompt"] == "a timber cabin"  # the Studio's size

    # Live off: nothing more renders
    rendered = at.session_state["_live"].rendered
    at.toggle(key="live").set_value(False).run()
    at.session_state["sketch_override"] = stroke(3)
    ok(at.run())
    assert "live_job" not in at.session_state and "_live" not in at.session_state
    assert rendered == 3


def test_live_waits_for_a_prompt_with_one_line(app_env):
    at = studio(app_env, sketch_override=stroke(0))
    at.toggle(key="live").set_value(True).run()
    ok(at)
    assert "Live is waiting: prompt: the prompt is empty" in texts(at)
    assert "live_job" not in at.session_state
