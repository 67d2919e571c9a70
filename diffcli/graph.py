"""The DAG: immutable, interned nodes with static value shapes.

A Graph is an arena. `Graph.apply` is the only way to make an operation node:
it infers the shape (raising ShapeError at the operator's span before any
numeric work), inserts the reshapes broadcasting needs, simplifies the cheap
cases that are exact in IEEE arithmetic (x*1, x-0, --x, ...; not x+0 or 0-x,
which differ in the sign of a zero), folds constants, and interns the result
by (op, argument identities, attribute), so equal subexpressions are one node
and `sin(x)*exp(sin(x))` computes sin once. Nodes compare by identity; nothing here
recurses on the depth of an expression.
"""

from __future__ import annotations

import contextlib
import math
import sys

import numpy as np

from .errors import Diagnostic, ShapeError, Span
from .ops import OPS, ShapeMismatch, describe

# A value (for one point) larger than this is refused before it is allocated.
MAX_VALUE_BYTES = 1 << 30


class Node:
    __slots__ = ("args", "attr", "graph", "id", "op", "origin", "scalar", "shape", "size", "span", "uniform",
                 "value")

    def __init__(self, graph, op, args, attr, shape, span, origin=None, value=None):
        self.graph = graph
        self.id = len(graph.nodes)
        self.op = op
        self.args = args
        self.attr = attr
        self.shape = shape
        self.span = span
        self.origin = origin  # the forward node whose derivative rule made this one, if any
        self.value = value  # constants only
        self.size = math.prod(shape)
        # A constant with one element, as a float: the simplifier's quick test.
        self.scalar = float(value.ravel()[0]) if value is not None and value.size == 1 else None
        # A constant whose entries are all one number (not nan): broadcasting ops may
        # use the number instead, which gives the same results with less to read.
        self.uniform = self.scalar if value is None or value.size <= 1 else _uniform(value)

    def __repr__(self):
        return f"<{self.op}#{self.id} {self.shape}>"

    # Arithmetic builds nodes, so derivative rules read like formulas.
    def __add__(self, other):
        return self.graph.apply("add", (self, other))

    def __radd__(self, other):
        return self.graph.apply("add", (other, self))

    def __sub__(self, other):
        return self.graph.apply("sub", (self, other))

    def __rsub__(self, other):
        return self.graph.apply("sub", (other, self))

    def __mul__(self, other):
        return self.graph.apply("mul", (self, other))

    def __rmul__(self, other):
        return self.graph.apply("mul", (other, self))

    def __truediv__(self, other):
        return self.graph.apply("div", (self, other))

    def __rtruediv__(self, other):
        return self.graph.apply("div", (other, self))

    def __pow__(self, other):
        return self.graph.apply("pow", (self, other))

    def __neg__(self):
        return self.graph.apply("neg", (self,))


