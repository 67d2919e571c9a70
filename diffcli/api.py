"""The public Python API. The CLI is a thin layer over this module.

    >>> import diffcli
    >>> f = diffcli.compile("sin(x)*y")
    >>> r = f.grad(x=0.0, y=2.0)
    >>> float(r.value), float(r["x"]), float(r["y"])
    (0.0, 2.0, 0.0)

Values may carry leading batch axes (`batch_ndim`), evaluated in one
vectorised pass. Graphs and plans are built once per set of variable shapes
and reused. Every derivative is a graph built by reverse mode (autodiff.py);
higher orders, Hessians, JVPs and HVPs differentiate those graphs again.
Batched identity seeds on leading axes give all rows of a Jacobian (or of an
Nth-derivative tensor) in one pass.
"""

from __future__ import annotations

import gc
import math
from _thread import RLock  # threading's own RLock, without importing threading
from collections.abc import Iterable, Mapping
from collections import namedtuple
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from . import autodiff, budget
from .budget import BYTES_PER_NODE, format_size
from .errors import BudgetError, Diagnostic, UsageError
from .evaluate import Plan
from .functions import CONSTANTS
from .graph import Graph, Node, topological_order
from .ops import OPS, describe
from .parse import Program, parse

# NumPy arrays have at most this many axes (an order-N derivative tensor has N
# axes per axis of its variable, and its plan one seed axis per order).
NUMPY_MAX_AXES = 64
# Each order of a derivative differentiates the whole graph of the one before,
# so building order N walks about the sum of every order's graph, and makes
# the new nodes: past this much work (in node visits, about 0.7 us each; a
# new node costs about 15 us, NODE_COST visits; so about 7 s), an order is
# refused before it is built.
MAX_BUILD_WORK = 10_000_000
NODE_COST = 20


class Result:
    """The value of the expression and its derivatives.

    kind is 'value', 'gradient', 'jacobian', 'vjp', 'hessian' (derivatives[a][b]),
    'derivative' (derivatives[x] is the order-N tensor), 'jvp' (derivatives is
    empty; see `jvp`), 'hvp' or 'along' (derivatives[k] is the order-k
    directional derivative). Index a Result by variable name (by order for 'along').
    shapes: each variable's value shape; diagnostics: non-finite values met;
    kinks: points where an operation is not differentiable."""

    __slots__ = ("value", "kind", "derivatives", "diagnostics", "order", "jvp", "shapes", "kinks")

    def __init__(self, value, kind="value", derivatives=None, diagnostics=None, order=1, jvp=None,
                 shapes=None, kinks=None):
        self.value = value
        self.kind = kind
        self.derivatives = {} if derivatives is None else derivatives
        self.diagnostics = [] if diagnostics is None else diagnostics
        self.order = order
        self.jvp = jvp
        self.shapes = {} if shapes is None else shapes
        self.kinks = [] if kinks is None else kinks

    def with_batch_axis(self) -> Result:
        """The same result as a batch of one point (for the streaming writers)."""
        def add_axis(tree):
            return {k: add_axis(v) for k, v in tree.items()} if isinstance(tree, dict) else np.asarray(tree)[None]
        value = None if self.value is None else np.asarray(self.value)[None]  # grad(value=False)
        return self.replace(value=value, derivatives=add_axis(self.derivatives),
                            jvp=None if self.jvp is None else np.asarray(self.jvp)[None], diagnostics=[])

    def replace(self, **changes) -> Result:
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Result(**fields)

    def __getitem__(self, name: str):
        return self.derivatives[name]

    def __iter__(self):
        return iter(self.derivatives)

    def __len__(self):
        return len(self.derivatives)

    def keys(self):
        return self.derivatives.keys()

    def __repr__(self):
        return f"Result(kind={self.kind!r}, value={self.value!r}, derivatives={self.derivatives!r})"


def compile(source: str, *, kink: str = "subgradient",  # noqa: A001 - like re.compile
            max_memory: int | str | None = None) -> Function:
    """Parse an expression once; evaluate and differentiate it many times.
    kink: at a point where an operation is not differentiable, answer with the
    documented subgradient ('subgradient') or with nan ('nan'); either way the
    Result lists the kinks it met.
    max_memory: the memory budget of each request, in bytes or as a size like
    '2G' or '500M' (default: half of the smallest of physical memory, the
    address-space limit and the cgroup's limit). A request whose estimate
    exceeds it raises BudgetError before it runs."""
    return Function(source, kink=kink, max_memory=max_memory)


def constant(text: str) -> np.ndarray:
    """The value of a constant expression such as '2', 'pi/2' or '[1, 2, 3]'."""
    program = parse(text)
    if program.variables:
        raise UsageError(f"a value must be constant, but '{text}' uses "
                         f"{', '.join(program.variables)}")
    node = program.build(Graph(), {})
    if node.op != "const":
        raise UsageError(f"'{text}' is not a constant")
    return np.array(node.value)


