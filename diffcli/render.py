"""Presentation: rich tables for people, JSON and bare numbers for programs.

The only module that imports rich, and only when a table is drawn, so the
machine-output paths do not pay for it at start-up.

Non-finite numbers: JSON has no NaN or Infinity, so they are written as null
(and the CLI says so on stderr); tables and --quiet show nan, inf, -inf.
"""

from __future__ import annotations

import json
import math
from itertools import product

import numpy as np

DERIVATIVE_KEYS = {"gradient": "gradient", "jacobian": "jacobian", "vjp": "vjp"}


def component_labels(name: str, shape: tuple) -> list[str]:
    """x, or x[0], x[1], ..., or A[0,0], A[0,1], ... in the language's own index syntax."""
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, index))}]" for index in product(*(range(n) for n in shape))]


def to_json_value(array: np.ndarray):
    """Nested lists of floats, with None for non-finite entries."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 0:
        v = float(array)
        return v if math.isfinite(v) else None
    if np.all(np.isfinite(array)):
        return array.tolist()
    return np.where(np.isfinite(array), array, None).tolist()


def has_nonfinite(result) -> bool:
    return not np.all(np.isfinite(result.value)) or any(
        not np.all(np.isfinite(d)) for d in result.derivatives.values())


def json_document(source: str, at: dict, result, extra: dict | None = None) -> str:
    doc = {"expression": source, "at": {k: to_json_value(v) for k, v in at.items()}}
    doc.update(extra or {})
    doc["value"] = to_json_value(result.value)
    if result.kind in DERIVATIVE_KEYS:
        doc[DERIVATIVE_KEYS[result.kind]] = {k: to_json_value(v) for k, v in result.derivatives.items()}
    return json.dumps(doc, allow_nan=False)


def quiet_lines(result) -> list[str]:
    """Bare numbers, one per line: the derivative components (variables in
    order) for derivative commands, the value's components for eval."""
    arrays = list(result.derivatives.values()) if result.kind != "value" else [result.value]
    return [_plain(float(v)) for a in arrays for v in np.asarray(a).ravel()]


def _plain(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def format_number(v: float, digits: int) -> str:
    if not math.isfinite(v):
        return _plain(v)
    if v == 0:
        return "0"  # also -0.0, which is correct but only noise in a table
    return f"{v:.{digits}g}"


def print_tables(console, result, digits: int) -> None:
    """The value, then one table per variable for its derivative."""
    console.print(_vector_table(result.value, digits, "value"))
    for name, d in result.derivatives.items():
        console.print()
        if result.kind == "jacobian" and np.ndim(result.value) > 0:
            var_shape = d.shape[np.ndim(result.value):]
            console.print(f"∂value/∂{name}", style="bold", highlight=False)
            console.print(_matrix_table(name, result.value.shape, var_shape, d, digits))
        else:
            heading = f"vjp for {name}" if result.kind == "vjp" else f"∂value/∂{name}"
            console.print(heading, style="bold", highlight=False)
            console.print(_vector_table(d, digits, name))


def _vector_table(array, digits, name):
    """Rows of label and number: x, or x[0], x[1], ..."""
    from rich.table import Table

    array = np.asarray(array)
    table = Table(show_header=False, box=None, padding=(0, 1, 0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    for label, v in zip(component_labels(name, array.shape), array.ravel()):
        table.add_row(label, format_number(float(v), digits))
    return table


def _matrix_table(name, out_shape, var_shape, jac, digits):
    """A Jacobian block: a row per output component, a column per variable component."""
    from rich import box
    from rich.table import Table

    rows = component_labels("value", out_shape)
    columns = component_labels(name, var_shape)
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 2))
    table.add_column("")
    for c in columns:
        table.add_column(c, justify="right")
    flat = np.asarray(jac).reshape(len(rows), len(columns))
    for label, row in zip(rows, flat):
        table.add_row(label, *(format_number(float(v), digits) for v in row))
    return table


# ---------------------------------------------------------------- many points: streaming writers
#
# Column naming in CSV/TSV and tables (documented in the README):
#   value, value[i]        the value (components in the language's index syntax)
#   d/dx, d/dx[i]          gradient
#   dvalue[i]/dx[j]        Jacobian entry
#   vjp/dx[j]              sum over i of seed[i] * dvalue[i]/dx[j]


def derivative_labels(kind: str, value_shape: tuple, name: str, var_shape: tuple) -> list[str]:
    var_labels = component_labels(name, var_shape)
    if kind == "gradient":
        return [f"d/d{v}" for v in var_labels]
    if kind == "vjp":
        return [f"vjp/d{v}" for v in var_labels]
    return [f"d{o}/d{v}" for o in component_labels("value", value_shape) for v in var_labels]


def result_columns(result, batch_ndim: int = 1) -> tuple[list[str], np.ndarray]:
    """Column labels and an (n, columns) matrix of a batched result."""
    value = np.asarray(result.value)
    n = value.shape[0] if batch_ndim else 1
    value_shape = value.shape[batch_ndim:]
    labels = component_labels("value", value_shape)
    blocks = [value.reshape(n, -1)]
    for name, d in result.derivatives.items():
        d = np.asarray(d)
        var_shape = d.shape[batch_ndim + (len(value_shape) if result.kind == "jacobian" else 0):]
        labels += derivative_labels(result.kind, value_shape, name, var_shape)
        blocks.append(d.reshape(n, -1))
    return labels, np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))


def _json_text(value) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    return json.dumps(value)


