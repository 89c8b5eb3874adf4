"""Product sheets (xlsx and csv, umlauts, broken files and rows) and the prompt template."""

from __future__ import annotations

import io

import openpyxl
import pytest

from engine.catalog.prompts import DEFAULT_TEMPLATE, PromptTemplate
from engine.catalog.sheets import guess_columns, items, read_sheet, safe_name
from engine.errors import BadInput, TooLarge

ROWS = [
    ["Artikelnummer", "Beschreibung", "Kategorie"],
    [1001, "Rotes Baumwoll-T-Shirt mit Rundhalsausschnitt", "Oberteile"],
    [1002, "Schwarze Lederjacke für Herren, Größe M", "Jacken"],
    [1003, "", "Hosen"],
    [1004, "Weiße Sneaker aus Wildleder", "Schuhe"],
]


def xlsx(rows) -> bytes:
    book = openpyxl.Workbook()
    for r in rows:
        book.active.append(r)
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def test_xlsx_and_csv_read_the_same_with_umlauts():
    from_xlsx = read_sheet(xlsx(ROWS), "produkte.xlsx")
    text = "\n".join(";".join(str(c) for c in r) for r in ROWS)
    from_csv = read_sheet(text.encode("utf-8-sig"), "produkte.csv")
    from_cp1252 = read_sheet(text.encode("cp1252"), "produkte.csv")  # Excel's CSV on Windows
    assert from_xlsx.columns == from_csv.columns == ["Artikelnummer", "Beschreibung", "Kategorie"]
    assert from_xlsx.rows == from_csv.rows == from_cp1252.rows
    assert from_xlsx.rows[1]["Beschreibung"] == "Schwarze Lederjacke für Herren, Größe M"
    assert from_xlsx.rows[0]["Artikelnummer"] == "1001"  # not 1001.0


def test_items_keep_broken_rows_with_a_reason():
    sheet = read_sheet(xlsx([*ROWS, [1001, "Doppelt", "Jacken"]]), "p.xlsx")
    got = items(sheet, "Beschreibung", "Artikelnummer", category_column="Kategorie")
    assert [i.id for i in got] == ["1001", "1002", "1003", "1004", "1001~row-6"]
    assert [i.row for i in got] == [2, 3, 4, 5, 6]
    assert got[2].error == "row 4: the description ('Beschreibung') is empty"
    assert got[4].error == "row 6: id '1001' repeats row 2"
    assert got[1].category == "Jacken" and got[0].error is None
    no_ids = items(sheet, "Beschreibung")
    assert no_ids[0].id == "row-2"


def test_guess_columns_knows_german_and_english_headers():
    assert guess_columns(["Artikelnummer", "Beschreibung", "Kategorie"]) == {
        "id": "Artikelnummer", "text": "Beschreibung", "name": None, "category": "Kategorie"
    }  # fmt: skip
    assert guess_columns(["SKU", "Title", "Description"])["text"] == "Description"


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"", "p.xlsx", "p.xlsx is empty (0 bytes)"),
        (b"PK\x03\x04 not really a zip", "p.xlsx", "p.xlsx is not a readable .xlsx file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "p.csv", "p.csv is not a text CSV file"),
        (b"a,b\n1,2", "p.pdf", "use an .xlsx or .csv sheet (got '.pdf')"),
        (b"id,id\n1,2", "p.csv", "the header names column 'id' twice"),
        (b"id,text\n", "p.csv", "has a header but no rows"),
    ],
)
def test_broken_sheets_are_one_line(data, name, message):
    with pytest.raises(BadInput) as err:
        items(read_sheet(data, name), "text")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_column_names_the_columns_there_are_and_size_is_limited():
    sheet = read_sheet(b"sku,desc\n1,x", "p.csv")
    with pytest.raises(
        BadInput, match=r"p.csv has no column 'Beschreibung' \(for the text\); its columns are 'sku', 'desc'"
    ):
        items(sheet, "Beschreibung")
    with pytest.raises(TooLarge, match="over the 20 MB limit"):
        read_sheet(b"x" * (20 * 1024 * 1024 + 1), "big.csv")


def test_the_template_fills_fields_and_drops_empty_clauses():
    t = PromptTemplate()
    assert t.text == DEFAULT_TEMPLATE
    full = t.render({"product_type": "T-shirt", "key_features": "round neck", "color_material": "red cotton",
                     "design": "slim fit"})  # fmt: skip
    assert full.startswith("Professional product photography of a T-shirt, featuring round neck, red cotton, slim fit,")
    assert t.render({"product_type": "jacket", "color_material": "black leather"}).startswith(
        "Professional product photography of a jacket, black leather, placed on clean white background"
    )
    assert PromptTemplate("{name}: {description}, product photo").render({"name": "Äpfel", "description": "grün"}) == (
        "Äpfel: grün, product photo"
    )
    for bad, message in [("", "is empty"), ("a {colour}", "unknown field '{colour}'"), ("a {", "stray brace"),
                         ("just words", "names no field")]:  # fmt: skip
        with pytest.raises(BadInput, match=message):
            PromptTemplate(bad)


def test_ids_become_safe_file_names():
    assert safe_name("1001") == "1001"
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("Größe M/rot") == "Größe_M_rot"
    assert safe_name("...") == "item"
