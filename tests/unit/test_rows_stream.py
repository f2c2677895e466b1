"""Row files are read as streams: bounded lines, errors with line numbers, rows yielded
before the whole file is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexpipe.cli.rows import RowsError, iter_rows


def test_a_line_longer_than_the_limit_names_its_number(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "short"}\n{"text": "%s"}\n' % ("x" * 500))
    with pytest.raises(RowsError) as info:
        list(iter_rows(path, "text", max_line_bytes=100))
    assert str(info.value).startswith(f"{path} line 2: longer than 100 bytes")
    assert len(list(iter_rows(path, "text", max_line_bytes=600))) == 2


def test_dev_zero_fails_after_one_limit_of_bytes() -> None:
    read: list[int] = []
    with pytest.raises(RowsError, match="line 1: longer than 1,000 bytes"):
        list(iter_rows(Path("/dev/zero"), "text", max_line_bytes=1000, on_read=read.append))
    assert read == []  # the error came at the first line, after reading 1,001 bytes


def test_rows_come_one_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,text\n1,first\n2,second\n3,\n")
    rows = iter_rows(path, "text")
    assert next(rows) == {"id": "1", "text": "first"}  # before the bad line 4 is read
    assert next(rows) == {"id": "2", "text": "second"}
    with pytest.raises(RowsError, match="line 4: no text"):
        next(rows)


def test_progress_counts_bytes_read(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = "".join(f'{{"text": "row {n}"}}\n' for n in range(2500))
    path.write_text(lines)
    read: list[int] = []
    assert sum(1 for _ in iter_rows(path, "text", on_read=read.append)) == 2500
    assert read[-1] == len(lines.encode()) and read == sorted(read) and len(read) == 3
