"""Whole derivative tensors from directional derivatives, by exact interpolation
(Griewank, Utke & Walther, "Evaluating higher derivative tensors by forward
propagation of univariate Taylor series", Math. Comp. 69, 2000).

The order-d derivatives of f along the binom(n+d-1, d) directions j (entries
>= 0, |j| = d) determine every distinct entry of the symmetric order-d tensor:
d^i f = sum_j gamma_ij f_j^(d) / d!, with (for |i| = d)

    gamma_ij = sum_{0 < k <= i} (-1)^|i-k| binom(i, k) binom(d k / |k|, j) (|k| / d)^d,

multi-index binomials being products of one-index ones (of a real upper
argument in binom(d k/|k|, j)). Computed once per (n, d) (interpolation()).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from functools import lru_cache

import numpy as np


def multi_indices(n: int, d: int) -> list[tuple[int, ...]]:
    """Every j in N^n with |j| = d, in lexicographic order (largest first)."""
    out = []
    for bars in itertools.combinations(range(d + n - 1), n - 1):
        previous, j = -1, []
        for b in bars + (d + n - 1,):
            j.append(b - previous - 1)
            previous = b
        out.append(tuple(j))
    return sorted(out, reverse=True)


def _binomial(top: Fraction, m: int) -> Fraction:
    out = Fraction(1)
    for i in range(m):
        out = out * (top - i) / (i + 1)
    return out


@lru_cache(maxsize=8)
def interpolation(n: int, d: int) -> np.ndarray:
    """gamma / d! as a float matrix (rows: multi-indices i, columns: directions j),
    both in multi_indices order: applied to the order-d derivatives along the
    directions, it gives the tensor's distinct entries. gamma = W @ B, with
    W[i, k] = (-1)^|i-k| binom(i, k) (|k|/d)^d over 0 < k <= i and
    B[k, j] = binom(d k/|k|, j); each one-index binomial of a rational upper
    argument is computed exactly once and rounded, then the products and the
    sum run in float64 (an (n, d) = (10, 4) matrix, 715 x 715, in well under a second)."""
    indices = multi_indices(n, d)
    directions = np.array(indices)  # (D, n)
    ks = [k for size in range(1, d + 1) for k in multi_indices(n, size)]
    column = {k: c for c, k in enumerate(ks)}
    tops = sorted({Fraction(d * km, sum(k)) for k in ks for km in k})
    top_row = {t: r for r, t in enumerate(tops)}
    table = np.array([[float(_binomial(t, m)) for m in range(d + 1)] for t in tops])  # binom(t, m)
    b = np.empty((len(ks), len(indices)))
    for c, k in enumerate(ks):
        size = sum(k)
        rows = [top_row[Fraction(d * km, size)] for km in k]
        b[c] = np.prod(table[np.array(rows)[:, None], directions.T], axis=0)  # product over the n components
    w = np.zeros((len(indices), len(ks)))
    for r, i in enumerate(indices):
        for k in itertools.product(*(range(m + 1) for m in i)):
            size = sum(k)
            if size:
                sign = -1.0 if (d - size) % 2 else 1.0
                w[r, column[k]] = sign * math.prod(math.comb(a, c) for a, c in zip(i, k)) * (size / d) ** d
    return (w @ b) / math.factorial(d)


@lru_cache(maxsize=8)
def _positions(n: int, d: int) -> np.ndarray:
    """For every entry (a_1, ..., a_d) of the tensor, the row of its multi-index."""
    row = {i: r for r, i in enumerate(multi_indices(n, d))}
    positions = np.empty((n,) * d, dtype=np.intp)
    for entry in itertools.product(range(n), repeat=d):
        counts = [0] * n
        for a in entry:
            counts[a] += 1
        positions[entry] = row[tuple(counts)]
    return positions


def tensor_from_directions(along: np.ndarray, n: int, d: int) -> np.ndarray:
    """along: (directions,) + rest, the order-d derivatives along multi_indices(n, d);
    the tensor as rest + (n,) * d."""
    if n == 1:
        return np.asarray(along[0])  # the caller adds the variable's axes
    rest = along.shape[1:]
    distinct = interpolation(n, d) @ along.reshape(along.shape[0], -1)  # (rows, rest)
    full = distinct[_positions(n, d)]  # (n,) * d + (rest,)
    full = full.reshape((n,) * d + rest)
    return np.moveaxis(full, tuple(range(d)), tuple(range(-d, 0)))