class Graph:
    def __init__(self, rewrite: bool = True, max_nodes: int | None = None):
        """rewrite=False keeps every operation as built: no rewrites, no constant
        folding (a reference the tests hold the simplifier to). max_nodes: the
        memory budget in nodes; a derivative that would grow the graph past it is
        refused while it is built (autodiff.py, growth.py)."""
        self.rewrite = rewrite
        self.max_nodes = max_nodes
        self.nodes: list[Node] = []
        self._interned: dict[tuple, Node] = {}
        self._origin: Node | None = None  # the forward node whose rule is running
        self._rewriting: Span | None = None  # the span of the node a rewrite stands for
        self.deriving = False  # building a derivative (autodiff.py sets it)
        self.diagnostics: list[Diagnostic] = []  # non-finite values met while folding
        self.kink_nan = False  # derivative rules put nan at kinks instead of a subgradient

    # ------------------------------------------------------------ leaves

    def const(self, value) -> Node:
        if type(value) is not float:
            array = np.asarray(value, dtype=np.float64)
            if array.shape:
                return self._const_array(array)
            value = float(array)
        # Scalars, the common case (every literal, every 1.0 and 0.5 in a rule), are
        # keyed by value without building an array first.
        key = ("const", value if value == value else "nan", math.copysign(1.0, value))
        node = self._interned.get(key)
        if node is None:
            array = np.array(value)
            array.flags.writeable = False
            node = self._add(key, Node(self, "const", (), None, (), None, value=array))
        return node

    def _const_array(self, array: np.ndarray) -> Node:
        if not any(array.strides):  # one number broadcast (a fold of uniform operands): kept so
            return self._const_fill(float(array.flat[0]), array.shape)
        key = ("const", array.shape, array.tobytes())
        node = self._interned.get(key)
        if node is None:
            array = array.copy()
            array.flags.writeable = False
            node = self._add(key, Node(self, "const", (), None, array.shape, None, value=array))
        return node

    def _const_fill(self, number: float, shape: tuple) -> Node:
        """A constant array of one number, held as that number broadcast (read-only):
        not copied, nor hashed in full, whatever its size."""
        key = ("const", shape, "fill", number if number == number else "nan", math.copysign(1.0, number))
        node = self._interned.get(key)
        if node is None:
            value = np.broadcast_to(np.float64(number), shape)
            node = self._add(key, Node(self, "const", (), None, shape, None, value=value))
        return node

    def var(self, name: str, shape: tuple, span: Span | None = None) -> Node:
        key = ("var", name)
        node = self._interned.get(key)
        if node is None:
            node = self._add(key, Node(self, "var", (), name, tuple(shape), span))
        elif node.shape != tuple(shape):
            raise ValueError(f"variable {name} already has shape {node.shape}")
        return node

    def zeros(self, shape) -> Node:
        return self.const(np.zeros(shape))

    # ------------------------------------------------------------ operations

    @contextlib.contextmanager
    def origin(self, forward: Node):
        """Nodes made inside this block belong to the derivative of `forward`:
        they take its source span, so warnings about them point at it."""
        saved = self._origin
        self._origin = forward
        try:
            yield
        finally:
            self._origin = saved

    def apply(self, name: str, args, attr=None, span: Span | None = None) -> Node:
        op = OPS[name]
        for a in args:
            if type(a) is not Node:
                args = tuple([self._as_node(a) for a in args])
                break
        else:
            args = tuple(args)
        if span is None:
            span = self._rewriting if self._rewriting is not None else \
                (self._origin.span if self._origin is not None else None)
        shape = self._infer_shape(op, args, attr, span)
        if len(shape) > 1 or shape and shape[0] > 1 << 20:
            _check_size(name, shape, span)
        if op.broadcasting:
            if self.rewrite:
                args = self._uniform_as_scalar(args, shape)
            rank = len(shape)
            for a in args:
                if len(a.shape) != rank:
                    args = tuple([self._lift_rank(a, rank) for a in args])
                    break
        if not self.rewrite:
            return self._intern(name, args, attr, shape, span)
        simplify = _SIMPLIFY.get(name)
        if simplify is not None:
            outer, self._rewriting = self._rewriting, span  # what a rewrite builds points where this would
            try:
                simpler = simplify(self, args, shape)
            finally:
                self._rewriting = outer
            if simpler is not None:
                return simpler
        constant = True
        for a in args:
            if a.op != "const":
                constant = False
                break
        if constant:
            return self._fold(op, args, attr, shape, span)
        return self._intern(name, args, attr, shape, span)

    def _intern(self, name, args, attr, shape, span) -> Node:
        key = (name, tuple([a.id for a in args]), attr)
        node = self._interned.get(key)
        if node is None:
            node = self._add(key, Node(self, name, args, attr, shape, span, self._origin))
        return node

    def _uniform_as_scalar(self, args, shape):
        """A constant like [2, 2, 2] beside an operand that has the result's shape
        anyway is just the number 2 (then x*1, -(a*c) and friends apply)."""
        if len(args) < 2:
            return args
        for i, a in enumerate(args):
            if a.op == "const" and a.size > 1 and a.uniform is not None:
                others = [b.shape for j, b in enumerate(args) if j != i]
                if broadcast_shapes(others) == shape:
                    args = args[:i] + (self.const(a.uniform),) + args[i + 1:]
        return args

    def _as_node(self, value) -> Node:
        """A Node for a Node, a Masked cotangent (its node) or a number (a constant)."""
        if isinstance(value, Node):
            return value
        node = getattr(value, "node", None)
        return node if node is not None else self.const(value)

    def reshape(self, node: Node, shape: tuple) -> Node:
        return self.apply("reshape", (node,), tuple(shape))

    def _label(self, op_name):
        return op_name if self._origin is None else f"the derivative of {self._origin.op}"

    def _add(self, key, node):
        self._interned[key] = node
        self.nodes.append(node)
        return node

    def _lift_rank(self, node, rank):
        missing = rank - len(node.shape)
        return node if missing == 0 else self.reshape(node, (1,) * missing + node.shape)

    def _infer_shape(self, op, args, attr, span):
        shapes = [a.shape for a in args]
        try:
            if op.broadcasting:
                first = shapes[0]
                for s in shapes:
                    if s != first:
                        return broadcast_shapes(shapes)
                return first
            return tuple(op.shape(shapes, attr))
        except ShapeMismatch as e:
            raise ShapeError(str(e), span) from None

    def _fold(self, op, args, attr, shape, span):
        probe = Node(self, op.name, args, attr, shape, span)
        operands = [a.value for a in args]
        if shape and getattr(op.kernel, "elementwise", False) and all(a.uniform is not None for a in args):
            # Uniform operands give a uniform result: computed on their numbers and kept as
            # one number (a broadcast of ones times 2 once made three n x n arrays).
            operands = [np.float64(a.uniform) for a in args]
        with np.errstate(all="ignore"):
            value = np.asarray(op.kernel(probe)(*operands), dtype=np.float64)
        if not _finite(value) and all(_finite(np.asarray(v)) for v in operands):
            self.diagnostics.append(nonfinite_diagnostic(self._label(op.name), value, operands, span))
        if value.shape != shape:
            value = np.broadcast_to(value, shape)
        return self.const(value)


