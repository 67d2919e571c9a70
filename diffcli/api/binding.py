"""The graph of one expression at one set of variable shapes, with its plans
(built once, reused by every request at those shapes)."""

from __future__ import annotations

import gc
from collections import namedtuple
from contextlib import contextmanager

import numpy as np

from ..graph import autodiff
from .. import switches
from ..errors import Diagnostic
from ..engine.evaluate import Plan
from ..graph.nodes import Graph, Node, topological_order
from .growth import OrderGrowth
from ..graph.ops import OPS
from ..language.parse import Program


class Binding:
    """The graph of one expression at one set of variable shapes, with its plans."""

    def __init__(self, program: Program, shapes: dict[str, tuple], lock, max_nodes: int | None = None):
        self.lock = lock
        self.graph = Graph(max_nodes=max_nodes)
        self.output = program.build(self.graph, shapes)
        self.forward_diagnostics = list(self.graph.diagnostics)
        self.inputs = [self.graph.var(n, shapes[n]) for n in program.variables]
        self.by_name = dict(zip(program.variables, self.inputs))
        self._plans: dict[tuple, tuple[Plan, list[Diagnostic]]] = {}
        self._gradients: dict[tuple, list[Node]] = {}
        self._compressions: dict[tuple, list] = {}
        self._forward_order: list[Node] | None = None

    # request: a requests.Request (which calls back into the binding; not imported here,
    # so that the two modules do not import each other).
    def built_plan(self, request, kink_nan: bool = False) -> Compiled | None:
        """The plan for request if it is built already, else None."""
        return self._plans.get(request.key() + (kink_nan,))

    def plan(self, request, kink_nan: bool = False) -> Compiled:
        key = request.key() + (kink_nan,)
        compiled = self._plans.get(key)
        if compiled is None:
            with self.lock, collector_paused():
                compiled = self._plans.get(key) or self._compile(request, kink_nan)
                self._plans[key] = compiled
        return compiled

    def _compile(self, request, kink_nan: bool) -> Compiled:
        before = len(self.graph.diagnostics)
        self.graph.kink_nan = kink_nan
        try:
            outputs, extra_inputs = request.build(self)
        finally:
            self.graph.kink_nan = False
        watched = self._kink_watch() if request.kind != "value" else []
        # A kink whose derivative is infinite can only matter where a derivative
        # is not finite: its indicator is computed then, not at every run.
        eager = [w for w in watched if not OPS[w[0].op].kink.infinite]
        if_infinite = [w for w in watched if OPS[w[0].op].kink.infinite]
        diagnostics = self.forward_diagnostics + self.graph.diagnostics[before:]
        plan = Plan(([self.output] if request.with_value else []) + outputs + [indicator for _, indicator in eager],
                    self.inputs + extra_inputs)
        return Compiled(plan, diagnostics[:1], len(outputs), eager, if_infinite, {})

    def indicator_plan(self, compiled: Compiled) -> Plan:
        """The plan for the indicators of compiled.watched_if_infinite (made once)."""
        plan = compiled.later.get("indicators")
        if plan is None:
            with self.lock, collector_paused():
                plan = Plan([indicator for _, indicator in compiled.watched_if_infinite], self.inputs)
                compiled.later["indicators"] = plan
        return plan

    def _kink_watch(self) -> list[tuple[Node, Node]]:
        """(operation, indicator) for each operation on a derivative path that has
        kinks; the indicator is 1.0 at the points where the operation is at one."""
        graph = self.graph
        order = self.forward_order()
        active = autodiff.depends_on(order, {v.id for v in self.inputs})
        candidates = [n for n in order if n.op in OPS and OPS[n.op].kink is not None and n.id in active]
        if any(OPS[n.op].compares for n in candidates):
            # A comparison that only decides a where is reported (and poisoned) as that where.
            uses: dict[int, set[str]] = {}
            for node in order:
                for i, arg in enumerate(node.args):
                    uses.setdefault(arg.id, set()).add("condition" if node.op == "where" and i == 0 else "value")
            candidates = [n for n in candidates if not (OPS[n.op].compares and uses.get(n.id) == {"condition"})]
        watched = []
        for node in candidates:
            condition = OPS[node.op].kink.condition(node)
            indicator = graph.apply("max", (condition,)) if condition.shape else condition
            watched.append((node, indicator))
        return watched

    def forward_order(self) -> list[Node]:
        if self._forward_order is None:
            self._forward_order = topological_order([self.output])
        return self._forward_order

    def seed(self, name: str, shape: tuple) -> Node:
        # '$' cannot start an identifier, so these never clash with a user's variable.
        return self.graph.var("$" + name, shape)

    def row_compression(self, rows_of: list[Node], wrt: list[str]) -> list:
        """For the derivative rows of each node in rows_of (against the variables
        in wrt): a sparsity.Compression when rows can share seeds, else None. Found
        once per binding."""
        key = (tuple(n.id for n in rows_of), tuple(wrt))
        found = self._compressions.get(key)
        if found is None:
            with self.lock, collector_paused():
                from ..engine import sparsity  # only Jacobians and Hessians need it

                # (DIFFCLI_SPARSITY is read here, once per binding: an environment look-up costs 1-2 us)
                worth_it = any(2 <= n.size <= sparsity.MAX_ROWS for n in rows_of) and switches.enabled("sparsity")
                patterns = sparsity.dependency(rows_of, [self.by_name[n] for n in wrt]) if worth_it else None
                found = [None] * len(rows_of) if patterns is None else [sparsity.compress_rows(p) for p in patterns]
                self._compressions[key] = found
        return found

    def gradient(self, wrt: list[str]) -> list[Node]:
        """d output / d w for a scalar output, built once and shared between requests."""
        key = (tuple(wrt), self.graph.kink_nan)
        if key not in self._gradients:
            self._gradients[key] = autodiff.vjp(self.graph, self.output, self.graph.const(1.0),
                                                [self.by_name[n] for n in wrt], self.forward_order())
        return self._gradients[key]


