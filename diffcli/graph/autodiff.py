"""Reverse mode as a graph transformation.

`vjp` walks the forward graph once in reverse topological order and, for each
node, applies its rule from OPS to build the cotangents of its arguments as new
nodes of the same graph. The result is an ordinary graph: it shares the forward
nodes it uses, is interned and constant-folded like any other, is evaluated by
the same evaluator, and can be differentiated again.

A cotangent that is structurally zero (no path to the output, a rule that says
None, or a folded all-zero constant) is never materialised and never
multiplied into a local derivative, so it cannot turn into 0 * inf = nan.

Cotangents that pass through a selecting operation (where, maximum, relu, abs,
max, ...) hold zeros that mean "this branch was not taken". From there on the
rules receive them wrapped as Masked, whose products and quotients are
zero-dominant (ops cmul, cdiv), so an untaken branch contributes exactly 0 to
every derivative, at any order, even where its own value or derivative is nan
or inf: the "double where trick" of JAX users, done for them.
"""

from __future__ import annotations

import numpy as np

from ..budget import BYTES_PER_NODE, format_size
from ..errors import BudgetError
from .nodes import Graph, Node, topological_order
from .ops import OPS


class Masked:
    """A cotangent that may hold zeros meaning "no contribution": arithmetic with
    it builds zero-dominant products and quotients, and stays Masked."""

    __slots__ = ("node",)

    def __init__(self, node: Node):
        self.node = node

    @property
    def graph(self):
        return self.node.graph

    @property
    def shape(self):
        return self.node.shape

    def _apply(self, op, *args):
        return Masked(self.graph.apply(op, args))

    def __mul__(self, other):
        return self._apply("cmul", self.node, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._apply("cdiv", self.node, other)

    def __rtruediv__(self, other):
        return self._apply("div", other, self.node)

    def __add__(self, other):
        return self._apply("add", self.node, other)

    def __radd__(self, other):
        return self._apply("add", other, self.node)

    def __sub__(self, other):
        return self._apply("sub", self.node, other)

    def __rsub__(self, other):
        return self._apply("sub", other, self.node)

    def __neg__(self):
        return self._apply("neg", self.node)


def _unwrap(x):
    return x.node if isinstance(x, Masked) else x


def vjp(graph: Graph, output: Node, seed: Node, wrt: list[Node], order: list[Node] | None = None) -> list[Node]:
    """Nodes for seed^T d(output)/d(w), one per w in wrt, each of w's shape."""
    return vjp_many(graph, [(output, seed)], wrt, order)


def vjp_many(graph: Graph, pairs: list[tuple[Node, Node]], wrt: list[Node],
             order: list[Node] | None = None) -> list[Node]:
    """Sum over (output, seed) pairs of seed^T d(output)/d(w), per w in wrt."""
    adjoints = adjoint_nodes(graph, pairs, wrt, order)
    return [adjoints.get(w.id) or graph.zeros(w.shape) for w in wrt]


def adjoint_nodes(graph: Graph, pairs: list[tuple[Node, Node]], wrt: list[Node],
                  order: list[Node] | None = None) -> dict[int, Node]:
    """The adjoint (d output / d node, contracted with the seeds) of every node on a
    path from wrt to the outputs, keyed by node id: the backward pass, as nodes.
    order: the outputs' topological order, when the caller already has it."""
    if order is None:
        order = topological_order([output for output, _ in pairs])
    was_deriving, graph.deriving = graph.deriving, True  # derivative-only rewrites apply (graph.py)
    try:
        return _adjoints(graph, pairs, wrt, order)
    finally:
        graph.deriving = was_deriving


def _adjoints(graph, pairs, wrt, order) -> dict[int, Node]:
    max_nodes = graph.max_nodes or float("inf")  # the memory budget, in nodes
    active = depends_on(order, {w.id for w in wrt})
    cotangents: dict[int, list[Node]] = {}
    for output, seed in pairs:
        if output.id in active:
            cotangents.setdefault(output.id, []).append(_fit(graph, seed, output.shape))
    adjoints: dict[int, Node] = {}
    masked: set[int] = set()
    for node in reversed(order):
        parts = cotangents.pop(node.id, None)
        if parts is None:
            continue
        if len(graph.nodes) > max_nodes:
            raise BudgetError(f"the derivative graph grew past {max_nodes:,} nodes while being built "
                              f"(about {format_size(max_nodes * BYTES_PER_NODE)} at {BYTES_PER_NODE:,} bytes "
                              f"a node), the memory budget (--max-memory)")
        g = adjoints[node.id] = _accumulate(graph, parts)
        if node.op == "var":
            continue
        is_masked = node.id in masked
        saved, graph.deriving_from = graph.deriving_from, node  # new nodes belong to node's derivative
        try:
            op = OPS[node.op]
            contributions = op.vjp(Masked(g) if is_masked else g, node, *node.args)
            if graph.kink_nan and op.kink is not None:
                contributions = _nan_at_kink(graph, node, g, contributions, active)
        finally:
            graph.deriving_from = saved
        selecting = is_masked or op.selects or (graph.kink_nan and op.kink is not None)
        for arg, ct in zip(node.args, contributions):
            ct = _unwrap(ct)
            if ct is None or arg.id not in active or _is_zero(ct):
                continue
            if selecting:
                masked.add(arg.id)
            ct = _fit(graph, ct, arg.shape)
            cotangents.setdefault(arg.id, []).append(ct)
    return adjoints


def _nan_at_kink(graph: Graph, node: Node, g: Node, contributions, active) -> list:
    """--kink nan: each contribution gets nan added where the operation is not
    differentiable (and its cotangent is not a structural zero there)."""
    where_kink = graph.apply("where", (OPS[node.op].kink.condition(node), float("nan"), 0.0))
    if where_kink.shape != node.shape and where_kink.size == node.size:
        g = graph.reshape(g, where_kink.shape)  # a reduction along axes: its condition keeps them as 1s
    poison = graph.apply("cmul", (g, where_kink))
    result = []
    for arg, ct in zip(node.args, contributions):
        if arg.id not in active:
            result.append(ct)
        else:
            result.append(poison if ct is None else graph.apply("add", (_unwrap(ct), poison)))
    return result


def depends_on(order: list[Node], sources: set[int]) -> set[int]:
    """Ids of the nodes of order (topological) that depend on any of sources."""
    active = set()
    for node in order:
        if node.id in sources or any(a.id in active for a in node.args):
            active.add(node.id)
    return active


def _accumulate(graph: Graph, parts: list[Node]) -> Node:
    total = parts[0]
    for part in parts[1:]:
        total = graph.apply("add", (total, part))
    return total


def _is_zero(node: Node) -> bool:
    if node.op != "const":
        return False
    if node.scalar is not None:  # most constants: no NumPy call (a deep chain has thousands)
        return node.scalar == 0.0
    return not node.value.any()


def _fit(graph: Graph, ct: Node, shape: tuple) -> Node:
    """Undo broadcasting: sum a cotangent down to its argument's shape."""
    if ct.shape == shape:
        return ct
    lifted = (1,) * (len(ct.shape) - len(shape)) + shape
    return graph.reshape(graph.apply("sum_to", (ct,), lifted), shape)


def jacobian_node(graph: Graph, output: Node, x: Node) -> Node:
    """One node holding the whole Jacobian, of shape output.shape + x.shape: a row
    per output component, stacked. For formulas and repeated differentiation,
    where a node is needed rather than a batched evaluation."""
    if output.shape == ():
        return vjp(graph, output, graph.const(1.0), [x])[0]
    rows = []
    for index in np.ndindex(*output.shape):
        component = graph.apply("index", (output,), tuple(int(i) for i in index))
        rows.append(vjp(graph, component, graph.const(1.0), [x])[0])
    for n in reversed(output.shape):
        rows = [graph.apply("stack", tuple(rows[i:i + n])) for i in range(0, len(rows), n)]
    return rows[0]
