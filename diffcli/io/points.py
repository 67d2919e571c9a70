"""Reading points: CSV / TSV / NDJSON / JSON records, from files or stdin,
gzip-compressed or not, in chunks of good records.

A chunk is a run of good records, converted to one array per variable with a
leading batch axis, and ends early at the first bad record, which it carries
along (with its line number) so the caller can stop or go on. Memory is
bounded whatever the input: nothing is read past MAX_RECORD characters of one
record (a longer one, like a read error, is a bad record that ends the input),
and a chunk holds at most chunk_size records and MAX_RECORD characters.

CSV and TSV: a header row, a column per scalar variable; a vector or matrix
variable as columns x[0], x[1], ... / A[0,0], A[0,1], ... or as one column
holding a literal like [1, 2, 3]. NDJSON: one JSON object per line. JSON: one
array of such objects (read incrementally too).
"""

from __future__ import annotations

import csv
import bz2
import gzip
import io
import itertools
import json
import math
import re
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ESCAPED_BYTE, EXIT_BAD_DATA, DiffcliError, not_utf8

FORMATS = ("csv", "tsv", "ndjson", "json", "parquet", "arrow")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".ndjson": "ndjson", ".jsonl": "ndjson",
              ".json": "json", ".parquet": "parquet", ".arrow": "arrow", ".feather": "arrow", ".arrows": "arrow",
              ".ipc": "arrow"}
_COLUMN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9]+(?:,[0-9]+)*)\])?$")

# The longest record, in characters (64 MiB of ASCII): a line of CSV, TSV or
# NDJSON, or one element of a JSON array. A longer one is refused after reading
# this much and one more, and the reading stops there. A chunk ends once it
# holds this much text, too.
MAX_RECORD = 64 << 20
JSON_BLOCK = 1 << 20  # a JSON array is read this many characters at a time


class DataError(DiffcliError):
    """The points themselves are unusable (exit status 3)."""

    exit_status = EXIT_BAD_DATA


@dataclass
class BadRecord:
    line: int  # the line of a text format, the row (from 1) of Parquet/Arrow
    message: str
    unit: str = "line"  # "row" for Parquet/Arrow: binary files have no lines

    @property
    def where(self) -> str:
        return f"{self.unit} {self.line}"


@dataclass
class Chunk:
    values: dict[str, np.ndarray]  # variable -> array of shape (n, *variable shape)
    lines: Sequence[int]  # the line each record started on (a range for Arrow blocks)
    kept: dict[str, list] = field(default_factory=dict)  # copied columns, in record order
    bad: BadRecord | None = None  # the bad record that ended this chunk, if any
    unit: str = "line"  # what lines counts: "row" for Parquet/Arrow

    def __len__(self):
        return len(self.lines)


# ---------------------------------------------------------------- opening


def open_points(path: str):
    """A binary stream for PATH ('-' = stdin), transparently decompressed when it
    starts with the magic bytes of gzip, bzip2 or zstd."""
    if path == "-":
        if sys.stdin is None:
            raise DataError("cannot read points from stdin: it is closed")
        raw = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as e:
            raise DataError(f"cannot read points from {path}: {e.strerror}") from None
    raw = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    try:
        head = raw.peek(4)[:4]
        if head[:2] == b"\x1f\x8b":
            raw = gzip.GzipFile(fileobj=raw)
        elif head[:3] == b"BZh":
            raw = bz2.BZ2File(raw)
        elif head == b"\x28\xb5\x2f\xfd":
            import pyarrow as pa

            raw = io.BufferedReader(_Decompressed(pa.CompressedInputStream(raw, "zstd")))
    except OSError as e:
        raise DataError(f"cannot read points from {path}: {e.strerror or e}") from None
    return raw


class _Decompressed(io.RawIOBase):
    """pyarrow's zstd stream as a raw stream whose failures (a corrupt or truncated
    .zst) are OSErrors, as gzip's and bz2's are: a bad record, never a traceback."""

    def __init__(self, stream):
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            return self.stream.readinto(buffer)
        except Exception as e:  # noqa: BLE001 - pyarrow's ArrowInvalid / ArrowIOError
            raise OSError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def decompressed(stream) -> bool:
    """Whether the stream is decompressed on the fly (it seeks only by reading again)."""
    return isinstance(stream, (gzip.GzipFile, bz2.BZ2File)) or isinstance(getattr(stream, "raw", None),
                                                                          _Decompressed)


def format_from_name(path: str) -> str | None:
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zst"):
        suffixes.pop()
    return EXTENSIONS.get(suffixes[-1]) if suffixes else None


def sniff_binary(stream) -> str | None:
    """parquet or arrow from the first bytes (their magic numbers), else None."""
    try:
        head = stream.peek(8)[:8] if hasattr(stream, "peek") else b""
    except _READ_ERRORS:  # the text reader reports it, with its line
        return None
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "arrow"
    return None


def sniff(first_line: str) -> str:
    stripped = first_line.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        return "ndjson"
    return "tsv" if first_line.count("\t") > first_line.count(",") else "csv"


