"""The Studio's Upscale buttons (issue 32), in Local and in Remote mode: under every render, a job with its progress,
and the upscaled render shown large and added to the gallery, linked to its source."""

from __future__ import annotations

from tests.pages.conftest import ok, settle, texts
from tests.pages.test_app import generate, studio

QUICK = {"steps": 1, "size": 256, "seed_locked": True}


def test_upscale_under_a_render_shows_the_upscaled_render(app_env):
    at = ok(generate(studio(app_env, prompt="a copper kettle", style_mode="None", seed=9, **QUICK)))
    source = at.session_state["result"]
    buttons = [b for b in at.button if b.label == "Upscale ×2"]
    assert len(buttons) == 1 and [b for b in at.button if b.label == "Upscale ×4"]
    at = ok(settle(buttons[0].click().run(), "upscale_job"))
    made = at.session_state["result"]
    w, h = source.images()[0].size
    assert made.run_id != source.run_id and made.images()[0].size == (2 * w, 2 * h)
    assert made.metadata["upscale"]["source"] == {"run_id": source.run_id, "index": 0}
    assert [e["result"].run_id for e in at.session_state["gallery"]] == [made.run_id, source.run_id]
    assert "upscaled ×2" in texts(at) and f"{2 * w}×{2 * h}" in texts(at)
    kept = app_env.engine.history.get(made.run_id)  # on the engine (the server's in Remote mode)
    assert kept.metadata["upscale"]["factor"] == 2 and kept.metadata["width"] == 2 * w
    # every render has the buttons, the upscaled one too
    assert len([b for b in at.button if b.label == "Upscale ×4"]) == 2


def test_an_upscale_the_engine_refuses_is_one_line(app_env):
    at = ok(generate(studio(app_env, prompt="a tin box", style_mode="None", **QUICK)))
    w, h = at.session_state["result"].images()[0].size  # the canvas's 4:3: the long side ×4 is over 1024
    at.session_state["upscale_refine"] = True
    at = [b for b in at.button if b.label == "Upscale ×4"][0].click().run()
    assert not at.exception and "upscale_job" not in at.session_state
    (line,) = [e.value for e in at.error]
    assert line.startswith(f"a refined upscale is rendered again, at most 1024 px a side; {w}×{h} ×4 would be")


def test_upscale_from_the_history(app_env):
    from engine.schema import GenerateRequest

    source = app_env.engine.generate(
        GenerateRequest.build(prompt="a pewter jug", size=64, steps=1, seed=2, use_style=False)
    )
    at = ok(app_env.app().run().switch_page("pages/history.py").run())
    assert "upscaled ×" not in texts(at)
    at = ok(settle(at.button(key=f"upscale4-{source.run_id}").click().run(), "history_upscale_job"))
    (made,) = [r for r in app_env.engine.history.list() if r.metadata.get("upscale")]
    assert made.metadata["width"] == 256 and made.metadata["upscale"]["source"]["run_id"] == source.run_id
    assert "upscaled ×4 from" in texts(at) and "256×256" in texts(at)  # the new run heads the History
