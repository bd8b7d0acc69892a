"""The import's CSV reader: the same rows and line numbers however the bytes are chunked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.imports.csv_rows import CsvFileError, CsvRows, StagingRow

FILE = (
    b"\xef\xbb\xbfTimezone,phone,tag\r\n"
    b"UTC,79123456789,a\r\n"
    b'UTC,79123456780,"multi\nline\xe2\x80\xa8"\n'
    b"\n"
    b"X,7912345678x,b\n"
    b"1,2\n"
    b'UTC,79123456781,"q""x"\n'
    b"UTC,7912345678\x00,nul\n"
    b"UTC,79123456782,last"
)
EXPECTED = [
    StagingRow(2, "79123456789", "a", "UTC", None, None, None, None),
    StagingRow(3, "79123456780", "multi\nline\u2028", "UTC", None, None, None, None),
    StagingRow(6, "7912345678x", "b", "X", None, None, None, None),
    StagingRow(7, None, None, None, None, None, None, "expected 3 fields, found 2"),
    StagingRow(8, "79123456781", 'q"x', "UTC", None, None, None, None),
    StagingRow(
        9, "7912345678", "nul", "UTC", None, None, "phone", "phone must not contain NUL characters"
    ),
    StagingRow(10, "79123456782", "last", "UTC", None, None, None, None),
]


def read(data: bytes, cuts: list[int]) -> list[StagingRow]:
    reader = CsvRows()
    rows: list[StagingRow] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        rows += reader.feed(data[start:cut])
        start = cut
    rows += reader.finish()
    return rows


@given(st.lists(st.integers(0, len(FILE)), max_size=8))
def test_any_chunking_reads_the_same_rows(cuts: list[int]) -> None:
    assert read(FILE, cuts) == EXPECTED


def test_empty_cells_of_optional_columns_mean_none() -> None:
    rows = read(b"phone,tag,timezone,operator_code,opted_out\n79123456789,,UTC,,\n", [])
    assert rows == [StagingRow(2, "79123456789", "", "UTC", None, None, None, None)]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"phone,tag\n", "lacks timezone"),
        (b"phone,tag,timezone,x\n", "unknown column 'x'"),
        (b"phone,tag,timezone\n\xff,a,UTC\n", "not UTF-8"),
        (b'phone,tag,timezone\n1,"' + b"a\n" * 150, "line 2: a quoted field is not closed"),
        (b'phone,tag,timezone\n1,"a"b,UTC\n', "line 2"),
    ],
)
def test_unreadable_files(data: bytes, fragment: str) -> None:
    with pytest.raises(CsvFileError, match=fragment):
        read(data, [7])
