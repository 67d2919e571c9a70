"""Presentation: rich tables for people, JSON and bare numbers for programs.

The only module that imports rich, and only when a table is drawn, so the
machine-output paths do not pay for it at start-up.

Non-finite numbers: JSON has no NaN or Infinity, so they are written as null
(and the CLI says so on stderr); tables and --quiet show nan, inf, -inf.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import operator
from itertools import product

import numpy as np

_console_class = None


def new_console(**options):
    """A rich Console for stdout whose closed pipe raises BrokenPipeError, as
    every other write does. rich's own answer (Console.on_broken_pipe) is to
    exit with status 1, which made `diffcli jac ... --format table | head -1`
    fail under `set -o pipefail` where every other format ends with status 0."""
    global _console_class
    if _console_class is None:
        from rich.console import Console

        class PipeConsole(Console):
            def on_broken_pipe(self) -> None:
                self.quiet = True  # nothing more to a reader that has gone
                raise BrokenPipeError(32, "Broken pipe")

        _console_class = PipeConsole
    return _console_class(**options)


def component_labels(name: str, shape: tuple) -> list[str]:
    """x, or x[0], x[1], ..., or A[0,0], A[0,1], ... in the language's own index syntax."""
    return list(iter_component_labels(name, shape))


def iter_component_labels(name: str, shape: tuple):
    if not shape:
        yield name
        return
    for index in product(*(range(n) for n in shape)):
        yield f"{name}[{','.join(map(str, index))}]"


# ---------------------------------------------------------------- a result as leaves
#
# Every output format walks the same leaves: one array per JSON key path
# (value; gradient.x; hessian.x.y; derivative.value; jvp ...), with the labels
# its components get as CSV/TSV columns (documented in the README):
#   value, value[i]                  the value
#   d/dx, d/dx[i]                    gradient         vjp/dx[i], hvp/dx[i]   VJP, HVP
#   dvalue[i]/dx[j]                  Jacobian         jvp, jvp[i]            JVP
#   d2/dx[i]dy[j]                    Hessian block    dN/dx[i]dx[j]...       order-N tensor
# (with value[i] after dN/d2 for a non-scalar output of an order-N derivative).


class Leaf:
    """One array of a result (batch axes first), where it goes in JSON (path), how a
    table shows it (heading, rows and columns), and its CSV column labels (made
    when asked for: a 5,000 x 5,000 Jacobian has 25 million of them)."""

    __slots__ = ("path", "array", "heading", "row_name", "row_shape", "col_name", "col_shape", "_labels")

    def __init__(self, path, array, heading, row_name, row_shape, col_name=None, col_shape=(), labels=None):
        self.path = path
        self.array = array
        self.heading = heading
        self.row_name = row_name
        self.row_shape = row_shape
        self.col_name = col_name
        self.col_shape = col_shape
        self._labels = labels or (lambda: iter(()))  # a function giving an iterator

    def iter_labels(self):
        return self._labels()

    @property
    def labels(self) -> list[str]:
        return list(self._labels())


def leaves(result, batch_ndim: int = 0) -> list[Leaf]:
    value = np.asarray(result.value)
    vshape = value.shape[batch_ndim:]
    found = [Leaf(("value",), value, "value", "value", vshape,
                  labels=lambda: iter_component_labels("value", vshape))]
    kind = result.kind
    if kind in ("gradient", "vjp", "hvp"):
        prefix = {"gradient": "d/d", "vjp": "vjp/d", "hvp": "hvp/d"}[kind]
        heading = {"gradient": "∂value/∂{}", "vjp": "vjp for {}", "hvp": "hvp for {}"}[kind]
        for name, d in result.derivatives.items():
            shape = np.shape(d)[batch_ndim:]
            found.append(Leaf((kind, name), d, heading.format(name), name, shape,
                              labels=lambda name=name, shape=shape: (
                                  prefix + c for c in iter_component_labels(name, shape))))
    elif kind == "jacobian":
        for name, d in result.derivatives.items():
            shape = np.shape(d)[batch_ndim + len(vshape):]
            found.append(Leaf((kind, name), d, f"∂value/∂{name}", "value", vshape, name, shape,
                              lambda name=name, shape=shape: _product_labels(
                                  "d{}/d{}", ("value", vshape), (name, shape))))
    elif kind == "hessian":
        for a, row in result.derivatives.items():
            for b, d in row.items():
                sa, sb = result.shapes[a], result.shapes[b]
                found.append(Leaf((kind, a, b), d, f"∂²value/∂{a}∂{b}", a, sa, b, sb,
                                  lambda a=a, b=b, sa=sa, sb=sb: _product_labels("d2/d{}d{}", (a, sa), (b, sb))))
    elif kind == "derivative":
        ((name, d),) = result.derivatives.items()
        n, xshape = result.order, result.shapes[name]
        shape = vshape + xshape * n
        found.append(Leaf(("derivative", "value"), d, f"order-{n} derivative with respect to {name}",
                          "", shape[:len(shape) - len(xshape)], "" if xshape else None, xshape,
                          lambda: _derivative_labels(name, n, vshape, xshape)))
    elif kind == "jvp":
        found.append(Leaf(("jvp",), np.asarray(result.jvp), "jvp (J·v)", "jvp", vshape,
                          labels=lambda: iter_component_labels("jvp", vshape)))
    elif kind == "series":
        terms = (result.order + 1,)
        found.append(Leaf(("series", "coefficients"), result.derivatives["coefficients"],
                          "Taylor coefficients f⁽ᵏ⁾/k!", "c", terms, "value" if vshape else None, vshape,
                          lambda: _product_labels("{}{}", ("c", terms), ("", vshape)) if vshape else
                          iter_component_labels("c", terms)))
    return found


