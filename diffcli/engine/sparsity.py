"""Which entries of a Jacobian or Hessian can be nonzero, and seeds that share rows.

Rows of a derivative are computed in one batched pass, one identity seed per
row. Two rows that have no nonzero column in common can share a seed (the sum
of their unit vectors): each column of the combined result then belongs to the
one row that can be nonzero there (Curtis, Powell and Reid's compression, with
greedy colouring). A banded Hessian such as Rosenbrock's needs 3 seeds where
the identity needs n; an elementwise function's diagonal Jacobian needs 1.

The pattern is structural, found once per graph: for each node, a boolean
matrix saying which input entries each of its entries can depend on. An
elementwise operation maps entry to entry (with broadcasting); one that only
moves entries (indexing, scatters, stacking, reshapes) is read off its kernel
applied to numbered entries; an operation with derivative 0 (comparisons,
floor, sign) passes on nothing; reductions, scans and products are probed with
their own kernel, one nan per input entry on a leading axis, since each of them
carries a nan from an entry to every entry that reads it. An operation not known
to do either is taken as dense, which is never wrong, only slower. Which of these
an operation is, is a fact of its record in ops.py (elementwise, pattern).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from ..graph.nodes import Node, topological_order
from ..graph.ops import OPS

# Beyond this many booleans in flight, the pattern is not worth finding (identity seeds are used).
MAX_PATTERN_CELLS = 1 << 25
# The colouring compares every pair of rows: at most this many rows, and at most
# this many multiply-adds (rows x rows x columns) to find which pairs clash.
MAX_ROWS = 4096
MAX_CLASH_WORK = 1 << 30
# A probe holds (argument size) x (argument or result size) numbers, and turns
# them into the pattern with (result size) x (argument size) x (input size)
# multiply-adds: beyond these, the operation is taken as dense instead.
MAX_PROBE_ENTRIES = 1 << 22
MAX_PROBE_WORK = 1 << 30

# An operation's record says how its pattern is found when it is not elementwise:
# "moves": it only moves entries (each result entry is at most one entry of each
# argument, or a sum of such), so its pattern is read off the kernel applied to the
# entries' numbers, one argument at a time; "probe": its kernel propagates a nan
# from an input entry to exactly the output entries that read it (at generic
# positive values, which it is fed); "dense": neither.
PATTERNS = ("moves", "probe", "dense")

# rows: the number of rows; colour: each row's seed; count: how many seeds;
# rows_at, columns_at: the entries that can be nonzero (row, flat column);
# cache: seeds and index maps already made, by layout.
Compression = namedtuple("Compression", "rows colour count rows_at columns_at cache")


def dependency(outputs: list[Node], inputs: list[Node]) -> list[np.ndarray] | None:
    """For each output, a boolean (output size, total input size) matrix: which
    entries of the inputs (flattened, one after another) each output entry can
    depend on. None when that would hold more than MAX_PATTERN_CELLS booleans."""
    columns = sum(n.size for n in inputs)
    order = topological_order(outputs)
    if columns == 0 or sum(n.size for n in order) * columns > MAX_PATTERN_CELLS:
        return None
    offsets, start = {}, 0
    for node in inputs:
        offsets[node.id] = start
        start += node.size
    patterns: dict[int, np.ndarray | None] = {}
    for node in order:
        if node.id in offsets:
            pattern = np.zeros((node.size, columns), dtype=bool)
            pattern[:, offsets[node.id]:offsets[node.id] + node.size] = np.eye(node.size, dtype=bool)
        elif node.op in ("const", "var") or OPS[node.op].zero_derivative:
            pattern = None
        else:
            pattern = _propagate(node, [patterns[a.id] for a in node.args], columns)
        patterns[node.id] = pattern
    return [np.zeros((n.size, columns), dtype=bool) if patterns[n.id] is None else patterns[n.id]
            for n in outputs]


def _propagate(node: Node, argument_patterns: list, columns: int) -> np.ndarray | None:
    if all(p is None for p in argument_patterns):
        return None
    op = OPS[node.op]
    if op.elementwise:
        return _elementwise(node, argument_patterns, columns)
    if op.pattern == "moves":
        return _selected(node, argument_patterns, columns)
    if op.pattern == "probe" and _probe_affordable(node, columns):
        try:
            return _probed(node, argument_patterns, columns)
        except (ValueError, TypeError, IndexError):
            pass  # a kernel that cannot take the probe: dense below
    union = np.zeros(columns, dtype=bool)
    for p in argument_patterns:
        if p is not None:
            union |= p.any(axis=0)
    return np.broadcast_to(union, (node.size, columns))


def _probe_affordable(node, columns: int) -> bool:
    return all(a.size * max(a.size, node.size) <= MAX_PROBE_ENTRIES and
               node.size * a.size * columns <= MAX_PROBE_WORK for a in node.args)


def _elementwise(node, argument_patterns, columns):
    out = np.zeros((node.size, columns), dtype=bool)
    for arg, p in zip(node.args, argument_patterns):
        if p is not None:
            source = np.broadcast_to(np.arange(arg.size).reshape(arg.shape), node.shape).ravel()
            out |= p[source]
    return out


def _selected(node, argument_patterns, columns):
    """For each argument in turn, numbered entries (from 1) and the others 0: each
    result entry shows which entry of that argument it holds, or 0 for none."""
    kernel = OPS[node.op].kernel(node)
    out = np.zeros((node.size, columns), dtype=bool)
    for k, (arg, pattern) in enumerate(zip(node.args, argument_patterns)):
        if pattern is None:
            continue
        values = [np.zeros(a.shape) for a in node.args]
        values[k] = np.arange(1, arg.size + 1, dtype=np.float64).reshape(arg.shape)
        source = np.broadcast_to(kernel(*values), node.shape).ravel().astype(np.intp)
        found = source > 0
        out[found] |= pattern[source[found] - 1]
    return out


def _probed(node, argument_patterns, columns):
    """out entry i reads arg entry j exactly when a nan put at j (on probe row j)
    comes out at i."""
    generic = [np.random.default_rng(k).uniform(0.5, 1.5, a.shape) for k, a in enumerate(node.args)]
    kernel = OPS[node.op].kernel(node)
    out = np.zeros((node.size, columns), dtype=bool)
    for k, (arg, p) in enumerate(zip(node.args, argument_patterns)):
        if p is None:
            continue
        rows = arg.size
        probe = np.repeat(generic[k].reshape(1, -1), rows, axis=0)
        probe[np.arange(rows), np.arange(rows)] = np.nan
        values = [np.broadcast_to(g, (rows,) + a.shape) for g, a in zip(generic, node.args)]
        values[k] = probe.reshape((rows,) + arg.shape)
        with np.errstate(all="ignore"):
            result = np.broadcast_to(kernel(*values), (rows,) + node.shape)
        reads = np.isnan(result).reshape(rows, node.size).T  # (out entries, arg entries)
        out |= _or_of_rows(reads, p)
    return out


def _or_of_rows(reads: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Row i: the OR of pattern's rows j where reads[i, j] (a boolean matrix
    product, in time proportional to the entries read)."""
    if reads.all():  # every result entry reads every argument entry (sum, softmax, ...)
        return np.broadcast_to(pattern.any(axis=0), (reads.shape[0], pattern.shape[1]))
    i, j = np.nonzero(reads)  # row-major: grouped by i
    if len(i) * 32 > reads.size:  # not sparse: a float32 matrix product (BLAS) is faster
        return (reads.astype(np.float32) @ pattern.astype(np.float32)) > 0
    out = np.zeros((reads.shape[0], pattern.shape[1]), dtype=bool)
    if len(i):
        starts = np.flatnonzero(np.r_[True, i[1:] != i[:-1]])
        out[i[starts]] = np.logical_or.reduceat(pattern[j], starts, axis=0)
    return out