def _uniform(array: np.ndarray) -> float | None:
    """The one number every entry is, bit for bit (so [-0, 0] is not uniform), or None."""
    first = float(array.flat[0])
    if first != first:
        return None
    if not any(array.strides):  # one number broadcast to a shape (_const_fill): uniform by construction
        return first
    bits = np.ascontiguousarray(array).view(np.uint64)
    return first if bool((bits == bits.flat[0]).all()) else None


def _finite(array: np.ndarray) -> bool:
    if array.size == 1 or not any(array.strides):
        return math.isfinite(array.flat[0])
    return bool(np.isfinite(array).all())


def _check_size(name, shape, span) -> None:
    """Refuse, before anything is allocated, a value too large for memory."""
    nbytes = math.prod(shape) * 8
    if nbytes > MAX_VALUE_BYTES:
        raise ShapeError(f"{name} would make {describe(shape)}: {nbytes / 2**30:,.1f} GiB for one point; "
                         f"refusing to allocate it", span)


def broadcast_shapes(shapes) -> tuple:
    first = shapes[0]
    if all(s == first for s in shapes):
        return first
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        described = " and ".join(describe(s) for s in shapes)
        raise ShapeMismatch(f"shapes do not match: {described}") from None


def nonfinite_diagnostic(op_name, result, inputs, span, mask=None) -> Diagnostic:
    """'log produced nan (input -1.0)': the first entry of result where mask
    holds (default: the first non-finite entry), with the inputs there."""
    result = np.asarray(result)
    if mask is None:
        mask = ~np.isfinite(result)
    position = int(np.flatnonzero(mask.ravel())[0])
    shown = [_entry_text(x, result.shape, position) for x in inputs]
    value = repr(float(result.ravel()[position]))
    noun = "input" if len(shown) == 1 else "inputs"
    return Diagnostic(f"{op_name} produced {value} ({noun} {', '.join(shown)})", span)


