"""The Catalog page through AppTest: a sheet in, columns mapped, prompts previewed, a run to its results."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from engine.catalog.sheets import read_sheet
from tests.engine.test_catalog_run import FakeLLM
from tests.pages.conftest import ok, settle

CSV = (
    "Artikelnummer;Beschreibung;Kategorie\n"
    "K-1;Rotes Baumwoll-T-Shirt mit Rundhalsausschnitt;Oberteile\n"
    "K-2;;Hosen\n"
    "K-3;Weiße Sneaker aus Wildleder;Schuhe\n"
).encode()


@pytest.fixture
def llm():
    server = FakeLLM()
    yield server
    server.close()


def catalog(app_env, sheet: tuple[str, bytes, str]) -> AppTest:
    at = app_env.app().run()
    at.switch_page("pages/catalog.py").run()
    at.file_uploader(key="cat_sheet").set_value(sheet).run()
    return at


def mapping(at: AppTest) -> dict[str, str]:
    """The column dropdowns as the page shows them."""
    labels = ("Description column", "Id column", "Name column", "Category column")
    return {s.label: s.value for s in at.selectbox if s.label in labels}


def test_a_sheet_is_mapped_previewed_and_run_to_its_results(app_env, llm):
    at = catalog(app_env, ("produkte.csv", CSV, "text/csv"))
    assert not at.exception
    shown = mapping(at)
    assert shown["Description column"] == "Beschreibung" and shown["Id column"] == "Artikelnummer"
    assert "3 rows · 1 will be reported as failed" in [c.value for c in at.caption]
    assert [w.value for w in at.main.warning] == ["row 3: the description ('Beschreibung') is empty"]

    at.segmented_control(key="cat_llm").set_value("server").run()
    at.text_input(key="cat_llm_url").input(llm.url).run()
    at.number_input(key="cat_steps").set_value(2).run()
    at.selectbox(key="cat_size").select(256).run()
    at.button(key="cat_preview_btn").click().run()
    preview = next(d.value for d in at.dataframe if "prompt" in d.value.columns)
    assert list(preview["id"]) == ["K-1", "K-2", "K-3"]
    assert preview["prompt"][0].startswith("Professional product photography of a garment")
    assert not (app_env.data / "runs" / "catalog").exists()  # a preview writes nothing

    at.button(key="cat_start").click().run()
    ok(settle(at, "cat_job"))
    shown = {m.label: m.value for m in at.tabs[0].get("metric")}  # under the new run
    assert (shown["Rows"], shown["Rendered"], shown["Failed"]) == ("3", "2", "1")
    assert {m.label: m.value for m in at.tabs[1].get("metric")} == shown  # and in the Runs tab
    assert len(at.tabs[0].get("image")) == 2  # the two renders under the run (the Runs tab lists it too)
    assert {"results.csv", "results.xlsx", "report.md"} <= {d.proto.label for d in at.get("download_button")}
    next(b for b in at.button if b.label == "Open in the Dashboard").click().run()
    assert at.title[0].value == "Dashboard" and at.metric[0].value == "2"


def test_a_broken_sheet_is_one_error_line(app_env):
    at = catalog(app_env, ("produkte.xlsx", b"PK\x03\x04 not a workbook", "application/octet-stream"))
    assert len(at.error) == 1 and "produkte.xlsx is not a readable .xlsx file" in at.error[0].value
    assert not at.exception


def test_a_server_without_url_is_refused_in_one_line(app_env):
    at = catalog(app_env, ("produkte.csv", CSV, "text/csv"))
    at.segmented_control(key="cat_llm").set_value("server").run()
    at.button(key="cat_start").click().run()
    assert [e.value for e in at.error] == ["an LLM server needs its URL (e.g. http://127.0.0.1:1234/v1)"]


SECOND = b"SKU,Name,Description\nS-1,Lamp,A brass desk lamp with a green shade\nS-2,Chair,\n"


def test_the_mapping_shown_is_the_one_previewed_run_and_recorded(app_env):
    """Two different sheets in a row, Preview and Start clicked at once: what the dropdowns show is what the
    preview, the run and its run.json use (a new sheet never keeps the old sheet's mapping)."""
    at = catalog(app_env, ("produkte.csv", CSV, "text/csv"))
    at.segmented_control(key="cat_llm").set_value("none").run()
    at.selectbox(key="cat_lang").select("en")  # the description as it is (the tiny translator writes noise)
    at.number_input(key="cat_steps").set_value(1)
    at.selectbox(key="cat_size").select(256).run()
    at.file_uploader(key="cat_sheet").set_value(("items.csv", SECOND, "text/csv")).run()
    assert mapping(at) == {"Description column": "Description", "Id column": "SKU", "Name column": "Name",
                           "Category column": "—"}  # fmt: skip
    assert [w.value for w in at.main.warning] == ["row 3: the description ('Description') is empty"]
    at.button(key="cat_preview_btn").click()
    at.button(key="cat_start").click().run()
    ok(settle(at, "cat_job"))
    preview = next(d.value for d in at.dataframe if "prompt" in d.value.columns)
    assert list(preview["id"]) == ["S-1", "S-2"] and "brass desk lamp" in preview["prompt"][0]
    (run,) = app_env.engine.catalog.runs()
    assert (run["options"]["text_column"], run["options"]["id_column"]) == ("Description", "SKU")
    results = app_env.engine.catalog.run(run["run"])["results"]
    assert [(r["id"], r["status"]) for r in results] == [("S-1", "done"), ("S-2", "failed")]
    assert "brass desk lamp" in results[0]["prompt"]


def test_the_sheet_is_read_by_the_engine_once_per_mapping(app_env, monkeypatch):
    """The page learns about the sheet from `catalog.inspect` only, and keeps its answer: a rerun, or a mapping
    picked again, does not upload the sheet again."""
    import engine.services.catalog as service

    reads = []
    monkeypatch.setattr(service, "read_sheet", lambda data, name: reads.append(name) or read_sheet(data, name))
    at = catalog(app_env, ("produkte.csv", CSV, "text/csv"))
    assert reads == ["produkte.csv"]  # the guess is the mapping the dropdowns start from: one answer for both
    at.run()
    at.number_input(key="cat_seed").set_value(7).run()
    assert reads == ["produkte.csv"]
    shown = mapping(at)
    at.selectbox(key=next(k for k in at.session_state if k.startswith("cat_category_"))).select("—").run()
    assert len(reads) == 2 and "3 rows · 1 will be reported as failed" in [c.value for c in at.caption]
    at.selectbox(key=next(k for k in at.session_state if k.startswith("cat_category_"))).select("Kategorie").run()
    assert len(reads) == 2 and mapping(at) == shown


def test_a_sheet_without_a_guessable_description_column_offers_its_last_one(app_env):
    at = ok(catalog(app_env, ("preise.csv", b"sku;Notiz\nA-1;ein Stuhl aus Eiche\n", "text/csv")))
    assert mapping(at) == {"Description column": "Notiz", "Id column": "sku", "Name column": "—",
                           "Category column": "—"}  # fmt: skip
    assert "1 rows" in [c.value for c in at.caption]