def _product_labels(template: str, rows: tuple, columns: tuple):
    """template filled with each row label and each column label, rows first."""
    for r in iter_component_labels(*rows):
        for c in iter_component_labels(*columns):
            yield template.format(r, c)


def _derivative_labels(name: str, n: int, vshape: tuple, xshape: tuple):
    k = len(xshape)
    for index in np.ndindex(*(vshape + xshape * n)):
        out = f"value[{','.join(map(str, index[:len(vshape)]))}]" if vshape else ""
        rest = index[len(vshape):]
        yield f"d{n}{out}/" + "".join(
            f"d{name}" + (f"[{','.join(map(str, rest[i * k:(i + 1) * k]))}]" if k else "")
            for i in range(n))


def to_json_value(array):
    """Nested lists of floats, with None for non-finite entries."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 0:
        v = float(array)
        return v if math.isfinite(v) else None
    if np.all(np.isfinite(array)):
        return array.tolist()
    return np.where(np.isfinite(array), array, None).tolist()


def has_nonfinite(result) -> bool:
    return any(not np.all(np.isfinite(leaf.array)) for leaf in leaves(result))


def _nest(pairs, result) -> dict:
    """{path: value} -> nested dict, in the single-point document's key order."""
    doc: dict = {}
    for path, value in pairs:
        target = doc
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    if result.kind == "derivative":
        (name,) = result.derivatives
        doc["derivative"] = {"order": result.order, "wrt": name, "value": doc["derivative"]["value"]}
    if result.kind == "series":
        doc["series"] = {"order": result.order, **doc["series"]}
    return doc


def json_document(source: str, at: dict, result, extra: dict | None = None,
                  trailer: dict | None = None) -> str:
    """The one-point document as one string (json_document_pieces joined)."""
    return "".join(json_document_pieces(source, at, result, extra, trailer))


def json_document_pieces(source: str, at: dict, result, extra: dict | None = None,
                         trailer: dict | None = None):
    """The one-point document: expression, at, extra inputs (seed, tangent), the
    value and derivatives, then trailer (check), as pieces of text. A big array
    comes a few rows at a time, so a 5,000 x 5,000 Jacobian is never one
    ~500 MB string (nor 25 million Python floats) next to the result itself."""
    arrays: list = []

    def hole(array):  # a big array is written later, in place of its marker
        arrays.append(array)
        return _HOLE
    doc = {"expression": source, "at": {k: _small_or_hole(v, hole) for k, v in at.items()}}
    doc.update(extra or {})
    doc.update(_nest([(leaf.path, _small_or_hole(leaf.array, hole)) for leaf in leaves(result)], result))
    doc.update(trailer or {})
    skeleton = json.dumps(doc, allow_nan=False).split(json.dumps(_HOLE))
    yield skeleton[0]
    for array, text in zip(arrays, skeleton[1:]):
        yield from json_array_pieces(array)
        yield text


_HOLE = "\0diffcli-array\0"  # cannot come from user text: json.dumps escapes a NUL
_SMALL = 4096  # arrays up to this size go into the document as lists


def _small_or_hole(array, hole):
    array = np.asarray(array)
    return to_json_value(array) if array.size <= _SMALL else hole(array)


