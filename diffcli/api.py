"""The public Python API. The CLI is a thin layer over this module.

    >>> import diffcli
    >>> f = diffcli.compile("sin(x)*y")
    >>> r = f.grad(x=0.0, y=2.0)
    >>> float(r.value), float(r["x"]), float(r["y"])
    (0.0, 2.0, 0.0)

Values may carry leading batch axes (`batch_ndim`), evaluated in one
vectorised pass. Graphs and plans are built once per set of variable shapes
and reused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import autodiff
from .errors import Diagnostic, UsageError
from .evaluate import Plan
from .functions import CONSTANTS
from .graph import Graph, Node
from .ops import describe
from .parse import Program, parse

SEED = "$seed"  # not a valid identifier, so it cannot clash with a user's variable


@dataclass
class Result(Mapping):
    """The value of the expression and, per variable, a derivative (for `kind`
    'gradient', 'jacobian' or 'vjp'). Index it by variable name."""

    value: np.ndarray
    kind: str = "value"
    derivatives: dict[str, np.ndarray] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.derivatives[name]

    def __iter__(self):
        return iter(self.derivatives)

    def __len__(self):
        return len(self.derivatives)


def compile(source: str) -> Function:  # noqa: A001 - the natural name, like re.compile
    """Parse an expression once; evaluate and differentiate it many times."""
    return Function(source)


def constant(text: str) -> np.ndarray:
    """The value of a constant expression such as '2', 'pi/2' or '[1, 2, 3]'."""
    program = parse(text)
    if program.variables:
        raise UsageError(f"a value must be constant, but '{text}' uses "
                         f"{', '.join(program.variables)}")
    graph = Graph()
    node = program.build(graph, {})
    if node.op != "const":
        raise UsageError(f"'{text}' is not a constant")
    return np.array(node.value)


class Function:
    """A compiled expression. Methods take the point as keyword arguments (or a
    mapping as the first argument, for names like 'wrt')."""

    def __init__(self, source: str):
        self.source = source
        self.program: Program = parse(source)
        self._bindings: dict[tuple, _Binding] = {}

    @property
    def variables(self) -> tuple[str, ...]:
        """The free variables, in order of first appearance."""
        return self.program.variables

    def eval(self, at: Mapping | None = None, /, *, batch_ndim: int = 0, **values) -> Result:
        """The value of the expression."""
        return self._run("value", _merge(at, values), None, None, batch_ndim)

    def grad(self, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
             batch_ndim: int = 0, **values) -> Result:
        """The value and the gradient of a scalar expression, per variable."""
        return self._run("gradient", _merge(at, values), wrt, None, batch_ndim)

    def jacobian(self, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
                 batch_ndim: int = 0, **values) -> Result:
        """The full Jacobian per variable: shape = output shape + variable shape."""
        return self._run("jacobian", _merge(at, values), wrt, None, batch_ndim)

    def vjp(self, seed, at: Mapping | None = None, /, *, wrt: Iterable[str] | None = None,
            batch_ndim: int = 0, **values) -> Result:
        """seed^T J per variable (PyTorch's backward(gradient=seed))."""
        return self._run("vjp", _merge(at, values), wrt, np.asarray(seed, dtype=np.float64), batch_ndim)

    # ------------------------------------------------------------ internals

    def _run(self, kind, at, wrt, seed, batch_ndim) -> Result:
        arrays, unused = self._check_values(at)
        shapes = {name: a.shape[batch_ndim:] for name, a in arrays.items()}
        batch = _batch_shape(arrays, batch_ndim)
        binding = self._binding(shapes)
        wrt = self._check_wrt(wrt)
        out_shape = binding.output.shape
        if kind == "gradient" and out_shape != ():
            raise UsageError(f"grad needs a scalar expression, but this one is {describe(out_shape)}: "
                             f"use jac for the full Jacobian, or vjp --seed for a weighted sum of "
                             f"its gradients")
        if kind == "vjp" and seed.shape not in (out_shape, batch + out_shape):
            raise UsageError(f"the seed is {describe(seed.shape)} but the expression's value is "
                             f"{describe(out_shape)}: they must have the same shape")
        plan, diagnostics = binding.plan(kind, wrt)
        inputs = [arrays[name] for name in self.variables]
        if kind == "jacobian":
            m = max(1, int(np.prod(out_shape, dtype=np.int64)))
            _check_jacobian_size(m, batch, [shapes[n] for n in wrt])
            seed = np.eye(m).reshape((m,) + (1,) * len(batch) + out_shape)
        if kind in ("jacobian", "vjp"):
            inputs.append(seed)
        outputs = plan.run(inputs)
        value = _materialise(outputs[0], batch + out_shape)
        derivatives = {}
        for name, d in zip(wrt, outputs[1:]):
            var_shape = shapes[name]
            if kind == "jacobian":
                full = np.broadcast_to(d, (m,) + batch + var_shape)
                d = np.moveaxis(full, 0, len(batch)).reshape(batch + out_shape + var_shape)
            derivatives[name] = _materialise(d, batch + (out_shape if kind == "jacobian" else ()) + var_shape)
        diagnostics = list(diagnostics)
        if not diagnostics and not all(np.all(np.isfinite(o)) for o in outputs):
            found = plan.first_nonfinite(inputs, batch)
            if found is not None:
                diagnostics.append(found)
        diagnostics += [Diagnostic(f"'{n}' is given but not used by the expression") for n in unused]
        return Result(value, kind, derivatives, diagnostics)

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

    def _binding(self, shapes: dict[str, tuple]) -> _Binding:
        key = tuple(sorted(shapes.items()))
        binding = self._bindings.get(key)
        if binding is None:
            binding = self._bindings[key] = _Binding(self.program, shapes)
        return binding


class _Binding:
    """The graph of one expression at one set of variable shapes, with its plans."""

    def __init__(self, program: Program, shapes: dict[str, tuple]):
        self.graph = Graph()
        self.output = program.build(self.graph, shapes)
        self.forward_diagnostics = list(self.graph.diagnostics)
        self.inputs = [self.graph.var(n, shapes[n]) for n in program.variables]
        self._by_name = dict(zip(program.variables, self.inputs))
        self._plans: dict[tuple, tuple[Plan, list[Diagnostic]]] = {}

    def plan(self, kind: str, wrt: list[str]) -> tuple[Plan, list[Diagnostic]]:
        key = (kind, tuple(wrt))
        if key not in self._plans:
            before = len(self.graph.diagnostics)
            outputs = [self.output] + self.derivative_nodes(kind, wrt)
            inputs = list(self.inputs)
            if kind in ("jacobian", "vjp"):
                inputs.append(self.seed())
            diagnostics = self.forward_diagnostics + self.graph.diagnostics[before:]
            self._plans[key] = (Plan(outputs, inputs), diagnostics[:1])
        return self._plans[key]

    def seed(self) -> Node:
        return self.graph.var(SEED, self.output.shape)

    def derivative_nodes(self, kind: str, wrt: list[str]) -> list[Node]:
        if kind == "value":
            return []
        seed = self.graph.const(1.0) if kind == "gradient" else self.seed()
        return autodiff.vjp(self.graph, self.output, seed, [self._by_name[n] for n in wrt])


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


MAX_RESULT_BYTES = 4 << 30


def _check_jacobian_size(m: int, batch: tuple, var_shapes: list[tuple]) -> None:
    """Refuse, before allocating, a Jacobian that would not fit in memory."""
    entries = m * int(np.prod(batch, dtype=np.int64)) * sum(int(np.prod(s, dtype=np.int64)) for s in var_shapes)
    if entries * 8 > MAX_RESULT_BYTES:
        raise UsageError(f"the Jacobian would have {entries:,} entries ({entries * 8 / 2**30:.1f} GiB); "
                         f"use vjp with a seed, or grad of a scalar, instead")


def _materialise(array, shape) -> np.ndarray:
    """A fresh, writable array of the full shape (results may be broadcast views)."""
    return np.array(np.broadcast_to(array, shape), dtype=np.float64)
