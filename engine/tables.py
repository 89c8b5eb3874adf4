"""Tables as files (CSV and .xlsx), one writer for every table the engine hands out (catalog results, tagging
tables, the Dashboard's export). A cell a spreadsheet would run as a formula (= + - @ tab CR, from a sheet or an
LLM) stays text, in the header too (the tagging export's columns come from the user's sheet): quoted with ' in CSV
(OWASP's advice; "-5" becomes "'-5" too: simple and safe), a string cell in .xlsx (shown as written, never run).
Control characters XML cannot hold are dropped from .xlsx cells, so one odd byte in a sheet cannot stop the file."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def is_formula(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_START)


def _csv_cell(value: Any) -> Any:
    return "'" + value if is_formula(value) else value


def csv_bytes(rows: Iterable[dict[str, Any]], columns: list[str], bom: bool = False) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([_csv_cell(c) for c in columns])
    for row in rows:
        writer.writerow([_csv_cell(row.get(c, "")) for c in columns])
    return buf.getvalue().encode("utf-8-sig" if bom else "utf-8")


def xlsx_bytes(rows: Iterable[dict[str, Any]], columns: list[str], title: str = "results") -> bytes:
    import openpyxl
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title

    def append(values: list[Any]) -> None:
        values = [ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in values]
        sheet.append(values)
        for cell in sheet[sheet.max_row]:
            if is_formula(cell.value):
                cell.data_type = "s"  # written as the text it is, never run

    append(list(columns))
    for row in rows:
        append([row.get(c, "") for c in columns])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()