def derivative_diagnostic(forward: Node, result, inputs, mask) -> Diagnostic:
    """'the derivative of sqrt is inf (input 0.0)': inputs are the forward
    operation's, shown when they are small enough to read."""
    value = repr(float(np.asarray(result).ravel()[int(np.flatnonzero(mask.ravel())[0])]))
    message = f"the derivative of {forward.op} is {value}"
    if inputs and all(x is not None and np.size(x) <= 6 for x in inputs):
        shown = [_entry_text(x, (), 0) if np.size(x) == 1 else _entry_text(x, (-1,), 0) for x in inputs]
        noun = "input" if len(shown) == 1 else "inputs"
        message += f" ({noun} {', '.join(shown)})"
    return Diagnostic(message, forward.span)


def _entry_text(x, shape, position) -> str:
    x = np.asarray(x)
    try:
        return repr(float(np.broadcast_to(x, shape).ravel()[position]))
    except ValueError:  # an operand with more axes than the result (a reduction)
        if x.size <= 6:
            return np.array2string(x.ravel(), separator=", ")
        return f"an array of shape {x.shape}"


# Cheap rewrites, by operation; each returns a simpler node or None. Every one is
# exact in IEEE double arithmetic: the simpler node gives, bit for bit, what the
# operation's NumPy kernel gives, for every input, the sign of a zero included (NaN
# as NaN, whatever its payload) -- except the few marked "derivative graphs only"
# below, which apply only while autodiff builds a derivative (graph.deriving), say why,
# and are tested bit for bit in tests/test_parse.py. Signed zeros are the trap:
# x + 0 is not x (-0 + 0 = +0), 0 - x is not -x (0 - 0 = +0, -0 = -0), 0 * x is not
# 0 (inf, nan, and -x * 0 = -0); those are left alone. A constant only stands for its
# value when it cannot change the other operand's shape by broadcasting (hence the
# shape checks).

def _normal(c: float) -> bool:
    """A finite, nonzero number with all its bits (not subnormal, not underflowed
    to 0): safe to fold two constants into."""
    return math.isfinite(c) and abs(c) >= sys.float_info.min


def _in_derivative(graph) -> bool:
    """Rewrites that change which operations run apply only inside derivative
    graphs: there, warnings name "the derivative of ..."; in what the user wrote,
    a warning names the operation the user wrote."""
    return graph.deriving


def _power_of_two(c: float | None) -> bool:
    """c = +-2^k (k within range): multiplying or dividing by it only moves the
    exponent, so it commutes with rounding."""
    if c is None or c == 0.0 or not math.isfinite(c):
        return False
    mantissa, exponent = math.frexp(c)
    return abs(mantissa) == 0.5 and -1000 < exponent < 1000


def _zero_signed(c: float | None, negative: bool) -> bool:
    """c is the zero of that sign (-0.0 when negative, +0.0 otherwise)."""
    return c == 0.0 and (math.copysign(1.0, c) < 0) == negative


