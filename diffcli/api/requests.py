"""What is asked for: one class per kind of request (value, gradient, Jacobian,
VJP, Hessian, order-N derivative, directional derivatives, JVP, HVP), and the
seed layouts that put derivative rows on a leading axis.

A request builds its derivative nodes into the binding's graph (once per
plan), supplies the arrays for its seed variables, and turns the plan's
outputs into Result fields."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..graph import autodiff
from .. import switches
from ..errors import Diagnostic, UsageError
from ..graph.nodes import Node
from .growth import OrderGrowth
from ..graph.ops import describe
from .result import materialise

if TYPE_CHECKING:
    from .binding import Binding

# NumPy arrays have at most this many axes (an order-N derivative tensor has N
# axes per axis of its variable, and its plan one seed axis per order).
NUMPY_MAX_AXES = 64


class Request:
    kind = "value"
    with_value = True  # the plan's first output is the expression's value
    what = "the value"  # for messages
    advice = "give a larger --max-memory, or smaller arrays"  # what to do when over the memory budget
    copies_result = False  # collect() lays the derivatives out anew (a copy the size of the result)
    taylor_refused = False  # a Taylor rule could not answer at these values: the derivative graph does

    def key(self) -> tuple:
        return (self.kind,)

    def check(self, binding: Binding, shapes, batch) -> None:
        """Refuse, before anything is built, a request that cannot work."""

    def result_entries(self, out_shape, shapes, batch) -> int:
        """How many numbers the derivatives hold (the value's are counted apart)."""
        return 0

    def build(self, binding: Binding) -> tuple[list[Node], list[Node]]:
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


class Value(Request):
    pass


class ByVariables(Request):
    """A request for derivatives with respect to the variables named in wrt."""

    def __init__(self, wrt):
        self.wrt = wrt

    def key(self):
        return (self.kind, tuple(self.wrt))


class Gradient(ByVariables):
    kind = "gradient"
    what = "the gradient"

    def __init__(self, wrt, with_value=True):
        super().__init__(wrt)
        self.with_value = with_value

    def key(self):
        return (self.kind, tuple(self.wrt), self.with_value)

    def check(self, binding, shapes, batch):
        require_scalar(binding.output.shape, "grad")

    def result_entries(self, out_shape, shapes, batch):
        return size(batch) * sum(size(shapes[n]) for n in self.wrt)

    def build(self, binding):
        return binding.gradient(self.wrt), []

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        result.derivatives = {n: materialise(d, batch + shapes[n]) for n, d in zip(self.wrt, outputs)}


class Vjp(Gradient):
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


class Jacobian(Vjp):
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
        return size(out_shape) * size(batch) * sum(size(shapes[n]) for n in self.wrt)

    def shared_rows(self, binding):
        return _any_shared(binding.row_compression([binding.output], self.wrt))

    def inputs(self, binding, shapes, batch, shared=None):
        return [_row_seed(shared and shared[0], binding.output.shape, len(batch))]

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        result.derivatives = {n: _rows(d, shared and shared[0], offset, out_shape, batch, shapes[n])
                              for n, d, offset in zip(self.wrt, outputs, _offsets(self.wrt, shapes))}


class Hessian(ByVariables):
    """Rows of each block d(grad_a)/d(b), with identity seeds of a's shape."""

    kind = "hessian"
    what = "the Hessian"
    advice = "use hvp with a tangent instead"
    copies_result = True

    def check(self, binding, shapes, batch):
        require_scalar(binding.output.shape, "hess")

    def result_entries(self, out_shape, shapes, batch):
        return sum(size(shapes[n]) for n in self.wrt) ** 2 * size(batch)

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


class Derivative(Request):
    """The order-N tensor: differentiate N times, each time with identity seeds
    on one more leading axis (so no Python loop over entries)."""

    kind = "derivative"
    advice = "lower the order"
    copies_result = True

    def __init__(self, name: str, order: int):
        self.name = name
        self.order = order
        self.what = f"the order-{order} derivative"
        self.by_taylor = False

    def key(self):
        return (self.kind, self.name, self.order, self.by_taylor)

    def check(self, binding, shapes, batch):
        """Taylor propagation where it is cheaper (taylor_cheaper); else the
        tensor's axes and the plan's (a seed axis per order where the seed has
        more than one row, then the batch's, then a node's own) must fit in a
        NumPy array."""
        out_shape, x_shape = binding.output.shape, shapes[self.name]
        self.by_taylor = not self.taylor_refused and switches.enabled("taylor") and \
            taylor_cheaper(size(x_shape), self.order)
        if self.by_taylor:
            check_taylor_order(self.order)
        tensor_axes = len(batch) + len(out_shape) + self.order * len(x_shape)
        seed_axes = (size(out_shape) > 1) + (self.order - 1) * (size(x_shape) > 1)
        plan_axes = 0 if self.by_taylor else seed_axes + len(batch) + max(len(n.shape) for n in binding.forward_order())
        if max(tensor_axes, plan_axes) > NUMPY_MAX_AXES:
            which = f"its tensor has {tensor_axes:,} axes" if tensor_axes > NUMPY_MAX_AXES else \
                f"computing it needs arrays of {plan_axes:,} axes"
            raise UsageError(f"{self.what} with respect to {describe(x_shape)} {self.name}: {which}, and "
                             f"NumPy arrays have at most {NUMPY_MAX_AXES}: lower the order")

    def result_entries(self, out_shape, shapes, batch):
        m = size(shapes[self.name])
        if m > 1 and self.order * math.log2(m) > 100:  # far past any budget: no need for the exact number
            return 1 << 100
        return size(out_shape) * m ** self.order * size(batch)

    def build(self, binding):
        if self.by_taylor:
            return [], []
        x = binding.by_name[self.name]
        node, seeds = binding.output, []
        growth = OrderGrowth(binding.graph, self.order, self.what)
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
        axes = [size(shape) > 1 for shape in levels]
        arrays = []
        for k, shape in enumerate(levels):
            m = size(shape)
            lead = (1,) * sum(axes[k + 1:]) + ((m,) if axes[k] else ()) + (1,) * sum(axes[:k])
            arrays.append(np.eye(m).reshape(lead + (1,) * len(batch) + shape))
        return arrays

    def taylor_factor(self, shapes) -> int:
        """How many evaluations' worth of memory Taylor propagation holds at once."""
        return (self.order + 1) * len(tensor_directions(size(shapes[self.name]), self.order))

    def collect_taylor(self, result, plan, arrays, shapes, batch):
        """The tensor from directional derivatives of order N: along x itself for
        a scalar, else along every direction j (|j| = N) at once, combined by
        exact interpolation (tensors.py)."""
        from ..engine.tensors import tensor_from_directions

        x_shape, out_shape = shapes[self.name], plan.outputs[0].shape
        n = size(x_shape)
        directions = tensor_directions(n, self.order)
        tangents = np.asarray(directions, dtype=np.float64).reshape((len(directions),) + (1,) * len(batch) + x_shape)
        along, notes = directional(plan, arrays, {self.name: tangents}, self.order, len(batch) + 1,
                                   [self.order], lead=1)
        along = along[self.order]
        along = np.broadcast_to(along, (len(directions),) + batch + out_shape)
        tensor = tensor_from_directions(along, n, self.order)  # batch + out + (n,) * N
        result.order = self.order
        result.derivatives = {self.name: np.ascontiguousarray(tensor).reshape(
            batch + out_shape + x_shape * self.order)}
        return notes

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        x_shape = shapes[self.name]
        levels = self._levels(out_shape, x_shape)
        (d,) = outputs
        rows = _unstack_rows(d, [shape for shape in levels if size(shape) > 1], batch, x_shape)
        result.order = self.order
        result.derivatives = {self.name: rows.reshape(batch + sum(levels, ()) + x_shape)}


class Along(Request):
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
        self.by_taylor = False

    def key(self):
        return (self.kind, tuple(self.tangents), self.order, self.by_taylor)

    def check(self, binding, shapes, batch):
        _check_tangents(self.tangents, shapes, batch)
        # Order 1 (a JVP) by the double-VJP plan, which the plan back-ends serve;
        # higher orders by one Taylor propagation instead of a graph per order.
        self.by_taylor = self.order > 1 and not self.taylor_refused and switches.enabled("taylor")
        if self.by_taylor:
            check_taylor_order(self.order)

    def taylor_factor(self, shapes) -> int:
        return self.order + 1

    def collect_taylor(self, result, plan, arrays, shapes, batch):
        out_shape = plan.outputs[0].shape
        along, notes = directional(plan, arrays, self.tangents, self.order, len(batch), range(1, self.order + 1))
        result.order = self.order
        result.derivatives = {k: materialise(along[k], batch + out_shape) for k in range(1, self.order + 1)}
        return notes

    def result_entries(self, out_shape, shapes, batch):
        return self.order * size(out_shape) * size(batch)

    def build(self, binding):
        if self.by_taylor:
            return [], []
        graph = binding.graph
        names = list(self.tangents)
        variables = [binding.by_name[n] for n in names]
        tangent_vars = [binding.seed(f"along:tangent:{n}", v.shape) for n, v in zip(names, variables)]
        node, outputs, cotangents = binding.output, [], []
        growth = OrderGrowth(graph, self.order, self.what)
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
        result.derivatives = {k + 1: materialise(d, batch + out_shape) for k, d in enumerate(outputs)}


class Series(Along):
    """The Taylor coefficients f^(k)/k! of f(x + t v) at t = 0, k = 0..N: one
    Taylor propagation (any order up to MAX_TAYLOR_ORDER, also with
    DIFFCLI_TAYLOR=0, for there is no other method)."""

    kind = "series"

    def __init__(self, tangents, order: int):
        super().__init__(tangents, order)
        self.what = f"the Taylor series to order {order}"

    def check(self, binding, shapes, batch):
        _check_tangents(self.tangents, shapes, batch)
        check_taylor_order(self.order)
        self.by_taylor = True

    def collect_taylor(self, result, plan, arrays, shapes, batch):
        from ..engine import taylor

        out_shape = plan.outputs[0].shape
        def propagate(factor):
            tangents = {k: v * factor for k, v in self.tangents.items()}
            inputs = [taylor.seeded(arrays[node.attr], tangents.get(node.attr), self.order) for node in plan.inputs]
            return plan.run(inputs, len(batch))[0]
        series = propagate(1.0)
        coefficients = np.broadcast_to(taylor.coefficients(series, self.order), (self.order + 1,) + batch + out_shape)
        coefficients = np.array(np.moveaxis(coefficients, 0, len(batch)))  # batch + (N+1,) + out_shape
        coefficients[(slice(None),) * len(batch) + (0,)] = result.value  # coefficient 0 is the value, bit for bit
        result.order = self.order
        result.derivatives = {"coefficients": coefficients}
        return cancellation_report(series, propagate(taylor.CHECK_FACTOR), self.order, "coefficient")


class Jvp(Along):
    """J v: the order-1 directional derivative, by the double-VJP trick: g(u) =
    u^T J is linear in u, and the VJP of g with respect to u, seeded with v, is J v."""

    kind = "jvp"

    def __init__(self, tangents):
        super().__init__(tangents, 1)
        self.what = "the Jacobian-vector product"
        self.advice = Request.advice

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        result.jvp = materialise(outputs[0], batch + out_shape)


class Hvp(Request):
    """H v = d/dx (grad f . v): reverse over reverse, never forming H."""

    kind = "hvp"
    what = "the Hessian-vector product"

    def __init__(self, wrt, tangents):
        self.wrt = wrt
        self.tangents = tangents

    def key(self):
        return (self.kind, tuple(self.tangents))

    def check(self, binding, shapes, batch):
        require_scalar(binding.output.shape, "hvp")
        _check_tangents(self.tangents, shapes, batch)

    def result_entries(self, out_shape, shapes, batch):
        return size(batch) * sum(size(shapes[n]) for n in self.wrt)

    def build(self, binding):
        names = list(self.tangents)
        gradient = dict(zip(self.wrt, binding.gradient(self.wrt)))
        tangent_vars = [binding.seed(f"tangent:{n}", binding.by_name[n].shape) for n in names]
        pairs = [(gradient[n], t) for n, t in zip(names, tangent_vars)]
        return autodiff.vjp_many(binding.graph, pairs, [binding.by_name[n] for n in self.wrt]), tangent_vars

    def inputs(self, binding, shapes, batch, shared=None):
        return list(self.tangents.values())

    def collect(self, result, outputs, out_shape, shapes, batch, shared=None):
        result.derivatives = {n: materialise(d, batch + shapes[n]) for n, d in zip(self.wrt, outputs)}


def require_scalar(out_shape, command):
    if out_shape != ():
        raise UsageError(f"{command} needs a scalar expression, but this one is {describe(out_shape)}: "
                         f"use jac for the full Jacobian, or vjp --seed for a weighted sum of "
                         f"its gradients")


def _check_tangents(tangents, shapes, batch):
    for name, t in tangents.items():
        if t.shape not in (shapes[name], batch + shapes[name]):
            raise UsageError(f"the tangent for {name} is {describe(t.shape)} but {name} is "
                             f"{describe(shapes[name])}: they must have the same shape")


def size(shape) -> int:
    return math.prod(shape)


# From about this many rows, identity seeds are passed as a diagonal.Diagonal,
# which the plan keeps diagonal while it stays so (O(m) instead of O(m^2) work);
# for fewer, the dense identity costs less than the bookkeeping.
DIAGONAL_MIN_ROWS = 64


@lru_cache(maxsize=64)
def identity_seed(shape: tuple, batch_ndim: int, diagonal_allowed: bool = True):
    """Rows of the identity on a new leading axis (read-only, shared between calls):
    an ndarray, or a diagonal.Diagonal from DIAGONAL_MIN_ROWS rows on where allowed
    (DIFFCLI_DIAGONAL=0 does not allow it)."""
    m = size(shape)
    if m >= DIAGONAL_MIN_ROWS and shape and diagonal_allowed:
        from ..engine.diagonal import Diagonal

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
        # (an environment look-up costs 1-2 us: read only where a Diagonal would be used)
        return identity_seed(shape, batch_ndim, size(shape) < DIAGONAL_MIN_ROWS or switches.enabled("diagonal"))
    from ..engine.sparsity import compressed_seed

    return compressed_seed(compression, shape, batch_ndim)


def _rows(d, compression, column_offset: int, row_shape: tuple, batch: tuple, column_shape: tuple) -> np.ndarray:
    """A derivative block laid out as batch + row_shape + column_shape, from its
    rows on the leading axis (a seed each, or shared seeds to be spread back)."""
    if compression is None:
        return _unstack_rows(d, [row_shape], batch, column_shape)
    from ..engine.sparsity import decompress

    return decompress(np.asarray(d), compression, column_offset, batch, row_shape, column_shape)


def _offsets(names, shapes) -> list[int]:
    """Where each variable's entries start among all of them, flattened in order."""
    offsets, start = [], 0
    for name in names:
        offsets.append(start)
        start += size(shapes[name])
    return offsets


def _unstack_rows(d, levels: list[tuple], batch: tuple, var_shape: tuple) -> np.ndarray:
    """Seed axes (innermost level last in front) to batch + level shapes + var shape."""
    sizes = [size(s) for s in levels]
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


# ---------------------------------------------------------------- Taylor propagation

# Orders above this are refused: order K holds K+1 coefficients of every node and
# costs O(K^2) operations on them (order 1,000 of tan(x): milliseconds).
MAX_TAYLOR_ORDER = 1000


def check_taylor_order(order: int) -> None:
    if order > MAX_TAYLOR_ORDER:
        raise UsageError(f"orders up to {MAX_TAYLOR_ORDER:,} are answered, not {order:,}")


def taylor_cheaper(n: int, order: int) -> bool:
    """Whether the order-N tensor of a variable of n entries is better had by Taylor
    propagation along binom(n+N-1, N) directions than by N nested reverse passes
    (n^(N-1) seed rows through a derivative graph that grows about threefold an
    order). A scalar: always. Otherwise measured (bench/run.py tensor, orders):
    below order 3 the batched passes win (a Hessian is n rows); at order 3 they
    are even at about n = 6 (Taylor 0.5x their time at n = 5, 1.4x at n = 10);
    from order 4 the graph's growth decides (n = 10: minutes against 0.1 s)."""
    if n == 1:
        return True
    if order < 3:
        return False
    return math.comb(n + order - 1, order) <= n ** (order - 1) * (order - 1)


@lru_cache(maxsize=16)
def tensor_directions(n: int, order: int) -> tuple:
    """The directions j (|j| = order, entries >= 0) whose order-N derivatives
    give the whole symmetric tensor; just (1,) for a scalar."""
    if n == 1:
        return ((1,),)
    from ..engine.tensors import multi_indices

    return tuple(multi_indices(n, order))


def directional(plan, arrays, tangents: dict, order: int, batch_ndim: int, orders, lead: int = 0
                ) -> tuple[dict, list]:
    """({k: d^k/dt^k f(x + t v) at t = 0} for k in orders, diagnostics), by one Taylor
    propagation; coefficients are scaled back by k! exactly (engine/taylor.py),
    and where f's coefficients decay so fast that they underflow, propagated
    again along a longer tangent (a power of 2, so the scaling is exact). A
    second propagation along 1.1 v estimates the digits lost to cancellation."""
    from ..engine import taylor

    inputs = []
    for node in plan.inputs:
        value = np.asarray(arrays[node.attr], dtype=np.float64)
        value = value.reshape((1,) * lead + value.shape) if lead else value
        inputs.append((value, tangents.get(node.attr)))

    def propagate(factor):
        return plan.run([taylor.seeded(v, None if t is None else t * factor, order) for v, t in inputs],
                        batch_ndim)[0]
    series = propagate(1.0)
    found = taylor.derivatives(series, order, orders)
    scale = taylor.rescaling(series, order)
    if scale is not None:
        longer = propagate(2.0 ** scale)
        found = taylor.prefer_representable(series, order, found, taylor.derivatives(longer, order, orders, scale))
    return found, cancellation_report(series, propagate(taylor.CHECK_FACTOR), order, "derivative")


def cancellation_report(series, check, order: int, what: str) -> list:
    """A diagnostic where the two propagations disagree (engine/taylor.lost_digits)."""
    from ..engine import taylor

    found = taylor.lost_digits(series, check, order)
    if found is None:
        return []
    first, k, worst = found
    how_good = "no correct digits" if worst >= 0.5 else \
        f"about {max(1, int(-math.log10(worst)))} correct digits, not 16"
    return [Diagnostic(f"from order {first} on, the {what}s lose digits to cancellation in the Taylor "
                       f"recurrences (order {k}: {how_good}; two propagations differ by {worst:.1e} relative)")]
