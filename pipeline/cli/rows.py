"""Rows in and out of files for ``flexpipe classify`` and ``flexpipe summarize``.

Two formats, chosen by the file's extension: JSON Lines (``.jsonl``, ``.ndjson``,
``.json``: one object per line) and CSV (``.csv``: a header row, then one row per line).
An input file with another extension is read as JSON Lines if it starts with ``{``.
Input is read as a stream, one bounded line at a time (:func:`iter_rows`).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

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


#: The longest line read, in bytes (``--max-line-bytes``, ``FLEXPIPE_MAX_LINE_BYTES``).
MAX_LINE_BYTES = 1_000_000


def read_rows(path: Path, text_field: str, **options: Any) -> list[dict[str, Any]]:
    """Every row of a JSONL or CSV file, as a list (small files; see :func:`iter_rows`)."""
    return list(iter_rows(path, text_field, **options))


def iter_rows(
    path: Path,
    text_field: str,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Read the rows of a JSONL or CSV file one line at a time; each must have a
    non-empty ``text_field``.

    Memory stays bounded whatever the file holds: a line longer than ``max_line_bytes``
    is an error naming its line number, found after reading that many bytes
    (``/dev/zero`` fails at once). ``on_read`` is called now and then with the number of
    bytes read so far, for a progress bar. Raises :class:`RowsError` naming the place.
    """
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise RowsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RowsError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise RowsError(f"{path}: {exc.strerror or exc}") from None
    with file:
        lines = _Lines(path, file, max_line_bytes, on_read)
        first = lines.peek()
        suffix = path.suffix.lower()
        as_jsonl = suffix in JSONL_SUFFIXES or (
            suffix not in CSV_SUFFIXES and first.lstrip().startswith("{")
        )
        count = 0
        for row in _jsonl(path, lines, text_field) if as_jsonl else _csv(path, lines, text_field):
            count += 1
            yield row
        if on_read is not None:
            on_read(lines.read)
    if not count:
        raise RowsError(f"{path}: no rows")


class _Lines:
    """The decoded lines of a file opened in binary, each at most ``limit`` bytes.

    ``number`` is the number of the last line read; ``peek`` shows the first non-blank
    line without consuming anything.
    """

    def __init__(
        self, path: Path, file: BinaryIO, limit: int, on_read: Callable[[int], None] | None
    ) -> None:
        self.path, self.file, self.limit, self.on_read = path, file, limit, on_read
        self.number = 0
        self.read = 0
        self._ahead: list[str] = []

    def peek(self) -> str:
        while True:
            line = self._next()
            if line is None:
                return ""
            self._ahead.append(line)
            if line.strip():
                return line

    def __iter__(self) -> Iterator[str]:
        while self._ahead:
            yield self._ahead.pop(0)
        while (line := self._next()) is not None:
            yield line

    def _next(self) -> str | None:
        try:
            raw = self.file.readline(self.limit + 1)
        except OSError as exc:
            raise RowsError(f"{self.path}: {exc.strerror or exc}") from None
        if not raw:
            return None
        self.number += 1
        self.read += len(raw)
        if len(raw) > self.limit:
            raise RowsError(
                f"{self.path} line {self.number}: longer than {self.limit:,} bytes "
                "(raise --max-line-bytes if it is meant to be)"
            )
        if self.number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"{self.path} line {self.number}"
            raise RowsError(f"{where}: not UTF-8 text ({exc.reason})") from None
        if self.on_read is not None and self.number % 1000 == 0:
            self.on_read(self.read)
        return line


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


def _jsonl(path: Path, lines: _Lines, text_field: str) -> Iterator[dict[str, Any]]:
    for line in lines:
        if not line.strip():
            continue
        number = lines.number
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RowsError(f"{path} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise RowsError(f"{path} line {number}: not a JSON object")
        _check_text(row.get(text_field), f"{path} line {number}", text_field)
        yield row


def _csv(path: Path, lines: _Lines, text_field: str) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(iter(lines))
    try:
        columns = reader.fieldnames or []
        if text_field not in columns:
            shown = ", ".join(columns) if columns else "none"
            raise RowsError(f"{path}: no column {text_field!r} (columns: {shown})")
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row:
                raise RowsError(f"{where}: more values than columns")
            _check_text(row.get(text_field), where, text_field)
            yield dict(row)
    except csv.Error as exc:
        raise RowsError(f"{path} line {reader.line_num}: {exc}") from None


def _check_text(value: Any, where: str, text_field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise RowsError(f"{where}: no text in {text_field!r}")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value