def _simplify_add(graph, args, shape):
    a, b = args
    if a is b:  # x + x is 2x rounded once, as 2 * x is (-0 + -0 = -0 = 2 * -0); and reads better
        return graph.apply("mul", (2.0, a))
    # x + (-0) is x for every x (-0 + -0 = -0, +0 + -0 = +0); x + (+0) is not (-0 + +0 = +0).
    if _zero_signed(b.scalar, negative=True) and a.shape == shape:
        return a
    if _zero_signed(a.scalar, negative=True) and b.shape == shape:
        return b
    if a.op in _SCATTERS and b.op in _SCATTERS and a.shape == b.shape == shape and _in_derivative(graph):
        # Derivative graphs only (index's and cumprod's rules make the scatters): slices
        # of one array gathered back (x[1:] and x[:-1] in a gradient), one array filled
        # part by part instead of a zero array per part and an add. The same sums,
        # except that an entry that is -0 in every part covering it comes out +0
        # ((-0 + 0) + -0 where the adds give -0 + -0): the sign of a zero cotangent,
        # which rules only multiply, divide (as numerator) or select, so it can
        # change only the sign of a zero derivative.
        parts = _scatter_parts(a) + _scatter_parts(b)
        return graph.apply("scatter_sum", tuple(p for p, _ in parts), (tuple(k for _, k in parts), shape))
    if b.op == "neg" and _in_derivative(graph):  # a + (-b) is a - b, by IEEE's definition of subtraction
        return graph.apply("sub", (a, b.args[0]))
    if a.op == "neg" and _in_derivative(graph):  # (-a) + b = b + (-a): addition commutes exactly
        return graph.apply("sub", (b, a.args[0]))
    return None


_SCATTERS = ("scatter", "scatter_sum")


def _scatter_parts(node) -> list:
    """(value, index items) for each part of a scatter or scatter_sum."""
    if node.op == "scatter":
        return [(node.args[0], node.attr[0])]
    return list(zip(node.args, node.attr[0]))


def _simplify_sub(graph, args, shape):
    a, b = args
    # x - (+0) = x + (-0) is x for every x; x - (-0) = x + (+0) is not.
    if _zero_signed(b.scalar, negative=False) and a.shape == shape:
        return a
    # (-0) - x = -0 + (-x) is -x for every x; (+0) - x is not (+0 - +0 = +0, but -(+0) = -0).
    if _zero_signed(a.scalar, negative=True) and b.shape == shape:
        return graph.apply("neg", (b,))
    if b.op == "neg" and _in_derivative(graph):  # a - (-b) = a + (-(-b)) = a + b: negation is exact
        return graph.apply("add", (a, b.args[0]))
    return None


def _simplify_mul(graph, args, shape):
    a, b = args
    if a is b and _in_derivative(graph):  # a * a is a^2 to the last bit (np.square): tanh's
        return graph.apply("pow", (a, 2.0))  # ans * ans is then the user's tanh(x)^2
    for one, other in ((b, a), (a, b)):
        if other.shape == shape and one.scalar is not None:
            if one.scalar == 1.0:  # x * 1 is x for every x (-0 * 1 = -0, inf, nan)
                return other
            if one.scalar == -1.0:  # x * -1 flips the sign bit only, as -x does
                return graph.apply("neg", (other,))
            if other.op == "neg":  # (-x) * c = x * (-c): the sign of a product is the xor of the
                # signs and rounding to nearest is symmetric, so only the sign moves (c = 0 included)
                return graph.apply("mul", (other.args[0], -one.scalar))
            if not _in_derivative(graph):
                continue
            # Derivative graphs only, where there is no user-written order of operations to
            # reproduce: these equal the original wherever neither an intermediate nor the
            # result overflows or is subnormal (checked bit for bit in tests/test_parse.py);
            # where one does, the rewritten form is the more accurate.
            if other.op == "mul":  # (x * c1) * c2 = x * (c1 c2) when either is a power of two
                for c, x in (other.args[::-1], other.args):
                    if c.scalar is not None and x.shape == shape and _normal(c.scalar * one.scalar) and \
                            (_power_of_two(c.scalar) or _power_of_two(one.scalar)):
                        return graph.apply("mul", (x, c.scalar * one.scalar))
            if other.op == "div" and _power_of_two(one.scalar):  # (c1 / x) * 2^k = (2^k c1) / x
                numerator, x = other.args
                if numerator.scalar is not None and x.shape == shape and _normal(numerator.scalar * one.scalar):
                    return graph.apply("div", (numerator.scalar * one.scalar, x), span=other.span)
    return None