def json_array_pieces(array, numbers_per_piece: int = 65536):
    """The JSON text of an array (nested lists, null for non-finite numbers) in
    pieces of at most about numbers_per_piece numbers: the text of
    json.dumps(to_json_value(array)), without building it whole."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 0 or array.size == 0:
        yield json.dumps(to_json_value(array))
        return
    width = array.shape[-1]
    rows = array.reshape(-1, width)
    brackets = _Brackets(array.shape[:-1])
    if width > numbers_per_piece:  # a long row, in segments
        for k, row in enumerate(rows):
            yield brackets.before(k) + "["
            for start in range(0, width, numbers_per_piece):
                text = json.dumps(_finite_or_none(row[start:start + numbers_per_piece]))[1:-1]
                yield text if start == 0 else ", " + text
            yield "]" + brackets.after(k)
        return
    step = numbers_per_piece // width
    for start in range(0, len(rows), step):
        block = _finite_or_none(rows[start:start + step])
        yield "".join(brackets.before(k) + json.dumps(row) + brackets.after(k)
                      for k, row in enumerate(block, start))


class _Brackets:
    """The brackets around row k of an array whose leading axes are outer, when
    its rows (last axis) are written one after another: before a row, its
    separator and an opening bracket for each axis it starts; after it, a closing
    bracket for each axis it ends."""

    def __init__(self, outer: tuple):
        self.blocks = list(itertools.accumulate(reversed(outer), operator.mul))  # rows per axis

    def before(self, k: int) -> str:
        opened = sum(1 for _ in itertools.takewhile(lambda n: k % n == 0, self.blocks))
        return ("" if k == 0 else ", ") + "[" * opened

    def after(self, k: int) -> str:
        return "]" * sum(1 for _ in itertools.takewhile(lambda n: (k + 1) % n == 0, self.blocks))


def _finite_or_none(numbers) -> list:
    if np.all(np.isfinite(numbers)):
        return numbers.tolist()
    return np.where(np.isfinite(numbers), numbers, None).tolist()


def quiet_pieces(result, numbers_per_piece: int = 65536):
    """Bare numbers, one per line: the derivative's components (in the order of
    the CSV columns) for derivative commands, the value's for eval; a few
    thousand lines per piece of text."""
    chosen = leaves(result)
    if result.kind != "value":
        chosen = chosen[1:]
    written = False
    for leaf in chosen:
        flat = np.asarray(leaf.array, dtype=np.float64).ravel()
        for start in range(0, flat.size, numbers_per_piece):
            # repr is plain_number for a Python float
            yield "\n".join(map(repr, flat[start:start + numbers_per_piece].tolist())) + "\n"
            written = True
    if not written:
        yield "\n"


def plain_number(v: float) -> str:
    """The machine-format spelling of a float: the shortest text that reads back
    to the same float, and nan, inf, -inf (which is what Python's repr gives)."""
    return repr(float(v))


def format_number(v: float, digits: int) -> str:
    if not math.isfinite(v):
        return plain_number(v)
    if v == 0:
        return "0"  # also -0.0, which is correct but only noise in a table
    return f"{v:.{digits}g}"


def print_tables(console, result, digits: int) -> None:
    """The value, then a table per derivative block: a column of components, or a
    matrix with labelled rows and columns."""
    for i, leaf in enumerate(leaves(result)):
        if i:
            console.print()
            console.print(leaf.heading, style="bold", highlight=False)
        for table in _leaf_tables(leaf, digits):
            console.print(table)


TABLE_BLOCK = 1000  # rows drawn at a time: rich holds every cell of a table it draws


def _leaf_tables(leaf: Leaf, digits: int):
    """The leaf as one rich Table; a leaf of more than TABLE_BLOCK rows as
    several tables of that many rows with the same column widths, so that
    memory stays near the array's own size however long the table."""
    rows, matrix = _table_rows(leaf, digits)
    count = int(np.prod(leaf.row_shape)) if matrix else np.size(leaf.array)
    if count <= TABLE_BLOCK:
        yield _table(leaf, list(rows()), matrix)
        return
    widths = None
    for block in _batched(rows(), TABLE_BLOCK):
        widest = _widest(block)
        widths = [max(w, c) for w, c in zip(widths, widest)] if widths else widest
    for i, block in enumerate(_batched(rows(), TABLE_BLOCK)):
        yield _table(leaf, block, matrix, widths, first=i == 0)


def _batched(items, n: int):
    iterator = iter(items)
    while block := list(itertools.islice(iterator, n)):
        yield block


def _widest(block) -> list[int]:
    return [max(len(cell) for cell in column) for column in zip(*block)]


def _table_rows(leaf: Leaf, digits: int):
    """A function giving the leaf's table rows (label, then numbers), and whether
    the table is a matrix (labelled columns) rather than a column of components."""
    array = np.asarray(leaf.array, dtype=np.float64)
    if leaf.col_name is None or not leaf.col_shape or not leaf.row_shape:
        if leaf.col_name is None:
            labels = (lambda: iter_component_labels(leaf.row_name, leaf.row_shape)) \
                if leaf.row_shape or leaf.path == ("value",) else leaf.iter_labels
        elif not leaf.row_shape and not leaf.col_shape:
            labels = leaf.iter_labels  # one number: name it d2/dxdy, dvalue/dx, ...
        else:
            labels = (lambda: iter_component_labels(leaf.col_name, leaf.col_shape)) if leaf.col_shape \
                else (lambda: iter_component_labels(leaf.row_name, leaf.row_shape))
        flat = array.ravel()
        return (lambda: ((label, format_number(float(v), digits)) for label, v in zip(labels(), flat))), False
    matrix = array.reshape(int(np.prod(leaf.row_shape)), -1)
    return (lambda: ((label, *(format_number(v, digits) for v in row.tolist()))
                     for label, row in zip(iter_component_labels(leaf.row_name, leaf.row_shape), matrix))), True


def _table(leaf: Leaf, rows, matrix: bool, widths=None, first: bool = True):
    from rich import box
    from rich.table import Table

    def width(i, header=""):  # fixed widths keep the blocks of a long table aligned
        return {} if widths is None else {"width": max(widths[i], len(header)), "no_wrap": True}
    if not matrix:
        table = Table(show_header=False, box=None, padding=(0, 1, 0, 2))
        table.add_column(style="bold", **width(0))
        table.add_column(justify="right", **width(1))
    else:
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 2), show_header=first)
        table.add_column("", **width(0))
        for i, c in enumerate(iter_component_labels(leaf.col_name, leaf.col_shape), 1):
            table.add_column(c, justify="right", **width(i, c))
    for row in rows:
        table.add_row(*row)
    return table


