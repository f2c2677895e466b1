"""Reading and writing the row files of ``flexpipe classify`` and ``flexpipe summarize``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from flexpipe.cli.rows import RowsError, output_format, read_rows, write_rows


def test_jsonl_rows_keep_every_key(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1, "text": "a", "tags": ["x"]}\n\n{"id": 2, "text": "b"}\n')
    rows = read_rows(path, "text")
    assert rows == [{"id": 1, "text": "a", "tags": ["x"]}, {"id": 2, "text": "b"}]


def test_csv_rows_with_quotes_newlines_and_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('\ufeffid,body\n1,"two\nlines, one comma"\n2,plain\n', encoding="utf-8")
    assert read_rows(path, "body") == [
        {"id": "1", "body": "two\nlines, one comma"},
        {"id": "2", "body": "plain"},
    ]


def test_a_file_without_a_known_extension_is_sniffed(tmp_path: Path) -> None:
    jsonl, table = tmp_path / "a.txt", tmp_path / "b.txt"
    jsonl.write_text('{"text": "a"}\n')
    table.write_text("text\na\n")
    assert read_rows(jsonl, "text") == read_rows(table, "text") == [{"text": "a"}]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("in.jsonl", '{"text": "a"}\nnot json\n', "in.jsonl line 2: not JSON"),
        ("in.jsonl", '["a"]\n', "in.jsonl line 1: not a JSON object"),
        ("in.jsonl", '{"body": "a"}\n', "in.jsonl line 1: no text in 'text'"),
        ("in.jsonl", '{"text": "  "}\n', "in.jsonl line 1: no text in 'text'"),
        ("in.jsonl", '{"text": 3}\n', "in.jsonl line 1: no text in 'text'"),
        ("in.jsonl", "\n\n", "in.jsonl: no rows"),
        ("in.csv", "id,body\n1,a\n", "in.csv: no column 'text' (columns: id, body)"),
        ("in.csv", "", "in.csv: no column 'text' (columns: none)"),
        ("in.csv", "id,text\n1,a\n2,\n", "in.csv line 3: no text in 'text'"),
        ("in.csv", "id,text\n1,a,extra\n", "in.csv line 2: more values than columns"),
        ("in.csv", "id,text\n", "in.csv: no rows"),
    ],
)
def test_bad_input_names_the_file_and_line(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(RowsError) as info:
        read_rows(path, "text")
    assert str(info.value).startswith(str(tmp_path / message))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(RowsError, match="no such file"):
        read_rows(tmp_path / "nope.csv", "text")
    with pytest.raises(RowsError, match="is a directory"):
        read_rows(tmp_path, "text")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"text\n\xff\xfe\n")
    with pytest.raises(RowsError, match="not UTF-8"):
        read_rows(binary, "text")


def test_output_format_by_extension(tmp_path: Path) -> None:
    assert output_format(tmp_path / "o.CSV") == "csv"
    assert output_format(tmp_path / "o.ndjson") == "jsonl"
    with pytest.raises(RowsError, match=r"write \.jsonl or \.csv"):
        output_format(tmp_path / "o.xlsx")


ROWS = [
    {"id": 1, "text": "a", "label": "bug", "error": None},
    {"id": 2, "text": "b", "extra": {"k": [1]}, "label": None, "error": "failed: x"},
]


def test_write_jsonl_to_stdout_and_file(tmp_path: Path) -> None:
    out = io.StringIO()
    write_rows(ROWS, None, out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == ROWS
    path = tmp_path / "o.jsonl"
    write_rows(ROWS, path, io.StringIO())
    assert path.read_text() == out.getvalue()


def test_write_csv_has_every_column_once_in_first_seen_order(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    write_rows(ROWS, path, io.StringIO())
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == ["id", "text", "label", "error", "extra"]
        rows = list(reader)
    assert rows[0] == {"id": "1", "text": "a", "label": "bug", "error": "", "extra": ""}
    assert rows[1]["extra"] == '{"k": [1]}' and rows[1]["error"] == "failed: x"
