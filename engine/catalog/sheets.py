"""Product sheets: .xlsx or .csv in, one checked item per row out (id, description, optional name and category)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from ..errors import BadInput, TooLarge

MAX_SHEET_BYTES = 20 * 1024 * 1024
MAX_ROWS = 10_000
MAX_TEXT = 4000
MAX_COLUMNS = 1000  # cells a row may have; a stray cell in column XFD would make every row 16384 wide
MAX_SCANNED_ROWS = 100_000  # rows read, empty ones included, before a sheet counts as hostile
MAX_XLSX_UNPACKED = 100 * 1024 * 1024  # what an .xlsx's parts may unpack to, all together
MAX_XLSX_PARTS = 10_000  # parts in an .xlsx; a real workbook has a few dozen
MAX_SHEET_CELLS = 1_000_000  # cells in one worksheet: 10,000 rows of 100 columns
MAX_SHEET_ELEMENTS = 3_000_000  # XML elements in one worksheet (a cell is 2 or 3)
MAX_PART_ELEMENTS = 1_000_000  # XML elements in any other part (styles, shared strings: openpyxl reads them whole)
MAX_XLSX_RATIO = 100  # a part over RATIO_FLOOR bytes that unpacks more than 100:1 is a zip bomb, not a product list
RATIO_FLOOR = 10 * 1024 * 1024


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


def _size(n: int) -> str:
    return f"{n / 1024**3:.1f} GB" if n >= 1024**3 else f"{n / 1024**2:.0f} MB"


# what a broken .xlsx raises on the way: a bad zip or checksum (BadZipFile), a missing part (KeyError), broken XML
# (ParseError is a SyntaxError), an encrypted part (RuntimeError), a compression zipfile lacks (NotImplementedError)
_BROKEN = (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, OSError, ValueError, EOFError, SyntaxError,
           RuntimeError, NotImplementedError)  # fmt: skip


def _unreadable(name: str, exc: BaseException) -> BadInput:
    return BadInput(f"{name} is not a readable .xlsx file ({type(exc).__name__}); save it again from Excel")


def _check_zip(parts: list[zipfile.ZipInfo], name: str) -> None:
    """Refuse a zip bomb from its directory alone, before anything is unpacked. The sizes it declares bind: Python's
    zipfile stops a part at its declared size (and then fails its checksum), so a part cannot unpack to more."""
    total = sum(p.file_size for p in parts)
    if total > MAX_XLSX_UNPACKED:
        raise TooLarge(f"{name} unpacks to {_size(total)}; the limit is {_size(MAX_XLSX_UNPACKED)}")
    for p in parts:
        if p.file_size > RATIO_FLOOR and p.file_size > MAX_XLSX_RATIO * max(p.compress_size, 1):
            raise TooLarge(
                f"{name}: its part {p.filename[:80]!r} unpacks {p.file_size // max(p.compress_size, 1)}:1 to "
                f"{_size(p.file_size)}; a workbook packed that tightly is refused as a zip bomb"
            )


_REF = re.compile(r"\$?([A-Za-z]*)\$?(\d*)")


def _ref(ref: str) -> tuple[int, int]:
    """A cell reference's (column, row): 'B7' -> (2, 7), 0 for a part it lacks, anything past Excel's last column
    or row as a number past every limit."""
    letters, digits = _REF.match(ref).groups()
    column = 0
    for ch in letters[:4].upper():
        column = column * 26 + ord(ch) - 64
    return column, int(digits[:10] or 0)


def _scan_part(zf: zipfile.ZipFile, part: str, name: str) -> None:
    """Walk one XML part with expat, building nothing, and refuse what would make openpyxl build or walk millions of
    things: a sheet with more rows (counted, numbered or declared in <dimension>) than MAX_SCANNED_ROWS, a cell past
    column MAX_COLUMNS, more than MAX_SHEET_CELLS cells; any other part over MAX_PART_ELEMENTS elements (openpyxl
    reads styles, the workbook and the shared strings whole); a DTD (a workbook has none; entities could grow)."""
    where = f"{name}: its part {part[:80]!r}"
    elements = rows = cells = row = col = 0
    limit = MAX_PART_ELEMENTS

    def start(tag: str, attrs: dict[str, str]) -> None:  # once per element: kept lean
        nonlocal elements, rows, cells, row, col, limit
        elements += 1
        if elements > limit:
            raise BadInput(f"{where} holds more than {limit} XML elements")
        if ":" in tag:
            tag = tag.rpartition(":")[2]
        # openpyxl takes a row for a row wherever it stands, inside <sheetData> or not
        if tag == "c":
            cells += 1
            col = _ref(attrs["r"])[0] if "r" in attrs else col + 1
            if col > MAX_COLUMNS:
                raise _too_wide(name, row, col)
            if cells > MAX_SHEET_CELLS:
                raise BadInput(f"{name} has more than {MAX_SHEET_CELLS} cells; keep the columns you need")
        elif tag == "row":
            rows += 1
            r = attrs.get("r", "")
            row = int(r[:10]) if r.isdigit() else row + 1
            col = 0
            if rows > MAX_SCANNED_ROWS or row > MAX_SCANNED_ROWS:
                raise _too_many_rows(name)
        elif tag == "sheetData":
            limit = MAX_SHEET_ELEMENTS
        elif tag == "dimension":  # what openpyxl pads every row to
            last = attrs.get("ref", "").rpartition(":")[2]
            column, last_row = _ref(last)
            if last_row > MAX_SCANNED_ROWS:
                raise BadInput(
                    f"{name} declares rows up to {last[:16]}; the limit is {MAX_SCANNED_ROWS} rows, empty ones "
                    "included (delete the empty rows below the products, or save it as CSV)"
                )
            if column > MAX_COLUMNS:
                raise BadInput(f"{name} declares columns up to {last[:16]}; the limit is {MAX_COLUMNS} columns")

    def doctype(*_args) -> None:
        raise BadInput(f"{where} declares a DTD; a workbook has none")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.StartDoctypeDeclHandler = doctype
    try:
        with zf.open(part) as src:
            while chunk := src.read(1 << 16):
                parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except (expat.ExpatError, *_BROKEN) as exc:
        raise _unreadable(name, exc) from None


def _too_many_rows(name: str) -> BadInput:
    return BadInput(
        f"{name} has more than {MAX_SCANNED_ROWS} rows, empty ones included; delete the empty rows below the "
        "products or save it as CSV"
    )


def _too_wide(name: str, row: int, column: int) -> BadInput:
    return BadInput(f"{name}: row {row} reaches column {column}; the limit is {MAX_COLUMNS} columns")


def _read_xlsx(data: bytes, name: str) -> Sheet:
    """openpyxl reads styles, the workbook and the shared strings whole, and, to learn a sheet's size, walks every
    sheet that declares none; so before it opens the file, the zip's directory and then each XML part (with expat,
    building nothing) must show a workbook of sane size. Then rows are read as they come, empty ones counted too."""
    import openpyxl

    # each entry Python lists from a zip's directory starts with this signature: counted in C before the directory is
    # parsed in Python (a 20 MB zip of 400,000 empty entries takes seconds and 100s of MB to list)
    if data.count(b"PK\x01\x02") > MAX_XLSX_PARTS:
        raise BadInput(f"{name} holds more than {MAX_XLSX_PARTS} parts; no workbook needs that many")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _BROKEN as exc:
        raise _unreadable(name, exc) from None
    with zf:
        _check_zip(zf.infolist(), name)
        for part in zf.namelist():
            if part.lower().endswith((".xml", ".rels")):
                _scan_part(zf, part, name)
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except _BROKEN as exc:
        raise _unreadable(name, exc) from None
    try:
        if not book.worksheets:
            raise BadInput(f"{name} has no worksheet")
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise BadInput(f"{name} is empty; the first row must name the columns")
        columns = _header([_cell(v) for v in header], name)
        out = []
        for scanned, values in enumerate(rows, start=2):  # every row counts, empty or not
            if scanned > MAX_SCANNED_ROWS:
                raise _too_many_rows(name)
            if not any(v is not None and v != "" for v in values):
                continue  # an empty row, cheaply
            cells = [_cell(v) for v in values]
            if any(cells):
                out.append(dict(zip(columns, cells + [""] * (len(columns) - len(cells)), strict=False)))
            if len(out) > MAX_ROWS:
                raise BadInput(f"{name} has more than {MAX_ROWS} rows; split it into smaller sheets")
    except _BROKEN as exc:  # a part that fails only as it is read (a checksum, broken XML)
        raise _unreadable(name, exc) from None
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
    else:
        raise BadInput(f"{name} is not a text CSV file (neither UTF-8 nor Windows-1252); save it again as CSV UTF-8")
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
        if len(header) > MAX_COLUMNS:
            raise _too_wide(name, 1, len(header))
        columns = _header([h.strip() for h in header], name)
        out = []
        for scanned, cells in enumerate(reader, start=2):  # every record counts, empty or not
            if scanned > MAX_SCANNED_ROWS:
                raise _too_many_rows(name)
            if not cells:
                continue  # an empty line, cheaply
            if len(cells) > MAX_COLUMNS:
                raise _too_wide(name, scanned, len(cells))
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


def sheet_bytes(path: Path) -> bytes:
    """A sheet file's bytes, as the engine takes it; one line when it is not there or too large."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no such file: {path}")
    if path.stat().st_size > MAX_SHEET_BYTES:
        raise TooLarge(f"{path.name} is over the {MAX_SHEET_BYTES // (1024 * 1024)} MB limit for sheets")
    return path.read_bytes()