# ---------------------------------------------------------------- many points: streaming writers


def result_columns(result, batch_ndim: int = 1) -> tuple[list[str], np.ndarray]:
    """Column labels and an (n, columns) matrix of a batched result."""
    found = leaves(result, batch_ndim)
    n = np.asarray(result.value).shape[0]
    labels = [label for leaf in found for label in leaf.labels]
    matrix = np.concatenate([np.asarray(leaf.array, dtype=np.float64).reshape(n, -1) for leaf in found], axis=1)
    return labels, matrix


def _json_text(value) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    return json.dumps(value)


def text_columns(kept: dict) -> dict[str, list]:
    """Kept columns as lists of values for the text writers: an Arrow column (from
    Parquet or Arrow input) becomes its values, timestamps and the like as text."""
    if all(isinstance(values, list) for values in kept.values()):
        return kept
    from .columnar import text_values

    return {k: v if isinstance(v, list) else text_values(v) for k, v in kept.items()}


def kept_cell(value) -> str:
    """A kept column's value in a CSV cell: strings as they were, JSON otherwise."""
    return value if isinstance(value, str) else ("" if value is None else json.dumps(value))


class Writer:
    """Streams one batched result after another to a text stream. Each write
    is one stream.write call of whole records, or, for a record too wide to
    build as one string, several calls inside whole(): a context in which the
    caller keeps the pieces together (the CLI defers Ctrl-C in it)."""

    def __init__(self, stream, whole=contextlib.nullcontext):
        self.stream = stream
        self.whole = whole
        self.nonfinite = False  # set when a non-finite number was written as null

    def write(self, result, kept: dict[str, list]) -> None:
        raise NotImplementedError

    def error(self, line: int, message: str) -> bool:
        """Record a skipped bad input record; True if it was written to the output."""
        return False

    def close(self) -> None:
        self.stream.flush()

    def write_bytes(self, data: bytes) -> None:
        """UTF-8 bytes, in one call to the stream's binary buffer where it has one
        (after what the text stream holds): polars writes bytes, and decoding them for
        the text stream to encode again cost 0.4 s per 10^6 NDJSON records."""
        buffer = getattr(self.stream, "buffer", None)
        if buffer is None:
            self.stream.write(data.decode("utf-8"))
        else:
            self.stream.flush()
            buffer.write(data)
        self.stream.flush()


class NdjsonWriter(Writer):
    """One JSON object per point: kept columns, then value and the derivative."""

    separator = "\n"  # between records

    def write(self, result, kept):
        kept = text_columns(kept)
        prefixes = None
        if kept:  # '{"id": "p1", ' in place of the record's '{'
            kept_json = [[f"{json.dumps(k)}: {json.dumps(v)}" for v in values] for k, values in kept.items()]
            prefixes = ["{" + ", ".join(parts) + ", " for parts in zip(*kept_json)]
        self.nonfinite |= has_nonfinite(result)
        if len(np.asarray(result.value)) >= COLUMNAR_ROWS and 0 < _components(result) <= COLUMNAR_COMPONENTS:
            self._emit_records(records_text(result, self.separator, prefixes))
            return
        records = _record_texts(result)
        if prefixes:
            records = [prefix + record[1:] for prefix, record in zip(prefixes, records)]
        self._emit_text(self.separator.join(records))

    def _emit(self, lines):
        self._emit_text(self.separator.join(lines))

    def _emit_text(self, text):
        """text: the records, joined by the separator."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def _emit_records(self, data):
        """data: the records' bytes, each followed by the separator (a newline: no copy)."""
        self.write_bytes(data)

    def error(self, line, message):
        self._emit([json.dumps({"line": line, "error": message})])
        return True


