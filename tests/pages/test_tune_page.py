"""The Tune retrieval page through AppTest: prepare pairs, train, read the recall table, switch and back."""

from __future__ import annotations

import io
import zipfile

from streamlit.testing.v1 import AppTest

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


def test_prepare_train_measure_and_switch(app_env, tmp_path):
    captions = make_shapes(tmp_path / "shapes", per_class=6)
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
    assert any("Prepared **shapes**: 54 pairs" in s.value for s in at.success)

    at.number_input(key="tune_epochs").set_value(2)
    at.number_input(key="tune_batch").set_value(8)
    at.select_slider(key="tune_lr").set_value(5e-3)
    at.text_input(key="tune_run_name").set_value("shapes-dual").run()
    next(b for b in at.button if b.label == "Start training").click().run()
    at = wait(at, "tune_train_job")
    table = at.dataframe[0].value
    assert list(table["adapter"]) == ["shapes-dual"] and "→" in table["text→image R@1"][0]

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
    assert "base CLIP  vs  tuned: shapes-dual" in at.selectbox(key="arena_contest").format_func(
        at.selectbox(key="arena_contest").value
    )
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
