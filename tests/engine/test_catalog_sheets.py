"""Product sheets (xlsx and csv, umlauts, broken and hostile files, rows), ids as file names, the tables written
back (formulas stay text) and the prompt template."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
import tracemalloc
import zipfile

import openpyxl
import pytest

from engine.catalog.prompts import DEFAULT_TEMPLATE, PromptTemplate
from engine.catalog.sheets import guess_columns, guess_language, items, read_sheet, safe_name
from engine.errors import BadInput, TooLarge
from engine.tables import csv_bytes, xlsx_bytes

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
        (b"id,text\n1,\x81\x8d", "p.csv", "p.csv is not a text CSV file (neither UTF-8 nor Windows-1252)"),
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


def test_ids_become_safe_file_names_one_name_per_id():
    # a clean id is its own name: runs and links made before stay valid
    for clean in ("1001", "K-1", "Größe_M", "v1.2", "x" * 100):
        assert safe_name(clean) == clean
    # any other id is cleaned and tagged with its own hash: 'A/1', 'A_1' and '../A_1' are three files, not one
    assert [safe_name(i) for i in ("A/1", "A_1", "../A_1")] == [
        "A_1-" + hashlib.sha256(b"A/1").hexdigest()[:8], "A_1", "A_1-" + hashlib.sha256(b"../A_1").hexdigest()[:8]
    ]  # fmt: skip
    assert safe_name("../../etc/passwd").startswith("etc_passwd-")
    assert safe_name("Größe M/rot").startswith("Größe_M_rot-")
    odd = ["", ".", "..", "...", "CON", "x" * 101, "x" * 150, "界" * 90, "a b", "a_b"]
    names = [safe_name(i) for i in odd]
    assert len(set(names)) == len(odd)
    for n in names:
        assert re.fullmatch(r"[\w.-]+", n) and not n.startswith(".") and len(n.encode()) <= 220


def test_ids_one_file_would_hold_fail_with_the_earlier_row():
    """'K-1' and 'k-1' are two names a case-insensitive disk (macOS, Windows) holds as one file: the later row fails
    with a line naming the earlier one, as a repeated id does, and gets files of its own."""
    sheet = read_sheet("id,text\nK-1,a\nk-1,b\nA/1,c\nA_1,d\n../A_1,e\nK-1,f\nÄ-1,g\nä-1,h\n".encode(), "p.csv")
    got = items(sheet, "text", "id")
    assert [i.error is None for i in got] == [True, False, True, True, True, False, True, False]
    assert got[1].error.startswith("row 3: id 'k-1' would share its file with id 'K-1' of row 2")
    assert got[7].error.startswith("row 9: id 'ä-1' would share its file with id 'Ä-1' of row 8")
    assert got[5].error == "row 7: id 'K-1' repeats row 2"
    assert all("\n" not in (i.error or "") for i in got)
    assert len({safe_name(i.id).casefold() for i in got}) == len(got)  # no two rows write one file


def test_formulas_stay_text_in_both_tables_header_included():
    """A cell from a sheet or an LLM that a spreadsheet would run (= + - @ tab CR) is text in .xlsx (a string cell)
    and quoted with ' in CSV, in the header too (the tagging export's columns come from the user's sheet)."""
    columns = ["a", '=HYPERLINK("http://x","y")', "n", "t", "u"]
    rows = [{"a": "=1+1", columns[1]: "@SUM(A1)", "n": -5, "t": "-5 cm", "u": "\t=1\x01"}]
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx_bytes(rows, columns))).active
    header, row = ([(c.value, c.data_type) for c in r] for r in sheet.iter_rows())
    assert header[1] == ('=HYPERLINK("http://x","y")', "s")
    assert row == [("=1+1", "s"), ("@SUM(A1)", "s"), (-5, "n"), ("-5 cm", "s"), ("\t=1", "s")]  # \x01: not XML
    assert list(csv.reader(io.StringIO(csv_bytes(rows, columns).decode()))) == [
        ["a", "'=HYPERLINK(\"http://x\",\"y\")", "n", "t", "u"], ["'=1+1", "'@SUM(A1)", "-5", "'-5 cm", "'\t=1\x01"]
    ]  # fmt: skip


# ---- hostile sheets: built here, refused with one line, fast and without big memory --------------------------------