class JsonArrayWriter(NdjsonWriter):
    """The NDJSON records as one JSON array (written as they come)."""

    separator = ",\n"

    def __init__(self, stream, whole=contextlib.nullcontext):
        super().__init__(stream, whole)
        self.first = True

    def _emit_text(self, text):
        prefix = "[\n" if self.first else ",\n"
        self.first = False
        self.stream.write(prefix + text)
        self.stream.flush()

    def _emit_records(self, data):
        prefix = b"[\n" if self.first else b",\n"
        self.first = False
        self.write_bytes(prefix + data[:-len(self.separator)])

    def close(self):
        self.stream.write("[]\n" if self.first else "\n]\n")
        super().close()


def _record_texts(result) -> list[str]:
    """Per point, the JSON text of the single-point document's derivative keys."""
    found = leaves(result, 1)
    texts = [_per_point_json(leaf.array) for leaf in found]
    template = json.dumps(_nest([(leaf.path, "\0") for leaf in found], result))
    template = template.replace("%", "%%").replace('"\\u0000"', "%s")
    return [template % parts for parts in zip(*texts)]


# A record of more numbers than this is written by the per-point path: polars
# joins its texts a column at a time, which pays for itself over many rows of few
# columns, not over a few rows of thousands.
COLUMNAR_COMPONENTS = 4096


def _components(result) -> int:
    return sum(_columns(leaf) for leaf in leaves(result, 1))


def records_text(result, separator: str, prefixes: list[str] | None = None) -> bytes:
    """The per-point JSON records of a batched result, each followed by separator
    (exactly _record_texts' text, UTF-8 encoded), built a column at a time by polars: each number is
    _shortest_texts' (repr's) text, null where it is not finite, between the fixed
    pieces of the record's JSON (keys, brackets, commas). prefixes, if given,
    replace each record's opening brace (kept columns)."""
    import polars as pl

    found = leaves(result, 1)
    # The record's JSON with a NUL string for each number: split there, its fixed pieces.
    template = json.dumps(_nest([(leaf.path, _placeholders(np.shape(leaf.array)[1:])) for leaf in found], result))
    fixed = template.split('"\\u0000"')
    columns = {}
    for leaf in found:
        for column in _point_rows(leaf).T:
            column = np.ascontiguousarray(column)
            texts = _shortest_texts(pl, column, _not_positional(column))
            nonfinite = np.flatnonzero(~np.isfinite(column))
            columns[f"c{len(columns)}"] = texts.scatter(nonfinite, "null") if nonfinite.size else texts
    parts = [pl.lit(fixed[0])]
    if prefixes:
        columns["prefix"] = pl.Series(prefixes)
        parts = [pl.col("prefix"), pl.lit(fixed[0][1:])]
    for name, after in zip(list(columns)[:len(fixed) - 1], fixed[1:]):
        parts += [pl.col(name), pl.lit(after)]
    frame = pl.DataFrame(columns).select(pl.concat_str(parts))
    data = io.BytesIO()
    frame.write_csv(data, include_header=False, quote_style="never", line_terminator=separator)
    return data.getvalue()


def _placeholders(shape: tuple):
    """A NUL string, in nested lists of the shape."""
    value = "\0"
    for n in reversed(shape):
        value = [value] * n
    return value


def _per_point_json(array) -> list[str]:
    array = np.asarray(array, dtype=np.float64)
    rows = array.tolist()
    if array.ndim == 1:
        return [repr(v) if math.isfinite(v) else "null" for v in rows]
    if np.all(np.isfinite(array)):
        return [json.dumps(r) for r in rows]
    return [_json_text(r) for r in rows]


def quote_cell(text: str, delimiter: str = ",") -> str:
    """A CSV/TSV cell: quoted (with doubled quotes) only when it must be."""
    if delimiter in text or '"' in text or "\n" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def delimited_line(cells, delimiter: str = ",") -> str:
    """Text cells as one CSV/TSV line (without its newline), each quoted only when it must be."""
    return delimiter.join(quote_cell(cell, delimiter) for cell in cells)


def delimited_text(labels: list[str], matrix: np.ndarray, delimiter: str = ",") -> str:
    """A header of labels and a line per row of the (n, k) matrix, as DelimitedWriter
    writes them: numbers as plain_number's text, non-finite ones as nan, inf, -inf."""
    return delimited_line(labels, delimiter) + "\n" + matrix_text(matrix, delimiter)


def matrix_text(matrix: np.ndarray, delimiter: str) -> str:
    """A line per row of the (n, k) matrix, each number plain_number's text."""
    if len(matrix) >= COLUMNAR_ROWS:
        return rows_text(matrix, delimiter)
    # repr is plain_number for a Python float; map keeps the per-number work in C
    # (a 10^6-point CSV spent half its time formatting numbers one call at a time).
    return "".join(delimiter.join(map(repr, row)) + "\n" for row in matrix.tolist())


