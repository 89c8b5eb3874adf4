"""The Tune retrieval page through AppTest: prepare pairs, train, read the recall table and whether the adapter
changed recall, switch and back."""

from __future__ import annotations

import io
import zipfile

from streamlit.testing.v1 import AppTest

from engine.tune import DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_MIN_STEPS
from engine.tune.bench import make_shapes
from tests.pages.conftest import ok, settle


def wait(at: AppTest, key: str) -> AppTest:
    return ok(settle(at, key, timeout=300))


def zipped(folder) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path in sorted(folder.rglob("*.png")):
            z.write(path, path.relative_to(folder).as_posix())
    return buf.getvalue()


def prepared(app_env, tmp_path, per_class: int) -> AppTest:
    """The Tune page with `per_class` images of each of the 9 colour × shape classes prepared as 'shapes'."""
    captions = make_shapes(tmp_path / "shapes", per_class=per_class)
    at = app_env.app().run()
    at.switch_page("pages/tune.py").run()
    assert not at.exception and at.title[0].value == "Tune retrieval"
    assert "Retrieval: **base CLIP**" in [c.value for c in at.sidebar.caption]

    at.segmented_control(key="tune_source").set_value("upload").run()
    at.file_uploader(key="tune_images").set_value(("shapes.zip", zipped(tmp_path / "shapes"), "application/zip"))
    at.file_uploader(key="tune_captions").set_value(("captions.csv", captions.read_bytes(), "text/csv"))
    at.text_input(key="tune_data_name").set_value("shapes").run()
    next(b for b in at.button if b.label == "Prepare data").click().run()
    at = wait(at, "tune_data_job")
    assert any(f"Prepared **shapes**: {9 * per_class} pairs" in s.value for s in at.success)
    return at


def said(at: AppTest, adapter: str) -> list[tuple[str, str]]:
    """(success | warning, text) of the lines saying whether `adapter` changed recall."""
    lines = [("success", s.value) for s in at.success] + [("warning", w.value) for w in at.warning]
    lines = [(kind, text.replace("\\", "")) for kind, text in lines]  # the name is shown as literal Markdown
    return [(kind, text) for kind, text in lines if text.startswith(f"**{adapter}**: ")]


def test_prepare_train_measure_and_switch(app_env, tmp_path):
    at = prepared(app_env, tmp_path, per_class=6)
    # the form starts at the engine's defaults, and says how many steps a run trains at least
    assert at.number_input(key="tune_epochs").value == DEFAULT_EPOCHS == 5
    assert at.select_slider(key="tune_lr").value == DEFAULT_LR == 1e-3
    assert any(c.value.startswith(f"At least {DEFAULT_MIN_STEPS} optimizer steps") for c in at.caption)

    at.number_input(key="tune_epochs").set_value(2)
    at.number_input(key="tune_batch").set_value(8)
    at.select_slider(key="tune_lr").set_value(5e-3)
    at.text_input(key="tune_run_name").set_value("shapes-dual").run()
    next(b for b in at.button if b.label == "Start training").click().run()
    at = wait(at, "tune_train_job")
    table = at.dataframe[0].value
    assert list(table["adapter"]) == ["shapes-dual"] and "→" in table["text→image R@1"][0]
    # 43 training pairs at batch 8 make 5 steps an epoch: the 2 epochs asked for become 20, for 100 steps
    notes = [c.value for c in at.caption if c.value.startswith("Trained ")]
    assert len(notes) == 1 and notes[0].startswith(
        "Trained 100 steps in 20 epochs (raised from 2: the minimum of 100 steps with 43 training pairs"
    ), notes
    ((kind, line),) = said(at, "shapes-dual")
    assert ("raised text→image recall@1" in line) == (kind == "success") and "--" not in line, line

    next(b for b in at.button if b.label == "Use").click().run()
    at = wait(at, "tune_use_job").run()
    assert "Retrieval: **tuned: shapes-dual (dual_lora)**" in [c.value for c in at.sidebar.caption]
    next(b for b in at.button if b.label == "Back to the base CLIP").click().run()
    at = wait(at, "tune_use_job").run()
    assert "Retrieval: **base CLIP**" in [c.value for c in at.sidebar.caption]

    # the Arena compares the two blind: each side is a model's top 4 styles for the same words
    at.switch_page("pages/arena.py").run()
    at.segmented_control(key="arena_mode").set_value("Retrieval: base vs tuned").run()
    at.text_area(key="arena_queries").set_value("walnut wood\nneon city").run()
    at.button(key="arena_retrieval_start").click().run()
    assert not at.error, [e.value for e in at.error]
    picker = next(s for s in at.selectbox if s.label == "Comparison")
    assert "base CLIP  vs  tuned: shapes-dual" in picker.format_func(picker.value)
    assert len(at.get("image")) == 8
    assert any(m.value in ("**walnut wood**", "**neon city**") for m in at.markdown)  # the query, not the model
    at.button(key="vote_left").click().run()
    at.button(key="vote_right").click().run()
    assert any("All 2 pairs voted" in s.value for s in at.success)


def test_missing_or_broken_uploads_are_one_error_line(app_env, tmp_path):
    at = app_env.app().run()
    at.switch_page("pages/tune.py").run()
    at.segmented_control(key="tune_source").set_value("upload").run()
    next(b for b in at.button if b.label == "Prepare data").click().run()
    assert [e.value for e in at.error] == ["give a .zip of the images and the captions CSV (file, caption[, label])"]
    at.file_uploader(key="tune_images").set_value(("x.zip", b"not a zip at all", "application/zip"))
    at.file_uploader(key="tune_captions").set_value(("c.csv", b"file,caption\nnowhere.png,a thing\n", "text/csv"))
    at.run()
    next(b for b in at.button if b.label == "Prepare data").click().run()
    settle(at, "tune_data_job")
    assert len(at.error) == 1 and "\n" not in at.error[0].value and not at.exception


def test_an_adapter_that_does_not_change_recall_is_a_warning(app_env, tmp_path):
    at = prepared(app_env, tmp_path, per_class=2)
    at.selectbox(key="tune_scenario").set_value("zero_shot")
    at.text_input(key="tune_run_name").set_value("shapes-base").run()
    next(b for b in at.button if b.label == "Start training").click().run()
    at = wait(at, "tune_train_job")
    ((kind, line),) = said(at, "shapes-base")
    assert kind == "warning" and line.startswith("**shapes-base**: zero_shot trains nothing: text→image recall@1")
    assert "\n" not in line
