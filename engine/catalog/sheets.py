"""Product sheets: .xlsx or .csv in, one checked item per row out (id, description, optional name and category)."""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput, TooLarge

MAX_SHEET_BYTES = 20 * 1024 * 1024
MAX_ROWS = 10_000
MAX_TEXT = 4000


@dataclass
class Sheet:
    """The cells of the first worksheet (or the CSV) as text, under their header names."""

    name: str
    columns: list[str]
    rows: list[dict[str, str]]


@dataclass
class Item:
    """One product to render. `row` is the line number a spreadsheet shows (the header is line 1)."""

    row: int
    id: str
    text: str
    name: str = ""
    category: str = ""
    error: str | None = None
    cells: dict[str, str] = field(default_factory=dict, repr=False)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # Excel stores 1001 as 1001.0
    return str(value).strip()


def _header(values: list[str], name: str) -> list[str]:
    columns = [v or f"column {i + 1}" for i, v in enumerate(values)]
    seen: set[str] = set()
    for c in columns:
        if c in seen:
            raise BadInput(f"{name}: the header names column '{c}' twice; give every column its own name")
        seen.add(c)
    return columns


def _read_xlsx(data: bytes, name: str) -> Sheet:
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise BadInput(
            f"{name} is not a readable .xlsx file ({type(exc).__name__}); save it again from Excel"
        ) from None
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise BadInput(f"{name} is empty; the first row must name the columns")
        columns = _header([_cell(v) for v in header], name)
        out = []
        for values in rows:
            cells = [_cell(v) for v in values]
            if any(cells):
                out.append(dict(zip(columns, cells + [""] * (len(columns) - len(cells)), strict=False)))
            if len(out) > MAX_ROWS:
                raise BadInput(f"{name} has more than {MAX_ROWS} rows; split it into smaller sheets")
    finally:
        book.close()
    return Sheet(name, columns, out)


def _read_csv(data: bytes, name: str) -> Sheet:
    for encoding in ("utf-8-sig", "cp1252"):  # Excel's CSV export on Windows is often cp1252
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    if "\x00" in text:
        raise BadInput(f"{name} is not a text CSV file (it holds binary data)")
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise BadInput(f"{name} is empty; the first row must name the columns")
        columns = _header([h.strip() for h in header], name)
        out = []
        for cells in reader:
            cells = [c.strip() for c in cells]
            if any(cells):
                out.append(dict(zip(columns, cells + [""] * (len(columns) - len(cells)), strict=False)))
            if len(out) > MAX_ROWS:
                raise BadInput(f"{name} has more than {MAX_ROWS} rows; split it into smaller sheets")
    except csv.Error as exc:
        raise BadInput(f"{name} is not a readable CSV file ({exc})") from None
    return Sheet(name, columns, out)


def read_sheet(data: bytes, name: str) -> Sheet:
    """Read an .xlsx or .csv by its name's suffix; one BadInput line for anything else or anything broken."""
    if len(data) > MAX_SHEET_BYTES:
        raise TooLarge(f"{name} is over the {MAX_SHEET_BYTES // (1024 * 1024)} MB limit for sheets")
    if not data:
        raise BadInput(f"{name} is empty (0 bytes)")
    suffix = Path(name).suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(data, name)
    if suffix in (".csv", ".tsv", ".txt"):
        return _read_csv(data, name)
    raise BadInput(f"{name}: use an .xlsx or .csv sheet (got '{suffix or 'no suffix'}')")


def load_sheet(path: Path) -> Sheet:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no such file: {path}")
    if path.stat().st_size > MAX_SHEET_BYTES:
        raise TooLarge(f"{path.name} is over the {MAX_SHEET_BYTES // (1024 * 1024)} MB limit for sheets")
    return read_sheet(path.read_bytes(), path.name)


def guess_columns(columns: list[str]) -> dict[str, str | None]:
    """A first mapping for the page: common names for id and description, in English and German."""
    lower = {c.lower(): c for c in columns}

    def pick(*names: str) -> str | None:
        for n in names:
            for low, original in lower.items():
                if low == n or low.startswith(n):
                    return original
        return None

    return {
        "id": pick("id", "sku", "artikelnummer", "artikel-nr", "art.-nr", "item", "product_id"),
        "text": pick("description", "beschreibung", "produktbeschreibung", "text", "desc"),
        "name": pick("name", "title", "titel", "produktname", "bezeichnung"),
        "category": pick("category", "kategorie", "type", "typ"),
    }


def items(
    sheet: Sheet,
    text_column: str,
    id_column: str | None = None,
    name_column: str | None = None,
    category_column: str | None = None,
) -> list[Item]:
    """One Item per row. A row that cannot be rendered (no description, a repeated id) keeps its place with
    an `error`, so the run reports it and goes on."""
    for role, column in (("id", id_column), ("text", text_column), ("name", name_column),
                         ("category", category_column)):  # fmt: skip
        if column and column not in sheet.columns:
            shown = ", ".join(f"'{c}'" for c in sheet.columns)
            raise BadInput(f"{sheet.name} has no column '{column}' (for the {role}); its columns are {shown}")
    if not sheet.rows:
        raise BadInput(f"{sheet.name} has a header but no rows")
    out: list[Item] = []
    first_row: dict[str, int] = {}
    for i, cells in enumerate(sheet.rows):
        row = i + 2
        item_id = cells.get(id_column, "") if id_column else ""
        item_id = item_id or f"row-{row}"
        item = Item(
            row=row,
            id=item_id,
            text=cells.get(text_column, ""),
            name=cells.get(name_column, "") if name_column else "",
            category=cells.get(category_column, "") if category_column else "",
            cells=cells,
        )
        if not item.text:
            item.error = f"row {row}: the description ('{text_column}') is empty"
        elif len(item.text) > MAX_TEXT:
            item.error = f"row {row}: the description is longer than {MAX_TEXT} characters"
        if item_id in first_row:
            item.error = f"row {row}: id '{item_id}' repeats row {first_row[item_id]}"
            item.id = f"{item_id}~row-{row}"  # keep the files of both apart
        else:
            first_row[item_id] = row
        out.append(item)
    return out


def safe_name(item_id: str) -> str:
    """An id as a file name: letters, digits, '.', '_' and '-' only."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in item_id)[:100].strip("._")
    return cleaned or "item"
