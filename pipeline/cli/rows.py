"""Rows in and out of files for ``flexpipe classify`` and ``flexpipe summarize``.

Two formats, chosen by the file's extension: JSON Lines (``.jsonl``, ``.ndjson``,
``.json``: one object per line) and CSV (``.csv``: a header row, then one row per line).
An input file with another extension is read as JSON Lines if it starts with ``{``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)


class RowsError(ValueError):
    """Raised when a file cannot be read or written as rows; the message names the place."""


def output_format(path: Path) -> str:
    """``"csv"`` or ``"jsonl"`` from an output file's extension."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    raise RowsError(f"{path}: write .jsonl or .csv (the extension picks the format)")


def read_rows(path: Path, text_field: str) -> list[dict[str, Any]]:
    """Read every row of a JSONL or CSV file; each must have a non-empty ``text_field``."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            content = file.read()
    except FileNotFoundError:
        raise RowsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RowsError(f"{path}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise RowsError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise RowsError(f"{path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    as_jsonl = suffix in JSONL_SUFFIXES or (
        suffix not in CSV_SUFFIXES and content.lstrip().startswith("{")
    )
    rows = _jsonl(path, content, text_field) if as_jsonl else _csv(path, content, text_field)
    if not rows:
        raise RowsError(f"{path}: no rows")
    return rows


def write_rows(rows: Iterable[Mapping[str, Any]], path: Path | None, stdout: TextIO) -> None:
    """Write rows to ``path`` (format by its extension), or as JSON Lines to ``stdout``."""
    rows = list(rows)
    fmt = "jsonl" if path is None else output_format(path)
    buffer = io.StringIO(newline="")
    if fmt == "jsonl":
        for row in rows:
            buffer.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(row))
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(value) for key, value in row.items()})
    if path is None:
        stdout.write(buffer.getvalue())
        stdout.flush()
        return
    try:
        path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    except OSError as exc:
        raise RowsError(f"{path}: {exc.strerror or exc}") from None


def _jsonl(path: Path, content: str, text_field: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RowsError(f"{path} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise RowsError(f"{path} line {number}: not a JSON object")
        _check_text(row.get(text_field), f"{path} line {number}", text_field)
        rows.append(row)
    return rows


def _csv(path: Path, content: str, text_field: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    try:
        columns = reader.fieldnames or []
        if text_field not in columns:
            shown = ", ".join(columns) if columns else "none"
            raise RowsError(f"{path}: no column {text_field!r} (columns: {shown})")
        rows = []
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row:
                raise RowsError(f"{where}: more values than columns")
            _check_text(row.get(text_field), where, text_field)
            rows.append(dict(row))
    except csv.Error as exc:
        raise RowsError(f"{path} line {reader.line_num}: {exc}") from None
    return rows


def _check_text(value: Any, where: str, text_field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise RowsError(f"{where}: no text in {text_field!r}")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value