def load_sheet(path: Path) -> Sheet:
    return read_sheet(sheet_bytes(path), Path(path).name)


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


def choose_columns(
    sheet: Sheet,
    text_column: str | None = None,
    id_column: str | None = None,
    name_column: str | None = None,
    category_column: str | None = None,
) -> dict[str, str | None]:
    """The mapping in force, by role: a column given is used ("" for none), one left None is guessed from the
    headers; the name and category are guessed only while the description column is guessed too (a description
    chosen by hand says which columns matter). No description column given or guessed: one BadInput line. The
    description given as "": none yet (the sheet read without items)."""
    guess = guess_columns(sheet.columns)
    text = guess["text"] if text_column is None else text_column
    if text is None:
        shown = ", ".join(f"'{c}'" for c in sheet.columns)
        raise BadInput(f"which column holds the descriptions? pass --text-column (the columns are {shown})")

    def chosen(given: str | None, guessed: str | None) -> str | None:
        return guessed if given is None else given or None

    by_hand = text_column is not None
    return {
        "text": text or None,
        "id": chosen(id_column, guess["id"]),
        "name": chosen(name_column, None if by_hand else guess["name"]),
        "category": chosen(category_column, None if by_hand else guess["category"]),
    }


# Short words that are common in one of the sheet languages and rare in the others (product descriptions are terse,
# so the few articles, prepositions and conjunctions they do have carry the language).
_STOPWORDS = {
    "en": {"the", "and", "with", "for", "of", "a", "an", "on", "to", "is", "from", "made", "by", "this", "its"},
    "de": {"der", "die", "das", "und", "mit", "für", "aus", "ein", "eine", "einem", "einer", "im", "ist", "den",
           "dem", "von", "zum", "zur", "oder", "auf"},
    "fr": {"le", "la", "les", "et", "avec", "pour", "du", "des", "un", "une", "au", "aux", "est", "en"},
    "it": {"il", "lo", "gli", "e", "con", "per", "di", "da", "una", "del", "della", "dei", "è", "nel"},
    "es": {"el", "los", "las", "y", "con", "para", "del", "una", "es", "por", "al"},
    "nl": {"het", "een", "en", "met", "voor", "van", "op", "uit", "bij", "of", "is"},
}  # fmt: skip
_LETTERS = {"de": "äöüß", "fr": "éèêàçù", "es": "ñ¿¡á", "it": "ìò"}
_WORD = re.compile(r"[^\W\d_]+")