def _simplify_div(graph, args, shape):
    a, b = args
    if b.scalar == 1.0 and a.shape == shape:  # x / 1 is x for every x
        return a
    if not _in_derivative(graph):
        return None
    # x / 2^k and x * 2^-k are the same real number rounded once: equal for every x
    # (and one multiply is cheaper); derivative graphs only, so warnings name the user's div.
    if _power_of_two(b.scalar) and a.shape == shape:
        return graph.apply("mul", (a, 1.0 / b.scalar))
    # Derivative graphs only: c / (2^k x) = (c / 2^k) / x, equal as (x * c1) * c2 above.
    if a.scalar is not None and b.op == "mul" and b.shape == shape:
        for c, x in (b.args, b.args[::-1]):
            if _power_of_two(c.scalar) and x.shape == shape and _normal(a.scalar / c.scalar):
                return graph.apply("div", (a.scalar / c.scalar, x))
    return None


def _simplify_by_one(graph, args, shape):  # x ** 1 is x for every x (C's pow(x, 1), and pow's kernel)
    a, b = args
    return a if b.scalar == 1.0 and a.shape == shape else None


def _simplify_neg(graph, args, shape):
    x = args[0]
    if x.op == "neg":  # two sign flips
        return x.args[0]
    if x.op == "mul":  # -(a * c) is exactly a * (-c) (see mul): one pass over the data instead of two
        a, b = x.args
        if b.scalar is not None and a.shape == shape:
            return graph.apply("mul", (a, -b.scalar))
        if a.scalar is not None and b.shape == shape:
            return graph.apply("mul", (-a.scalar, b))
    return None


def _same_shape(graph, args, shape):
    # broadcast_to its own shape is a view of the same numbers; sum_to its own shape
    # sums over no axis, which is the identity (NumPy's kernel would add +0 and turn a
    # -0 into +0; only derivative rules make sum_to, and _fit does not when shapes agree).
    return args[0] if args[0].shape == shape else None


def _simplify_reshape(graph, args, shape):
    x = args[0]  # reshapes only move numbers, never change them
    if x.shape == shape:
        return x
    if x.op == "reshape":
        return graph.reshape(x.args[0], shape)
    return None


def _identity_on_scalars(graph, args, shape):
    # max, min, cumsum and cumprod of one number are that number, -0 included (their
    # kernels start from the first element). Not sum or logsumexp: NumPy's sum starts
    # from +0 (sum(-0) = +0), and logsumexp(-0) = log(1) + -0 = +0.
    return args[0] if not args[0].shape else None


def _simplify_transpose(graph, args, shape):
    return args[0] if len(args[0].shape) < 2 else None  # nothing to permute


_SIMPLIFY = {"add": _simplify_add, "sub": _simplify_sub, "mul": _simplify_mul, "div": _simplify_div,
             "pow": _simplify_by_one, "neg": _simplify_neg, "reshape": _simplify_reshape,
             "broadcast_to": _same_shape, "sum_to": _same_shape, "transpose": _simplify_transpose}
for _name in ("max", "min", "cumsum", "cumprod"):
    _SIMPLIFY[_name] = _identity_on_scalars


def topological_order(outputs) -> list[Node]:
    """Every node the outputs depend on, each after its arguments (iterative DFS)."""
    order: list[Node] = []
    done: set[int] = set()
    for root in outputs:
        if root.id in done:
            continue
        stack = [(root, 0)]
        while stack:
            node, i = stack.pop()
            if i < len(node.args):
                stack.append((node, i + 1))
                child = node.args[i]
                if child.id not in done:
                    stack.append((child, 0))
            elif node.id not in done:
                done.add(node.id)
                order.append(node)
    return order
