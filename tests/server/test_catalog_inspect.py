"""`catalog.inspect` is the one way the Catalog page and the CLI learn about a sheet: the same answer in process and
over HTTP, the CLI's rules for the columns (a column left out is guessed; the name and category only while the
description column is guessed too), and the CLI's one-line errors for a description column that is wrong or missing."""

from __future__ import annotations

import pytest

from engine.api import HEAD_ROWS, MAX_TEXT_SHOWN, SheetInfo
from engine.cli import main
from engine.errors import BadInput
from engine.remote import RemoteEngine
from tests.conftest import TOKEN, Server

SHEET = (
    "Artikelnummer;Beschreibung;Kategorie\n"
    "K-1;Rotes Baumwoll-T-Shirt mit Rundhalsausschnitt für den Sommer;Oberteile\n"
    "K-2;;Hosen\n"
    "K-1;Weiße Sneaker aus Wildleder;Schuhe\n"
).encode()
COLUMNS = "'Artikelnummer', 'Beschreibung', 'Kategorie'"


@pytest.fixture(scope="module", params=["local", "remote"])
def engine(request, server_engine):
    if request.param == "local":
        yield server_engine
    else:
        with Server(server_engine) as server:
            yield RemoteEngine(server.url, TOKEN)


def test_an_explicit_description_column_is_used_and_the_name_and_category_are_not_guessed(engine):
    info = engine.catalog.inspect(SHEET, "produkte.csv", text_column="Beschreibung")
    assert isinstance(info, SheetInfo) and info.columns == ["Artikelnummer", "Beschreibung", "Kategorie"]
    assert info.mapping.model_dump() == {"text": "Beschreibung", "id": "Artikelnummer", "name": None, "category": None}
    assert info.guess.category == "Kategorie"  # guessed from the headers, not in force
    assert [(r.row, r.id, r.error) for r in info.sample] == [
        (2, "K-1", None),
        (3, "K-2", "row 3: the description ('Beschreibung') is empty"),
        (4, "K-1~row-4", "row 4: id 'K-1' repeats row 2"),
    ]
    assert info.rows == 3 and info.failing == 2 and info.errors == [r.error for r in info.sample[1:]]
    assert info.language == "de" and info.head[1] == {"Artikelnummer": "K-2", "Beschreibung": "", "Kategorie": "Hosen"}


def test_columns_left_out_are_guessed_and_an_empty_one_means_none(engine):
    info = engine.catalog.inspect(SHEET, "produkte.csv", sample_rows=1)
    assert info.mapping.model_dump() == {"text": "Beschreibung", "id": "Artikelnummer", "name": None,
                                         "category": "Kategorie"}  # fmt: skip
    assert len(info.sample) == 1 and info.failing == 2
    info = engine.catalog.inspect(SHEET, "produkte.csv", id_column="", category_column="")
    assert (info.mapping.id, info.mapping.category) == (None, None)
    assert [r.id for r in info.sample] == ["row-2", "row-3", "row-4"] and info.failing == 1
    bare = engine.catalog.inspect(SHEET, "produkte.csv", text_column="")  # the sheet to choose a column from
    assert bare.mapping.text is None and bare.guess.text == "Beschreibung" and not bare.sample and bare.rows == 3


def test_the_answer_is_bounded(engine):
    long = "a linen shirt " * 400
    sheet = ("sku,description\n" + "".join(f"S-{i},{long if i == 0 else 'a wool coat'}\n" for i in range(12))).encode()
    info = engine.catalog.inspect(sheet, "long.csv")
    assert len(info.head) == HEAD_ROWS and len(info.sample) == 12 and info.language == "en"
    assert len(info.sample[0].text) == MAX_TEXT_SHOWN + 1 and info.sample[0].text.endswith("…")
    assert info.sample[0].error == "row 2: the description is longer than 4000 characters"


@pytest.mark.parametrize(
    ("columns", "flags", "message"),
    [
        ({"text_column": "Preis"}, ["--text-column", "Preis"],
         f"produkte.csv has no column 'Preis' (for the text); its columns are {COLUMNS}"),
        ({"text_column": "Beschreibung", "id_column": "SKU"}, ["--text-column", "Beschreibung", "--id-column", "SKU"],
         f"produkte.csv has no column 'SKU' (for the id); its columns are {COLUMNS}"),
    ],
)  # fmt: skip
def test_a_wrong_column_is_the_cli_s_one_line(engine, capsys, tmp_path, columns, flags, message):
    with pytest.raises(BadInput) as caught:
        engine.catalog.inspect(SHEET, "produkte.csv", **columns)
    assert str(caught.value) == message
    sheet = tmp_path / "produkte.csv"
    sheet.write_bytes(SHEET)
    assert main(["catalog", "preview", str(sheet), *flags]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_no_description_column_is_the_cli_s_one_line(engine, capsys, tmp_path):
    sheet = b"sku;Preis\nA-1;12\n"
    message = "which column holds the descriptions? pass --text-column (the columns are 'sku', 'Preis')"
    with pytest.raises(BadInput) as caught:
        engine.catalog.inspect(sheet, "preise.csv")
    assert str(caught.value) == message
    (tmp_path / "preise.csv").write_bytes(sheet)
    assert main(["catalog", "preview", str(tmp_path / "preise.csv")]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    info = engine.catalog.inspect(sheet, "preise.csv", text_column="Preis")
    assert info.mapping.text == "Preis" and [r.text for r in info.sample] == ["12"]
