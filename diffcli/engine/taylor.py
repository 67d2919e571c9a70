"""Taylor propagation: truncated Taylor series pushed through a graph, operation
by operation, with each operation's Taylor rule (graph/series.py, named in the
op table). One pass gives every derivative up to order K along a direction at
O(K^2) times the cost of one evaluation, where differentiating the derivative
graph K times grows the graph exponentially.

Arrays here are series: (K+1,) + leading batch axes + value shape, entry k
the k-th Taylor coefficient (series.py). Nodes that do not depend on the
variables are computed once by their kernels and carried as constants (a
leading axis of length 1), so x * 2 or x ** 3 costs what a scaling costs.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..graph import autodiff
from ..graph.nodes import Node, topological_order
from ..graph.ops import OPS
from ..graph.series import NotTaylor, full

__all__ = ["TaylorPlan", "NotTaylor"]


class TaylorPlan:
    """The forward graph of outputs, compiled once: run() takes each input's
    series and gives each output's."""

    def __init__(self, outputs: list[Node], inputs: list[Node]):
        self.outputs = outputs
        self.inputs = inputs
        order = topological_order(outputs)
        self.order = order
        active = autodiff.depends_on(order, {n.id for n in inputs})
        slot = {node.id: i for i, node in enumerate(order)}
        self._input_slots = [slot.get(n.id) for n in inputs]
        self._output_slots = [slot[n.id] for n in outputs]
        last_use: dict[int, int] = {}
        for i, node in enumerate(order):
            for a in node.args:
                last_use[slot[a.id]] = i
        keep = set(self._output_slots)
        self._steps = []
        for i, node in enumerate(order):
            if node.op == "var":
                continue
            releases = tuple(s for s, last in last_use.items() if last == i and s not in keep)
            args = tuple(slot[a.id] for a in node.args)
            if node.op == "const":
                self._steps.append((i, "const", np.asarray(node.value, dtype=np.float64), args, releases))
                continue
            op = OPS[node.op]
            kernel = op.kernel(node)
            how = op.taylor(node, kernel) if node.id in active else None
            if how is not None and op.elementwise:
                how = _constant_stays_constant(how)
            self._steps.append((i, how, kernel, args, releases))

    def run(self, series: list[np.ndarray], batch_ndim: int) -> list[np.ndarray]:
        """Each output's series, from each input's (batch_ndim leading batch axes
        behind the coefficient axis, every array the same number of them)."""
        slots: list = [None] * len(self.order)
        for s, value in zip(self._input_slots, series):
            if s is not None:
                slots[s] = value
        with np.errstate(all="ignore"):
            for i, how, kernel_or_value, args, releases in self._steps:
                if how == "const":  # a constant series: its value, with the coefficient and batch axes
                    value = kernel_or_value
                    slots[i] = value.reshape((1,) * (1 + batch_ndim) + value.shape)
                elif how is None:  # every operand constant: the kernel on coefficient 0
                    slots[i] = kernel_or_value(*(slots[a] for a in args))
                else:
                    slots[i] = how(*(slots[a] for a in args))
                for r in releases:
                    slots[r] = None
        return [slots[s] for s in self._output_slots]


def _constant_stays_constant(rule):
    """An elementwise rule whose operands do not move at an entry (every coefficient
    above 0 is zero there, as in a branch not taken) gives zeros there too, as the
    derivative graph's zero-dominant products do: sqrt(maximum(x, 0)) at x = -2 is
    the constant 0, where sqrt's recurrence would divide by its value 0."""
    def rule_or_constant(*args):
        out = rule(*args)
        if out.shape[0] > 1 and not np.isfinite(out[1:]).all():
            still = np.ones(out.shape[1:], dtype=bool)
            for a in args:
                if a.shape[0] > 1:
                    still &= ~np.any(a[1:] != 0.0, axis=0)
            out[1:] = np.where(still, 0.0, out[1:])
        return out
    return rule_or_constant