WIDE = 65536  # numbers (or labels) in one piece of text: more in a CSV row and it is written in pieces


def _columns(leaf: Leaf) -> int:
    return math.prod(np.shape(leaf.array)[1:])


def _point_rows(leaf: Leaf) -> np.ndarray:
    """The leaf as an (n points, components) matrix (a view where it can be)."""
    array = np.asarray(leaf.array, dtype=np.float64)
    return array.reshape(len(array), -1)


def _row_pieces(row: np.ndarray, delimiter: str):
    for start in range(0, len(row), WIDE):
        # repr is plain_number for a Python float
        yield delimiter.join(map(repr, row[start:start + WIDE].tolist()))


# From this many rows a batch's numbers are formatted column by column by polars;
# fewer (one point, say) are quicker through repr than through importing polars.
COLUMNAR_ROWS = 512


def rows_text(matrix: np.ndarray, delimiter: str) -> str:
    """rows_bytes as text."""
    return rows_bytes(matrix, delimiter).decode("ascii")


def rows_bytes(matrix: np.ndarray, delimiter: str) -> bytes:
    """Lines of the (n, k) matrix's numbers, each exactly plain_number's text (Python's
    repr), written by polars: 0.15-0.3 s for 4 x 10^6 numbers where map(repr) takes
    2 s or more. polars writes a float64 with the same shortest round-trip digits as
    repr, laid out as repr does (100.0, -0.0, 0.001, inf) except where repr uses an
    exponent (below 1e-4 or from 1e16: 1e-05, 1.5e-07, where polars writes 0.00001,
    1.5e-7) and for nan (NaN). Rows with none of those are written as floats; the
    few rows with some (a gradient near 0 has a few per 10^5) by repr itself,
    between runs of float rows; many such rows, by casting each column to text
    (a third slower than writing floats) with repr for those numbers alone."""
    import polars as pl

    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    width = matrix.shape[1]
    special = _not_positional(matrix.ravel())  # flat indices: one pass, not a reduction per row
    special_rows = np.unique(special // width)
    options = dict(include_header=False, separator=delimiter, quote_style="never", line_terminator="\n")
    out = io.BytesIO()  # bytes, as polars writes them: the text stream need not encode them again
    if len(special_rows) * SPECIAL_ROWS > len(matrix):
        columns = [_shortest_texts(pl, matrix[:, j], special[special % width == j] // width).alias(f"c{j}")
                   for j in range(width)]
        pl.DataFrame(columns).write_csv(out, **options)
        return out.getvalue()
    frame = pl.DataFrame({f"c{j}": np.ascontiguousarray(matrix[:, j]) for j in range(matrix.shape[1])})
    start = 0
    for row in special_rows.tolist():
        if row > start:
            frame.slice(start, row - start).write_csv(out, **options)
        # repr = plain_number here (ASCII, as every number's text)
        out.write((delimiter.join(map(repr, matrix[row].tolist())) + "\n").encode("ascii"))
        start = row + 1
    if start < len(matrix):
        frame.slice(start).write_csv(out, **options)
    return out.getvalue()


# Rows written by repr between runs of float rows, at most one in this many;
# beyond, each column is cast to text (a write_csv call per run costs ~50 us).
SPECIAL_ROWS = 256


def _not_positional(numbers: np.ndarray) -> np.ndarray:
    """The indices of the numbers that repr writes with an exponent (below 1e-4 or
    from 1e16, but not 0 or inf), and of nan."""
    size = np.abs(numbers)
    with np.errstate(invalid="ignore"):
        candidates = np.flatnonzero(~((size >= 1e-4) & (size < 1e16)))  # nan compares False: here too
    found = size[candidates]
    return candidates[(found != 0) & ~np.isinf(found)]


def _shortest_texts(pl, column: np.ndarray, special: np.ndarray):
    """A polars String series of repr(v) for each v of column: polars' cast, with the
    numbers it lays out differently from repr (at the indices special) written by repr."""
    texts = pl.Series(np.ascontiguousarray(column)).cast(pl.String)
    if special.size:
        texts = texts.scatter(special, [repr(v) for v in column[special].tolist()])
    return texts


class DelimitedWriter(Writer):
    """CSV or TSV with one header row; non-finite numbers as nan, inf, -inf."""

    def __init__(self, stream, delimiter: str, whole=contextlib.nullcontext):
        super().__init__(stream, whole)
        self.delimiter = delimiter
        self.header_written = False
        self.skipped = 0

    def write(self, result, kept):
        kept = text_columns(kept)
        found = leaves(result, 1)
        with self.whole():
            if not self.header_written:
                self._write_header(kept, found)
                self.header_written = True
            if sum(_columns(leaf) for leaf in found) > WIDE:
                self._write_wide(found, kept)
            else:
                self._write_rows(np.concatenate([_point_rows(leaf) for leaf in found], axis=1), kept)
        self.stream.flush()

    def _write_header(self, kept, found):
        """The header, WIDE labels at a time (a 5,000 x 5,000 Jacobian has 25 million)."""
        labels = itertools.chain(kept, *(leaf.iter_labels() for leaf in found))
        for i, batch in enumerate(_batched(labels, WIDE)):
            self.stream.write(("" if i == 0 else self.delimiter) + delimited_line(batch, self.delimiter))
        self.stream.write("\n")

    def _write_wide(self, found, kept):
        """Each point's row in pieces of WIDE numbers."""
        d = self.delimiter
        for i in range(len(np.asarray(found[0].array))):
            pieces = itertools.chain([self._quote(kept_cell(values[i])) for values in kept.values()],
                                     *(_row_pieces(_point_rows(leaf)[i], d) for leaf in found))
            for j, piece in enumerate(pieces):
                self.stream.write(piece if j == 0 else d + piece)
            self.stream.write("\n")

    def _write_rows(self, matrix, kept):
        d = self.delimiter
        if not kept and len(matrix) >= COLUMNAR_ROWS:
            self.write_bytes(rows_bytes(matrix, d))
            return
        if not kept:
            self.stream.write(matrix_text(matrix, d))
            return
        kept_cells = [[self._quote(kept_cell(v)) for v in values] for values in kept.values()]
        # repr is plain_number for a Python float (as in matrix_text)
        out = [d.join([c[i] for c in kept_cells] + list(map(repr, row))) for i, row in enumerate(matrix.tolist())]
        self.stream.write("\n".join(out) + "\n" if out else "")

    def _quote(self, text: str) -> str:
        return quote_cell(text, self.delimiter)


class QuietWriter(Writer):
    """Bare numbers: one point per line, components tab-separated."""

    def write(self, result, kept):
        _, matrix = result_columns(result)
        start = 0 if result.kind == "value" else len(leaves(result, 1)[0].labels)
        if len(matrix) >= COLUMNAR_ROWS and matrix.shape[1] > start:
            self.stream.write(rows_text(matrix[:, start:], "\t"))
        else:
            lines = ["\t".join(map(repr, row[start:])) for row in matrix.tolist()]  # repr = plain_number here
            self.stream.write("\n".join(lines) + "\n" if lines else "")
        self.stream.flush()


class TableWriter(Writer):
    """A rich table of the first points, drawn as soon as the chunks so far hold
    them (the first chunk, usually), then a count of the rest at the end."""

    def __init__(self, console, digits: int, limit: int = 20):
        super().__init__(None)
        self.console = console
        self.digits = digits
        self.limit = limit
        self.labels: list[str] | None = None
        self.rows: list[list[str]] = []
        self.shown = False
        self.more = 0

    def write(self, result, kept):
        if self.shown:
            self.more += len(np.asarray(result.value))
            return
        kept = text_columns(kept)
        labels, matrix = result_columns(result)
        if self.labels is None:
            self.labels = list(kept) + labels
        kept_cells = [[kept_cell(v) for v in values] for values in kept.values()]
        for i, row in enumerate(matrix.tolist()):
            if len(self.rows) < self.limit:
                self.rows.append([c[i] for c in kept_cells] + [format_number(v, self.digits) for v in row])
            else:
                self.more += 1
        if len(self.rows) >= self.limit:
            self._show()

    def _show(self):
        from rich import box
        from rich.table import Table

        self.shown = True
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 1))
        for label in self.labels:
            table.add_column(label, justify="right")
        for row in self.rows:
            table.add_row(*row)
        self.console.print(table)

    def close(self):
        if self.labels is None:
            return
        if not self.shown:
            self._show()
        if self.more:
            self.console.print(f"… and {self.more:,} more points (use --format csv or ndjson for all)",
                               highlight=False)


