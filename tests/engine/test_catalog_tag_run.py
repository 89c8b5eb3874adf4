"""`python -m engine catalog tag|similar`: a folder of photos to a table with listings, and similar products."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import openpyxl
import pytest
from PIL import Image

from engine.cli import main
from tests.conftest import make_data_dir, make_engine
from tests.engine.test_catalog_llm import ScriptedServer, completion

LISTING = {
    "title": "Red cotton top",
    "bullet_points": ["Red colour", "Soft feel", "Easy to wear"],
    "description": "A red top.",
    "style_summary": "Casual",
    "seo_tags": ["red", "top", "casual"],
}


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, colour in (("red.jpg", (200, 30, 30)), ("blue.png", (30, 30, 200)), ("sub/white.webp", (240,) * 3)):
        Image.new("RGB", (160, 200), colour).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (folder / "readme.txt").write_text("not a photo")
    return folder


@pytest.fixture
def server():
    s = ScriptedServer(lambda i, body: (200, completion(json.dumps(LISTING))))
    yield s
    s.stop()


def base(data: Path) -> list[str]:
    return ["--profile", "tiny", "--data-dir", str(data), "--device", "cpu"]


def test_tag_a_folder_into_a_table_with_listings(photos, server, tmp_path, tiny_models, capsys):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    out = tmp_path / "tags.csv"
    code = main(["catalog", "tag", str(photos), "--out", str(out), "--llm", server.url, *base(data)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["images"] == 3 and report["listed"] == 3
    assert report["skipped"] == [{"name": "broken.jpg", "reason": report["skipped"][0]["reason"]}]
    assert "truncated" in report["skipped"][0]["reason"] or "not an image" in report["skipped"][0]["reason"]
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    assert [r["image"] for r in rows] == ["blue.png", "red.jpg", "sub/white.webp"]
    for r in rows:
        assert 0.0 <= float(r["color_confidence"]) <= 1.0 and r["title"] == "Red cotton top"
        assert r["bullet_points"] == "Red colour | Soft feel | Easy to wear" and r["status"] == "listed"
    assert len(server.requests) == 3
    sent = server.requests[0]["body"]["messages"][-1]["content"]
    assert "Do not invent" in sent and ": uncertain" not in sent  # only the detected attributes go to the LLM
    book = openpyxl.load_workbook(tmp_path / "tags.xlsx").active
    assert book.max_row == 4 and book.cell(1, 1).value == "image"

    # similar products: a photo ranks itself first; words give a ranked list
    code = main(["catalog", "similar", "--image", str(photos / "red.jpg"), "-k", "3", "--json", *base(data)])
    found = json.loads(capsys.readouterr().out)["results"]
    assert code == 0 and found[0]["name"] == "red.jpg" and found[0]["score"] == pytest.approx(1.0, abs=1e-3)
    picture = make_engine(data).catalog.product_image(found[0]["thumbnail"])  # a photo to show, even from a zip
    assert picture[:2] == b"\xff\xd8"
    assert [f["score"] for f in found] == sorted((f["score"] for f in found), reverse=True)
    code = main(["catalog", "similar", "a blue top", *base(data)])  # a person reads a table: header + one row each
    header, *rows = capsys.readouterr().out.rstrip("\n").split("\n")
    assert code == 0 and header.split()[:3] == ["#", "NAME", "SCORE"] and len(rows) == 3


def test_a_vocabulary_edit_changes_the_columns_and_bad_input_is_one_line(photos, tmp_path, tiny_models, capsys):
    data = make_data_dir(tmp_path / "data", tiny_models, warm=True)
    vocab = tmp_path / "shoes.yaml"
    vocab.write_text("family: shoes\nitem: shoe\nattributes:\n  colour: [black, white, red]\n  heel: [flat, high]\n")
    out = tmp_path / "shoes.xlsx"
    assert main(["catalog", "tag", str(photos), "--out", str(out), "--vocab", str(vocab), "--llm", "none",
                 *base(data)]) == 0  # fmt: skip
    capsys.readouterr()
    header = next(csv.reader((tmp_path / "shoes.csv").open(encoding="utf-8-sig")))
    assert header == ["image", "colour", "colour_confidence", "heel", "heel_confidence", "status", "error"]
    for args, message in [
        (["--out", str(tmp_path / "t.pdf")], "--out must end in .csv or .xlsx"),
        (["--out", str(tmp_path / "t.csv"), "--vocab", str(tmp_path / "none.yaml")], "none.yaml"),
    ]:
        assert main(["catalog", "tag", str(photos), "--llm", "none", *args, *base(data)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["catalog", "tag", str(tmp_path / "nope"), "--out", str(tmp_path / "t.csv"), *base(data)]) == 2
    capsys.readouterr()
    assert main(["catalog", "similar", *base(data)]) == 2
    assert "needs a photo or words" in capsys.readouterr().err
    # an engine with no products indexed says so first, whatever the search holds
    assert main(["catalog", "similar", *base(make_data_dir(tmp_path / "empty", tiny_models, warm=True))]) == 2
    assert "no products are indexed yet" in capsys.readouterr().err
