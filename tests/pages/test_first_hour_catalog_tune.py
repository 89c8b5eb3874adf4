"""A newcomer's first hour on Catalog and Tune retrieval (issue 29, items 2, 3 and 14), in both modes: the Catalog's
defaults work offline and never report a failed preview as ready; Tune refuses data it cannot measure and never
offers a failed adapter for use."""

from __future__ import annotations

import time

import pytest

from engine.errors import BadInput
from engine.tune.bench import make_shapes
from engine.tune.data import prepare
from tests.pages.conftest import ok, settle


# ---- Tune retrieval ------------------------------------------------------------------------------------------------
def tune_page(app_env):
    at = app_env.app().run()
    at.switch_page("pages/tune.py").run()
    return ok(at)


def test_too_few_library_pairs_are_refused_at_prepare_with_the_count(app_env):
    styles = len(app_env.engine.styles.list(include_hidden=True))
    at = tune_page(app_env)
    assert any(f"{styles} styles" in c.value and "at least 17 pairs" in c.value for c in at.caption)
    at.text_input(key="tune_data_name").set_value("styles").run()
    next(b for b in at.button if b.label == "Prepare data").click().run()
    settle(at, "tune_data_job")
    assert not at.exception and not at.success  # no "Prepared …"
    (error,) = [e.value for e in at.error]
    assert error.startswith(f"{styles} usable pairs are too few: recall is measured on held-out pairs"), error
    assert f"at least 17 pairs ({17 - styles} more)" in error and "add styles" in error and "\n" not in error
    assert app_env.engine.tuning.datasets() == []


def test_a_failed_training_leaves_no_use_button(app_env, tmp_path):
    """An adapter whose recall could not be measured (a data set prepared before the refusal: no test pairs) is
    listed as failed, with its reason, and without Use; the engine refuses to switch to it too."""
    engine = app_env.engine
    captions = make_shapes(tmp_path / "shapes", per_class=2)  # 18 pairs, none held out for test
    prepare(engine.data_dir / "runs" / "tune" / "data" / "old", images=tmp_path / "shapes", captions=captions,
            fractions=(0.9, 0.1, 0.0))  # fmt: skip
    with pytest.raises(BadInput, match="'old' holds 0 test pair"):  # refused now, before any training
        engine.tuning.train("old", "old-zero", "zero_shot")
    payload = {"dataset": "old", "run": "old-zero", "scenario": "zero_shot", "epochs": 1, "batch_size": 8,
               "lr": 1e-3}  # fmt: skip
    job = engine.jobs.submit("tune-train", payload, title="train old-zero")  # as an older engine started it
    deadline = time.time() + 120
    while not (job := engine.jobs.wait(job.id, 5)).done and time.time() < deadline:
        pass
    assert job.state == "failed" and "recall needs at least 2" in job.error
    (adapter,) = engine.tuning.adapters()
    assert not adapter["usable"] and "recall needs at least 2" in adapter["failed"]
    with pytest.raises(BadInput, match="has no recall scores"):
        engine.tuning.use("old-zero")

    at = tune_page(app_env)
    assert not [b for b in at.button if b.label == "Use"]
    assert any(c.value.startswith("Failed: the test split holds 0 sample") for c in at.caption)


# ---- Catalog ---------------------------------------------------------------------------------------------------------
ENGLISH = (
    b"SKU,Name,Description\nS-1,Lamp,A brass desk lamp with a green shade\nS-2,Chair,A walnut chair with a linen seat\n"
)
GERMAN = "Artikelnummer;Beschreibung\nK-1;Rotes T-Shirt aus Baumwolle mit Rundhals\nK-2;Weiße Sneaker\n".encode()


def preview(at):
    at.button(key="cat_preview_btn").click().run()
    (status,) = at.status
    return status


def preview_table(at):
    return next((d.value for d in at.dataframe if "prompt" in d.value.columns), None)


def test_catalog_defaults_work_offline_and_a_failed_preview_is_never_ready(app_env):
    at = app_env.app().run()
    at.switch_page("pages/catalog.py").run()
    at.file_uploader(key="cat_sheet").set_value(("items.csv", ENGLISH, "text/csv")).run()
    ok(at)
    # the tiny profile has no real LLM: English (guessed) and the description, with the reason in one caption
    assert (at.selectbox(key="cat_lang").value, at.segmented_control(key="cat_llm").value) == ("en", "none")
    assert any("tiny profile, whose local LLM has random weights" in c.value for c in at.caption)
    at.number_input(key="cat_steps").set_value(2).run()

    status = preview(ok(at))
    assert status.icon == ":material/check:" and status.label.startswith("Preview of the first 2 rows ready")
    table = preview_table(ok(at))
    assert list(table.columns) == ["id", "translation", "product_type", "prompt", "error"]  # no sheet row numbers
    assert "brass desk lamp" in table["prompt"][0] and not at.main.warning

    at.number_input(key="cat_steps").set_value(3).run()  # a setting the preview was made with changed
    assert preview_table(ok(at)) is None

    at.segmented_control(key="cat_llm").set_value("local").run()  # the tiny LLM answers noise: every row fails
    status = preview(ok(at))
    assert status.icon == ":material/error:" and "ready" not in status.label, status.label
    (warning,) = [w.value.replace("\\", "") for w in at.main.warning]  # the reason is shown as literal Markdown
    assert warning.startswith("All 2 preview rows failed; the first: row 2: no JSON object"), warning
    assert list(preview_table(at)["error"].str.startswith("row ")) == [True, True]

    at.file_uploader(key="cat_sheet").set_value(("produkte.csv", GERMAN, "text/csv")).run()
    assert at.selectbox(key="cat_lang").value == "de" and preview_table(ok(at)) is None and not at.main.warning