def guess_language(texts: list[str]) -> str:
    """The sheet's language ("en", "de", "fr", "it", "es", "nl") from its descriptions: the language whose common
    short words (and letters such as ä, ß, é, ñ) occur most, English when nothing points elsewhere."""
    scores = dict.fromkeys(_STOPWORDS, 0.0)
    for text in texts[:200]:
        lowered = text.casefold()
        for word in _WORD.findall(lowered):
            for lang, words in _STOPWORDS.items():
                scores[lang] += word in words
        for lang, letters in _LETTERS.items():
            scores[lang] += 0.5 * sum(lowered.count(c) for c in letters)
    best = max(scores, key=lambda lang: (scores[lang], lang == "en"))
    return best if scores[best] > scores["en"] else "en"


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
    first_row: dict[str, int] = {}  # an id as it is -> its row
    first_file: dict[str, tuple[str, int]] = {}  # its file name as a case-insensitive disk sees it -> (id, row)
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
        key = _file_key(item_id)
        if key in first_file:
            if item_id in first_row:
                item.error = f"row {row}: id '{item_id}' repeats row {first_row[item_id]}"
            else:
                other, other_row = first_file[key]
                item.error = (
                    f"row {row}: id '{item_id}' would share its file with id '{other}' of row {other_row} (Windows "
                    "and macOS take ids that differ only in upper/lower case for one file); give the row its own id"
                )
            item.id = f"{item_id}~row-{row}"  # keep the files of both apart
            while _file_key(item.id) in first_file:  # an id in the sheet spelt just like that: unlikely, not impossible
                item.id += "~"
            key = _file_key(item.id)
        first_row.setdefault(item_id, row)
        first_file[key] = (item.id, row)
        out.append(item)
    return out