class PointSource:
    """Chunks of points for the given variables from one binary stream
    (open_points). Nothing is read whole: a record at most MAX_RECORD characters
    long at a time, a chunk at most chunk_size records and MAX_RECORD characters.

    defaults: --at values, used for variables the points do not give (a
    point's own value wins). keep: columns to copy to the output;
    keep_all: every column that is not a variable."""

    def __init__(self, stream, fmt: str | None, variables: tuple[str, ...], defaults: dict,
                 chunk_size: int = 65536, keep: tuple[str, ...] = (), keep_all: bool = False):
        self.variables = variables
        self.defaults = defaults
        self.chunk_size = max(1, chunk_size)
        self.keep = list(keep)
        self.keep_all = keep_all
        self.sniffed = False
        self.shapes: dict[str, tuple] = {}
        self.first_line = 1
        self.format = fmt
        if fmt in (None, "parquet", "arrow") and self._open_binary(stream, fmt):
            return
        self.input = _Input(stream)
        first, self.first_line = self.input.first_line()
        if isinstance(first, _Bad):  # a read error, before anything could be read
            raise DataError(f"line {self.first_line}: {first}")
        if fmt is None:
            fmt = sniff(first)
            self.sniffed = True
        self.format = fmt
        if fmt == "json":  # read in blocks, not lines: a whole array may be on one line
            self.input.carry = first
            return
        first = self.input.check(first)
        if not first:
            self._lines = iter(())
        elif isinstance(first, _Bad) and first.last:
            self._lines = iter([first])
        else:
            self._lines = itertools.chain([first], self.input.lines())

    def _open_binary(self, stream, fmt: str | None) -> bool:
        """Parquet or Arrow IPC (named, or sniffed by their magic numbers): read by
        columnar.py, which imports pyarrow. False for a text format."""
        if fmt is None:
            fmt = sniff_binary(stream)
            if fmt is None:
                return False
            self.sniffed = True
        from .columnar import BinaryReader

        self.format = fmt
        self._binary = BinaryReader(self, stream, fmt)
        return True

    def chunks(self) -> Iterator[Chunk]:
        if self.format in ("parquet", "arrow"):
            return self._binary.chunks()
        if self.format in ("csv", "tsv"):
            return _DelimitedReader(self, "," if self.format == "csv" else "\t").chunks()
        if self.format == "ndjson":
            first = next(self._lines, None)
            if isinstance(first, str) and not self.keep_all and not set(self.keep) & set(self.variables):
                return _NdjsonBlocks(self, first).chunks()
            lines = self._lines if first is None else itertools.chain([first], self._lines)
            return _ObjectReader(self).chunks(_ndjson_records(lines, self.first_line))
        return _ObjectReader(self).chunks(_json_array_records(self.input, self.first_line))


class _Input:
    """The text of the points, never more than one record held: lines through
    readline(MAX_RECORD + 1); a JSON array in blocks. Bytes that are not UTF-8
    are kept as surrogate escapes until their line is checked, so they make one
    bad record and every good one before them is still used."""

    def __init__(self, raw):
        self.raw = raw
        self.stream = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        self.carry = ""  # text read ahead: the first line, when a JSON array is read in blocks
        self.failed: _Bad | None = None  # why the JSON blocks ended early
        # True while the text stream has read nothing: the first lines are taken from the
        # bytes the binary stream holds, so the CSV blocks can go on reading bytes (no
        # decoding and encoding again: 0.1-0.2 s per 58 MB).
        self.bytes_exact = True

    def first_line(self) -> tuple[str | _Bad, int]:
        """The first line that is not blank (possibly cut at the limit), and its number;
        a read error instead of the line is a _Bad."""
        number = 1
        while True:
            text = self._exact_line() if self.bytes_exact else self._readline()
            if isinstance(text, _Bad) or not text or text.strip() or len(text) > MAX_RECORD:
                return text, number
            number += 1

    def lines(self) -> Iterator[str | _Bad]:
        """Each further line, or a _Bad; nothing is read after a bad record that
        ends the input (a record too long, a read error). The common case, a
        short ASCII line, costs a readline and an isascii: this loop runs per record."""
        readline, limit = self.stream.readline, MAX_RECORD + 1
        while True:
            try:
                text = readline(limit)
            except _READ_ERRORS as e:
                yield _read_failure(e)
                return
            if not text:
                return
            if len(text) < limit and text.isascii():
                yield text
                continue
            text = self.check(text)
            yield text
            if isinstance(text, _Bad) and text.last:
                return

    def check(self, text: str | _Bad) -> str | _Bad:
        if isinstance(text, _Bad):
            return text
        if len(text) > MAX_RECORD and text[-1] not in "\r\n":
            return _too_long("a record")
        bad = _ESCAPED.search(text)
        if bad:
            return _Bad(f"not UTF-8 text ({_undecodable(text, bad.start())})")
        return text

    def text(self, size: int) -> str:
        """About size more characters of a JSON array ('' at the end, or when
        self.failed says why not)."""
        text, self.carry = self.carry, ""
        if not text and self.failed is None:
            try:
                text = self.stream.read(size)
            except _READ_ERRORS as e:
                self.failed = _read_failure(e)
        bad = _ESCAPED.search(text)
        if bad:
            self.failed = _Bad(f"not UTF-8 text ({_undecodable(text, bad.start(), False)}); diffcli stops "
                               "reading here", last=True)
            return text[:bad.start()]
        return text

    def _readline(self) -> str | _Bad:
        try:
            return self.stream.readline(MAX_RECORD + 1)
        except _READ_ERRORS as e:
            return _read_failure(e)

    def _exact_line(self) -> str | _Bad:
        """The next line as readline gives it, taken from the bytes the binary stream
        has buffered (peek), so that nothing past it is read; when the line's end is
        not among them, the text stream reads it (and bytes_exact is over)."""
        try:
            head = self.raw.peek(MAX_RECORD + 1) if hasattr(self.raw, "peek") else None
        except _READ_ERRORS:
            head = None
        end = _line_end(head) if head else None
        if end is None:
            self.bytes_exact = head == b""  # at the end: nothing was read
            return "" if head == b"" else self._readline()
        return self.raw.read(end).decode("utf-8", "surrogateescape")


def _line_end(data: bytes) -> int | None:
    """Where the first line of data ends (after \\n, \\r\\n or a lone \\r, as readline
    with newline="" ends lines), or None if data does not show it."""
    newline, cr = data.find(b"\n"), data.find(b"\r")
    if cr < 0 or 0 <= newline < cr:
        return None if newline < 0 else newline + 1
    if cr + 1 >= len(data):
        return None  # a \r last: whether \n follows is not known yet
    return cr + 2 if data[cr + 1] == 0x0A else cr + 1


# A truncated or corrupt .gz, an unreadable file.
_READ_ERRORS = (EOFError, OSError, zlib.error)
_ESCAPED = re.compile(ESCAPED_BYTE)


