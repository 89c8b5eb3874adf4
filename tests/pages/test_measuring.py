"""The Studio shows a render as soon as its images are kept and its numbers once the engine has measured them, in
Local and in Remote mode; meanwhile History and the Dashboard say the run is not measured yet, never blanks or a
crash."""

from __future__ import annotations

import io
import json
import threading

import pytest
from PIL import Image

from engine.metadata import CHUNK
from tests.conftest import line_sketch, png
from tests.pages.conftest import ok, settle, texts
from tests.pages.test_app import generate, studio

QUICK = {"steps": 1, "size": 256, "seed_locked": True}


@pytest.fixture
def measuring_held(app_env, monkeypatch):
    """The engine's measure jobs wait for the test; each at.run() draws the page once (no following in between),
    as a designer sees it on a slow machine."""
    import ui.jobs

    go = threading.Event()
    jobs = app_env.engine.jobs
    measure = jobs.handlers["measure"]

    def wait_then_measure(payload, ctx):
        go.wait(120)
        return measure(payload, ctx)

    monkeypatch.setitem(jobs.handlers, "measure", wait_then_measure)
    monkeypatch.setattr(ui.jobs, "follow_jobs", lambda every=0: None)
    yield go
    go.set()


def numbers(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("prompt fidelity")]


def test_a_render_shows_at_once_then_its_numbers_once_measured(app_env, measuring_held):
    at = studio(app_env, sketch_override=png(line_sketch()), prompt="a timber cabin", variations=2, **QUICK)
    at = ok(generate(at))
    shown = at.session_state["result"]
    assert len(shown.png) == 2 and not shown.measured and shown.measure_job
    assert [c.value for c in at.caption if c.value == "measuring…"] == ["measuring…"] * 2  # one line per image
    assert numbers(at) == []
    key = f"measure_{shown.run_id}"
    assert at.session_state[key] == shown.measure_job

    # meanwhile History's card and the Dashboard cope with a run without numbers
    at.switch_page("pages/history.py").run()
    assert "not measured yet" in texts(ok(at))
    at.switch_page("pages/dashboard.py").run()
    ok(at)
    at.switch_page("pages/studio.py").run()
    assert "measuring…" in texts(ok(at))

    measuring_held.set()
    at = ok(settle(at, key))
    metrics = app_env.engine.history_store.get(shown.run_id)["metadata"]["metrics"]
    assert metrics[0]["clip_score"] is not None and "measuring…" not in texts(at)

    def fixed(value: float, places: int = 2) -> str:
        return f"{round(value, places) + 0.0:.{places}f}"

    assert numbers(at) == [
        f"prompt fidelity {fixed(m['clip_score'], 1)} · style similarity {fixed(m['style_similarity'])} · "
        f"edge F1 {fixed(m['edge_f1'])}"
        for m in metrics
    ]
    # the page's copy is the measured run: the PNGs it offers for download carry the numbers too
    latest = at.session_state["result"]
    assert latest.measured and latest.metadata["metrics"] == metrics
    with Image.open(io.BytesIO(at.session_state["gallery"][0]["result"].png[1])) as im:
        assert json.loads(im.text[CHUNK])["metrics"] == metrics[1]
    at.switch_page("pages/history.py").run()
    assert "not measured yet" not in texts(ok(at))
