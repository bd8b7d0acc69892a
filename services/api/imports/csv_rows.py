"""A client CSV, parsed as it arrives: byte chunks in, staging rows out, in constant memory.

Each row keeps the file line it starts on (the header is line 1; a quoted field may span lines).
Lines end at LF, CRLF or a lone CR (old "Mac" files); a line longer than MAX_LINE_CHARS refuses
the file at once, so an unfinished line never grows with the upload.
A cell our exports wrote formula-safe (`'=x`) is read back as it was (`=x`).
Only what PostgreSQL's COPY cannot carry is decided here: the header, a row's field count and
NUL characters. Every other rule runs later in SQL over the staging table
(`shared.domain.clients.client_problem_sql`).
"""

from __future__ import annotations

import codecs
import csv
import re
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

from shared.domain.clients import NUL_MESSAGE
from shared.domain.csv_cells import restore

REQUIRED_COLUMNS = ("phone", "tag", "timezone")
OPTIONAL_COLUMNS = ("operator_code", "opted_out")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# Columns of our own clients export, so an export imports as it is: these are ignored, and
# `opted_out_at` stands for opted_out (a time: yes; empty: no).
EXPORT_ONLY_COLUMNS = ("id", "created_at", "updated_at")
OPTED_OUT_AT = "opted_out_at"
# A record still open after this many lines has an unclosed quote: the file is refused rather
# than buffered whole.
MAX_LINES_PER_RECORD = 100
# A client's line is well under 200 characters; a longer one is a file without line ends (or
# not a client list), refused before it is buffered.
MAX_LINE_CHARS = 8192
_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")


class CsvFileError(ValueError):
    """The file as a whole cannot be read (header, encoding, an unclosed quote): a 422."""


class StagingRow(NamedTuple):
    line: int
    phone: str | None
    tag: str | None
    timezone: str | None
    operator_code: str | None  # None: derive from the phone
    opted_out: str | None  # as written; None or empty leaves an existing client's opt-out as is
    problem_field: str | None
    problem_reason: str | None


class _NeedMore(Exception):
    """The csv reader reached the end of the data received so far inside a record."""


class _Lines:
    """The reader's input: complete lines received so far; remembers the current record's."""

    def __init__(self) -> None:
        self.ready: deque[str] = deque()
        self.taken: list[str] = []
        self.finished = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if not self.ready:
            if self.finished:
                raise StopIteration
            raise _NeedMore
        line = self.ready.popleft()
        self.taken.append(line)
        return line


