"""Reading points: CSV / TSV / NDJSON / JSON records, from files or stdin,
gzip-compressed or not, in chunks of good records.

A chunk is a run of good records, converted to one array per variable with a
leading batch axis, and ends early at the first bad record, which it carries
along (with its line number) so the caller can stop or go on. Memory is
bounded by the chunk size whatever the length of the input.

CSV and TSV: a header row, a column per scalar variable; a vector or matrix
variable as columns x[0], x[1], ... / A[0,0], A[0,1], ... or as one column
holding a literal like [1, 2, 3]. NDJSON: one JSON object per line. JSON: one
array of such objects (read incrementally too).
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EXIT_BAD_DATA, DiffcliError

FORMATS = ("csv", "tsv", "ndjson", "json")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".ndjson": "ndjson", ".jsonl": "ndjson",
              ".json": "json"}
_COLUMN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9,\s]+)\])?$")


class DataError(DiffcliError):
    """The points themselves are unusable (exit status 3)."""

    exit_status = EXIT_BAD_DATA


@dataclass
class BadRecord:
    line: int
    message: str


@dataclass
class Chunk:
    values: dict[str, np.ndarray]  # variable -> array of shape (n, *variable shape)
    lines: list[int]  # the line each record started on
    kept: dict[str, list] = field(default_factory=dict)  # copied columns, in record order
    bad: BadRecord | None = None  # the bad record that ended this chunk, if any

    def __len__(self):
        return len(self.lines)


# ---------------------------------------------------------------- opening


def open_text(path: str):
    """A text stream for PATH ('-' = stdin), transparently gunzipped."""
    if path == "-":
        raw = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - the caller closes it
        except OSError as e:
            raise DataError(f"cannot read points from {path}: {e.strerror}") from None
    raw = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    if raw.peek(2)[:2] == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=raw)
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def format_from_name(path: str) -> str | None:
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return EXTENSIONS.get(suffixes[-1]) if suffixes else None


def sniff(first_line: str) -> str:
    stripped = first_line.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        return "ndjson"
    return "tsv" if first_line.count("\t") > first_line.count(",") else "csv"


class PointSource:
    """Chunks of points for the given variables from one text stream.

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
        lines = _readable(stream)
        first, self.first_line = next(lines, ""), 1
        while first.strip() == "" and first != "":  # blank lines before the data
            first, self.first_line = next(lines, ""), self.first_line + 1
        if fmt is None:
            fmt = sniff(first)
            self.sniffed = True
        self.format = fmt
        self._lines = itertools.chain([first], lines) if first else iter(())
        self.shapes: dict[str, tuple] = {}

    def chunks(self) -> Iterator[Chunk]:
        if self.format in ("csv", "tsv"):
            return _DelimitedReader(self, "," if self.format == "csv" else "\t").chunks()
        if self.format == "ndjson":
            return _ObjectReader(self).chunks(_ndjson_records(self._lines, self.first_line))
        return _ObjectReader(self).chunks(_json_array_records(self._lines, self.first_line))


def _readable(stream) -> Iterator[str]:
    """The stream's lines; undecodable or truncated input becomes a DataError."""
    try:
        yield from stream
    except UnicodeDecodeError as e:
        raise DataError(f"the points are not UTF-8 text (byte {e.start} of a block: {e.reason})") from None
    except (EOFError, OSError) as e:  # a truncated or corrupt .gz, an unreadable file
        raise DataError(f"cannot read the points: {e}") from None


# ---------------------------------------------------------------- CSV / TSV