_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"{d}{i}" for d in ("COM", "LPT") for i in range(1, 10))}
MAX_NAME_CHARS = 100
MAX_NAME_BYTES = 200  # with the suffix (and a hash) well inside the 255 bytes a file name may have


def safe_name(item_id: str) -> str:
    """An id as a file name: letters, digits, '.', '_' and '-' only, one name per id.

    An id that is a clean file name already ('K-1', '1001', 'Größe_M') is its own name, so runs and links made
    before stay valid. Any other id ('A/1', '../A_1', 'a b', '', '..', a name cut at 100 characters or 200 bytes,
    a Windows device name such as 'CON') is cleaned and gets '-' and the first 8 hex digits of the SHA-256 of the
    id itself: 'A/1', 'A_1' and '../A_1' become 'A_1-…', 'A_1' and 'A_1-…', three files, not one. The mapping
    depends on the id alone (the service serves an image by it, names run folders with it).

    Case: 'K-1' and 'k-1' stay 'K-1' and 'k-1', two names that a case-insensitive disk (macOS, Windows) holds as
    one file. They are not renamed here (that would move existing files); `items` refuses the later row of such a
    pair, as it does a repeated id, with a line naming the earlier row."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in item_id)[:MAX_NAME_CHARS]
    while len(cleaned.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        cleaned = cleaned[:-1]
    cleaned = cleaned.strip("._")
    if cleaned and cleaned == item_id and cleaned.split(".")[0].upper() not in _WINDOWS_DEVICES:
        return cleaned
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned or 'item'}-{digest}"


def _file_key(item_id: str) -> str:
    """The id's file name as a case-insensitive (and, on macOS, normalisation-insensitive) disk compares it."""
    return unicodedata.normalize("NFC", safe_name(item_id)).casefold()