def _undecodable(text: str, index: int, in_line: bool = True) -> str:
    """Which byte, where in its line (counted in bytes), and why, for the escaped
    byte at text[index]."""
    byte, reason = not_utf8(text[index:index + 4].encode("utf-8", "surrogateescape"))
    if not in_line:
        return f"{byte}: {reason}"
    offset = len(text[:index].encode("utf-8", "surrogateescape"))
    return f"{byte} at byte offset {offset:,} of the line: {reason}"


def _read_failure(error: Exception) -> _Bad:
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return _Bad(f"cannot read the points: {reason}; diffcli stops reading here", last=True)


def _too_long(what: str) -> _Bad:
    return _Bad(f"{what} longer than {MAX_RECORD:,} characters, the most diffcli reads; it stops "
                "reading here", last=True)


# ---------------------------------------------------------------- CSV / TSV


class _DelimitedReader:
    def __init__(self, source: PointSource, delimiter: str):
        self.source = source
        self.delimiter = delimiter
        header_line = next(source._lines, None)
        if header_line is None:
            raise DataError("the points input is empty (expected a header row)")
        try:
            if isinstance(header_line, _Bad):
                raise header_line
            header = _fields(header_line, delimiter)
        except _Bad as e:
            raise DataError(f"line {source.first_line}: the header: {e}") from None
        self.columns = [re.sub(r"\s+", "", c) for c in header]
        self._plan_columns()

    def _plan_columns(self):
        self.plain, self.indexed, self.keep_index = plan_columns(self.source, self.columns)

    def chunks(self) -> Iterator[Chunk]:
        used = set(self.plain.values()) | {i for _, cols in self.indexed.values() for i in cols}
        if used & set(self.keep_index):  # a variable's column kept as its text: line by line
            return self._careful_chunks(self.source._lines, self.source.first_line)
        return _ArrowBlocks(self).chunks()

    def _careful_chunks(self, lines, line_number: int) -> Iterator[Chunk]:
        """Line by line with the csv module: every bad record named with its line.
        line_number: the line before the first of lines."""
        source = self.source
        pending: list[tuple[int, str]] = []
        size = 0
        for text in lines:
            line_number += 1
            if isinstance(text, _Bad):  # undecodable or too long: the records before it first
                yield from self._parse(pending)
                pending, size = [], 0
                yield self._chunk([], [], [], BadRecord(line_number, str(text)))
                continue
            if text.strip():
                pending.append((line_number, text))
                size += len(text)
            if len(pending) >= source.chunk_size or size >= MAX_RECORD:
                yield from self._parse(pending)
                pending, size = [], 0
        yield from self._parse(pending)

    def _parse(self, numbered: list[tuple[int, str]]) -> Iterator[Chunk]:
        """Good records in runs; each run ends at a bad record or at the end."""
        if not numbered:
            return
        start = 0
        while start < len(numbered):
            rows, kept, bad, consumed = [], [], None, 0
            for line, text in numbered[start:]:
                consumed += 1
                try:
                    fields = _fields(text, self.delimiter)
                    rows.append(self._record(fields))
                    kept.append([fields[i] if i < len(fields) else "" for i in self.keep_index])
                except _Bad as e:
                    bad = BadRecord(line, str(e))
                    break
            lines = [line for line, _ in numbered[start:start + len(rows)]]
            yield self._chunk(rows, lines, kept, bad)
            start += consumed

    def _record(self, fields: list[str]) -> dict[str, object]:
        if len(fields) != len(self.columns):
            raise _Bad(f"expected {len(self.columns)} fields, found {len(fields)}")
        record = {}
        for name, i in self.plain.items():
            record[name] = _value(name, fields[i], self.source.shapes)
        for name, (_, columns) in self.indexed.items():
            record[name] = [_number(self.columns[i], fields[i]) for i in columns]
        return record

    def _chunk(self, rows, lines, kept, bad) -> Chunk:
        values = {}
        n = len(rows)
        for name in self.source.variables:
            if name in self.plain or name in self.indexed:
                shape = self.source.shapes.get(name, ())
                values[name] = np.array([r[name] for r in rows], dtype=np.float64).reshape((n,) + shape)
            else:
                default = np.asarray(self.source.defaults[name], dtype=np.float64)
                values[name] = np.broadcast_to(default, (n,) + default.shape)
        kept_columns = {c: [k[j] for k in kept] for j, c in enumerate(self.source.keep)}
        return Chunk(values, lines, kept_columns, bad)


# CSV / TSV text parsed by Arrow at a time: big enough for its threads (two of
# its 1 MiB blocks), small against MAX_RECORD (a block holds at most this and one
# record more). 8 MiB took the same time for 10^6 points and 25 MB more peak RSS.
ARROW_BLOCK = 2 << 20
READ_PIECE = 8192  # characters per read: as much as a read error can cut


