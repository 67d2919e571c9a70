"""Elementwise steps on column windows, run as one pass over their memory.

x[1:] and x[:-1] of a batch of vectors are windows on the last axis of a
C-contiguous (points, n) array: each row's entries are contiguous, but the rows
are not, so NumPy runs every operation on them row by row, one inner loop per
row of n - 1 entries. On a batch of short rows that costs far more per entry
than one pass over contiguous memory (measured on Rosenbrock's gradient, n=100:
a block of 655 points took 620 us row by row and 500 us in spans).

Yet the entries between two rows of a window are just the other columns of the
same buffer. When every array operand of an elementwise operation is a window
of the same shape on rows of the same length n, the operation can run over each
operand's span, from its first entry to its last, as one contiguous pass, into
a fresh buffer laid out with rows of length n; the result is the same window
of that buffer, and its later operations can do the same. The entries computed
in between belong to no window and are never read as values, so every number
is the one the row-by-row pass gives, bit for bit. (They may be nan or inf: a
plan runs with floating-point errors quiet and checks only its outputs.)

scatter_sum, which gathers a cotangent from several windows of a variable,
adds each window's span into the output the same way, then puts back the
entries between its rows.

`wrap_step` decides, once per plan (evaluate.py walks the steps), which steps
can receive a Window and wraps only those; a step that cannot use one gets the strided view (`Window.view`).
Windows are used for batches only, where they pay; one point keeps its plain steps.
"""

from __future__ import annotations

import numpy as np

from ..graph.ops import OPS, outside_box

_ITEM = 8  # float64


class Window:
    """The array of this shape whose rows (along the last axis) start n entries
    apart in memory: `span` is the contiguous 1-D run from its first entry to
    its last, `view` the array itself."""

    __slots__ = ("span", "shape", "n", "_view")

    def __init__(self, span: np.ndarray, shape: tuple, n: int):
        self.span = span
        self.shape = shape
        self.n = n
        self._view = None

    @property
    def view(self) -> np.ndarray:
        if self._view is None:
            strides = [_ITEM, _ITEM * self.n]
            for size in self.shape[-2:0:-1]:
                strides.append(strides[-1] * size)
            self._view = np.ndarray(self.shape, np.float64, self.span, 0, tuple(reversed(strides)))
        return self._view

    def __array__(self, dtype=None, copy=None):
        if copy is False and dtype not in (None, np.float64):
            raise ValueError("a Window is float64: another dtype needs a copy")
        if copy or dtype not in (None, np.float64):
            return self.view.astype(np.float64 if dtype is None else dtype)
        return self.view


def last_axis_window(items, shape) -> tuple[int, int] | None:
    """(first column, width) when index items select a unit-step window of the
    last axis of a value of this shape and every other axis whole, narrow
    enough to leave few entries between rows (at most a quarter of a row); else None."""
    if not shape or len(items) != len(shape):
        return None
    for size, item in zip(shape[:-1], items[:-1]):
        if isinstance(item, int) or range(size)[slice(*item)] != range(size):
            return None
    last = items[-1]
    if isinstance(last, int) or last[2] not in (None, 1):
        return None
    columns = range(shape[-1])[slice(*last)]
    n = shape[-1]
    if not columns or len(columns) == n or 4 * (n - len(columns)) > n:
        return None
    return columns.start, len(columns)


_FLOAT64 = np.dtype(np.float64)


def _rows(a) -> bool:
    """Whether a is a C-contiguous float64 array of more than one row (a float64
    array with a dtype object of its own just takes the plain steps)."""
    return (type(a) is np.ndarray and a.dtype is _FLOAT64 and a.ndim >= 2 and a.size > a.shape[-1]
            and a.flags.c_contiguous)


def index_kernel(lo: int, width: int, plain):
    """x[..., lo:lo + width] as a Window when x is C-contiguous rows (in a batch)."""

    def index(a):
        if type(a) is Window:
            return plain(a.view)
        if not _rows(a):
            return plain(a)
        n = a.shape[-1]
        return Window(a.reshape(-1)[lo:lo + a.size - n + width], a.shape[:-1] + (width,), n)
    return index


