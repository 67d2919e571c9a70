"""A compiled expression (Function): its per-shape bindings and the requests
it runs."""

from __future__ import annotations

from _thread import RLock  # threading's own RLock, without importing threading
from collections.abc import Iterable, Mapping

import numpy as np

from ..graph import autodiff
from .. import budget
from .binding import Binding, collector_paused, formula_nodes, kink_reports
from ..budget import BYTES_PER_NODE, format_size
from ..errors import BudgetError, Diagnostic, UsageError
from ..engine.evaluate import Plan
from ..language.functions import CONSTANTS
from ..graph.nodes import Graph, Node
from ..language.parse import Program, parse
from .requests import (Along, Derivative, Gradient, Hessian, Hvp, Jacobian, Jvp, Request, Series, Value, Vjp,
                       require_scalar, size)
from .result import Result, materialise

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
        with collector_paused():
            self.program: Program = parse(source)
        self._bindings: dict[tuple, Binding] = {}
        # Building graphs and plans mutates them; threads sharing a Function take turns.
        self._lock = RLock()

    @property
    def variables(self) -> tuple[str, ...]:
        """The free variables, in order of first appearance."""
        return self.program.variables

    def eval(self, at: Mapping | None = None, /, *, batch_ndim: int = 0, **values) -> Result:
        """The value of the expression."""
        return self._run(Value(), _merge(at, values), batch_ndim)

    def grad(self, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
             batch_ndim: int = 0, value: bool = True, **values) -> Result:
        """The value and the gradient of a scalar expression, per variable.
        value=False: the gradient alone (like jax.grad next to jax.value_and_grad);
        the steps only the value needs are skipped, and the Result's value is None."""
        return self._run(Gradient(self._check_wrt(wrt), with_value=value), _merge(at, values), batch_ndim)

    def jacobian(self, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
                 batch_ndim: int = 0, **values) -> Result:
        """The full Jacobian per variable: shape = output shape + variable shape."""
        return self._run(Jacobian(self._check_wrt(wrt)), _merge(at, values), batch_ndim)

    def vjp(self, seed, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
            batch_ndim: int = 0, **values) -> Result:
        """seed^T J per variable (PyTorch's backward(gradient=seed))."""
        return self._run(Vjp(self._check_wrt(wrt), np.asarray(seed, dtype=np.float64)),
                         _merge(at, values), batch_ndim)

    def hessian(self, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
                batch_ndim: int = 0, **values) -> Result:
        """The Hessian of a scalar expression as blocks: result[a][b] has shape
        shape(a) + shape(b)."""
        return self._run(Hessian(self._check_wrt(wrt)), _merge(at, values), batch_ndim)

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
        return self._run(Derivative(name, order), _merge(at, values), batch_ndim)

    def jvp(self, tangents: Mapping, at: Mapping | None = None, /, *, batch_ndim: int = 0,
            **values) -> Result:
        """The directional derivative J v (forward mode's answer), of the output's
        shape; a variable without a tangent has tangent 0."""
        return self._run(Jvp(self._tangents(tangents)), _merge(at, values), batch_ndim)

    def hvp(self, tangents: Mapping, at: Mapping | None = None, /, *, batch_ndim: int = 0,
            **values) -> Result:
        """The Hessian-vector product H v per variable, without forming H."""
        return self._run(Hvp(list(self.variables), self._tangents(tangents)), _merge(at, values),
                         batch_ndim)

    def derivatives_along(self, order: int, tangents: Mapping, at: Mapping | None = None, /, *,
                          batch_ndim: int = 0, **values) -> Result:
        """d^k/dt^k f(x + t v) at t = 0 for k = 1..order, all from one evaluation:
        result[k], of the output's shape. With a scalar variable and tangent 1
        these are f', f'', ...; with tangent e_i for a vector variable, the
        derivatives along its component i (what `diffcli plot` draws)."""
        if order < 1:
            raise UsageError(f"the order must be at least 1, not {order}")
        return self._run(Along(self._tangents(tangents), order), _merge(at, values), batch_ndim)

    def series(self, order: int, tangents: Mapping | None = None, at: Mapping | None = None, /, *,
               batch_ndim: int = 0, **values) -> Result:
        """The Taylor coefficients c_k = f^(k)/k! of f(x + t v) at t = 0, k = 0..order:
        result['coefficients'], of shape batch + (order+1,) + output shape. tangents
        None: the one scalar variable, tangent 1. Answered by Taylor propagation
        (engine/taylor.py), up to order 1,000."""
        if order < 0:
            raise UsageError(f"the order must be at least 0, not {order}")
        return self._run(Series(self._series_tangents(tangents), order), _merge(at, values), batch_ndim)

    def _series_tangents(self, tangents: Mapping | None) -> dict[str, np.ndarray]:
        if tangents:
            return self._tangents(tangents)
        if len(self.variables) != 1:
            raise UsageError(f"a series needs a direction: give --wrt NAME for a scalar variable or --tangent "
                             f"NAME=VALUE (this expression has {len(self.variables)} variables: "
                             f"{', '.join(self.variables) or 'none'})")
        return {self.variables[0]: np.float64(1.0)}

    def compute(self, kind: str, at: Mapping, *, wrt=None, seed=None, tangents=None, order: int = 1,
                batch_ndim: int = 0) -> Result:
        """Any of the derivatives by name: 'value', 'gradient', 'jacobian', 'vjp'
        (seed), 'hessian', 'derivative' (order, one wrt), 'jvp' or 'hvp' (tangents)."""
        if kind == "value":
            return self.eval(at, batch_ndim=batch_ndim)
        if kind == "series":
            if not tangents and wrt:
                if len(wrt) != 1:
                    raise UsageError(f"a series is along one direction: give one --wrt variable, not {len(wrt)}")
                tangents = {wrt[0]: 1.0}
            return self.series(order, tangents, at, batch_ndim=batch_ndim)
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
            require_scalar(out.shape, "grad" if kind == "gradient" else "hess")
        if kind == "derivative" and len(names) != 1:
            raise UsageError("--order needs one --wrt variable")
        with binding.lock, collector_paused():
            try:
                nodes = formula_nodes(binding, kind, names, order)
            except BudgetError:
                self._forget(binding)
                raise
        from ..graph.formula import formula  # only --symbolic needs it

        reserved = self.variables
        return {k: ({b: formula(n, reserved) for b, n in v.items()} if isinstance(v, dict)
                    else formula(v, reserved)) for k, v in nodes.items()}

    def backward_pass(self, at: Mapping) -> list[tuple[Node, np.ndarray, np.ndarray | None]]:
        """The reverse pass of a scalar expression, node by node in the order it
        runs: (node, its value, its adjoint d(output)/d(node) or None where no
        derivative flows)."""
        arrays, _ = self._check_values(at)
        binding = self._binding({n: a.shape for n, a in arrays.items()})
        require_scalar(binding.output.shape, "the backward-pass table")
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

    def _run(self, request: Request, at: Mapping, batch_ndim: int) -> Result:
        arrays, unused = self._check_values(at)
        shapes = {name: a.shape[batch_ndim:] for name, a in arrays.items()}
        batch = _batch_shape(arrays, batch_ndim)
        binding = self._binding(shapes)
        request.check(binding, shapes, batch)
        if getattr(request, "by_taylor", False):
            return self._run_taylor(request, binding, arrays, shapes, batch)
        compiled = binding.built_plan(request, self.kink == "nan")
        # One point's result, the same every time at the binding's shapes, is checked once.
        result_bytes = None if batch or compiled is None else compiled.later.get("point result bytes")
        if result_bytes is None:
            result_bytes = 8 * (request.result_entries(binding.output.shape, shapes, batch)
                                + (size(binding.output.shape) * size(batch) if request.with_value else 0))
            # Before building anything, one point's result; a batch's whole peak is
            # checked below, so that the advice on how many points fit is sound.
            self._within_budget(result_bytes // max(1, size(batch)), request, ())
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
        value = materialise(outputs[0], batch + binding.output.shape) if first else None
        result = Result(value, request.kind, shapes=shapes)
        request.collect(result, outputs[first:end], binding.output.shape, shapes, batch, shared)
        result.kinks = kink_reports(compiled.watched, outputs[end:], batch, self.kink == "nan")
        if compiled.watched_if_infinite and not all(finite[first:end]):
            indicators = binding.indicator_plan(compiled).run_batched(inputs[:len(self.variables)], batch)
            result.kinks += kink_reports(compiled.watched_if_infinite, indicators, batch, self.kink == "nan")
        result.diagnostics = list(compiled.diagnostics)
        if not result.diagnostics and not all(finite[:end]):
            found = compiled.plan.first_nonfinite(inputs, batch, outputs[:end])
            if found is not None:
                result.diagnostics.append(found)
        result.diagnostics += [Diagnostic(f"'{n}' is given but not used by the expression") for n in unused]
        return result

    def _run_taylor(self, request, binding, arrays, shapes, batch) -> Result:
        """A request answered by Taylor propagation (engine/taylor.py): the plan
        gives the value and the kink indicators, one propagation the derivatives."""
        kink_nan = self.kink == "nan"
        result_bytes = 8 * (request.result_entries(binding.output.shape, shapes, batch)
                            + size(binding.output.shape) * size(batch))
        self._within_budget(result_bytes, request, batch)
        compiled = binding.plan(request, kink_nan)
        inputs = [arrays[name] for name in self.variables]
        peak = compiled.plan.peak_bytes(inputs, batch)
        self._within_budget(peak * request.taylor_factor(shapes), request, batch)
        outputs, finite = compiled.plan.run_checked(inputs, batch)
        value = materialise(outputs[0], batch + binding.output.shape)
        result = Result(value, request.kind, shapes=shapes)
        plan = compiled.later.get("taylor")
        if plan is None:
            from ..engine.taylor import TaylorPlan

            with binding.lock, collector_paused():
                plan = compiled.later.setdefault("taylor", TaylorPlan([binding.output], binding.inputs))
        from ..engine.taylor import NotTaylor

        try:
            precision = request.collect_taylor(result, plan, arrays, shapes, batch)
        except NotTaylor:  # a rule that cannot answer at these values: the derivative graph can
            if request.kind == "series":
                raise UsageError("a power with a variable exponent has no Taylor series at a base that is "
                                 "not positive") from None
            request.taylor_refused = True
            return self._run(request, arrays, len(batch))
        indicators = outputs[1:]
        result.kinks = kink_reports(compiled.watched, indicators, batch, kink_nan)
        derivatives_finite = all(np.isfinite(d).all() for d in result.derivatives.values())
        if compiled.watched_if_infinite and not derivatives_finite:
            more = binding.indicator_plan(compiled).run_batched(inputs, batch)
            result.kinks += kink_reports(compiled.watched_if_infinite, more, batch, kink_nan)
            indicators = list(indicators) + list(more)
        if kink_nan and indicators:
            _poison(result.derivatives, indicators, batch)
        result.diagnostics = list(compiled.diagnostics)
        if not result.diagnostics and not finite[0]:
            found = compiled.plan.first_nonfinite(inputs, batch, outputs[:1])
            if found is not None:
                result.diagnostics.append(found)
        if not result.diagnostics and not derivatives_finite:
            result.diagnostics.append(_nonfinite_order(result.derivatives, batch, result.order))
        result.diagnostics += precision
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

    def _binding(self, shapes: dict[str, tuple]) -> Binding:
        key = tuple(sorted(shapes.items()))
        binding = self._bindings.get(key)
        if binding is None:
            with self._lock, collector_paused():
                binding = self._bindings.get(key) or Binding(self.program, shapes, self._lock,
                                                              self.max_memory // BYTES_PER_NODE)
                self._bindings[key] = binding
        return binding

    def _forget(self, binding: Binding) -> None:
        """A derivative graph refused halfway through leaves its nodes in the
        binding's graph: the binding is dropped, so that they can be freed."""
        with self._lock:
            self._bindings = {k: b for k, b in self._bindings.items() if b is not binding}

    def _within_budget(self, estimate: int, request: Request, batch: tuple) -> None:
        if estimate <= self.max_memory:
            return
        advice = request.advice
        points = size(batch)
        if points > 1:
            # The points' share of the budget, less a fifth for what does not scale with them.
            fits = self.max_memory * points * 4 // (estimate * 5)
            advice = f"evaluate at most {fits:,} points at a time (--chunk {fits})" if fits else advice
        raise BudgetError(f"{request.what} would need about {format_size(estimate)} of memory, over the "
                          f"budget of {format_size(self.max_memory)} (--max-memory): {advice}")


def _poison(derivatives: dict, indicators, batch: tuple) -> None:
    """kink='nan': every derivative is nan at the points where a kink was met."""
    at_kink = np.zeros(batch, dtype=bool)
    for flags in indicators:
        at_kink |= np.broadcast_to(np.asarray(flags) != 0, batch)
    if at_kink.any():
        for key, array in derivatives.items():
            derivatives[key] = np.where(at_kink.reshape(batch + (1,) * (array.ndim - len(batch))), np.nan, array)


def _nonfinite_order(derivatives: dict, batch: tuple, order: int) -> Diagnostic:
    """Which derivative of a Taylor request first is not finite, and where."""
    for k, array in derivatives.items():
        bad = ~np.isfinite(array)
        if bad.any():
            point = int(np.flatnonzero(bad.reshape(size(batch), -1).any(axis=1))[0]) if batch else None
            what = f"the order-{k if isinstance(k, int) else order} derivative"
            overflow = "overflows float64 (beyond 1.8e308)" if np.isinf(array[bad]).all() else "is not finite"
            return Diagnostic(f"{what} {overflow}", None, point)
    return Diagnostic("a derivative is not finite", None, None)


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