MAIN = b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
HEADER_ROW = (
    b'<row r="1"><c r="A1" t="inlineStr"><is><t>id</t></is></c><c r="B1" t="inlineStr"><is><t>text</t></is></c></row>'
)


def workbook(parts: dict, add: dict | None = None) -> bytes:
    """A normal two-row workbook (openpyxl's) with some parts written anew: each writer streams into the zip, so
    a part of 100s of MB costs the test little memory."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(xlsx([["id", "text"], ["1", "x"]]))) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst,  # quick to write 100s of MB
    ):
        for info in src.infolist():
            if info.filename not in parts:
                dst.writestr(info, src.read(info.filename))
        for name, write in {**parts, **(add or {})}.items():
            with dst.open(name, "w") as f:
                write(f)
    return out.getvalue()


def sheet_xml(*rows: bytes, dimension: bytes = b""):
    def write(f):
        f.write(b"<worksheet " + MAIN + b">" + dimension + b"<sheetData>" + HEADER_ROW)
        for r in rows:
            f.write(r)
        f.write(b"</sheetData></worksheet>")

    return write


def empty_rows(n: int):
    """`<row r="2"/>` up to row n + 1, made a chunk at a time."""
    for start in range(2, n + 2, 50_000):
        yield "".join(f'<row r="{i}"/>' for i in range(start, min(start + 50_000, n + 2))).encode()


def repeated(chunk: bytes, size: int, head: bytes = b"", tail: bytes = b""):
    def write(f):
        f.write(head)
        block = chunk * (1024 * 1024 // len(chunk))
        for _ in range(size // len(block)):
            f.write(block)
        f.write(tail)

    return write


def many_parts(n: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(xlsx([["id", "text"], ["1", "x"]]))) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        for i in range(n):
            dst.writestr(f"junk/{i}", b"")
    return out.getvalue()


SST = "xl/sharedStrings.xml"
SST_TYPE = (
    b'<Override PartName="/xl/sharedStrings.xml" '
    b'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
)


def with_shared_strings(write) -> bytes:
    """The workbook with a shared-strings part openpyxl reads (declared in [Content_Types].xml)."""
    types = (
        zipfile.ZipFile(io.BytesIO(xlsx([["id"]])))
        .read("[Content_Types].xml")
        .replace(b"</Types>", SST_TYPE + b"</Types>")
    )
    return workbook({"[Content_Types].xml": lambda f: f.write(types)}, {SST: write})


HOSTILE = {
    "a sheet declaring 2 M rows": (
        lambda: workbook({"xl/worksheets/sheet1.xml": sheet_xml(dimension=b'<dimension ref="A1:C2000000"/>')}),
        "p.xlsx declares rows up to C2000000; the limit is 100000 rows",
    ),
    "a sheet declaring 16384 columns": (
        lambda: workbook({"xl/worksheets/sheet1.xml": sheet_xml(dimension=b'<dimension ref="A1:XFD2"/>')}),
        "p.xlsx declares columns up to XFD2; the limit is 1000 columns",
    ),
    "2 M empty rows, no dimension": (
        lambda: workbook({"xl/worksheets/sheet1.xml": sheet_xml(*empty_rows(2_000_000))}),
        "p.xlsx has more than 100000 rows, empty ones included",
    ),
    "one row numbered 2,000,000": (
        lambda: workbook(
            {"xl/worksheets/sheet1.xml": sheet_xml(b'<row r="2000000"><c r="A2000000"><v>1</v></c></row>')}
        ),
        "p.xlsx has more than 100000 rows, empty ones included",
    ),
    "a cell in column XFD": (
        lambda: workbook(
            {"xl/worksheets/sheet1.xml": sheet_xml(b'<row r="2"><c r="A2"><v>1</v></c><c r="XFD2"/></row>')}
        ),
        "p.xlsx: row 2 reaches column 16384; the limit is 1000 columns",
    ),
    "a 400 MB shared string": (
        lambda: with_shared_strings(
            repeated(b"a", 400 * 1024 * 1024, b"<sst " + MAIN + b"><si><t>", b"</t></si></sst>")
        ),
        "p.xlsx unpacks to 400 MB; the limit is 100 MB",
    ),
    "a part packed 1000:1": (
        lambda: with_shared_strings(
            repeated(b"a", 60 * 1024 * 1024, b"<sst " + MAIN + b"><si><t>", b"</t></si></sst>")
        ),
        "p.xlsx: its part 'xl/sharedStrings.xml' unpacks",
    ),
    "1.3 M elements in the shared strings (5 MB, under the ratio check)": (
        lambda: with_shared_strings(repeated(b"<a/>", 5 * 1024 * 1024, b"<sst " + MAIN + b">", b"</sst>")),
        "p.xlsx: its part 'xl/sharedStrings.xml' holds more than 1000000 XML elements",
    ),
    "20,000 parts": (lambda: many_parts(20_000), "p.xlsx holds more than 10000 parts"),
    "a DTD with entities": (
        lambda: with_shared_strings(
            lambda f: f.write(b'<!DOCTYPE sst [<!ENTITY a "aaaaaaaaaa">]><sst ' + MAIN + b"><si><t>&a;</t></si></sst>")
        ),
        "p.xlsx: its part 'xl/sharedStrings.xml' declares a DTD",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_xlsx_is_refused_fast_and_small(case):
    build, message = HOSTILE[case]
    data = build()
    assert len(data) < 20 * 1024 * 1024  # each passes the upload's size limit
    started = time.perf_counter()
    with pytest.raises(BadInput) as err:
        read_sheet(data, "p.xlsx")
    elapsed = time.perf_counter() - started
    assert message in str(err.value) and "\n" not in str(err.value)
    assert elapsed < 3, f"{case}: refused after {elapsed:.1f} s"
    tracemalloc.start()
    try:
        with pytest.raises(BadInput):
            read_sheet(data, "p.xlsx")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 1024 * 1024, f"{case}: {peak / 2**20:.0f} MB"


def test_empty_rows_are_counted_up_to_a_bound_and_sane_sheets_still_read():
    """Rows are read as they come, empty ones counted too: a sheet with gaps or blank lines under the bound reads,
    a CSV of 2 M empty lines (or a row thousands of cells wide) is refused in well under a second."""
    gap = workbook({"xl/worksheets/sheet1.xml": sheet_xml(
        b'<row r="2"><c r="A2" t="inlineStr"><is><t>K-1</t></is></c><c r="B2"><v>7</v></c></row>',
        b'<row r="90000"><c r="A90000" t="inlineStr"><is><t>K-2</t></is></c><c r="ALL90000"><v>8</v></c></row>',
    )})  # fmt: skip
    assert read_sheet(gap, "p.xlsx").rows == [{"id": "K-1", "text": "7"}, {"id": "K-2", "text": ""}]
    started = time.perf_counter()
    assert read_sheet(b"id,text\n" + b"\n" * 50_000 + b"K-1,x\n", "p.csv").rows == [{"id": "K-1", "text": "x"}]
    assert time.perf_counter() - started < 3
    for data, message in [
        (b"id,text\n" + b"\n" * 2_000_000 + b"1,x\n", "p.csv has more than 100000 rows, empty ones included"),
        (b"id,text\n1," + b"," * 5000 + b"\n", "p.csv: row 2 reaches column 5002; the limit is 1000 columns"),
        (b"id" + b"," * 5000 + b"\n1,x\n", "p.csv: row 1 reaches column 5001; the limit is 1000 columns"),
    ]:
        started = time.perf_counter()
        with pytest.raises(BadInput) as err:
            read_sheet(data, "p.csv")
        assert message in str(err.value) and "\n" not in str(err.value)
        assert time.perf_counter() - started < 3


@pytest.mark.parametrize(
    ("texts", "lang"),
    [
        ([r[1] for r in ROWS[1:]], "de"),  # umlauts, "mit", "aus", "für"; the empty row counts for nothing
        (["A brass desk lamp with a green shade", "Walnut sideboard in oak veneer"], "en"),
        (["Chaise en chêne avec assise en lin", "Lampe de bureau"], "fr"),
        (["Sedia in legno di noce con seduta in lino"], "it"),
        (["Silla de madera con asiento de lino para el comedor"], "es"),
        (["Stoel van eikenhout met een linnen zitting"], "nl"),
        (["Sofa", "Lamp", ""], "en"),  # nothing points anywhere: English, no translation
        ([], "en"),
    ],
)
def test_the_sheet_language_is_guessed_from_its_descriptions(texts, lang):
    assert guess_language(texts) == lang