# ---------------------------------------------------------------- the DAG and the backward pass

TREE_LIMIT = 400  # nodes drawn in a tree; --dot has no limit


def rich_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def node_label(node) -> str:
    """#id, the operation and what distinguishes it: a name, a value, an index, a shape."""
    if node.op == "var":
        detail = node.attr
    elif node.op == "const":
        # a one-element constant may be a vector ([1]): its number, not float() of an array
        detail = format_number(float(np.ravel(node.value)[0]), 6) if node.size == 1 else "array"
    elif node.op == "index":
        detail = "[" + ", ".join(str(i) if isinstance(i, int) else
                                 ":".join("" if p is None else str(p) for p in i) for i in node.attr) + "]"
    else:
        detail = ""
    shape = "" if node.shape == () else " " + "x".join(map(str, node.shape))
    return f"#{node.id} {node.op}" + (f" {detail}" if detail else "") + shape


def print_graph_tree(console, root) -> None:
    """The DAG from the output down, depth first; a node met again is named, not
    repeated. Built with an explicit stack, so deep graphs do not recurse."""
    from rich.tree import Tree

    tree = Tree(rich_escape(node_label(root)))
    seen = {root.id}
    stack = [(tree, arg) for arg in reversed(root.args)]
    shown = 1
    while stack and shown < TREE_LIMIT:
        parent, node = stack.pop()
        if node.id in seen:
            parent.add(f"[dim]#{node.id} (above)[/dim]")
            continue
        seen.add(node.id)
        shown += 1
        branch = parent.add(rich_escape(node_label(node)))
        stack.extend((branch, arg) for arg in reversed(node.args))
    console.print(tree)
    if stack:
        console.print(f"… the graph has more nodes than the {TREE_LIMIT} drawn; --dot prints all of them",
                      highlight=False)


