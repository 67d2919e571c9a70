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
                self._steps.append((i, "const", node, args, releases))
                continue
            op = OPS[node.op]
            kernel = op.kernel(node)
            how = op.taylor(node, kernel) if node.id in active else None
            self._steps.append((i, how, kernel, args, releases))

    def run(self, series: list[np.ndarray], batch_ndim: int) -> list[np.ndarray]:
        """Each output's series, from each input's (batch_ndim leading batch axes
        behind the coefficient axis, every array the same number of them)."""
        slots: list = [None] * len(self.order)
        for s, value in zip(self._input_slots, series):
            if s is not None:
                slots[s] = value
        with np.errstate(all="ignore"):
            for i, how, kernel, args, releases in self._steps:
                if how == "const":
                    value = np.asarray(kernel.value, dtype=np.float64)
                    slots[i] = value.reshape((1,) * (1 + batch_ndim) + value.shape)
                elif how is None:  # every operand constant: the kernel on coefficient 0
                    slots[i] = kernel(*(slots[a] for a in args))
                else:
                    slots[i] = how(*(slots[a] for a in args))
                for r in releases:
                    slots[r] = None
        return [slots[s] for s in self._output_slots]


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