def seeded(value: np.ndarray, tangent: np.ndarray | None, order: int) -> np.ndarray:
    """The series of x0 + t v to order K (a constant series without a tangent)."""
    value = np.asarray(value, dtype=np.float64)
    if tangent is None:
        return value[None]
    tangent = np.asarray(tangent, dtype=np.float64)
    shape = np.broadcast_shapes(value.shape, tangent.shape)
    out = np.zeros((order + 1,) + shape)
    out[0] = value
    out[1] = tangent
    return out


def coefficients(series: np.ndarray, order: int) -> np.ndarray:
    """A series with all order+1 coefficients (a constant's padded with zeros)."""
    return full(series, order + 1)


# Below this, a coefficient has lost digits to underflow (or is on its way there).
TINY = 1e-290


def derivatives(series: np.ndarray, order: int, orders, scale: int = 0) -> dict:
    """{k: f^(k)} for k in orders from the series of f(x + t 2^scale v): the
    coefficient k times k! / 2^(scale k), exactly rounded where the factor
    is not a float (k > 170)."""
    c = coefficients(series, order)
    found = {}
    for k in orders:
        factor = _factor(k, scale)
        if factor is not None:
            found[k] = c[k] * factor
        else:
            found[k] = np.vectorize(lambda v: _exact(v, k, scale), otypes=[np.float64])(c[k])
    return found


def _factor(k: int, scale: int) -> float | None:
    try:
        factor = float(Fraction(math.factorial(k), 1 << (scale * k)))
    except OverflowError:
        return None
    return factor if factor != 0.0 else None


def _exact(value: float, k: int, scale: int) -> float:
    if not math.isfinite(value) or value == 0.0:
        return value * (1.0 if k == 0 else math.inf) if value != 0.0 else value
    try:
        return float(Fraction(value) * math.factorial(k) / (1 << (scale * k)))
    except OverflowError:
        return math.copysign(math.inf, value)


def rescaling(series: np.ndarray, order: int) -> int | None:
    """None when every coefficient is representable; else the scale m (the
    tangent times 2^m) that makes coefficient N of a function whose derivatives
    stay moderate about its derivative: 2^m close to (N!)^(1/N)."""
    magnitude = np.abs(series)
    if not np.any((magnitude > 0.0) & (magnitude < TINY)):
        return None
    return max(1, round(math.lgamma(order + 1) / (order * math.log(2.0))))


def prefer_representable(series: np.ndarray, order: int, first: dict, second: dict) -> dict:
    """first's derivatives, but second's where first's coefficient was tiny."""
    c = coefficients(series, order)
    return {k: np.where(np.abs(c[k]) < TINY, second[k], v) for k, v in first.items()}


# The check propagation runs along the tangent times this (not a power of 2, so
# that every rounding differs) and scales back: where the two disagree by more
# than CANCELLATION relative, the recurrences lost digits to cancellation.
CHECK_FACTOR = 1.1
CANCELLATION = 1e-11


def lost_digits(first: np.ndarray, check: np.ndarray, order: int) -> tuple[int, int, float] | None:
    """(the lowest order whose coefficients the two propagations give differently by
    more than CANCELLATION relative, the order where they differ most, by how much),
    or None: an estimate of the rounding error the recurrences made (quotients and
    inverse functions subtract nearly equal terms when the result's coefficients
    decay faster than the operands', as sin(x)/x's do)."""
    a, b = coefficients(first, order), coefficients(check, order)
    powers = CHECK_FACTOR ** np.arange(order + 1, dtype=np.float64).reshape((-1,) + (1,) * (a.ndim - 1))
    scaled = b / powers
    with np.errstate(all="ignore"):
        relative = np.abs(a - scaled) / np.abs(a)
    usable = np.isfinite(relative) & (np.abs(a) > TINY) & np.isfinite(scaled)
    worst = np.where(usable, relative, 0.0).reshape(order + 1, -1).max(axis=1)
    bad = np.flatnonzero(worst > CANCELLATION)
    if bad.size == 0:
        return None
    k_worst = int(np.argmax(worst))
    return int(bad[0]), k_worst, float(worst[k_worst])
