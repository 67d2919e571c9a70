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
