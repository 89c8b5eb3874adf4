"""Catalog runs end to end on the tiny profile, with an OpenAI-compatible LLM served on loopback by the test."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from PIL import Image

from engine.catalog.runner import CatalogOptions, CatalogRun
from engine.errors import BadInput
from engine.metrics import aggregate
from tests.conftest import REPO, make_data_dir, make_engine

SHEET = [
    ["Artikelnummer", "Beschreibung", "Kategorie"],
    ["A-1", "Rotes Baumwoll-T-Shirt mit Rundhalsausschnitt", "Oberteile"],
    ["A-2", "Schwarze Lederjacke für Herren, Größe M", "Jacken"],
    ["A-3", "", "Hosen"],  # the broken row: no description
    ["A-4", "Weiße Sneaker aus Wildleder, bequeme Passform", "Schuhe"],
    ["A-5", "Grüner Strickpullover aus Schurwolle, übergroß", "Oberteile"],
]


class FakeLLM:
    """A small OpenAI-compatible server: answers every chat completion with attributes as JSON, built from
    the words it was sent, after `delay` seconds."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                time.sleep(outer.delay)
                words = body["messages"][-1]["content"].split()
                attrs = {"product_type": f"garment {len(words)}", "key_features": "clean seams",
                         "color_material": "cotton", "design": "minimal"}  # fmt: skip
                reply = {"choices": [{"message": {"role": "assistant", "content": json.dumps(attrs)}}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def llm():
    server = FakeLLM()
    yield server
    server.close()


def renderer(engine):
    """What a catalog run renders with: the engine's pipeline, in its executor's lanes."""
    from engine.services.catalog import Renderer

    return Renderer(engine.core)


def write_sheet(path: Path, rows=SHEET) -> Path:
    book = openpyxl.Workbook()
    for r in rows:
        book.active.append(r)
    book.save(path)
    return path


def options(llm_url: str, **kw) -> CatalogOptions:
    base = {"text_column": "Beschreibung", "id_column": "Artikelnummer", "category_column": "Kategorie",
            "llm_url": llm_url, "steps": 2, "size": 64}  # fmt: skip
    return CatalogOptions.build(**{**base, **kw})


def test_a_sheet_with_umlauts_and_a_broken_row(fresh_engine, llm, tmp_path):
    sheet = write_sheet(tmp_path / "produkte.xlsx")
    run = CatalogRun.from_file(
        renderer(fresh_engine), tmp_path / "run", sheet, options(llm.url), fresh_engine.catalog_models()
    )
    seen = []
    summary = run.run(on_progress=seen.append)

    assert (summary["rows"], summary["done"], summary["failed"], summary["pending"]) == (5, 4, 1, 0)
    assert summary["failures"] == [{"row": 4, "id": "A-3", "error": "row 4: the description ('Beschreibung') is empty"}]
    out = tmp_path / "run"
    table = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [r["id"] for r in table] == ["A-1", "A-2", "A-3", "A-4", "A-5"]
    assert table[1]["description"] == "Schwarze Lederjacke für Herren, Größe M"
    for r in table:
        if r["id"] == "A-3":
            assert r["status"] == "failed" and r["image"] == ""
            continue
        assert r["status"] == "done" and r["method"] == "json" and r["translation"]
        assert r["prompt"].startswith("Professional product photography of a garment")
        with Image.open(out / r["image"]) as im:
            assert im.size == (64, 64)
        item = json.loads((out / "items" / f"{r['id']}.json").read_text())
        assert item["attributes"]["color_material"] == "cotton" and item["seed"] == 42 + int(r["row"]) - 2
    assert [r["seed"] for r in table] == ["42", "43", "44", "45", "46"]
    # the statistics are those of the table's CLIP scores
    scores = [float(r["clip_score"]) for r in table if r["status"] == "done"]
    assert summary["clip_score"] == pytest.approx(aggregate(scores))
    assert summary["clip_model"].endswith("clip-vit-base-patch32")  # the tiny profile's CLIP stands in for ViT-L/14
    report = (out / "report.md").read_text()
    assert "CLIP score (prompt fidelity, 0–100) with clip-vit-base-patch32:" in report and "A-3: row 4" in report
    # a designer reads it: the sheet's name, no engine folders; the run id only in the closing technical note
    assert report.startswith("# Catalog: produkte.xlsx\n") and "images/<id>.png" in report
    assert str(Path(summary["clip_model"]).parent) not in report and str(tmp_path) not in report
    assert report.count(summary["run_id"]) == 1 and report.rstrip().endswith(
        f"Technical note: run {summary['run_id']}."
    )
    xlsx_rows = list(openpyxl.load_workbook(out / "results.xlsx").active.iter_rows(values_only=True))
    assert len(xlsx_rows) == 6 and xlsx_rows[2][5] == "Schwarze Lederjacke für Herren, Größe M"
    assert len(llm.requests) == 4  # the broken row never reached the LLM
    # the run is a batch in the history: the Dashboard shows it as one set
    runs = fresh_engine.history_store.in_batch(summary["run_id"])
    assert len(runs) == 4 and {r["metadata"]["source"] for r in runs} == {"catalog"}
    assert seen[-1].stage == "rows" and seen[-1].step == seen[-1].total == 5


def test_a_finished_run_is_not_rendered_again_and_other_options_are_refused(fresh_engine, llm, tmp_path):
    sheet = write_sheet(tmp_path / "p.xlsx", SHEET[:3])
    models = fresh_engine.catalog_models()
    first = CatalogRun.from_file(renderer(fresh_engine), tmp_path / "run", sheet, options(llm.url), models)
    first.run()
    again = CatalogRun.from_file(renderer(fresh_engine), tmp_path / "run", sheet, options(llm.url), models)
    assert again.pending() == [] and again.run()["done"] == 2
    assert len(llm.requests) == 2 and len(fresh_engine.history_store.in_batch(first.run_id)) == 2
    with pytest.raises(BadInput, match=r"holds a run with other options \(steps\)"):
        CatalogRun.from_file(renderer(fresh_engine), tmp_path / "run", sheet, options(llm.url, steps=3), models).open()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match="is not empty and holds no catalog run"):
        CatalogRun.from_file(renderer(fresh_engine), tmp_path / "other", sheet, options(llm.url), models).open()


def cli(data: Path, sheet: Path, out: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "engine", "catalog", "run", str(sheet), "--out", str(out), "--profile", "tiny",
            "--data-dir", str(data), "--device", "cpu", "--llm", url, "--steps", "2", "--size", "64",
            "--text-column", "Beschreibung", "--id-column", "Artikelnummer"]  # fmt: skip


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_a_killed_run_resumes_to_the_same_outputs_without_duplicates(tmp_path, tiny_models):
    rows = [SHEET[0]] + [[f"B-{i}", f"Produkt Nummer {i} aus Baumwolle, Größe {i}", "X"] for i in range(8)]
    sheet = write_sheet(tmp_path / "gross.xlsx", rows)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    slow = FakeLLM(delay=0.3)
    try:
        # uninterrupted
        data_a = make_data_dir(tmp_path / "data-a", tiny_models, warm=True)
        done = subprocess.run(cli(data_a, sheet, tmp_path / "whole", slow.url), env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        # killed after a few rows, then resumed
        data_b = make_data_dir(tmp_path / "data-b", tiny_models, warm=True)
        out = tmp_path / "resumed"
        proc = subprocess.Popen(cli(data_b, sheet, out, slow.url), env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.time() + 240
        items = data_b / "runs" / "catalog"  # the run's folder on the engine: one file per finished row
        while time.time() < deadline and len(list(items.glob("*/items/*.json"))) < 3:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        written = len(list(items.glob("*/items/*.json")))
        assert 3 <= written < 8, "the kill should land in the middle of the run"
        resumed = subprocess.run(cli(data_b, sheet, out, slow.url), env=env, cwd=REPO,
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
    finally:
        slow.close()

    def table(folder):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader((folder / "results.csv").open())]

    assert table(out) == table(tmp_path / "whole")
    assert all(r["status"] == "done" for r in table(out)) and len(table(out)) == 8
    for r in table(out):
        assert np.array_equal(pixels(out / r["image"]), pixels(tmp_path / "whole" / r["image"]))
    summary = json.loads(resumed.stdout)
    engine = make_engine(data_b)
    refs = [r["metadata"]["ref"] for r in engine.history_store.in_batch(summary["run_id"])]
    assert sorted(refs) == sorted(set(refs)) and len(refs) == 8  # each row rendered once
    assert len(list((out / "images").glob("*.png"))) == 8 and not list(out.rglob(".*.json.*"))


def test_preview_writes_nothing_and_no_llm_uses_the_description(fresh_engine, tmp_path):
    sheet = write_sheet(tmp_path / "p.xlsx", SHEET[:4])
    opts = CatalogOptions.build(text_column="Beschreibung", id_column="Artikelnummer", llm="none", source_lang="en",
                                steps=1, size=64)  # fmt: skip
    run = CatalogRun.from_file(renderer(fresh_engine), tmp_path / "run", sheet, opts, fresh_engine.catalog_models())
    rows = run.preview(3)
    assert not (tmp_path / "run").exists()
    assert rows[0]["prompt"] == (
        "Professional product photography of Rotes Baumwoll-T-Shirt mit Rundhalsausschnitt, placed on clean white "
        "background, studio lighting, 8k, 85mm lens f/2.8"
    )
    assert rows[0]["method"] == "none" and rows[2]["error"].startswith("row 4: the description")
    assert run.run()["done"] == 2


def test_ids_that_clean_to_one_file_name_keep_their_own_rows(fresh_engine, tmp_path):
    """'A/1', 'A_1' and '../A_1' all clean to 'A_1': each row still gets its own item file and image, and reports
    its own prompt, not the last row's."""
    rows = [SHEET[0], ["A/1", "Roter Schal aus Wolle", "X"], ["A_1", "Blaue Mütze aus Filz", "X"],
            ["../A_1", "Grüne Handschuhe aus Leder", "X"]]  # fmt: skip
    sheet = write_sheet(tmp_path / "p.xlsx", rows)
    opts = CatalogOptions.build(text_column="Beschreibung", id_column="Artikelnummer", llm="none", source_lang="en",
                                steps=1, size=64)  # fmt: skip
    run = CatalogRun.from_file(renderer(fresh_engine), tmp_path / "run", sheet, opts, fresh_engine.catalog_models())
    assert run.run()["done"] == 3
    out = tmp_path / "run"
    table = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [r["id"] for r in table] == ["A/1", "A_1", "../A_1"]
    assert len({r["image"] for r in table}) == 3 and len(list((out / "items").glob("*.json"))) == 3
    for r, want in zip(table, rows[1:], strict=True):
        assert r["status"] == "done" and want[1] in r["prompt"]
        assert (out / r["image"]).is_file() and (out / r["image"]).resolve().parent == (out / "images").resolve()
    assert table[1]["image"] == "images/A_1.png"  # a clean id keeps its plain name


def test_the_local_tiny_llm_fails_rows_with_a_reason_and_the_run_goes_on(fresh_engine, tmp_path):
    sheet = write_sheet(tmp_path / "p.xlsx", SHEET[:3])
    opts = CatalogOptions.build(text_column="Beschreibung", retries=0, steps=1, size=64)
    summary = CatalogRun.from_file(
        renderer(fresh_engine), tmp_path / "run", sheet, opts, fresh_engine.catalog_models()
    ).run()
    assert (summary["done"], summary["failed"]) == (0, 2)  # random weights write no JSON: recorded, not fatal
    assert all("LLM reply" in f["error"] and "\n" not in f["error"] for f in summary["failures"])


def test_bad_options_are_one_line():
    with pytest.raises(BadInput, match="an LLM server needs its URL"):
        CatalogOptions.build(text_column="x", llm="server")
    with pytest.raises(BadInput, match="unknown field '{colour}'"):
        CatalogOptions.build(text_column="x", template="a {colour} thing")
    with pytest.raises(BadInput, match="steps: must be between 1 and 150"):
        CatalogOptions.build(text_column="x", steps=0)


def test_a_missing_catalog_clip_is_one_line_with_its_setting(tmp_path):
    import torch

    from engine.catalog_models import CatalogModels
    from engine.errors import ModelUnavailable
    from engine.settings import Settings

    settings = Settings(data_dir=tmp_path, catalog_clip_model=str(tmp_path / "no-such-clip"))
    with pytest.raises(ModelUnavailable) as err:
        CatalogModels(settings, "cpu", torch.float32).scorer()
    assert "no-such-clip" in str(err.value) and "DESIGN_STUDIO_CATALOG_CLIP_MODEL" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_ray_executor_renders_the_same_images_as_local(fresh_engine, llm, tmp_path, tiny_models):
    """Two CPU workers of a local Ray cluster run the same Generator on the Params the driver built, two rows at a
    time; the driver keeps the results exactly as a local run does."""
    from engine.local import LocalEngine

    sheet = write_sheet(tmp_path / "p.xlsx")
    local = CatalogRun.from_file(renderer(fresh_engine), tmp_path / "local", sheet, options(llm.url),
                                 fresh_engine.catalog_models())  # fmt: skip
    local.run()
    ray_engine = LocalEngine(fresh_engine.settings, executor="ray", workers=2)
    try:
        distributed = CatalogRun.from_file(
            renderer(ray_engine), tmp_path / "ray", sheet, options(llm.url), ray_engine.catalog_models()
        )
        summary = distributed.run()
    finally:
        ray_engine.close()
        import ray

        ray.shutdown()
    assert (summary["done"], summary["failed"]) == (4, 1)
    for row in distributed.results():
        if row["status"] == "done":
            a, b = (pixels(tmp_path / d / row["image"]).astype(int) for d in ("ray", "local"))
            # the same seed and Params; a worker runs torch on 1 thread, this process on 2, so a float sum may
            # round the other way in a pixel or two
            assert np.abs(a - b).max() <= 1 and np.mean(a != b) < 0.001
    kept = ray_engine.history_store.in_batch(distributed.run_id)
    assert sorted(r["metadata"]["ref"] for r in kept) == ["A-1", "A-2", "A-4", "A-5"]
    assert all(r["metadata"]["metrics"][0]["clip_score"] is not None for r in kept)
    assert {r["metadata"]["executor"]["worker"] for r in kept} == {0, 1}  # both workers rendered


def test_a_catalog_run_with_flux_through_the_cli(tmp_path, tiny_models, capsys):
    from engine.cli import main

    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    sheet = write_sheet(tmp_path / "p.xlsx", SHEET[:3])
    args = ["catalog", "run", str(sheet), "--out", str(tmp_path / "run"), "--profile", "tiny", "--data-dir", str(data),
            "--device", "cpu", "--llm", "none", "--model", "flux", "--size", "64", "--text-column", "Beschreibung",
            "--id-column", "Artikelnummer"]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["done"] == 2
    meta = make_engine(data).history_store.in_batch(report["run_id"])[0]["metadata"]
    assert meta["params"]["model"] == "flux" and meta["params"]["steps"] == 4 and meta["params"]["guidance"] == 0.0
    assert main([*args[:-4], "--style", "Terrazzo", "--out", str(tmp_path / "run2")]) == 2
    assert "FLUX renders from text only" in capsys.readouterr().err