class _ArrowBlocks:
    """CSV / TSV read in blocks of about ARROW_BLOCK characters, each parsed
    straight to float64 columns (multi-threaded): by polars, else by pyarrow,
    else by the careful path, which names the line. polars reads every column,
    so a long row is an error, and it reads a short row, a blank line or an
    empty cell as nulls: a block with a null goes on to pyarrow, which counts
    the fields of every row (an empty cell in a column diffcli does not use is
    fine there). A cell that is not a number as they read them, a byte that is
    not UTF-8, a record count that differs from the block's line count: the
    careful path. A good file never takes it, and a file without empty cells
    never imports pyarrow (0.04-0.2 s). Kept columns (--keep) are read by
    pyarrow, as Arrow strings. Chunks of chunk_size points are cut across
    blocks, so the chunks (and so the results) do not depend on the blocks."""

    def __init__(self, reader: _DelimitedReader):
        self.reader = reader
        self.source = reader.source
        self.names = [f"c{i}" for i in range(len(reader.columns))]
        self.used = sorted(set(reader.plain.values()) | {i for _, cols in reader.indexed.values() for i in cols})
        self.kept = [(name, self.names[i]) for name, i in zip(self.source.keep, reader.keep_index)]
        self.pyarrow_options = None  # made when first needed: importing pyarrow costs 0.04-0.2 s
        self.stopped = False  # a record too long or a read error: nothing after it is read

    def chunks(self) -> Iterator[Chunk]:
        batcher = _Batcher(self.source)
        line = self.source.first_line  # the line before the block's first
        for data, failure in self._blocks():
            parsed = self._parse(data) if failure is None else None
            if parsed is not None:
                values, kept, n = parsed
                yield from batcher.add(values, kept, line + 1, n, len(data))
                line += n
                continue
            yield from batcher.flush()
            counted = _Counted(self._careful_lines(data.decode("utf-8", "surrogateescape"), failure))
            yield from self.reader._careful_chunks(counted, line)
            line += counted.count
            if self.stopped:
                return
        yield from batcher.flush()

    def _blocks(self) -> Iterator[tuple[bytes, _Bad | None]]:
        """Blocks of whole lines (the last one possibly cut at MAX_RECORD + 1
        characters, as the careful path reads it), as bytes, each with the read
        error that ended the input after it, if any."""
        if self.source.input.bytes_exact:
            yield from self._byte_blocks()
            return
        for text, failure in self._text_blocks():
            yield text.encode("utf-8", "surrogateescape"), failure  # the bytes that were read

    def _byte_blocks(self) -> Iterator[tuple[bytes, _Bad | None]]:
        """_blocks read from the binary stream (the text stream has read nothing).
        The rest of a block's last line is read up to its \\n (a file whose lines
        end in a lone \\r makes blocks of up to MAX_RECORD, all for the careful path)."""
        raw = self.source.input.raw
        while True:
            pieces, failure, end = [], None, False
            try:
                # In small reads, as the careful path reads: a read error (a corrupt .gz)
                # loses only the lines it cuts, not the block read so far.
                for _ in range(ARROW_BLOCK // READ_PIECE):
                    piece = raw.read(READ_PIECE)
                    if not piece:
                        end = True
                        break
                    pieces.append(piece)
                if pieces and not pieces[-1].endswith(b"\n"):
                    pieces.append(_rest_of_line(raw, b"".join(pieces)))
            except _READ_ERRORS as e:
                failure = _read_failure(e)
            data = b"".join(pieces)
            if failure is not None:
                data = data[:max(data.rfind(b"\n"), data.rfind(b"\r")) + 1]  # the cut line is lost
            if data or failure is not None:
                yield data, failure
            if end or failure is not None:
                return

    def _text_blocks(self) -> Iterator[tuple[str, _Bad | None]]:
        """_blocks as text, read from the text stream (once it has read ahead)."""
        stream, limit = self.source.input.stream, MAX_RECORD + 1
        while True:
            pieces, failure, end = [], None, False
            try:
                for _ in range(ARROW_BLOCK // READ_PIECE):
                    piece = stream.read(READ_PIECE)
                    if not piece:
                        end = True
                        break
                    pieces.append(piece)
                text = "".join(pieces)
                if text and text[-1] != "\n":  # finish the last line (after a \r, its \n, if any)
                    tail = len(text) - 1 - max(text.rfind("\n"), text.rfind("\r"))
                    text += stream.readline(limit - tail if tail else limit)
            except _READ_ERRORS as e:
                text, failure = "".join(pieces), _read_failure(e)
                text = text[:max(text.rfind("\n"), text.rfind("\r")) + 1]  # the cut line is lost
            if text or failure is not None:
                yield text, failure
            if end or failure is not None:
                return

    def _parse(self, data: bytes) -> tuple[dict[str, np.ndarray], dict, int] | None:
        """The block's columns for each variable, its kept columns (Arrow string
        arrays, each cell's text as the csv module gives it) and its number of
        records, or None if the fast readers reject it or read a different number
        of records than the block has lines."""
        if _unchecked(data):
            return None
        rows = _rows(data)
        columns = self._polars_columns(data, rows) if not self.kept else None
        kept = {}
        if columns is None:
            parsed = self._pyarrow_columns(data, rows)
            if parsed is None:
                return None
            columns, kept = parsed
        values = {}
        for name, i in self.reader.plain.items():
            values[name] = columns[i]
            self.source.shapes.setdefault(name, ())
        for name, (shape, indices) in self.reader.indexed.items():
            values[name] = np.stack([columns[i] for i in indices], axis=1).reshape((rows,) + shape)
        return values, kept, rows

    def _polars_columns(self, data: bytes, rows: int) -> dict[int, np.ndarray] | None:
        """The used columns as float64 arrays, by polars (every column read, so that a
        row with too many fields is an error); None for an error or any null."""
        import polars as pl

        used = set(self.used)
        schema = {name: pl.Float64 if i in used else pl.String for i, name in enumerate(self.names)}
        try:
            frame = pl.read_csv(data, has_header=False, schema=schema, separator=self.reader.delimiter,
                                quote_char='"', comment_prefix=None, try_parse_dates=False,
                                raise_if_empty=False)
        except (pl.exceptions.PolarsError, ValueError):
            return None
        if frame.height != rows or any(s.null_count() for s in frame.get_columns()):
            return None
        return {i: frame.get_column(self.names[i]).to_numpy() for i in self.used}

    def _pyarrow_columns(self, data: bytes, rows: int) -> tuple[dict[int, np.ndarray], dict] | None:
        """The used columns as float64 arrays and the kept ones as Arrow strings, by
        pyarrow (which checks every row's field count, reading only these columns)."""
        import pyarrow as pa
        import pyarrow.csv as pacsv

        if self.pyarrow_options is None:
            types = {self.names[i]: pa.float64() for i in self.used} | \
                {column: pa.string() for _, column in self.kept}
            self.pyarrow_options = dict(
                read_options=pacsv.ReadOptions(column_names=self.names),
                parse_options=pacsv.ParseOptions(delimiter=self.reader.delimiter, quote_char='"',
                                                 double_quote=True, escape_char=False, newlines_in_values=False,
                                                 ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(
                    column_types=types, include_columns=list(types),
                    null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False))
        try:
            table = pacsv.read_csv(pa.py_buffer(data), **self.pyarrow_options)
        except (pa.ArrowException, ValueError):
            return None
        if table.num_rows != rows:  # e.g. a lone \r ending lines: let the careful path count
            return None
        columns = {i: table.column(self.names[i]).to_numpy() for i in self.used}
        return columns, {name: table.column(column).combine_chunks() for name, column in self.kept}

    def _careful_lines(self, text: str, failure: _Bad | None) -> Iterator[str | _Bad]:
        """The block's lines as the careful path reads them from the stream."""
        check = self.source.input.check
        for match in _LINE.finditer(text):
            line = check(match.group())
            yield line
            if isinstance(line, _Bad) and line.last:
                self.stopped = True
                return
        if failure is not None:
            self.stopped = True
            yield failure


_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+\Z")  # a line as readline(newline="") gives it


def _rows(data: bytes) -> int:
    """Lines in a block of whole lines (\n or \r\n endings; the last may lack one)."""
    return _byte_count(data, b"\n") + (not data.endswith(b"\n"))


def _byte_count(data: bytes, byte: bytes) -> int:
    """data.count(byte) for one ASCII byte, at 7x its speed."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == ord(byte)))


def _unchecked(data: bytes) -> bool:
    """Whether a block is left to the careful path before the fast readers see it:
    a record near the limit, or bytes that are not UTF-8 (it says which)."""
    if len(data) > MAX_RECORD:
        return True
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _rest_of_line(raw, data: bytes) -> bytes:
    """The rest of data's last line from raw, up to its \\n, and at most
    MAX_RECORD + 1 characters of the line in all (as the careful path reads it)."""
    start = data.rfind(b"\n") + 1
    line, rest = data[start:], []
    while True:
        have = len(line) if line.isascii() else len(line.decode("utf-8", "surrogateescape"))
        if have > MAX_RECORD:
            return b"".join(rest)
        more = raw.readline(MAX_RECORD + 1 - have)  # bytes: no more characters than that
        rest.append(more)
        line += more
        if not more or more.endswith(b"\n"):
            return b"".join(rest)


class _Counted:
    """An iterator that counts what it gives."""

    def __init__(self, items):
        self.items = iter(items)
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.items)
        self.count += 1
        return item


class _Batcher:
    """Chunks of chunk_size points cut from consecutive blocks (lines without
    gaps), or fewer once they hold MAX_RECORD characters of text."""

    def __init__(self, source: PointSource):
        self.source = source
        self.parts: list[dict] = []  # variable -> array, and ("kept", column) -> Arrow array
        self.first_line = 0
        self.count = 0
        self.size = 0

    def add(self, values: dict[str, np.ndarray], kept: dict, first_line: int, n: int,
            size: int) -> Iterator[Chunk]:
        if not self.parts:
            self.first_line = first_line
        self.parts.append(values | {("kept", name): column for name, column in kept.items()})
        self.count += n
        self.size += size
        limit = self.source.chunk_size
        if self.count < limit and self.size < MAX_RECORD:
            return
        merged = self._merged()
        start = 0
        while self.count - start >= limit:
            yield self._chunk({k: v[start:start + limit] for k, v in merged.items()}, limit)
            start += limit
        rest = {k: v[start:] for k, v in merged.items()}
        self.parts, self.count = [rest], self.count - start
        if self.size >= MAX_RECORD:
            yield from self.flush()
        self.size = 0 if not self.count else self.size

    def flush(self) -> Iterator[Chunk]:
        if self.count:
            yield self._chunk(self._merged(), self.count)
        self.parts, self.count, self.size = [], 0, 0

    def _merged(self) -> dict[str, np.ndarray]:
        if len(self.parts) == 1:
            return self.parts[0]
        return {k: _concatenated([p[k] for p in self.parts]) for k in self.parts[0]}

    def _chunk(self, columns: dict, n: int) -> Chunk:
        kept = {key[1]: column for key, column in columns.items() if isinstance(key, tuple)}
        values = {}
        for name in self.source.variables:
            if name in columns:
                values[name] = columns[name]
            else:
                default = np.asarray(self.source.defaults[name], dtype=np.float64)
                values[name] = np.broadcast_to(default, (n,) + default.shape)
        lines = range(self.first_line, self.first_line + n)
        self.first_line += n
        return Chunk(values, lines, kept, None)


def _concatenated(pieces: list):
    if isinstance(pieces[0], np.ndarray):
        return np.concatenate(pieces)
    import pyarrow as pa

    return pa.concat_arrays(pieces)


def plan_columns(source: PointSource, columns: list[str]) -> tuple[dict, dict, list[int]]:
    """Which columns hold which variable: a plain column (number or literal),
    or indexed columns x[0], x[1], ... (a vector or matrix by index); and the
    indices of the kept columns."""
    by_name: dict[str, dict[tuple, int]] = {}
    plain: dict[str, int] = {}
    for i, column in enumerate(columns):
        m = _COLUMN.match(column)
        if not m:
            continue
        name, index = m.group(1), m.group(2)
        if index is None:
            plain[name] = i
        else:
            by_name.setdefault(name, {})[_index(column, index, len(columns), source.first_line)] = i
    plain_of: dict[str, int] = {}
    indexed: dict[str, tuple[tuple, list[int]]] = {}
    for name in source.variables:
        if name in plain:
            plain_of[name] = plain[name]
        elif name in by_name:
            indexed[name] = _indexed_layout(name, by_name[name], source.first_line)
            source.shapes[name] = indexed[name][0]
        elif name not in source.defaults:
            raise DataError(f"line {source.first_line}: the points have no column for '{name}' and "
                            f"--at does not give it (columns: {_listing(columns)})")
    used = set(plain_of.values()) | {i for _, cols in indexed.values() for i in cols}
    if source.keep_all:
        source.keep = [c for i, c in enumerate(columns) if i not in used]
    missing = [c for c in source.keep if c not in columns]
    if missing:
        raise DataError(f"--keep: no column named {_listing(missing)} "
                        f"(columns: {_listing(columns)})")
    return plain_of, indexed, [columns.index(c) for c in source.keep]


def _fields(text: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([text], delimiter=delimiter))
    except csv.Error as e:  # e.g. a cell longer than the csv module's limit (128 KiB)
        raise _Bad(f"not a valid {'CSV' if delimiter == ',' else 'TSV'} record ({e})") from None


def _index(column: str, index: str, columns: int, line: int) -> tuple[int, ...]:
    """The indices of a column like A[1,2]. A vector or matrix needs a column per
    element, so an index past the number of columns is refused before anything
    is sized by it (nor is a 5,000-digit index ever converted)."""
    pieces = index.split(",")
    if any(len(k) > len(str(columns)) or int(k) >= columns for k in pieces):
        raise DataError(f"line {line}: column {_shorten(column)} names an element past the "
                        f"header's {_count(columns, 'column')} (one column per element)")
    return tuple(int(k) for k in pieces)


def _indexed_layout(name: str, found: dict[tuple, int], line: int) -> tuple[tuple, list[int]]:
    ranks = {len(k) for k in found}
    if len(ranks) != 1:
        raise DataError(f"line {line}: columns for '{name}' mix different numbers of indices")
    shape = tuple(max(k[d] for k in found) + 1 for d in range(ranks.pop()))
    if math.prod(shape) != len(found):  # some column missing; the first one is among the first len+1
        for k in itertools.product(*(range(n) for n in shape)):
            if k not in found:
                label = f"{name}[{','.join(map(str, k))}]"
                raise DataError(f"line {line}: the columns for '{name}' are incomplete: no column {label}")
    return shape, [found[k] for k in itertools.product(*(range(n) for n in shape))]


# ---------------------------------------------------------------- NDJSON / JSON


def _ndjson_records(lines, first_line: int = 1) -> Iterator[tuple[int, object, int]]:
    """(line, object or _Bad, size of its text) per record."""
    for number, text in enumerate(lines, start=first_line):
        if isinstance(text, _Bad):
            yield number, text, 0
        elif text.strip():
            yield number, _loads(text), len(text)


def _loads(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        return _json_failure(e)


def _json_failure(error: Exception) -> _Bad:
    if isinstance(error, json.JSONDecodeError):
        return _Bad(f"not valid JSON ({error.msg} at column {error.colno})")
    if isinstance(error, RecursionError):
        return _Bad("JSON nested too deeply to read (the limit is about "
                    f"{sys.getrecursionlimit():,} levels)")
    return _Bad(f"a number with more than {sys.get_int_max_str_digits():,} digits")


class _NdjsonBlocks(_ArrowBlocks):
    """NDJSON read in the CSV path's blocks of whole lines, each parsed by polars
    straight to float64 columns (lists of numbers to vectors and matrices, with no
    Python loop over points). polars is as strict as Python's json module on
    every line we tried but one: of a key given twice it keeps the first, where
    json keeps the last; _unique_keys rules that out. A block polars rejects, or
    whose records are not one per line, or whose values are not all there (a
    missing key, a null, lists of another length), is read again by the careful
    path (_ObjectReader), which names the line; a good file never takes it.
    A --keep column comes through polars where every value in the block is a
    string (or missing): polars turns a kept number into text, where the outputs
    must keep a number a number, so a block with one is read by the careful path,
    as is --keep-all and a kept variable."""

    def __init__(self, source: PointSource, first: str):
        import polars as pl

        self.pl = pl
        self.source = source
        self.first = first  # the first record's line, already read to sniff the format
        self.stopped = False
        self.failures = (pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError, TypeError)

    def chunks(self) -> Iterator[Chunk]:
        batcher = _Batcher(self.source)
        line = self.source.first_line  # the block's first line
        for data, failure in self._blocks():
            n = _rows(data)  # lines (a lone \r: the careful path)
            parsed = self._parse(data, n) if failure is None else None
            if parsed is not None:
                yield from batcher.add(*parsed, line, n, len(data))
                line += n
                continue
            yield from batcher.flush()
            counted = _Counted(self._careful_lines(data.decode("utf-8", "surrogateescape"), failure))
            yield from _ObjectReader(self.source).chunks(_ndjson_records(counted, line))
            line += counted.count
            if self.stopped:
                return
        yield from batcher.flush()

    def _blocks(self) -> Iterator[tuple[bytes, _Bad | None]]:
        """The CSV path's blocks of whole lines, as bytes (polars reads bytes: decoding
        and encoding again cost 0.1-0.2 s per 75 MB); the first line read to sniff the
        format goes in front of the first block."""
        blocks = super()._blocks()
        data, failure = next(blocks, (b"", None))
        yield self.first.encode("utf-8", "surrogateescape") + data, failure
        if failure is None:
            yield from blocks

    def _parse(self, data: bytes, n: int) -> tuple[dict[str, np.ndarray], dict] | None:
        """Each variable's values in the block of n lines and its kept columns (Arrow
        strings, as the CSV blocks give them), or None for the careful path."""
        if _unchecked(data):
            return None
        # As text: json.loads would take bytes in UTF-16 or after a BOM, which the careful path refuses.
        head = _loads(data[:data.find(b"\n") + 1 or len(data)].decode("utf-8"))
        if not isinstance(head, dict):
            return None
        planned = self._shapes(head)
        if planned is None:
            return None
        shapes, defaulted = planned
        schema = {name: self._dtype(shape) for name, shape in shapes.items()}
        # One colon a key: a block with as many colons a line as the first line has
        # keys, every key of which is in every line, has no line with a key twice.
        whole = _byte_count(data, b":") == len(head) * n
        if whole:
            schema = {name: schema.get(name, self.pl.String) for name in head}
        schema.update({name: self.pl.String for name in self.source.keep})
        try:
            frame = self.pl.read_ndjson(io.BytesIO(data), schema=schema)
        except self.failures:
            return None
        if len(frame) != n or (whole and any(frame.select(list(head)).null_count().row(0))) or not (
                whole or _unique_keys(data, shapes, defaulted, n)):
            return None
        values = {}
        for name, shape in shapes.items():
            values[name] = _polars_floats(frame[name], shape)
            if values[name] is None:
                return None
        kept = {}
        for name in self.source.keep:
            kept[name] = frame[name]
            if not _strings_only(data, name, len(kept[name]) - kept[name].null_count()):
                return None
        for name, shape in shapes.items():
            self.source.shapes.setdefault(name, shape)
        for name in defaulted:
            self.source.shapes.setdefault(name, np.shape(self.source.defaults[name]))
        return values, {name: _arrow_strings(column) for name, column in kept.items()}

    def _shapes(self, head: dict) -> tuple[dict[str, tuple], list[str]] | None:
        """The shape of each variable the block's first record gives (as earlier
        points gave it, else as that record does), and the variables it leaves to
        their --at defaults. None when that record is bad, or a default's shape
        is not the one earlier points gave (the careful path says which)."""
        given, defaulted = {}, []
        for name in self.source.variables:
            if name in head:
                try:
                    given[name] = self.source.shapes[name] if name in self.source.shapes else \
                        np.shape(_json_value(name, head[name], {}))
                except _Bad:
                    return None
            elif name in self.source.defaults and \
                    self.source.shapes.get(name, np.shape(self.source.defaults[name])) == \
                    np.shape(self.source.defaults[name]):
                defaulted.append(name)
            else:
                return None
        return given, defaulted

    def _dtype(self, shape: tuple):
        dtype = self.pl.Float64
        for _ in shape:
            dtype = self.pl.List(dtype)
        return dtype


_ESCAPED_KEY = re.compile(rb'\\.[^"\\]*"\s*:')  # the end of a key spelled with an escape


def _unique_keys(data: bytes, given: dict, defaulted: list, n: int) -> bool:
    """Whether each of the block's n lines names each variable of given exactly
    once, and those of defaulted (given by --at) not at all. polars maps a name spelled
    with escapes (\\u0078) to the same key, so a block with such a key is not
    vouched for; otherwise "x" then a colon is the key x (in a JSON string the
    quotes would be escaped)."""
    if b"\\" in data and _ESCAPED_KEY.search(data):
        return False
    for name in [*given, *defaulted]:
        token, want = f'"{name}"'.encode(), n if name in given else 0
        found = data.count(token)
        if found != want and len(re.findall(re.escape(token) + rb"\s*:", data)) != want:
            return False
    return True


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # an escaped surrogate: json keeps a lone one, polars may not


def _strings_only(data: bytes, name: str, count: int) -> bool:
    """Whether the block's key name holds a JSON string each of the count times it is
    there, and is there no other time (not twice in a line, nor nested)."""
    key = re.escape(f'"{name}"'.encode()) + rb"\s*:"
    return len(re.findall(key, data)) == len(re.findall(key + rb'\s*"', data)) == count and \
        not (b"\\" in data and _SURROGATE.search(data))


def _arrow_strings(column):
    """A polars String column as the Arrow string array the careful path's values make."""
    import pyarrow as pa

    return column.to_arrow().cast(pa.string())