class _DelimitedReader:
    def __init__(self, source: PointSource, delimiter: str):
        self.source = source
        self.delimiter = delimiter
        header_line = next(source._lines, None)
        if header_line is None:
            raise DataError("the points input is empty (expected a header row)")
        header = next(csv.reader([header_line], delimiter=delimiter))
        self.columns = [re.sub(r"\s+", "", c) for c in header]
        self._plan_columns()

    def _plan_columns(self):
        """Which columns hold which variable: a plain column (number or literal),
        or indexed columns x[0], x[1], ... (a vector or matrix by index)."""
        source = self.source
        by_name: dict[str, dict[tuple, int]] = {}
        plain: dict[str, int] = {}
        for i, column in enumerate(self.columns):
            m = _COLUMN.match(column)
            if not m:
                continue
            name, index = m.group(1), m.group(2)
            if index is None:
                plain[name] = i
            else:
                by_name.setdefault(name, {})[tuple(int(k) for k in index.split(","))] = i
        self.plain: dict[str, int] = {}
        self.indexed: dict[str, tuple[tuple, list[int]]] = {}
        for name in source.variables:
            if name in plain:
                self.plain[name] = plain[name]
            elif name in by_name:
                self.indexed[name] = _indexed_layout(name, by_name[name])
                source.shapes[name] = self.indexed[name][0]
            elif name not in source.defaults:
                raise DataError(f"line 1: the points have no column for '{name}' and --at does not "
                                f"give it (columns: {', '.join(self.columns)})")
        used = set(self.plain.values()) | {i for _, cols in self.indexed.values() for i in cols}
        if source.keep_all:
            source.keep = [c for i, c in enumerate(self.columns) if i not in used]
        missing = [c for c in source.keep if c not in self.columns]
        if missing:
            raise DataError(f"--keep: no column named {', '.join(missing)} "
                            f"(columns: {', '.join(self.columns)})")
        self.keep_index = [self.columns.index(c) for c in source.keep]

    def chunks(self) -> Iterator[Chunk]:
        line_number = self.source.first_line
        pending: list[tuple[int, str]] = []
        for text in self.source._lines:
            line_number += 1
            if text.strip():
                pending.append((line_number, text))
            if len(pending) >= self.source.chunk_size:
                yield from self._parse(pending)
                pending = []
        if pending:
            yield from self._parse(pending)

    def _parse(self, numbered: list[tuple[int, str]]) -> Iterator[Chunk]:
        """Good records in runs; each run ends at a bad record or at the end."""
        fast = self._parse_fast(numbered)
        if fast is not None:
            yield fast
            return
        start = 0
        while start < len(numbered):
            rows, kept, bad, consumed = [], [], None, 0
            for line, text in numbered[start:]:
                consumed += 1
                try:
                    fields = next(csv.reader([text], delimiter=self.delimiter))
                    rows.append(self._record(fields))
                    kept.append([fields[i] if i < len(fields) else "" for i in self.keep_index])
                except _Bad as e:
                    bad = BadRecord(line, str(e))
                    break
            lines = [line for line, _ in numbered[start:start + len(rows)]]
            yield self._chunk(rows, lines, kept, bad)
            start += consumed

    def _parse_fast(self, numbered) -> Chunk | None:
        """The whole chunk through np.loadtxt when every cell used is a plain number;
        None (and the careful path) if anything is unusual, e.g. a bad record."""
        if self.keep_index or any(self.source.shapes.get(n, ()) != () for n in self.plain):
            return None
        try:
            table = np.loadtxt([text for _, text in numbered], delimiter=self.delimiter, ndmin=2,
                               dtype=np.float64, comments=None, quotechar='"')
        except ValueError:
            return None
        if table.shape[1] != len(self.columns):
            return None
        n = table.shape[0]
        values = {}
        for name in self.source.variables:
            if name in self.plain:
                self.source.shapes.setdefault(name, ())
                values[name] = table[:, self.plain[name]].copy()
            elif name in self.indexed:
                shape, columns = self.indexed[name]
                values[name] = table[:, columns].reshape((n,) + shape)
            else:
                default = np.asarray(self.source.defaults[name], dtype=np.float64)
                values[name] = np.broadcast_to(default, (n,) + default.shape)
        return Chunk(values, [line for line, _ in numbered], {}, None)

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


def _indexed_layout(name: str, found: dict[tuple, int]) -> tuple[tuple, list[int]]:
    ranks = {len(k) for k in found}
    if len(ranks) != 1:
        raise DataError(f"line 1: columns for '{name}' mix different numbers of indices")
    shape = tuple(max(k[d] for k in found) + 1 for d in range(ranks.pop()))
    order = list(np.ndindex(*shape))
    missing = [k for k in order if k not in found]
    if missing:
        label = f"{name}[{','.join(map(str, missing[0]))}]"
        raise DataError(f"line 1: the columns for '{name}' are incomplete: no column {label}")
    return shape, [found[k] for k in order]