def _cell(value) -> str:
    """A kept column's value in a CSV cell: strings as they were, JSON otherwise."""
    return value if isinstance(value, str) else ("" if value is None else json.dumps(value))


class Writer:
    """Streams one batched result after another to a text stream."""

    def __init__(self, stream):
        self.stream = stream
        self.nonfinite = False  # set when a non-finite number was written as null

    def write(self, result, kept: dict[str, list]) -> None:
        raise NotImplementedError

    def error(self, line: int, message: str) -> bool:
        """Record a skipped bad input record; True if it was written to the output."""
        return False

    def close(self) -> None:
        self.stream.flush()


class NdjsonWriter(Writer):
    """One JSON object per point: kept columns, then value and the derivative."""

    def write(self, result, kept):
        fields = _record_fields(result)
        kept_json = {k: [json.dumps(v) for v in values] for k, values in kept.items()}
        n = np.asarray(result.value).shape[0]
        lines = []
        for i in range(n):
            parts = [f"{json.dumps(k)}: {v[i]}" for k, v in kept_json.items()]
            parts += [f'"{key}": {texts[i]}' for key, texts in fields]
            lines.append("{" + ", ".join(parts) + "}")
        self.nonfinite |= not _all_finite(result)
        self._emit(lines)

    def _emit(self, lines):
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def error(self, line, message):
        self._emit([json.dumps({"line": line, "error": message})])
        return True


class JsonArrayWriter(NdjsonWriter):
    """The NDJSON records as one JSON array (written as they come)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.first = True

    def _emit(self, lines):
        prefix = "[\n" if self.first else ",\n"
        self.first = False
        self.stream.write(prefix + ",\n".join(lines))
        self.stream.flush()

    def close(self):
        self.stream.write("[]\n" if self.first else "\n]\n")
        super().close()


def _record_fields(result) -> list[tuple[str, list[str]]]:
    """Per-point JSON texts for the value and each derivative, keyed like the
    single-point document."""
    fields = [("value", _per_point_json(result.value))]
    if result.kind in DERIVATIVE_KEYS:
        names = list(result.derivatives)
        per_name = [_per_point_json(result.derivatives[k]) for k in names]
        texts = ["{" + ", ".join(f"{json.dumps(k)}: {t[i]}" for k, t in zip(names, per_name)) + "}"
                 for i in range(len(per_name[0]) if per_name else np.asarray(result.value).shape[0])]
        fields.append((DERIVATIVE_KEYS[result.kind], texts))
    return fields


def _per_point_json(array) -> list[str]:
    array = np.asarray(array, dtype=np.float64)
    rows = array.tolist()
    if array.ndim == 1:
        return [repr(v) if math.isfinite(v) else "null" for v in rows]
    if np.all(np.isfinite(array)):
        return [json.dumps(r) for r in rows]
    return [_json_text(r) for r in rows]


def _all_finite(result) -> bool:
    return not has_nonfinite(result)


class DelimitedWriter(Writer):
    """CSV or TSV with one header row; non-finite numbers as nan, inf, -inf."""

    def __init__(self, stream, delimiter: str):
        super().__init__(stream)
        self.delimiter = delimiter
        self.header_written = False
        self.skipped = 0

    def write(self, result, kept):
        labels, matrix = result_columns(result)
        if not self.header_written:
            self.stream.write(self._row(list(kept) + labels))
            self.header_written = True
        kept_cells = [[_cell(v) for v in values] for values in kept.values()]
        rows = matrix.tolist()
        out = []
        d = self.delimiter
        for i, row in enumerate(rows):
            cells = [self._quote(c[i]) for c in kept_cells] + [_plain(v) for v in row]
            out.append(d.join(cells))
        self.stream.write("\n".join(out) + "\n" if out else "")
        self.stream.flush()

    def _row(self, cells):
        return self.delimiter.join(self._quote(c) for c in cells) + "\n"

    def _quote(self, text: str) -> str:
        if self.delimiter in text or '"' in text or "\n" in text:
            return '"' + text.replace('"', '""') + '"'
        return text


class QuietWriter(Writer):
    """Bare numbers: one point per line, components tab-separated."""

    def write(self, result, kept):
        _, matrix = result_columns(result)
        start = 0 if result.kind == "value" else np.asarray(result.value).reshape(len(matrix), -1).shape[1]
        lines = ["\t".join(_plain(v) for v in row[start:]) for row in matrix.tolist()]
        self.stream.write("\n".join(lines) + "\n" if lines else "")
        self.stream.flush()


class TableWriter(Writer):
    """A rich table of the first points, with a count of the rest."""

    def __init__(self, console, digits: int, limit: int = 20):
        super().__init__(None)
        self.console = console
        self.digits = digits
        self.limit = limit
        self.labels: list[str] | None = None
        self.rows: list[list[str]] = []
        self.more = 0

    def write(self, result, kept):
        labels, matrix = result_columns(result)
        if self.labels is None:
            self.labels = list(kept) + labels
        kept_cells = [[_cell(v) for v in values] for values in kept.values()]
        for i, row in enumerate(matrix.tolist()):
            if len(self.rows) < self.limit:
                self.rows.append([c[i] for c in kept_cells] + [format_number(v, self.digits) for v in row])
            else:
                self.more += 1

    def close(self):
        from rich import box
        from rich.table import Table

        if self.labels is None:
            return
        table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 1))
        for label in self.labels:
            table.add_column(label, justify="right")
        for row in self.rows:
            table.add_row(*row)
        self.console.print(table)
        if self.more:
            self.console.print(f"… and {self.more:,} more points (use --format csv or ndjson for all)",
                               highlight=False)