def _polars_floats(series, shape: tuple) -> np.ndarray | None:
    """A polars column of numbers, or of lists (of lists) of them, as one float64
    array of shape (n, *shape); None if a value is missing or a list's length
    is not the shape's."""
    n = len(series)
    for size in shape:
        if size == 0 or series.null_count() or (series.list.len() != size).any():
            return None
        series = series.explode()
    if series.null_count():
        return None
    return series.to_numpy().astype(np.float64, copy=False).reshape((n,) + shape)


def _json_array_records(source: _Input, first_line: int = 1) -> Iterator[tuple[int, object, int]]:
    """The objects of one JSON array, decoded one at a time from the text blocks
    of source: the array as a whole is streamed, each element is held whole and
    may be at most MAX_RECORD long. (line, object or _Bad, size) per element;
    nothing is read after a bad one (where the next would start is unknown)."""
    decoder = json.JSONDecoder()
    buffer, pos, line = "", 0, first_line
    block = JSON_BLOCK

    def fill(size=block):
        nonlocal buffer, pos
        more = source.text(size)
        buffer = buffer[pos:] + more
        pos = 0
        return bool(more)

    def skip(allowed):
        nonlocal pos, line
        while True:
            while pos < len(buffer) and (buffer[pos].isspace() or buffer[pos] in allowed):
                line += buffer[pos] == "\n"
                pos += 1
            if pos < len(buffer) or not fill():
                return

    def failed(default: str) -> tuple[int, _Bad, int]:
        if source.failed is not None:  # the bytes, not the JSON, went wrong: say where
            return line + buffer.count("\n", pos), source.failed, 0
        return line, _Bad(default), 0

    skip("")
    if pos >= len(buffer) or buffer[pos] != "[":
        yield failed("expected a JSON array of objects")
        return
    pos += 1
    while True:
        skip(",")
        if pos >= len(buffer):
            yield failed("the JSON array is not closed")
            return
        if buffer[pos] == "]":
            return
        while True:
            try:
                obj, end = decoder.raw_decode(buffer, pos)
                break
            except json.JSONDecodeError as e:
                held = len(buffer) - pos
                if held > MAX_RECORD:
                    yield line, _too_long("an array element"), 0
                    return
                # Doubling: a long element is decoded O(log n) times, and never past the limit.
                if not fill(min(max(block, held), MAX_RECORD + 1 - held)):
                    yield failed(f"not valid JSON ({e.msg})")
                    return
            except (ValueError, RecursionError) as e:
                yield line, _json_failure(e), 0
                return
        if end - pos > MAX_RECORD:
            yield line, _too_long("an array element"), 0
            return
        yield line, obj, end - pos
        line += buffer.count("\n", pos, end)
        pos = end


