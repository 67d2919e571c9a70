"""Refusing an order of derivative before its graph outgrows the budget."""

from __future__ import annotations

import math

from ..budget import BYTES_PER_NODE, format_size
from ..errors import BudgetError
from ..graph.nodes import Graph

# Each order of a derivative differentiates the whole graph of the one before,
# so building order N walks about the sum of every order's graph, and makes
# the new nodes: past this much work (in node visits, about 0.7 us each; a
# new node costs about 15 us, NODE_COST visits; so about 7 s), an order is
# refused before it is built.
MAX_BUILD_WORK = 10_000_000
NODE_COST = 20


class OrderGrowth:
    """Watches a derivative graph grow order by order, and refuses, as soon as
    three orders show how it grows, an order whose graph would outgrow the
    memory budget or take too long to build (MAX_BUILD_WORK). The growth is
    extrapolated from the increments: each the last one times the smaller of
    the last two ratios between them (tan(x) grows about 2.8x per order, sin(x)
    by 5 nodes). graph.max_nodes is the budget (autodiff.py enforces it too)."""

    def __init__(self, graph: Graph, order: int, what: str):
        self.graph = graph
        self.order = order
        self.what = what
        self.sizes = [len(graph.nodes)]

    def after(self, level: int) -> None:
        """Called after each order (1, 2, ...) is built."""
        self.sizes.append(len(self.graph.nodes))
        remaining = self.order - level
        if level < 3 or remaining <= 0 or self.graph.max_nodes is None:
            return
        n, (d1, d2, d3) = self.sizes[-1], [max(1, b - a) for a, b in zip(self.sizes[-4:-1], self.sizes[-3:])]
        ratio = min(d3 / d2, d2 / d1)
        nodes = n + d3 * _geometric_sum(ratio, remaining)
        work = remaining * n + d3 * _sum_of_geometric_sums(ratio, remaining) + NODE_COST * (nodes - n)
        if nodes > self.graph.max_nodes:
            raise BudgetError(
                f"{self.what} would need a derivative graph of {_about(nodes)} nodes "
                f"({_about(nodes * BYTES_PER_NODE, format_size)} at {BYTES_PER_NODE:,} bytes a node; it has "
                f"{n:,} at order {level} and grows {_growth(ratio, d3)} an order), over the memory budget "
                f"of {format_size(self.graph.max_nodes * BYTES_PER_NODE)} (--max-memory): lower the order")
        if work > MAX_BUILD_WORK:
            raise BudgetError(
                f"{self.what} would take too long to build ({_about(work)} steps against a limit of "
                f"{MAX_BUILD_WORK:.0e}): each order differentiates the graph of the one before, which "
                f"grows {_growth(ratio, d3)} an order here; lower the order")


def _about(count: float, unit=lambda n: f"{n:.3g}") -> str:
    """'about 2.5e+10', or for the astronomical 'more than 1e+15' (in unit's words)."""
    return f"about {unit(count)}" if count < 1e15 else f"more than {unit(1e15)}"


def _growth(ratio: float, increment: int) -> str:
    return f"{ratio:.2g}x" if ratio > 1.05 else f"by about {increment:,} nodes"


def _geometric_sum(q: float, r: int) -> float:
    """q + q^2 + ... + q^r, as a float (inf when it overflows)."""
    r_float = float(min(r, 10 ** 300))
    if abs(q - 1.0) < 1e-9:
        return r_float
    try:
        return q * (q ** r_float - 1.0) / (q - 1.0)
    except OverflowError:
        return math.inf


def _sum_of_geometric_sums(q: float, r: int) -> float:
    """The sum over i = 1..r of q + ... + q^i."""
    r_float = float(min(r, 10 ** 300))
    if abs(q - 1.0) < 1e-9:
        return r_float * (r_float + 1.0) / 2.0
    return q / (q - 1.0) * (_geometric_sum(q, r) - r_float)