def compress_rows(pattern: np.ndarray) -> Compression | None:
    """A greedy colouring of the rows of pattern: rows with no column in common
    share a colour. None when it would save nothing or the pattern is too big."""
    rows, columns = pattern.shape
    if rows < 2 or rows > MAX_ROWS:
        return None
    # Rows meeting in one column all need their own seed: when some column is met
    # by over half the rows, sharing saves less than finding it costs.
    touched = pattern.sum(axis=0)
    if touched.max(initial=0) * 2 > rows or rows * rows * touched.mean() > MAX_CLASH_WORK:
        return None
    row_columns = _split(*np.nonzero(pattern), rows)
    column_rows = _split(*np.nonzero(pattern.T), columns)
    colour = np.full(rows, -1, dtype=np.intp)
    for i in range(rows):
        met = [column_rows[c] for c in row_columns[i]]  # the rows sharing a column with row i
        taken = colour[np.concatenate(met)] if met else colour[:0]
        taken = taken[taken >= 0]
        free = np.ones(len(taken) + 1, dtype=bool)
        free[taken[taken <= len(taken)]] = False
        colour[i] = int(np.argmax(free))
    count = int(colour.max()) + 1
    if count >= rows:
        return None
    rows_at, columns_at = np.nonzero(pattern)
    return Compression(rows, colour, count, rows_at, columns_at, {})