class _ObjectReader:
    def __init__(self, source: PointSource):
        self.source = source

    def chunks(self, records) -> Iterator[Chunk]:
        source = self.source
        rows, lines, kept, size = [], [], [], 0
        for line, obj, length in records:
            try:
                if isinstance(obj, _Bad):
                    raise obj
                if not isinstance(obj, dict):
                    raise _Bad("a point must be a JSON object like {\"x\": 1}")
                record, kept_values = self._record(obj), self._kept(obj)  # either may refuse the record
                rows.append(record)
                lines.append(line)
                kept.append(kept_values)
            except _Bad as e:
                yield self._chunk(rows, lines, kept, BadRecord(line, str(e)))
                rows, lines, kept, size = [], [], [], 0
                continue
            size += length
            if len(rows) >= source.chunk_size or size >= MAX_RECORD:
                yield self._chunk(rows, lines, kept, None)
                rows, lines, kept, size = [], [], [], 0
        if rows:
            yield self._chunk(rows, lines, kept, None)

    def _record(self, obj: dict) -> dict:
        record = {}
        for name in self.source.variables:
            if name in obj:
                record[name] = _json_value(name, obj[name], self.source.shapes)
            elif name in self.source.defaults:
                default = np.asarray(self.source.defaults[name], dtype=np.float64)
                record[name] = _check_shape(name, default, default.shape, self.source.shapes)
            else:
                raise _Bad(f"no value for '{name}'")
        return record

    def _kept(self, obj: dict) -> dict:
        if self.source.keep_all:
            kept = {k: v for k, v in obj.items() if k not in self.source.variables}
        else:
            kept = {k: obj.get(k) for k in self.source.keep}
        for name, value in kept.items():
            _check_text(name, value)
        return kept

    def _chunk(self, rows, lines, kept, bad) -> Chunk:
        n = len(rows)
        values = {}
        for name in self.source.variables:
            shape = self.source.shapes.get(name, np.shape(self.source.defaults.get(name, 0.0)))
            values[name] = np.array([r[name] for r in rows], dtype=np.float64).reshape((n,) + shape)
        if self.source.keep_all:
            names = list(dict.fromkeys(k for row in kept for k in row))
            kept_columns = {k: [row.get(k) for row in kept] for k in names}
        else:
            kept_columns = {k: [row[k] for row in kept] for k in self.source.keep}
        return Chunk(values, lines, kept_columns, bad)


