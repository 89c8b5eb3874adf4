"""Tables as files (CSV and .xlsx), one writer for every table the engine hands out (catalog results, tagging
tables, the Dashboard's export). A cell a spreadsheet would run as a formula (= + - @ …, from a sheet or an LLM)
stays text: quoted with ' in CSV (OWASP's advice), a string cell in .xlsx."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def is_formula(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_START)


def csv_bytes(rows: Iterable[dict[str, Any]], columns: list[str], bom: bool = False) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("'" + v if is_formula(v) else v) for c, v in row.items() if c in columns})
    return buf.getvalue().encode("utf-8-sig" if bom else "utf-8")


def xlsx_bytes(rows: Iterable[dict[str, Any]], columns: list[str], title: str = "results") -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title
    sheet.append(columns)
    for row in rows:
        sheet.append([row.get(c, "") for c in columns])
        for cell in sheet[sheet.max_row]:
            if is_formula(cell.value):
                cell.data_type = "s"  # written as the text it is, never run
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()