def elementwise_kernel(node, kernel, unary: bool, may_be_window: list[bool]):
    """kernel over its operands' spans when those that may be Windows are, all of
    one shape and row length, and the others are single-number constants; else
    over views. None when an operand is neither (the step can never use spans).
    The checks are specialised by arity, since they run while holding the GIL
    that other threads are waiting for."""
    constants = {}
    for i, (arg, window) in enumerate(zip(node.args, may_be_window)):
        if not window:
            if arg.op != "const" or np.size(arg.value) != 1:
                return None
            constants[i] = np.reshape(arg.value, (1,))
    takes_out = type(kernel) is np.ufunc

    def over_spans(template: Window, spans) -> Window:
        if takes_out:
            result = Window(np.empty(template.span.size), template.shape, template.n)
            kernel(*spans, out=result.span)
            return result
        return Window(kernel(*spans), template.shape, template.n)

    plain = plain_kernel(kernel, unary=False)

    if unary:
        def run_unary(a, out=None):
            if out is None and type(a) is Window:
                return over_spans(a, (a.span,))
            return plain(a, out=out)
        run_unary.writes_into = takes_out
        return run_unary
    if len(node.args) == 2 and not constants:
        def run_both(a, b, out=None):
            if out is None and type(a) is Window and type(b) is Window and a.n == b.n and a.shape == b.shape:
                return over_spans(a, (a.span, b.span))
            return plain(a, b, out=out)
        run_both.writes_into = takes_out
        return run_both
    if len(node.args) == 2:
        window_at = 1 if 0 in constants else 0
        constant = constants[1 - window_at]

        def run_with_constant(a, b, out=None):
            w = b if window_at else a
            if out is None and type(w) is Window:
                return over_spans(w, (constant, w.span) if window_at else (w.span, constant))
            return plain(a, b, out=out)
        run_with_constant.writes_into = takes_out
        return run_with_constant

    def run(*args, out=None):
        windows = [a for i, a in enumerate(args) if i not in constants]
        first = windows[0]
        if out is None and all(type(w) is Window and w.n == first.n and w.shape == first.shape for w in windows):
            return over_spans(first, [constants[i] if i in constants else a.span for i, a in enumerate(args)])
        return plain(*args, out=out)
    run.writes_into = takes_out
    return run


def plain_kernel(kernel, unary: bool):
    """kernel, given views for any Window arguments (and out=, where it takes one)."""
    def run(*args, out=None):
        views = [a.view if type(a) is Window else a for a in args]
        return kernel(*views) if out is None else kernel(*views, out=out)
    run.writes_into = type(kernel) is np.ufunc or getattr(kernel, "writes_into", False)
    if not unary:
        return run

    def run_unary(a, out=None):
        return run(a, out=out)
    run_unary.writes_into = run.writes_into
    return run_unary


def scatter_sum_kernel(node, plain):
    """scatter_sum whose parts are windows on the output's last axis: the first
    written span by span and its surroundings zeroed, each later one added span
    by span with the entries between its rows kept as they were. Anything else
    (a part that is not a Window of the right row length, an output that is not
    C-contiguous) takes the plain kernel."""
    parts, shape = node.attr
    columns = [last_axis_window(items, shape) for items in parts]
    outside = outside_box(parts[0], shape)
    n = shape[-1] if shape else 0

    def scatter_sum(*values, out=None):
        if outside is None or None in columns or not all(type(v) is Window and v.n == n for v in values):
            return plain(*(v.view if type(v) is Window else v for v in values), out=out)
        lead = values[0].shape[:len(values[0].shape) - len(parts[0])]
        if any(v.shape[:len(v.shape) - len(p)] != lead for v, p in zip(values, parts)):
            return plain(*(v.view for v in values), out=out)
        if out is None or out.shape != lead + shape or not out.flags.c_contiguous:
            out = np.empty(lead + shape)
        flat = out.reshape(-1)
        lo, _ = columns[0]
        np.add(values[0].span, 0.0, out=flat[lo:lo + values[0].span.size])
        for key in outside:
            out[key] = 0.0  # also clears what the span put between the window's rows
        rows = out.reshape(-1, n)
        for (lo, width), v in zip(columns[1:], values[1:]):
            right = rows[:-1, lo + width:].copy() if lo + width < n else None
            left = rows[1:, :lo].copy() if lo else None
            place = flat[lo:lo + v.span.size]
            np.add(place, v.span, out=place)
            if right is not None:
                rows[:-1, lo + width:] = right
            if left is not None:
                rows[1:, :lo] = left
        return out
    scatter_sum.writes_into = True
    return scatter_sum


def wrap_step(node, kernel, unary: bool, receives: list[bool]):
    """(the step's kernel for Windows, whether its result may be one): a window
    index makes them, an elementwise step passes them on, scatter_sum gathers
    them, and any other step that may receive one is given its view."""
    window = last_axis_window(node.attr, node.args[0].shape) if node.op == "index" else None
    if window is not None:
        return index_kernel(*window, kernel), True
    if not any(receives):
        return kernel, False
    if OPS[node.op].elementwise:
        spans = elementwise_kernel(node, kernel, unary, receives)
        if spans is not None:
            return spans, True
    elif node.op == "scatter_sum":
        return scatter_sum_kernel(node, kernel), False
    return plain_kernel(kernel, unary), False