# ---------------------------------------------------------------- values


class _Bad(Exception):
    """A record that cannot be used; the message says why (the line is added later).
    last: nothing after it can be read (a record too long, a read error)."""

    def __init__(self, message: str, last: bool = False):
        super().__init__(message)
        self.last = last


def _number(column: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _Bad(f"{column}: {_shorten(text.strip())} is not a number") from None


def _value(name: str, text: str, shapes: dict) -> object:
    """A plain CSV cell: a number, or a literal like [1, 2, 3] for a vector variable."""
    text = text.strip()
    if text.startswith("["):
        value = _loads(text)
        if isinstance(value, _Bad):
            raise _Bad(f"{name}: {_shorten(text)} is not a literal like [1, 2, 3]") from None
        return _json_value(name, value, shapes)
    number = _number(name, text)
    return _check_shape(name, number, (), shapes)


def _json_value(name: str, value, shapes: dict):
    if isinstance(value, bool) or value is None or isinstance(value, (str, dict)):
        raise _Bad(f"{name}: {_cut(json.dumps(value))} is not a number or an array of numbers")
    try:
        if isinstance(value, (int, float)):
            return _check_shape(name, float(value), (), shapes)
        array = np.array(value, dtype=np.float64)
    except OverflowError:  # an integer of hundreds of digits (a float's 1e400 is inf, as in CSV)
        raise _Bad(f"{name}: an integer too large for a float") from None
    except (ValueError, TypeError):
        raise _Bad(f"{name}: not a rectangular array of numbers") from None
    return _check_shape(name, array, array.shape, shapes)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in decoded JSON: only from a \\uXXXX escape


def _check_text(name: str, value) -> None:
    """A kept value (and its name) must be text that UTF-8 can write: a JSON escape
    of half a UTF-16 surrogate pair ("\\ud800") decodes to a lone surrogate, which no
    output format can hold as a string (CSV, Parquet), so its record is bad data."""
    for text in (name, value if isinstance(value, str) else
                 json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else ""):
        bad = _LONE_SURROGATE.search(text)
        if bad:
            raise _Bad(f"{_cut(json.dumps(name))}: {_cut(json.dumps(text))} holds a lone surrogate "
                       f"({json.dumps(bad.group())[1:-1]}, half of a UTF-16 pair), which is not text "
                       "that diffcli can write")


def _check_shape(name, value, shape, shapes):
    expected = shapes.setdefault(name, shape)
    if shape != expected:
        raise _Bad(f"{name} has shape {shape}, but earlier points gave shape {expected}")
    return value


def _shorten(text: str, width: int = 40) -> str:
    """User text quoted in a message (escaped: one line), cut so that a 64 MiB cell
    makes a short message."""
    return repr(text) if len(text) <= width else repr(text[:width]) + f"... ({len(text):,} characters)"


def _cut(text: str, width: int = 40) -> str:
    """JSON text (already escaped by json.dumps), cut like _shorten."""
    return text if len(text) <= width else text[:width] + f"... ({len(text):,} characters)"


def _listing(names: list[str], most: int = 10) -> str:
    shown = ", ".join(n if n.isprintable() and len(n) <= 20 else _shorten(n, 20) for n in names[:most])
    return shown + (f", ... ({len(names):,} in all)" if len(names) > most else "")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
