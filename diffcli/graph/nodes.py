"""The DAG: immutable, interned nodes with static value shapes.

A Graph is an arena. `Graph.apply` is the only way to make an operation node:
it infers the shape (raising ShapeError at the operator's span before any
numeric work), inserts the reshapes broadcasting needs, simplifies the cheap
cases that are exact in IEEE arithmetic (x*1, x-0, --x, ...; not x+0 or 0-x,
which differ in the sign of a zero: each operation's record names its rewrite,
in rewrites.py), folds constants, and interns the result
by (op, argument identities, attribute), so equal subexpressions are one node
and `sin(x)*exp(sin(x))` computes sin once. Nodes compare by identity; nothing here
recurses on the depth of an expression.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from ..errors import Diagnostic, ShapeError, Span
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
        self.deriving_from: Node | None = None  # the forward node whose rule runs (set by autodiff.py, origin())
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
        saved = self.deriving_from
        self.deriving_from = forward
        try:
            yield
        finally:
            self.deriving_from = saved

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
                (self.deriving_from.span if self.deriving_from is not None else None)
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
        simplify = op.rewrite
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
            node = self._add(key, Node(self, name, args, attr, shape, span, self.deriving_from))
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
        return op_name if self.deriving_from is None else f"the derivative of {self.deriving_from.op}"

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
