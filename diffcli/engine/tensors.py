"""Whole derivative tensors from directional derivatives, by exact interpolation
(Griewank, Utke & Walther, "Evaluating higher derivative tensors by forward
propagation of univariate Taylor series", Math. Comp. 69, 2000).

The order-d derivatives of f along the binom(n+d-1, d) directions j (entries
>= 0, |j| = d) determine every distinct entry of the symmetric order-d tensor:
d^i f = sum_j gamma_ij f_j^(d) / d!, with (for |i| = d)

    gamma_ij = sum_{0 < k <= i} (-1)^|i-k| binom(i, k) binom(d k / |k|, j) (|k| / d)^d,

multi-index binomials being products of one-index ones (of a real upper
argument in binom(d k/|k|, j)). The coefficients are rational: computed once
per (n, d) in exact fractions.
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
    directions, it gives the tensor's distinct entries."""
    indices = multi_indices(n, d)
    gamma = np.empty((len(indices), len(indices)))
    for row, i in enumerate(indices):
        terms = []  # (coefficient, k) over 0 < k <= i
        for k in itertools.product(*(range(m + 1) for m in i)):
            size = sum(k)
            if size == 0:
                continue
            sign = -1 if (d - size) % 2 else 1
            weight = sign * math.prod(math.comb(a, b) for a, b in zip(i, k)) * Fraction(size, d) ** d
            terms.append((weight, [Fraction(d * km, size) for km in k]))
        for column, j in enumerate(indices):
            total = Fraction(0)
            for weight, top in terms:
                total += weight * math.prod((_binomial(t, jm) for t, jm in zip(top, j)), start=Fraction(1))
            gamma[row, column] = float(total / math.factorial(d))
    return gamma


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