class Function:
    """A compiled expression. Methods take the point as keyword arguments (or a
    mapping as the first argument, for names like 'wrt')."""

    def __init__(self, source: str, *, kink: str = "subgradient", max_memory: int | str | None = None):
        if kink not in ("subgradient", "nan"):
            raise UsageError(f"kink must be 'subgradient' or 'nan', not {kink!r}")
        self.source = source
        self.kink = kink
        self.max_memory: int = budget.resolve(max_memory)  # bytes
        with _collector_paused():
            self.program: Program = parse(source)
        self._bindings: dict[tuple, _Binding] = {}
        # Building graphs and plans mutates them; threads sharing a Function take turns.
        self._lock = RLock()

    @property
    def variables(self) -> tuple[str, ...]:
        """The free variables, in order of first appearance."""
        return self.program.variables

    def eval(self, at: Mapping | None = None, /, *, batch_ndim: int = 0, **values) -> Result:
        """The value of the expression."""
        return self._run(_Value(), _merge(at, values), batch_ndim)

    def grad(self, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
             batch_ndim: int = 0, value: bool = True, **values) -> Result:
        """The value and the gradient of a scalar expression, per variable.
        value=False: the gradient alone (like jax.grad next to jax.value_and_grad);
        the steps only the value needs are skipped, and the Result's value is None."""
        return self._run(_Gradient(self._check_wrt(wrt), with_value=value), _merge(at, values), batch_ndim)

    def jacobian(self, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
                 batch_ndim: int = 0, **values) -> Result:
        """The full Jacobian per variable: shape = output shape + variable shape."""
        return self._run(_Jacobian(self._check_wrt(wrt)), _merge(at, values), batch_ndim)

    def vjp(self, seed, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
            batch_ndim: int = 0, **values) -> Result:
        """seed^T J per variable (PyTorch's backward(gradient=seed))."""
        return self._run(_Vjp(self._check_wrt(wrt), np.asarray(seed, dtype=np.float64)),
                         _merge(at, values), batch_ndim)

    def hessian(self, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
                batch_ndim: int = 0, **values) -> Result:
        """The Hessian of a scalar expression as blocks: result[a][b] has shape
        shape(a) + shape(b)."""
        return self._run(_Hessian(self._check_wrt(wrt)), _merge(at, values), batch_ndim)

    def derivative(self, order: int, at: Mapping | None = None, /, *, wrt: str | None = None,
                   batch_ndim: int = 0, **values) -> Result:
        """The order-N derivative tensor with respect to one variable x:
        shape = output shape + N x shape(x)."""
        if order < 1:
            raise UsageError(f"the order must be at least 1, not {order}")
        if wrt is None:
            if len(self.variables) != 1:
                raise UsageError(f"--order needs one --wrt variable: this expression has "
                                 f"{len(self.variables)} ({', '.join(self.variables) or 'none'})")
            wrt = self.variables[0]
        (name,) = self._check_wrt([wrt])
        return self._run(_Derivative(name, order), _merge(at, values), batch_ndim)

    def jvp(self, tangents: Mapping, at: Mapping | None = None, /, *, batch_ndim: int = 0,
            **values) -> Result:
        """The directional derivative J v (forward mode's answer), of the output's
        shape; a variable without a tangent has tangent 0."""
        return self._run(_Jvp(self._tangents(tangents)), _merge(at, values), batch_ndim)

    def hvp(self, tangents: Mapping, at: Mapping | None = None, /, *, batch_ndim: int = 0,
            **values) -> Result:
        """The Hessian-vector product H v per variable, without forming H."""
        return self._run(_Hvp(list(self.variables), self._tangents(tangents)), _merge(at, values),
                         batch_ndim)

    def derivatives_along(self, order: int, tangents: Mapping, at: Mapping | None = None, /, *,
                          batch_ndim: int = 0, **values) -> Result:
        """d^k/dt^k f(x + t v) at t = 0 for k = 1..order, all from one evaluation:
        result[k], of the output's shape. With a scalar variable and tangent 1
        these are f', f'', ...; with tangent e_i for a vector variable, the
        derivatives along its component i (what `diffcli plot` draws)."""
        if order < 1:
            raise UsageError(f"the order must be at least 1, not {order}")
        return self._run(_Along(self._tangents(tangents), order), _merge(at, values), batch_ndim)

    def compute(self, kind: str, at: Mapping, *, wrt=None, seed=None, tangents=None, order: int = 1,
                batch_ndim: int = 0) -> Result:
        """Any of the derivatives by name: 'value', 'gradient', 'jacobian', 'vjp'
        (seed), 'hessian', 'derivative' (order, one wrt), 'jvp' or 'hvp' (tangents)."""
        if kind == "value":
            return self.eval(at, batch_ndim=batch_ndim)
        if kind in ("gradient", "jacobian", "hessian"):
            method = {"gradient": self.grad, "jacobian": self.jacobian, "hessian": self.hessian}[kind]
            return method(at, wrt=wrt, batch_ndim=batch_ndim)
        if kind == "vjp":
            return self.vjp(seed, at, wrt=wrt, batch_ndim=batch_ndim)
        if kind == "derivative":
            if wrt is not None and len(wrt) != 1:
                raise UsageError(f"--order needs exactly one --wrt variable, not {len(wrt)}")
            return self.derivative(order, at, wrt=wrt[0] if wrt else None, batch_ndim=batch_ndim)
        method = {"jvp": self.jvp, "hvp": self.hvp}[kind]
        return method(tangents, at, batch_ndim=batch_ndim)

    def formulas(self, kind: str, shapes: Mapping[str, tuple] | None = None, *,
                 wrt: Iterable[str] | None = None, order: int = 1) -> dict:
        """Derivatives as formulas in diffcli's language, feedable to eval.
        kind: 'gradient', 'jacobian', 'hessian' or 'derivative' (with order).
        Variables are scalars unless shapes says otherwise."""
        shapes = {n: tuple((shapes or {}).get(n, ())) for n in self.variables}
        binding = self._binding(shapes)
        out = binding.output
        names = self._check_wrt(wrt)
        if kind in ("gradient", "hessian"):
            _require_scalar(out.shape, "grad" if kind == "gradient" else "hess")
        if kind == "derivative" and len(names) != 1:
            raise UsageError("--order needs one --wrt variable")
        with binding.lock, _collector_paused():
            try:
                nodes = _formula_nodes(binding, kind, names, order)
            except BudgetError:
                self._forget(binding)
                raise
        from .formula import formula  # only --symbolic needs it

        reserved = self.variables
        return {k: ({b: formula(n, reserved) for b, n in v.items()} if isinstance(v, dict)
                    else formula(v, reserved)) for k, v in nodes.items()}

    def backward_pass(self, at: Mapping) -> list[tuple[Node, np.ndarray, np.ndarray | None]]:
        """The reverse pass of a scalar expression, node by node in the order it
        runs: (node, its value, its adjoint d(output)/d(node) or None where no
        derivative flows)."""
        arrays, _ = self._check_values(at)
        binding = self._binding({n: a.shape for n, a in arrays.items()})
        _require_scalar(binding.output.shape, "the backward-pass table")
        graph = binding.graph
        order = binding.forward_order()
        with binding.lock:
            adjoints = autodiff.adjoint_nodes(graph, [(binding.output, graph.const(1.0))], binding.inputs)
        with_adjoint = [n for n in order if n.id in adjoints]
        plan = Plan(order + [adjoints[n.id] for n in with_adjoint], binding.inputs)
        outputs = plan.run([arrays[n] for n in self.variables])
        values = dict(zip((n.id for n in order), outputs[:len(order)]))
        adjoint_values = dict(zip((n.id for n in with_adjoint), outputs[len(order):]))
        return [(n, values[n.id], adjoint_values.get(n.id)) for n in reversed(order)]

    def graph(self, shapes: Mapping[str, tuple]) -> tuple[Graph, Node]:
        """The DAG of the expression for the given variable shapes (for display)."""
        binding = self._binding({k: tuple(v) for k, v in shapes.items()})
        return binding.graph, binding.output

    # ------------------------------------------------------------ internals

    def _run(self, request: _Request, at: Mapping, batch_ndim: int) -> Result:
        arrays, unused = self._check_values(at)
        shapes = {name: a.shape[batch_ndim:] for name, a in arrays.items()}
        batch = _batch_shape(arrays, batch_ndim)
        binding = self._binding(shapes)
        request.check(binding, shapes, batch)
        compiled = binding.built_plan(request, self.kink == "nan")
        # One point's result, the same every time at the binding's shapes, is checked once.
        result_bytes = None if batch or compiled is None else compiled.later.get("point result bytes")
        if result_bytes is None:
            result_bytes = 8 * (request.result_entries(binding.output.shape, shapes, batch)
                                + (_size(binding.output.shape) * _size(batch) if request.with_value else 0))
            # Before building anything, one point's result; a batch's whole peak is
            # checked below, so that the advice on how many points fit is sound.
            self._within_budget(result_bytes // max(1, _size(batch)), request, ())
        if compiled is None:
            try:
                compiled = binding.plan(request, self.kink == "nan")
            except BudgetError:
                self._forget(binding)
                raise
        if not batch:
            compiled.later["point result bytes"] = result_bytes
        first = 1 if request.with_value else 0  # the value comes first, when asked for
        end = first + compiled.derivative_count
        # Derivatives laid out anew from the plan's outputs are a copy the size of the result.
        copies = result_bytes if request.copies_result else 0
        outputs, finite, inputs, shared = self._evaluate(request, binding, compiled, arrays, shapes, batch,
                                                         derivatives=slice(first, end), copies=copies)
        value = _materialise(outputs[0], batch + binding.output.shape) if first else None
        result = Result(value, request.kind, shapes=shapes)
        request.collect(result, outputs[first:end], binding.output.shape, shapes, batch, shared)
        result.kinks = _kink_reports(compiled.watched, outputs[end:], batch, self.kink == "nan")
        if compiled.watched_if_infinite and not all(finite[first:end]):
            indicators = binding.indicator_plan(compiled).run_batched(inputs[:len(self.variables)], batch)
            result.kinks += _kink_reports(compiled.watched_if_infinite, indicators, batch, self.kink == "nan")
        result.diagnostics = list(compiled.diagnostics)
        if not result.diagnostics and not all(finite[:end]):
            found = compiled.plan.first_nonfinite(inputs, batch, outputs[:end])
            if found is not None:
                result.diagnostics.append(found)
        result.diagnostics += [Diagnostic(f"'{n}' is given but not used by the expression") for n in unused]
        return result

    def _evaluate(self, request, binding, compiled, arrays, shapes, batch, derivatives: slice, copies: int):
        """(outputs, whether each is finite, the plan's inputs, the shared seeds
        used or None), evaluated with shared seeds where the request has them,
        each time after the plan's memory estimate (plus copies bytes made
        afterwards) is found within the budget."""
        shared = request.shared_rows(binding) if self.kink != "nan" else None

        def evaluate(shared):
            extra = request.inputs(binding, shapes, batch, shared)
            inputs = [arrays[name] for name in self.variables] + extra
            if batch or extra:
                peak = compiled.plan.peak_bytes(inputs, batch)
            else:  # the variables alone, at one point: the same layout every time
                peak = compiled.later.get("point peak") or compiled.later.setdefault(
                    "point peak", compiled.plan.peak_bytes(inputs, batch))
            self._within_budget(peak + copies, request, batch)
            return compiled.plan.run_checked(inputs, batch) + (inputs,)
        outputs, finite, inputs = evaluate(shared)
        if shared is not None and not all(finite[derivatives]):
            # Shared seeds add rows together, so a nan in an entry that cannot
            # depend on the variables (0 * inf) would land in another row's entry:
            # again with a seed per row, so that it shows where it arose.
            shared = None
            outputs, finite, inputs = evaluate(shared)
        return outputs, finite, inputs, shared

    def _check_values(self, at: Mapping) -> tuple[dict[str, np.ndarray], list[str]]:
        for name in at:
            if name in CONSTANTS:
                raise UsageError(f"'{name}' is a built-in constant ({CONSTANTS[name]!r}) and cannot "
                                 f"be given a value")
        missing = [n for n in self.variables if n not in at]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise UsageError(f"no value for variable{plural} {', '.join(missing)}: give "
                             + " ".join(f"--at {n}=..." for n in missing))
        arrays = {n: np.asarray(at[n], dtype=np.float64) for n in self.variables}
        unused = [n for n in at if n not in arrays]
        return arrays, unused

    def _check_wrt(self, wrt) -> list[str]:
        if wrt is None:
            return list(self.variables)
        wrt = list(dict.fromkeys(wrt))
        for name in wrt:
            if name not in self.variables:
                known = ", ".join(self.variables) or "none"
                raise UsageError(f"cannot differentiate with respect to '{name}': it is not a "
                                 f"variable of the expression (variables: {known})")
        return wrt

    def _tangents(self, tangents: Mapping) -> dict[str, np.ndarray]:
        self._check_wrt(list(tangents))
        return {k: np.asarray(v, dtype=np.float64) for k, v in tangents.items()}

    def _binding(self, shapes: dict[str, tuple]) -> _Binding:
        key = tuple(sorted(shapes.items()))
        binding = self._bindings.get(key)
        if binding is None:
            with self._lock, _collector_paused():
                binding = self._bindings.get(key) or _Binding(self.program, shapes, self._lock,
                                                              self.max_memory // BYTES_PER_NODE)
                self._bindings[key] = binding
        return binding

    def _forget(self, binding: _Binding) -> None:
        """A derivative graph refused halfway through leaves its nodes in the
        binding's graph: the binding is dropped, so that they can be freed."""
        with self._lock:
            self._bindings = {k: b for k, b in self._bindings.items() if b is not binding}

    def _within_budget(self, estimate: int, request: _Request, batch: tuple) -> None:
        if estimate <= self.max_memory:
            return
        advice = request.advice
        points = _size(batch)
        if points > 1:
            # The points' share of the budget, less a fifth for what does not scale with them.
            fits = self.max_memory * points * 4 // (estimate * 5)
            advice = f"evaluate at most {fits:,} points at a time (--chunk {fits})" if fits else advice
        raise BudgetError(f"{request.what} would need about {format_size(estimate)} of memory, over the "
                          f"budget of {format_size(self.max_memory)} (--max-memory): {advice}")


class _Binding:
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

    def built_plan(self, request: _Request, kink_nan: bool = False) -> _Compiled | None:
        """The plan for request if it is built already, else None."""
        return self._plans.get(request.key() + (kink_nan,))

    def plan(self, request: _Request, kink_nan: bool = False) -> _Compiled:
        key = request.key() + (kink_nan,)
        compiled = self._plans.get(key)
        if compiled is None:
            with self.lock, _collector_paused():
                compiled = self._plans.get(key) or self._compile(request, kink_nan)
                self._plans[key] = compiled
        return compiled

    def _compile(self, request: _Request, kink_nan: bool) -> _Compiled:
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
        return _Compiled(plan, diagnostics[:1], len(outputs), eager, if_infinite, {})

    def indicator_plan(self, compiled: _Compiled) -> Plan:
        """The plan for the indicators of compiled.watched_if_infinite (made once)."""
        plan = compiled.later.get("indicators")
        if plan is None:
            with self.lock, _collector_paused():
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
            with self.lock, _collector_paused():
                from . import sparsity  # only Jacobians and Hessians need it

                worth_it = any(2 <= n.size <= sparsity.MAX_ROWS for n in rows_of)
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
_Compiled = namedtuple("_Compiled", "plan diagnostics derivative_count watched watched_if_infinite later")


def _formula_nodes(binding: _Binding, kind: str, names: list[str], order: int) -> dict:
    """The derivative nodes Function.formulas prints, by variable (by pair for a Hessian)."""
    graph, out = binding.graph, binding.output
    if kind == "derivative":
        node, x = out, binding.by_name[names[0]]
        growth = _OrderGrowth(graph, order, f"the order-{order} formula")
        for level in range(1, order + 1):
            node = autodiff.jacobian_node(graph, node, x)
            growth.after(level)
        return {names[0]: node}
    if kind == "hessian":
        gradient = dict(zip(names, binding.gradient(names)))
        return {a: {b: autodiff.jacobian_node(graph, gradient[a], binding.by_name[b]) for b in names}
                for a in names}
    return {n: autodiff.jacobian_node(graph, out, binding.by_name[n]) for n in names}


def _kink_reports(watched, indicators, batch, nan: bool) -> list[Diagnostic]:
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


# ---------------------------------------------------------------- what is asked for
#
# A request builds its derivative nodes into the binding's graph (once per
# plan), supplies the arrays for its seed variables, and turns the plan's
# outputs into Result fields.

class _Request:
    kind = "value"
    with_value = True  # the plan's first output is the expression's value
    what = "the value"  # for messages
    advice = "give a larger --max-memory, or smaller arrays"  # what to do when over the memory budget
    copies_result = False  # collect() lays the derivatives out anew (a copy the size of the result)

    def key(self) -> tuple:
        return (self.kind,)

    def check(self, binding: _Binding, shapes, batch) -> None:
        """Refuse, before anything is built, a request that cannot work."""

    def result_entries(self, out_shape, shapes, batch) -> int:
        """How many numbers the derivatives hold (the value's are counted apart)."""
        return 0

    def build(self, binding: _Binding) -> tuple[list[Node], list[Node]]:
        return [], []

    def shared_rows(self, binding) -> list | None:
        """For a request whose seeds put derivative rows on a leading axis: per
        seed, a sparsity.Compression where rows can share seeds (else None), or
        None when no seed can. inputs() and collect() are then given it."""
        return None

    def inputs(self, binding, shapes, batch, shared=None) -> list[np.ndarray]:
        return []

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None) -> None:
        pass


class _Value(_Request):
    pass


class _ByVariables(_Request):
    """A request for derivatives with respect to the variables named in wrt."""

    def __init__(self, wrt):
        self.wrt = wrt

    def key(self):
        return (self.kind, tuple(self.wrt))


class _Gradient(_ByVariables):
    kind = "gradient"
    what = "the gradient"

    def __init__(self, wrt, with_value=True):
        super().__init__(wrt)
        self.with_value = with_value

    def key(self):
        return (self.kind, tuple(self.wrt), self.with_value)

    def check(self, binding, shapes, batch):
        _require_scalar(binding.output.shape, "grad")

    def result_entries(self, out_shape, shapes, batch):
        return _size(batch) * sum(_size(shapes[n]) for n in self.wrt)

    def build(self, binding):
        return binding.gradient(self.wrt), []

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        result.derivatives = {n: _materialise(d, batch + shapes[n]) for n, d in zip(self.wrt, outputs)}


class _Vjp(_Gradient):
    kind = "vjp"
    what = "the vector-Jacobian product"

    def __init__(self, wrt, seed):
        super().__init__(wrt)
        self.seed = seed

    def check(self, binding, shapes, batch):
        out_shape = binding.output.shape
        if self.seed.shape not in (out_shape, batch + out_shape):
            raise UsageError(f"the seed is {describe(self.seed.shape)} but the expression's value is "
                             f"{describe(out_shape)}: they must have the same shape")

    def build(self, binding):
        seed = binding.seed("seed", binding.output.shape)
        return autodiff.vjp(binding.graph, binding.output, seed, [binding.by_name[n] for n in self.wrt]), [seed]

    def inputs(self, binding, shapes, batch, shared=None):
        return [self.seed]


class _Jacobian(_Vjp):
    """All rows at once: identity seeds stacked on a new leading axis."""

    kind = "jacobian"
    what = "the Jacobian"
    advice = "use vjp with a seed, or grad of a scalar, instead"
    copies_result = True

    def __init__(self, wrt):
        super().__init__(wrt, None)

    def check(self, binding, shapes, batch):
        pass

    def result_entries(self, out_shape, shapes, batch):
        return _size(out_shape) * _size(batch) * sum(_size(shapes[n]) for n in self.wrt)

    def shared_rows(self, binding):
        return _any_shared(binding.row_compression([binding.output], self.wrt))

    def inputs(self, binding, shapes, batch, shared=None):
        return [_row_seed(shared and shared[0], binding.output.shape, len(batch))]

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        result.derivatives = {n: _rows(d, shared and shared[0], offset, out_shape, batch, shapes[n])
                              for n, d, offset in zip(self.wrt, outputs, _offsets(self.wrt, shapes))}


class _Hessian(_ByVariables):
    """Rows of each block d(grad_a)/d(b), with identity seeds of a's shape."""

    kind = "hessian"
    what = "the Hessian"
    advice = "use hvp with a tangent instead"
    copies_result = True

    def check(self, binding, shapes, batch):
        _require_scalar(binding.output.shape, "hess")

    def result_entries(self, out_shape, shapes, batch):
        return sum(_size(shapes[n]) for n in self.wrt) ** 2 * _size(batch)

    def build(self, binding):
        outputs, seeds = [], []
        gradient = binding.gradient(self.wrt)
        variables = [binding.by_name[n] for n in self.wrt]
        for name, g in zip(self.wrt, gradient):
            seed = binding.seed(f"seed:{name}", g.shape)
            seeds.append(seed)
            outputs += autodiff.vjp(binding.graph, g, seed, variables)
        return outputs, seeds

    def shared_rows(self, binding):
        return _any_shared(binding.row_compression(binding.gradient(self.wrt), self.wrt))

    def inputs(self, binding, shapes, batch, shared=None):
        shared = shared or [None] * len(self.wrt)
        return [_row_seed(c, shapes[n], len(batch)) for n, c in zip(self.wrt, shared)]

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        k = len(self.wrt)
        offsets = _offsets(self.wrt, shapes)
        shared = shared or [None] * k
        result.derivatives = {
            a: {b: _rows(outputs[i * k + j], shared[i], offsets[j], shapes[a], batch, shapes[b])
                for j, b in enumerate(self.wrt)}
            for i, a in enumerate(self.wrt)}


class _Derivative(_Request):
    """The order-N tensor: differentiate N times, each time with identity seeds
    on one more leading axis (so no Python loop over entries)."""

    kind = "derivative"
    advice = "lower the order"
    copies_result = True

    def __init__(self, name: str, order: int):
        self.name = name
        self.order = order
        self.what = f"the order-{order} derivative"

    def key(self):
        return (self.kind, self.name, self.order)

    def check(self, binding, shapes, batch):
        """The tensor's axes and the plan's (a seed axis per order where the
        seed has more than one row, then the batch's, then a node's own) must
        fit in a NumPy array."""
        out_shape, x_shape = binding.output.shape, shapes[self.name]
        tensor_axes = len(batch) + len(out_shape) + self.order * len(x_shape)
        seed_axes = (_size(out_shape) > 1) + (self.order - 1) * (_size(x_shape) > 1)
        plan_axes = seed_axes + len(batch) + max(len(n.shape) for n in binding.forward_order())
        if max(tensor_axes, plan_axes) > NUMPY_MAX_AXES:
            which = f"its tensor has {tensor_axes:,} axes" if tensor_axes > NUMPY_MAX_AXES else \
                f"computing it needs arrays of {plan_axes:,} axes"
            raise UsageError(f"{self.what} with respect to {describe(x_shape)} {self.name}: {which}, and "
                             f"NumPy arrays have at most {NUMPY_MAX_AXES}: lower the order")

    def result_entries(self, out_shape, shapes, batch):
        m = _size(shapes[self.name])
        if m > 1 and self.order * math.log2(m) > 100:  # far past any budget: no need for the exact number
            return 1 << 100
        return _size(out_shape) * m ** self.order * _size(batch)

    def build(self, binding):
        x = binding.by_name[self.name]
        node, seeds = binding.output, []
        growth = _OrderGrowth(binding.graph, self.order, self.what)
        for k in range(self.order):
            seed = binding.seed(f"seed{k}", node.shape if k == 0 else x.shape)
            seeds.append(seed)
            (node,) = autodiff.vjp(binding.graph, node, seed, [x])
            growth.after(k + 1)
        return [node], seeds

    def _levels(self, out_shape, x_shape) -> list[tuple]:
        """The seeds' shapes: the output's, then the variable's at each order above 1."""
        return [out_shape] + [x_shape] * (self.order - 1)

    def inputs(self, binding, shapes, batch, shared=None):
        # Seed k sits on its own leading axis, later seeds further left (varying
        # slowest); a seed of one row (a scalar's) needs no axis at all, so
        # scalars reach any order without NumPy's limit on axes.
        levels = self._levels(binding.output.shape, shapes[self.name])
        axes = [_size(shape) > 1 for shape in levels]
        arrays = []
        for k, shape in enumerate(levels):
            m = _size(shape)
            lead = (1,) * sum(axes[k + 1:]) + ((m,) if axes[k] else ()) + (1,) * sum(axes[:k])
            arrays.append(np.eye(m).reshape(lead + (1,) * len(batch) + shape))
        return arrays

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        x_shape = shapes[self.name]
        levels = self._levels(out_shape, x_shape)
        (d,) = outputs
        rows = _unstack_rows(d, [shape for shape in levels if _size(shape) > 1], batch, x_shape)
        result.order = self.order
        result.derivatives = {self.name: rows.reshape(batch + sum(levels, ()) + x_shape)}


class _Along(_Request):
    """Directional derivatives of every order up to N, each the JVP of the one
    before (by the double-VJP trick: g(u) = u^T J is linear in u, and the VJP of
    g with respect to u, seeded with v, is J v; u's value is irrelevant):
    output-shaped at every order, so no N x shape(x) tensor is ever formed."""

    kind = "along"
    advice = "lower the order"

    def __init__(self, tangents, order: int):
        self.tangents = tangents
        self.order = order
        self.what = f"the derivatives up to order {order}"

    def key(self):
        return (self.kind, tuple(self.tangents), self.order)

    def check(self, binding, shapes, batch):
        _check_tangents(self.tangents, shapes, batch)

    def result_entries(self, out_shape, shapes, batch):
        return self.order * _size(out_shape) * _size(batch)

    def build(self, binding):
        graph = binding.graph
        names = list(self.tangents)
        variables = [binding.by_name[n] for n in names]
        tangent_vars = [binding.seed(f"along:tangent:{n}", v.shape) for n, v in zip(names, variables)]
        node, outputs, cotangents = binding.output, [], []
        growth = _OrderGrowth(graph, self.order, self.what)
        for k in range(self.order):
            u = binding.seed(f"along:u{k}", binding.output.shape)
            cotangents.append(u)
            pullbacks = autodiff.vjp(graph, node, u, variables)
            (node,) = autodiff.vjp_many(graph, list(zip(pullbacks, tangent_vars)), [u])
            outputs.append(node)
            growth.after(k + 1)
        return outputs, tangent_vars + cotangents

    def inputs(self, binding, shapes, batch, shared=None):
        # The results are linear in each u, so u's value is irrelevant (0).
        return list(self.tangents.values()) + [np.zeros(binding.output.shape)] * self.order

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        result.order = self.order
        result.derivatives = {k + 1: _materialise(d, batch + out_shape) for k, d in enumerate(outputs)}


class _Jvp(_Along):
    """J v: the order-1 directional derivative, by the double-VJP trick: g(u) =
    u^T J is linear in u, and the VJP of g with respect to u, seeded with v, is J v."""

    kind = "jvp"

    def __init__(self, tangents):
        super().__init__(tangents, 1)
        self.what = "the Jacobian-vector product"
        self.advice = _Request.advice

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        result.jvp = _materialise(outputs[0], batch + out_shape)


class _Hvp(_Request):
    """H v = d/dx (grad f . v): reverse over reverse, never forming H."""

    kind = "hvp"
    what = "the Hessian-vector product"

    def __init__(self, wrt, tangents):
        self.wrt = wrt
        self.tangents = tangents

    def key(self):
        return (self.kind, tuple(self.tangents))

    def check(self, binding, shapes, batch):
        _require_scalar(binding.output.shape, "hvp")
        _check_tangents(self.tangents, shapes, batch)

    def result_entries(self, out_shape, shapes, batch):
        return _size(batch) * sum(_size(shapes[n]) for n in self.wrt)

    def build(self, binding):
        names = list(self.tangents)
        gradient = dict(zip(self.wrt, binding.gradient(self.wrt)))
        tangent_vars = [binding.seed(f"tangent:{n}", binding.by_name[n].shape) for n in names]
        pairs = [(gradient[n], t) for n, t in zip(names, tangent_vars)]
        return autodiff.vjp_many(binding.graph, pairs, [binding.by_name[n] for n in self.wrt]), tangent_vars

    def inputs(self, binding, shapes, batch, shared=None):
        return list(self.tangents.values())

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        result.derivatives = {n: _materialise(d, batch + shapes[n]) for n, d in zip(self.wrt, outputs)}


# ---------------------------------------------------------------- helpers


@contextmanager
def _collector_paused():
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


def _require_scalar(out_shape, command):
    if out_shape != ():
        raise UsageError(f"{command} needs a scalar expression, but this one is {describe(out_shape)}: "
                         f"use jac for the full Jacobian, or vjp --seed for a weighted sum of "
                         f"its gradients")


def _check_tangents(tangents, shapes, batch):
    for name, t in tangents.items():
        if t.shape not in (shapes[name], batch + shapes[name]):
            raise UsageError(f"the tangent for {name} is {describe(t.shape)} but {name} is "
                             f"{describe(shapes[name])}: they must have the same shape")


def _size(shape) -> int:
    return math.prod(shape)


class _OrderGrowth:
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


# From about this many rows, identity seeds are passed as a diagonal.Diagonal,
# which the plan keeps diagonal while it stays so (O(m) instead of O(m^2) work);
# for fewer, the dense identity costs less than the bookkeeping.
DIAGONAL_MIN_ROWS = 64


@lru_cache(maxsize=64)
def _identity_seed(shape: tuple, batch_ndim: int):
    """Rows of the identity on a new leading axis (read-only, shared between calls):
    an ndarray, or a diagonal.Diagonal from DIAGONAL_MIN_ROWS rows on."""
    m = _size(shape)
    if m >= DIAGONAL_MIN_ROWS and shape:
        from .diagonal import Diagonal

        return Diagonal.identity(shape, batch_ndim)
    seed = np.eye(m).reshape((m,) + (1,) * batch_ndim + shape)
    seed.flags.writeable = False
    return seed


def _any_shared(found: list) -> list | None:
    return found if any(c is not None for c in found) else None


def _row_seed(compression, shape: tuple, batch_ndim: int):
    """The seed array for a Jacobian's or Hessian's rows: compressed (shared seeds),
    or the identity, which from DIAGONAL_MIN_ROWS rows on is a diagonal.Diagonal."""
    if compression is None:
        return _identity_seed(shape, batch_ndim)
    from .sparsity import compressed_seed

    return compressed_seed(compression, shape, batch_ndim)


def _rows(d, compression, column_offset: int, row_shape: tuple, batch: tuple, column_shape: tuple) -> np.ndarray:
    """A derivative block laid out as batch + row_shape + column_shape, from its
    rows on the leading axis (a seed each, or shared seeds to be spread back)."""
    if compression is None:
        return _unstack_rows(d, [row_shape], batch, column_shape)
    from .sparsity import decompress

    return decompress(np.asarray(d), compression, column_offset, batch, row_shape, column_shape)


def _offsets(names, shapes) -> list[int]:
    """Where each variable's entries start among all of them, flattened in order."""
    offsets, start = [], 0
    for name in names:
        offsets.append(start)
        start += _size(shapes[name])
    return offsets


def _unstack_rows(d, levels: list[tuple], batch: tuple, var_shape: tuple) -> np.ndarray:
    """Seed axes (innermost level last in front) to batch + level shapes + var shape."""
    sizes = [_size(s) for s in levels]
    d = np.asarray(d)
    if not batch and len(levels) == 1 and d.shape == (sizes[0],) + var_shape and d.flags.writeable \
            and d.flags.owndata:  # already laid out as rows: nothing to move or copy
        return d.reshape(levels[0] + var_shape)
    full = np.broadcast_to(d, tuple(reversed(sizes)) + batch + var_shape)
    k = len(levels)
    # axes: (m_k-1, ..., m_0, batch..., var) -> (batch..., m_0, ..., m_k-1, var)
    order = list(range(k, k + len(batch))) + list(range(k - 1, -1, -1)) + \
        list(range(k + len(batch), full.ndim))
    moved = np.transpose(full, order)
    return np.array(moved.reshape(batch + sum((tuple(s) for s in levels), ()) + var_shape))


def _merge(at: Mapping | None, values: dict) -> dict:
    merged = dict(at or {})
    merged.update(values)
    return merged


def _batch_shape(arrays: dict[str, np.ndarray], batch_ndim: int) -> tuple:
    if batch_ndim == 0:
        return ()
    try:
        return tuple(np.broadcast_shapes(*(a.shape[:batch_ndim] for a in arrays.values())))
    except ValueError:
        raise UsageError("the batch axes of the variables do not match") from None


def _materialise(array, shape) -> np.ndarray:
    """A writable float64 array of the full shape that no one else holds (results
    may be broadcast views, or constants shared by the graph)."""
    array = np.asarray(array)
    if array.shape == shape and array.dtype == np.float64 and array.flags.writeable \
            and array.flags.owndata:
        return array
    return np.array(np.broadcast_to(array, shape), dtype=np.float64)


# ---------------------------------------------------------------- an independent check


class Check:
    """Finite-difference estimates of a result's derivatives, laid out like them,
    with an error per entry: |autodiff - fd| / max(1, |fd|). worst: the entry with
    the largest error, as a path like "x[2]" or "x/y[0,1]"."""

    def __init__(self, estimates: dict, errors: dict, tolerance: float, max_error: float, worst: str):
        self.estimates = estimates
        self.errors = errors
        self.tolerance = tolerance
        self.max_error = max_error
        self.worst = worst

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance


CHECK_METHOD = "central differences with Richardson extrapolation, h = 1e-3 * max(1, |x|) and h/2"


def check(function: Function, result: Result, at: Mapping, *, seed=None, tolerance: float = 1e-6) -> Check:
    """Recompute the derivatives of result (gradient, jacobian, vjp or hessian) by
    a second, independent route: central differences of the forward evaluation
    (of the gradient, for a Hessian), Richardson-extrapolated, all perturbed
    points in one vectorised pass."""
    kind = result.kind
    if kind not in ("gradient", "jacobian", "vjp", "hessian"):
        raise UsageError(f"--check works on grad, jac, vjp and hess, not {kind}")
    at = {k: np.asarray(v, dtype=np.float64) for k, v in at.items() if k in function.variables}
    names = list(result.derivatives)
    estimates = {}
    for name in names:
        if kind == "hessian":
            def f(points, name=name):
                r = function.grad(points, wrt=names, batch_ndim=1)
                return {b: r[b] for b in names}
            partials = _richardson(f, at, name)
            for b in names:
                estimates.setdefault(b, {})[name] = partials[b]
        else:
            d = _richardson(lambda points: {"value": function.eval(points, batch_ndim=1).value}, at, name)["value"]
            if kind == "vjp":  # seed . J
                d = np.tensordot(np.asarray(seed, dtype=np.float64), d, axes=np.ndim(result.value))
            estimates[name] = d
    errors, worst, max_error = {}, "", 0.0
    for path, got, want in _pairs(result.derivatives, estimates):
        error = _entry_errors(got, want)
        _assign(errors, path, error)
        if error.size and float(np.max(error)) >= max_error:
            max_error = float(np.max(error))
            index = np.unravel_index(int(np.argmax(error)), error.shape) if error.ndim else ()
            worst = "/".join(path) + (f"[{','.join(map(str, index))}]" if index else "")
    return Check(estimates, errors, tolerance, max_error, worst)


def _richardson(f, at: dict, name: str) -> dict:
    """d f / d at[name] for each array f returns: (4 D(h/2) - D(h)) / 3, with
    D the central difference; shape = f's shape + the variable's shape."""
    x = at[name]
    n = x.size
    steps = 1e-3 * np.maximum(1.0, np.abs(x.ravel()))
    offsets = []
    for scale in (1.0, 0.5, -0.5, -1.0):
        block = np.zeros((n, n))
        block[np.arange(n), np.arange(n)] = scale * steps
        offsets.append(block)
    perturbed = x.ravel()[None, :] + np.concatenate(offsets)  # (4n, n)
    points = {k: np.broadcast_to(v, (4 * n,) + v.shape) for k, v in at.items()}
    points[name] = perturbed.reshape((4 * n,) + x.shape)
    values = f(points)
    out = {}
    for key, v in values.items():
        v = np.asarray(v).reshape((4, n) + np.shape(v)[1:])
        d_h = (v[0] - v[3]) / (2 * steps.reshape((n,) + (1,) * (v.ndim - 2)))
        d_half = (v[1] - v[2]) / (steps.reshape((n,) + (1,) * (v.ndim - 2)))
        d = (4 * d_half - d_h) / 3  # (n, *f shape)
        out[key] = np.moveaxis(d, 0, -1).reshape(np.shape(d)[1:] + x.shape)
    return out


def _pairs(got, want, path=()):
    for key, value in got.items():
        if isinstance(value, dict):
            yield from _pairs(value, want[key], path + (key,))
        else:
            yield path + (key,), np.asarray(value), np.asarray(want[key])


def _assign(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _entry_errors(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        error = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    same = (got == want) | (np.isnan(got) & np.isnan(want))  # equal infinities, or nan on both sides
    return np.where(same, 0.0, np.where(np.isnan(error), np.inf, error))