# ---------------------------------------------------------------- NDJSON / JSON


def _ndjson_records(lines, first_line: int = 1) -> Iterator[tuple[int, object]]:
    for number, text in enumerate(lines, start=first_line):
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as e:
            yield number, _Bad(f"not valid JSON ({e.msg} at column {e.colno})")


def _json_array_records(lines, first_line: int = 1, block: int = 1 << 20) -> Iterator[tuple[int, object]]:
    """The objects of one JSON array, decoded one at a time from a text stream."""
    decoder = json.JSONDecoder()
    buffer, pos, line, exhausted = "", 0, first_line, False
    chars = _text_blocks(lines, block)

    def fill():
        nonlocal buffer, pos, exhausted
        more = next(chars, None)
        if more is None:
            exhausted = True
            return False
        buffer = buffer[pos:] + more
        pos = 0
        return True

    def skip(allowed):
        nonlocal pos, line
        while True:
            while pos < len(buffer) and (buffer[pos].isspace() or buffer[pos] in allowed):
                line += buffer[pos] == "\n"
                pos += 1
            if pos < len(buffer) or not fill():
                return

    skip("")
    if pos >= len(buffer) or buffer[pos] != "[":
        yield line, _Bad("expected a JSON array of objects")
        return
    pos += 1
    while True:
        skip(",")
        if pos >= len(buffer):
            yield line, _Bad("the JSON array is not closed")
            return
        if buffer[pos] == "]":
            return
        while True:
            try:
                obj, end = decoder.raw_decode(buffer, pos)
                break
            except json.JSONDecodeError as e:
                if exhausted or not fill():
                    yield line, _Bad(f"not valid JSON ({e.msg})")
                    return
        yield line, obj
        line += buffer.count("\n", pos, end)
        pos = end


def _text_blocks(lines, block):
    pending, size = [], 0
    for text in lines:
        pending.append(text)
        size += len(text)
        if size >= block:
            yield "".join(pending)
            pending, size = [], 0
    if pending:
        yield "".join(pending)


class _ObjectReader:
    def __init__(self, source: PointSource):
        self.source = source

    def chunks(self, records) -> Iterator[Chunk]:
        source = self.source
        rows, lines, kept = [], [], []
        for line, obj in records:
            try:
                if isinstance(obj, _Bad):
                    raise obj
                if not isinstance(obj, dict):
                    raise _Bad("a point must be a JSON object like {\"x\": 1}")
                rows.append(self._record(obj))
                lines.append(line)
                kept.append(self._kept(obj))
            except _Bad as e:
                yield self._chunk(rows, lines, kept, BadRecord(line, str(e)))
                rows, lines, kept = [], [], []
                continue
            if len(rows) >= source.chunk_size:
                yield self._chunk(rows, lines, kept, None)
                rows, lines, kept = [], [], []
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
            return {k: v for k, v in obj.items() if k not in self.source.variables}
        return {k: obj.get(k) for k in self.source.keep}

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
    """A record that cannot be used; the message says why (the line is added later)."""


def _number(column: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _Bad(f"{column}: '{text.strip()}' is not a number") from None


def _value(name: str, text: str, shapes: dict) -> object:
    """A plain CSV cell: a number, or a literal like [1, 2, 3] for a vector variable."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise _Bad(f"{name}: '{text}' is not a literal like [1, 2, 3]") from None
        return _json_value(name, value, shapes)
    number = _number(name, text)
    return _check_shape(name, number, (), shapes)


def _json_value(name: str, value, shapes: dict):
    if isinstance(value, bool) or value is None or isinstance(value, (str, dict)):
        raise _Bad(f"{name}: {json.dumps(value)} is not a number or an array of numbers")
    if isinstance(value, (int, float)):
        return _check_shape(name, float(value), (), shapes)
    try:
        array = np.array(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise _Bad(f"{name}: not a rectangular array of numbers") from None
    return _check_shape(name, array, array.shape, shapes)


def _check_shape(name, value, shape, shapes):
    expected = shapes.setdefault(name, shape)
    if shape != expected:
        raise _Bad(f"{name} has shape {shape}, but earlier points gave shape {expected}")
    return value