# The plan for one request, the warnings its graph gave while folding, how many of
# its outputs are derivatives, the (operation, indicator) kinks it watches at every
# run and those it looks for only where a derivative is not finite, and plans
# made later (by name).
Compiled = namedtuple("Compiled", "plan diagnostics derivative_count watched watched_if_infinite later")


def formula_nodes(binding: Binding, kind: str, names: list[str], order: int) -> dict:
    """The derivative nodes Function.formulas prints, by variable (by pair for a Hessian)."""
    graph, out = binding.graph, binding.output
    if kind == "derivative":
        node, x = out, binding.by_name[names[0]]
        growth = OrderGrowth(graph, order, f"the order-{order} formula")
        for level in range(1, order + 1):
            node = autodiff.jacobian_node(graph, node, x)
            growth.after(level)
        return {names[0]: node}
    if kind == "hessian":
        gradient = dict(zip(names, binding.gradient(names)))
        return {a: {b: autodiff.jacobian_node(graph, gradient[a], binding.by_name[b]) for b in names}
                for a in names}
    return {n: autodiff.jacobian_node(graph, out, binding.by_name[n]) for n in names}


def kink_reports(watched, indicators, batch, nan: bool) -> list[Diagnostic]:
    reports = []
    for (node, _), flags in zip(watched, indicators):
        flags = np.broadcast_to(np.asarray(flags) != 0, batch)
        count = int(np.count_nonzero(flags))
        if count:
            first = int(np.flatnonzero(flags.ravel())[0]) if batch else None
            where = f" (at {count:,} of the points)" if batch else ""
            kink = OPS[node.op].kink
            choice = "giving nan there (kink='nan')" if nan else kink.choice
            reports.append(Diagnostic(f"{kink.what}{where}; {choice}", node.span, first))
    return reports


@contextmanager
def collector_paused():
    """Building a graph makes hundreds of thousands of small objects and no garbage
    worth collecting; Python's cycle collector would rescan them over and over
    (T8's 10,000-term sum: 3.4 s with it, 2.1 s without). Paused while building,
    restored after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