def dot_text(root) -> str:
    """Graphviz DOT for the DAG: an edge from each argument to its consumer."""
    from ..graph.nodes import topological_order

    lines = ["digraph diffcli {", "  rankdir=BT;", '  node [shape=box, fontname="monospace"];']
    for node in topological_order([root]):
        label = node_label(node).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'  n{node.id} [label="{label}"];')
        for arg in node.args:
            lines.append(f"  n{arg.id} -> n{node.id};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def print_backward_table(console, rows, digits: int) -> None:
    """The reverse pass in the order it runs: each node's value and adjoint."""
    from rich import box
    from rich.table import Table

    table = Table(title="backward pass (in the order it runs)", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1, 0, 1))
    table.add_column("node")
    table.add_column("value", justify="right")
    table.add_column("adjoint d(output)/d(node)", justify="right")
    for node, value, adjoint in rows:
        table.add_row(rich_escape(node_label(node)), _compact(value, digits),
                      "-" if adjoint is None else _compact(adjoint, digits))
    console.print(table)


def _compact(array, digits: int) -> str:
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 0:
        return format_number(float(array), digits)
    shown = ", ".join(format_number(float(v), digits) for v in array.ravel()[:6])
    return f"[{shown}{', …' if array.size > 6 else ''}]"


def check_document(check, method: str) -> dict:
    def tree(values):
        return {k: tree(v) if isinstance(v, dict) else to_json_value(v) for k, v in values.items()}
    return {"method": method, "tolerance": check.tolerance, "max_error": check.max_error,
            "worst": check.worst, "passed": check.passed, "finite_differences": tree(check.estimates),
            "error": tree(check.errors)}


def check_summary(check) -> str:
    verdict = "passed" if check.passed else f"FAILED at {check.worst}"
    return f"check: max error {check.max_error:.1e} (tolerance {check.tolerance:.0e}): {verdict}"


def print_check(console, result, check, digits: int) -> None:
    """Each derivative entry beside its finite-difference estimate and the error."""
    from rich import box
    from rich.table import Table

    ours = leaves(result)[1:]
    theirs = leaves(result.replace(derivatives=check.estimates))[1:]
    errors = leaves(result.replace(derivatives=check.errors))[1:]
    table = Table(title="check against finite differences", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("entry", "autodiff", "finite differences", "error"):
        table.add_column(column, justify="left" if column == "entry" else "right")
    for a, b, e in zip(ours, theirs, errors):
        for label, x, y, err in zip(a.labels, np.ravel(a.array), np.ravel(b.array), np.ravel(e.array)):
            style = None if err <= check.tolerance else "bold red"
            table.add_row(label, format_number(float(x), digits), format_number(float(y), digits),
                          f"{err:.1e}", style=style)
    console.print()
    console.print(table)
    console.print(check_summary(check), highlight=False)


def polynomial_text(coefficients, variable: str, about: float) -> str:
    """sum c_k (variable - about)^k as an expression diffcli reads back (each
    number as its shortest round-trip text, zero terms left out)."""
    base = variable if about == 0.0 else f"({variable} {'-' if about > 0 else '+'} {abs(about)!r})"
    terms = []
    for k, c in enumerate(np.asarray(coefficients, dtype=np.float64).tolist()):
        if c == 0.0 and k > 0:
            continue
        number = repr(abs(c)) if math.isfinite(c) else ("nan" if c != c else "inf")
        power = "" if k == 0 else f" * {base}" + (f"^{k}" if k > 1 else "")
        sign = "-" if c < 0 else "+"
        terms.append((sign, number + power))
    first_sign, first = terms[0]
    text = ("-" if first_sign == "-" else "") + first
    return text + "".join(f" {sign} {term}" for sign, term in terms[1:])