class CsvRows:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        # The unfinished last line: its pieces (joined once it ends), their length, and a CR
        # that ended the previous chunk (the next one may begin with its LF).
        self._partial: list[str] = []
        self._partial_chars = 0
        self._cr_held = False
        self._lines_ended = 0  # lines split off so far: the unfinished one is the next
        self._lines = _Lines()
        self._reader = csv.reader(self._lines, strict=True)
        self._next_line = 1
        self._columns: list[str] | None = None
        # Where each of COLUMNS is in a record (None: not in the file).
        self._index: tuple[int | None, ...] = ()
        self._nul_seen = False  # rows are checked for NUL field by field once one appears
        self._quote_seen = False  # cells our exports quoted are restored once a ' appears
        self._opted_out_at = False  # the file is our export: opted_out_at for opted_out
        self.rows = 0

    def feed(self, chunk: bytes) -> Iterator[StagingRow]:
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise CsvFileError(f"the file is not UTF-8 (near line {self._next_line})") from exc
        self._split(text)
        return self._records()

    def finish(self) -> Iterator[StagingRow]:
        try:
            self._split(self._decoder.decode(b"", final=True), final=True)
        except UnicodeDecodeError as exc:
            raise CsvFileError("the file is not UTF-8 (at its end)") from exc
        tail = "".join(self._partial)
        self._partial, self._partial_chars = [], 0
        if tail:
            self._lines.ready.append(tail + "\n")
        self._lines.finished = True
        yield from self._records()
        if self._columns is None:
            raise CsvFileError("the file is empty: it needs a header row, e.g. phone,tag,timezone")

    def _split(self, text: str, final: bool = False) -> None:
        """Whole lines of `text` to the reader, each with its own line end (the reader keeps a
        quoted field's CR or CRLF as it is), the rest kept: each character is looked at once,
        however the file is chunked."""
        if self._cr_held:
            text, self._cr_held = "\r" + text, False
        if text.endswith("\r") and not final:
            # Maybe the first half of a CRLF: decided with the next chunk.
            text, self._cr_held = text[:-1], True
        if not text:
            return
        self._nul_seen = self._nul_seen or "\x00" in text
        self._quote_seen = self._quote_seen or "'" in text
        pieces = _LINE_BREAK.split(text)  # line, its end, line, its end, ..., the unfinished rest
        if len(pieces) > 1:
            first = "".join([*self._partial, pieces[0]])
            lines = [first, *pieces[2:-1:2]]
            for number, line in enumerate(lines, start=self._lines_ended + 1):
                if len(line) > MAX_LINE_CHARS:
                    raise _too_long(number)
            self._lines_ended += len(lines)
            self._lines.ready.extend(map(str.__add__, lines, pieces[1::2]))
            self._partial, self._partial_chars = [], 0
        self._partial.append(pieces[-1])
        self._partial_chars += len(pieces[-1])
        if self._partial_chars > MAX_LINE_CHARS:
            raise _too_long(self._lines_ended + 1)

    def _records(self) -> Iterator[StagingRow]:
        while True:
            try:
                record = next(self._reader)
            except _NeedMore:
                if len(self._lines.taken) >= MAX_LINES_PER_RECORD:
                    raise CsvFileError(
                        f"line {self._next_line}: a quoted field is not closed"
                    ) from None
                # The reader starts each record afresh: hand it this record's lines again.
                self._lines.ready.extendleft(reversed(self._lines.taken))
                self._lines.taken.clear()
                return
            except StopIteration:
                return
            except csv.Error as exc:
                raise CsvFileError(f"line {self._next_line}: {exc}") from None
            line = self._next_line
            self._next_line += len(self._lines.taken)
            self._lines.taken.clear()
            if not record:
                continue  # a blank line
            if self._columns is None:
                self._columns = _header(record)
                self._opted_out_at = OPTED_OUT_AT in self._columns
                if self._opted_out_at:
                    self._columns[self._columns.index(OPTED_OUT_AT)] = "opted_out"
                self._index = tuple(
                    self._columns.index(name) if name in self._columns else None for name in COLUMNS
                )
                continue
            self.rows += 1
            if self._quote_seen:
                record = [restore(value) for value in record]
            if self._opted_out_at and len(record) == len(self._columns):
                at = self._index[-1]
                assert at is not None
                record[at] = "true" if record[at] else "false"
            yield self._row(line, record)

    def _row(self, line: int, record: list[str]) -> StagingRow:
        columns = self._columns
        assert columns is not None
        if len(record) != len(columns):
            shape = f"expected {len(columns)} fields, found {len(record)}"
            return StagingRow(line, None, None, None, None, None, None, shape)
        if not self._nul_seen:  # the common case, a million times: no dict, no scan
            at_phone, at_tag, at_zone, at_code, at_opted_out = self._index
            assert at_phone is not None and at_tag is not None and at_zone is not None
            return StagingRow(
                line,
                record[at_phone],
                record[at_tag],
                record[at_zone],
                None if at_code is None else record[at_code] or None,
                None if at_opted_out is None else record[at_opted_out] or None,
                None,
                None,
            )
        values = dict(zip(columns, record, strict=True))
        problem_field = None
        for name in COLUMNS:
            value = values.get(name)
            if value is not None and "\x00" in value:
                problem_field = problem_field or name
                values[name] = value.replace("\x00", "")
        code = values.get("operator_code") or None
        return StagingRow(
            line,
            values["phone"],
            values["tag"],
            values["timezone"],
            code,
            values.get("opted_out") or None,
            problem_field,
            f"{problem_field} {NUL_MESSAGE}" if problem_field else None,
        )


def _too_long(line: int) -> CsvFileError:
    return CsvFileError(
        f"line {line} is longer than {MAX_LINE_CHARS} characters: lines must end with LF,"
        " CRLF or CR, one client per line"
    )


def _header(record: list[str]) -> list[str]:
    columns = [name.strip().lower() for name in record]
    if "opted_out" in columns and OPTED_OUT_AT in columns:
        raise CsvFileError("line 1: give opted_out or opted_out_at, not both")
    known = (*COLUMNS, OPTED_OUT_AT, *EXPORT_ONLY_COLUMNS)
    unknown = [name for name in columns if name not in known]
    if unknown:
        raise CsvFileError(
            f"line 1: unknown column {unknown[0]!r}; the columns are {', '.join(COLUMNS)}"
        )
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise CsvFileError(f"line 1: column {repeated[0]!r} appears twice")
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise CsvFileError(
            f"line 1: the header lacks {', '.join(missing)}"
            " (needed: phone, tag, timezone; optional: operator_code, opted_out)"
        )
    return columns
