"""Identity seeds kept diagonal while they stay diagonal.

A Jacobian's or Hessian's rows come from identity seeds stacked on a leading
row axis: an m x m identity (times the batch) that reverse mode then scales,
adds and accumulates. Most of that array is zeros, and the first steps of a
derivative plan (the seed times a local derivative, a sum of such terms) keep
it that way, so a plan can carry just the diagonal: O(m) work where the dense
array costs O(m^2). Once an operation would make it dense (a cumulative sum, a
slice, a matrix product), the full array is made, and from there on the plan
runs as it always does.

Every rule here gives the same numbers as the dense computation, except that a
structurally zero entry can be 0.0 where the dense one was -0.0 (0 * -x). Where
the dense result would put nan or inf off the diagonal (0 * inf), the rule
declines and the dense array is made, so non-finite values arise where they
always did.

evaluate.py decides, when a plan first runs with a Diagonal input, which of its
steps can receive one and wraps only those (`structured_kernel`); every other
step keeps its plain NumPy kernel. Which rule an operation takes is a fact of
its record in ops.py (its `diagonal`: the kind of linear map it is).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..graph.ops import OPS


class Diagonal:
    """The array full of shape (m,) + d.shape with full[k, ..., s] = d[..., s]
    where s, the last value_ndim indices, is the k-th entry of the value (flat,
    in C order), and 0 elsewhere. The axes of d before its value axes are batch
    axes (size 1 where the diagonal does not vary over the batch)."""

    __slots__ = ("d", "value_ndim", "rows", "_dense", "_shared")

    def __init__(self, d: np.ndarray, value_ndim: int, shared: bool = False):
        self.d = d
        self.value_ndim = value_ndim
        self.rows = int(np.prod(d.shape[d.ndim - value_ndim:], dtype=np.int64))
        self._dense = None
        self._shared = shared

    @classmethod
    def identity(cls, shape: tuple, batch_ndim: int) -> Diagonal:
        """The rows of the identity of a value of this shape, broadcasting over batch axes."""
        ones = np.ones((1,) * batch_ndim + shape)
        ones.flags.writeable = False
        return cls(ones, len(shape), shared=True)

    @property
    def shape(self) -> tuple:
        return (self.rows,) + self.d.shape

    @property
    def ndim(self) -> int:
        return self.d.ndim + 1

    @property
    def value_shape(self) -> tuple:
        return self.d.shape[self.d.ndim - self.value_ndim:]

    def dense(self) -> np.ndarray:
        """The full array. A seed shared between calls keeps it (read-only), so
        it is made once."""
        if self._dense is not None:
            return self._dense
        full = np.zeros(self.shape)
        _diagonal_view(full, self.rows)[...] = _rows_first(self.d, self.d.shape, self.rows)
        if self._shared:
            full.flags.writeable = False
            self._dense = full
        return full

    def __array__(self, dtype=None, copy=None):
        # Anything outside the rules below (a diagnosis, a test) sees the full array.
        full = self.dense()
        return full if dtype is None else full.astype(dtype)


def _diagonal_view(full: np.ndarray, rows: int) -> np.ndarray:
    """The entries full[k, ..., s_k] of a C-contiguous array, as a writable
    (rows, batch) view (an error, never a silent copy, for any other layout)."""
    flat = full.view()
    flat.shape = (rows, -1, rows)
    return np.einsum("kbk->kb", flat)


def _rows_first(d: np.ndarray, shape: tuple, rows: int) -> np.ndarray:
    """d broadcast to shape (batch + value), as (rows, batch) to match _diagonal_view."""
    return np.broadcast_to(d, shape).reshape(-1, rows).T


# ---------------------------------------------------------------- rules
# Each rule takes the step's plain kernel and its arguments (at least one a
# Diagonal) and returns the result, or None to have the arguments made dense.

def _dense_operand(other, diagonal: Diagonal):
    """other as an array without the row axis (None if it varies along it)."""
    other = np.asarray(other)
    if other.ndim > diagonal.ndim:
        return None  # axes before the row axis: not a shape this representation has
    if other.ndim == diagonal.ndim:
        if other.shape[0] != 1:
            return None
        other = other[0]
    return other


def _same_value(result: np.ndarray, diagonal: Diagonal) -> Diagonal | None:
    """result as the diagonal of a Diagonal like diagonal, if broadcasting kept its value axes."""
    if result.shape[result.ndim - diagonal.value_ndim:] != diagonal.value_shape:
        return None
    return Diagonal(result, diagonal.value_ndim)


def _both(kernel, a: Diagonal, b: Diagonal) -> Diagonal | None:
    """An elementwise op of two diagonals with zero off the diagonal (0 op 0 = 0)."""
    if a.value_ndim != b.value_ndim or a.value_shape != b.value_shape:
        return None
    return _same_value(kernel(a.d, b.d), a)


def _scale(kernel, a, b, zero_dominant: bool = False, divides: bool = False):
    """Diagonal times (or over) something constant along the rows: a Diagonal,
    unless off-diagonal zeros would not stay zero (0 * inf, 0 / 0)."""
    if type(a) is Diagonal and type(b) is Diagonal:
        return None if divides else _both(kernel, a, b)  # 0 / 0 off the diagonal
    if type(a) is not Diagonal:
        if divides:
            return None  # x / 0 off the diagonal
        a, b = b, a
    other = _dense_operand(b, a)
    if other is None or not zero_dominant and not _keeps_zeros(other, divides):
        return None
    return _same_value(kernel(a.d, other), a)


def _keeps_zeros(other: np.ndarray, divides: bool) -> bool:
    """Whether 0 * other (or 0 / other) is 0 everywhere."""
    if divides:
        return bool(np.all(other != 0)) and not np.isnan(other).any()
    return bool(np.all(np.isfinite(other)))


def _mul(kernel, a, b):
    return _scale(kernel, a, b)


def _cmul(kernel, a, b):
    return _scale(kernel, a, b, zero_dominant=True)


def _div(kernel, a, b):
    return _scale(kernel, a, b, divides=True)


def _neg(kernel, a):
    return Diagonal(kernel(a.d), a.value_ndim)


def _add_or_sub(kernel, a, b):
    """A sum with a dense array is that array with the diagonal added in: one
    copy instead of a dense add."""
    if type(a) is Diagonal and type(b) is Diagonal:
        return _both(kernel, a, b)
    diagonal_first = type(a) is Diagonal
    diagonal, dense = (a, np.asarray(b)) if diagonal_first else (b, np.asarray(a))
    if dense.ndim > diagonal.ndim:
        return None  # axes before the row axis
    shape = np.broadcast_shapes(diagonal.shape, dense.shape)
    if shape[0] != diagonal.rows or shape[len(shape) - diagonal.value_ndim:] != diagonal.value_shape:
        return None
    subtract = kernel is np.subtract
    out = np.empty(shape)  # C order whatever the dense operand's (a transpose is not)
    if diagonal_first and subtract:
        np.negative(dense, out=out)  # d - B
    else:
        np.copyto(out, dense)
    on_diagonal = _diagonal_view(out, diagonal.rows)
    change = _rows_first(diagonal.d, shape[1:], diagonal.rows)
    if subtract and not diagonal_first:
        on_diagonal -= change  # A - d
    else:
        on_diagonal += change
    return out


@lru_cache(maxsize=8)
def _triangle(n: int, reverse: bool, ndim: int) -> np.ndarray:
    """mask[k, ..., j]: j <= k (reverse) or j >= k, with ndim - 1 batch axes between."""
    lower = np.tri(n, dtype=bool)
    return (lower if reverse else lower.T).reshape((n,) + (1,) * (ndim - 1) + (n,))


def _cumsum(reverse: bool):
    """A cumulative sum along a vector's axis spreads each row's one entry over
    a triangle: reversed, row k holds d_k in columns 0..k; forwards, in k..n-1."""
    def rule(kernel, a):
        if a.value_ndim != 1:
            return None
        n = a.rows
        mask = _triangle(n, reverse, a.d.ndim)
        out = np.zeros((n,) + a.d.shape)
        np.copyto(out, np.moveaxis(a.d, -1, 0)[..., None], where=mask)  # about 2x np.where's speed
        return out
    return rule


# An operation's record names its kind of linear map (ops.py); kind -> rule(plain
# kernel, *arguments). These rules may return a Diagonal; the cumulative sum's
# (made per node, below) always returns a dense array.
RULES = {"product": _mul, "zero_dominant_product": _cmul, "quotient": _div, "negation": _neg,
         "sum": _add_or_sub}
KINDS = frozenset(RULES) | {"cumulative_sum"}


def _cumsum_rule(node):
    if len(node.shape) != 1:
        return None
    return _cumsum(bool(node.attr))


def rule_for(node):
    kind = OPS[node.op].diagonal
    if kind == "cumulative_sum":
        return _cumsum_rule(node)
    return RULES.get(kind)


def structured_kernel(node, kernel, unary: bool):
    """The step's kernel for arguments that may be Diagonals: its rule where one
    applies, else the plain kernel on dense arguments. Same calling convention
    as the plain kernel (one argument, or a tuple unpacked)."""
    rule = rule_for(node)

    def run(*args):
        if not any(type(a) is Diagonal for a in args):
            return kernel(*args)
        result = rule(kernel, *args) if rule is not None else None
        if result is None:
            result = kernel(*(a.dense() if type(a) is Diagonal else a for a in args))
        return result
    return run if not unary else lambda a: run(a)


def wrap_step(node, kernel, unary: bool, receives: list[bool]):
    """(the step's kernel, whether its result may be a Diagonal), for a step
    whose arguments may be Diagonals where receives says so."""
    if not any(receives):
        return kernel, False
    return structured_kernel(node, kernel, unary), OPS[node.op].diagonal in RULES