def _split(keys: np.ndarray, values: np.ndarray, count: int) -> list:
    """values grouped by their (sorted) keys: the list of arrays for keys 0..count-1."""
    bounds = np.searchsorted(keys, np.arange(count + 1))
    return [values[bounds[k]:bounds[k + 1]] for k in range(count)]


def compressed_seed(compression: Compression, shape: tuple, batch_ndim: int) -> np.ndarray:
    """The seeds, one per colour, on a leading axis (like identity rows); read-only, made once."""
    key = ("seed", shape, batch_ndim)
    seed = compression.cache.get(key)
    if seed is None:
        seed = np.zeros((compression.count, compression.rows))
        seed[compression.colour, np.arange(compression.rows)] = 1.0
        seed = seed.reshape((compression.count,) + (1,) * batch_ndim + shape)
        seed.flags.writeable = False
        compression.cache[key] = seed
    return seed


def decompress(d: np.ndarray, compression: Compression, column_offset: int, batch: tuple,
               row_shape: tuple, column_shape: tuple) -> np.ndarray:
    """batch + row_shape + column_shape, from compressed rows d (colours on the
    leading axis, then batch, then column_shape): every entry that can be nonzero
    read from its row's colour, the rest exactly 0."""
    columns, points = math.prod(column_shape), math.prod(batch)
    source, target = _index_maps(compression, column_offset, columns)
    laid_out = (compression.count,) + batch + column_shape
    if d.shape != laid_out:
        d = np.broadcast_to(d, laid_out)
    d = d.reshape(compression.count, points, columns)
    if points == 1:
        full = np.zeros(compression.rows * columns)
        full[target] = d.reshape(-1)[source]
    else:  # points first, then each point's colours x columns
        full = np.zeros((points, compression.rows * columns))
        full[:, target] = np.moveaxis(d, 1, 0).reshape(points, -1)[:, source]
    return full.reshape(batch + row_shape + column_shape)


def _index_maps(compression: Compression, column_offset: int, columns: int):
    """Flat positions of the entries that can be nonzero, in the compressed rows
    (colour, column) and in the full block (row, column)."""
    key = ("maps", column_offset, columns)
    maps = compression.cache.get(key)
    if maps is None:
        keep = (compression.columns_at >= column_offset) & (compression.columns_at < column_offset + columns)
        rows_at, columns_at = compression.rows_at[keep], compression.columns_at[keep] - column_offset
        maps = (compression.colour[rows_at] * columns + columns_at, rows_at * columns + columns_at)
        compression.cache[key] = maps
    return maps
