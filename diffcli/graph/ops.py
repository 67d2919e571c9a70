"""OPS: the one table of primitive operations, one record per operation.

Each record (Op) holds every fact about its operation that some layer needs:

  kernel(node) -> f(*arrays)   the NumPy forward, built once per node so that
                               axis arithmetic happens at plan time, not per call;
  shape(arg_shapes, attr)      the static value shape of the result;
  vjp(g, ans, *args)           the vector-Jacobian product, written in graph
                               operations, so derivatives are graphs that can be
                               differentiated again. None in the result = zero;
  broadcasting                 operands are broadcast against each other (graph.py);
  elementwise                  maps entry to entry (sparsity.py, windows.py);
  kink                         where it is not differentiable, and what is answered
                               there (Kink; api.py, autodiff.py);
  selects                      its cotangents can hold zeros meaning "not selected"
                               (autodiff.py makes products through them zero-dominant);
  rewrite(graph, args, shape)  its exact rewrites (rewrites.py; Graph.apply);
  c, no_c                      its C expression and whether that is bit-exact or the
                               C library's (C; native.py), or why it has none;
  permutes                     its kernel lays its result out in another axis order
                               (native.py keeps such plans on their plain steps);
  diagonal                     how it carries a Diagonal operand (diagonal.py);
  pattern                      how sparsity.py finds which inputs its entries depend
                               on when it is not elementwise: "moves" (read off the
                               kernel on numbered entries), "probe" (a nan per input
                               entry), "dense";
  notation                     how the formula printer writes it (and, for infix
                               operators, the tokens the parser reads as it): an
                               Infix, CALL (name(args)) or OWN (formula.py's own rule);
  names, arity, build          the names users call it by, with how many arguments,
                               and build(graph, args, span[, options]) when a call is
                               more than graph.apply (functions.py);
  keywords                     the keyword arguments a call takes (Param: name, kind
                               of constant, whether it may also come by position),
                               read by functions.py into options for build;
  taylor(node, kernel)         its Taylor rule: a function from its operands' truncated
                               Taylor series to its result's (series.py; engine/taylor.py
                               propagates them for derivatives of any order);
  rule                         the rule of calculus a derivation applies at it
                               ('name: template', or a function of the node), or
                               TABLE: its table entry, found from vjp (steps.py).

tests/test_ops.py walks the table and names any operation that lacks a fact.

Arrays carry leading batch axes in front of the value axes; every kernel works
on the trailing value axes only, so batches broadcast through untouched.
Broadcasting ops receive operands of equal value rank (graph.py inserts the
reshapes), so NumPy's right-aligned broadcasting lines up batch with batch.

Subgradients at kinks follow PyTorch: abs'(0) = sign(0) = 0, relu'(0) = 0,
maximum/minimum split g evenly on ties, max/min reductions share g evenly
among tied elements, norm'(0) = 0, floor/ceil/sign/comparisons have derivative 0.
"""

from __future__ import annotations

import math
from operator import itemgetter

import numpy as np

from . import rewrites, series
from ..errors import ExpressionError, ShapeError


class ShapeMismatch(Exception):
    """Raised by shape rules; graph.py adds the source span."""


def _record(name: str, fields: str, defaults: tuple = (), methods: dict | None = None):
    """A class of immutable records: tuples with named fields and _replace, as
    collections.namedtuple makes them, at a tenth of its start-up cost (namedtuple
    compiles code for each class, about 70 us; a dataclass needs the dataclasses
    module, about 10 ms), since every record is built when diffcli is imported."""
    names = tuple(fields.split())
    first_default = len(names) - len(defaults)

    def __new__(cls, *args, **named):
        if named or len(args) != len(names):
            if len(args) > len(names):
                raise TypeError(f"{name} takes {len(names)} fields, not {len(args)}")
            args += tuple(named.pop(f) if f in named else defaults[i - first_default]
                          for i, f in enumerate(names) if i >= len(args))
            if named:
                raise TypeError(f"{name} has no field {', '.join(named)}")
        return tuple.__new__(cls, args)

    def _replace(self, **changes):
        record = tuple.__new__(type(self), [changes.pop(f, v) for f, v in zip(names, self)])
        if changes:
            raise ValueError(f"{name} has no field {', '.join(changes)}")
        return record

    def __repr__(self):
        return f"{name}({', '.join(f'{f}={v!r}' for f, v in zip(names, self))})"

    def __getnewargs__(self):  # (for copy and pickle, which call __new__ with the fields)
        return tuple(self)

    namespace = {f: property(itemgetter(i)) for i, f in enumerate(names)}
    namespace.update(__slots__=(), _fields=names, __new__=__new__, _replace=_replace, __repr__=__repr__,
                     __getnewargs__=__getnewargs__, **(methods or {}))
    return type(name, (tuple,), namespace)


_OP_FIELDS = ("name kernel shape vjp broadcasting elementwise kink selects rewrite c no_c permutes diagonal "
              "pattern notation names arity build taylor rule keywords")


def _zero_derivative(op) -> bool:
    """Its derivative is 0 wherever it exists (comparisons, floor, sign)."""
    return op.vjp is _no_derivative


def _compares(op) -> bool:
    """A comparison: its value is 1.0 or 0.0, and jumps on a boundary."""
    return type(op.notation) is Infix and op.notation.precedence == COMPARE


Op = _record("Op", _OP_FIELDS, methods={"zero_derivative": property(_zero_derivative),
                                        "compares": property(_compares)})


# A C expression over the operands {a}, {b}, {c} (or a function of the node giving
# one, or None where there is none for that node). exact: the C result is NumPy's,
# bit for bit, everywhere (one correctly rounded IEEE operation, or a choice between
# such results); otherwise it is the C library's function, which NumPy calls on some
# machines and replaces by its own SIMD code on others, so native.py probes it.
C = _record("C", "expression exact")

# condition(node): a node that is 1.0 where the operation is at a kink; what: why the
# point is special; choice: what diffcli answers there with kink='subgradient'.
# infinite: the derivative chosen there is infinite, so the kink shows wherever it
# matters as a non-finite derivative, and is looked for only then (a zero-
# dominant product that absorbs it, as relu(sqrt(x)) at 0, leaves no trace).
Kink = _record("Kink", "condition what choice infinite", defaults=(False,))

# Precedence, loosest first, as in grammars/diffcli.lark (formula.py parenthesises by it).
COMPARE, ADD, MUL, UNARY, POWER, POSTFIX, ATOM = range(7)
# An infix operator: the symbol the formula printer writes, its precedence, and the
# tokens the parser reads as this operation (none for the internal cmul and cdiv).
Infix = _record("Infix", "symbol precedence tokens")
CALL = "call"  # written name(arguments), by its own name
TABLE = "table"  # its derivative is its table entry (with the chain rule), as steps.py finds it
OWN = "own"  # written by a rule of formula.py's own (pow, neg, indexing, structure)
# Written name(arguments(node, texts)): the operand texts with what the node's attr
# says written as keyword arguments (sum(x, axis=1)), which parse back to the node.
Call = _record("Call", "arguments")

# A keyword argument: its name; the kind of constant it takes ("axes": an integer or
# a tuple of them, "int", "flag": True/False or 1/0, "number", "ints": integers in
# tuples nested to any depth, as nested Python tuples); and whether it may
# also be given by position after the operands, in the order of the record (NumPy's
# sum(x, 0) is sum(x, axis=0)).
Param = _record("Param", "name kind positional", defaults=(False,))

OPS: dict[str, Op] = {}


def defop(name, kernel, vjp, shape=None, broadcasting=False, *, kink=None, selects=False, rewrite=None,
          c=None, no_c=None, permutes=False, diagonal=None, pattern=None, notation=None, names=(), arity=None,
          build=None, taylor=None, rule=None, keywords=()):
    elementwise = getattr(kernel, "elementwise", False)  # marked by its factory, below
    OPS[name] = Op(name, kernel, shape or _same_shape, vjp, broadcasting, elementwise, kink, selects, rewrite,
                   c, no_c, permutes, diagonal, pattern, notation, tuple(names), arity, build, taylor, rule,
                   tuple(keywords))


def function(name, kernel, vjp, arity=1, aliases=(), notation=CALL, **facts):
    """An operation users call by its own name (written so in formulas), and by its
    aliases (NumPy's and JAX's other names for it); its derivative is its table
    entry, unless facts name another rule."""
    facts.setdefault("rule", TABLE)
    defop(name, kernel, vjp, names=(name, *aliases), arity=arity, notation=notation, **facts)


def elementwise(f):
    """A kernel factory for an operation that maps entry to entry (with broadcasting);
    marked, so that defop records the operation as elementwise."""
    def kernel(node):
        return f
    kernel.elementwise = True
    return kernel


def value_axes(shape) -> tuple[int, ...]:
    return tuple(range(-len(shape), 0))


def _same_shape(shapes, attr):
    return shapes[0]


def _attr_shape(shapes, attr):
    return attr


# Graph-building helpers used by the vjp rules. Nodes know their graph.
def _builder(name):
    def build(*args, **attr):
        graph = next(a.graph for a in args if hasattr(a, "graph"))
        return graph.apply(name, args, attr.get("attr"))
    build.__name__ = name
    return build


class _GraphOps:
    """vjp rules write G.cos(x), G.where(c, a, b), G.index(g, attr=...): each call
    adds a node of that op to the graph of its arguments."""

    def __getattr__(self, name):
        return _builder(name)


G = _GraphOps()


def _reshape(x, shape):
    return G.reshape(x, attr=tuple(shape))


def _expand_as_reduced(g, x):
    """A cotangent of a full reduction, shaped to broadcast against x."""
    return _reshape(g, (1,) * len(x.shape))


# A reduction's attr: None (over the whole value, a scalar result), or (axes, keepdims)
# with axes the sorted, non-negative value axes it runs over (sum(A, axis=-1)).
def _reduce_axes(rank, attr):
    """The value axes a reduction runs over, counted from the end (batch axes lead)."""
    if attr is None:
        return tuple(range(-rank, 0))
    return tuple(a - rank for a in attr[0])


def _keeps(attr) -> bool:
    return attr is not None and attr[1]


def _reduced_shape(shapes, attr):
    if attr is None:
        return ()
    axes, keepdims = attr
    return tuple(1 if i in axes else n for i, n in enumerate(shapes[0]) if keepdims or i not in axes)


def _kept_shape(shape, attr):
    """The result's shape with the reduced axes kept as 1s: it broadcasts against x."""
    axes = range(len(shape)) if attr is None else attr[0]
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand_reduced(g, x, attr):
    """A cotangent (or value) of a reduction of x, shaped to broadcast against x."""
    return _reshape(g, _kept_shape(x.shape, attr))


def _axes_text(axes) -> str:
    return str(axes[0]) if len(axes) == 1 else "(" + ", ".join(map(str, axes)) + ")"


def _reduction_arguments(node, texts):
    """sum(x, axis=1, keepdims=True) as the node's attr says (the parser reads it back)."""
    if node.attr is None:
        return texts
    axes, keepdims = node.attr
    return texts + [f"axis={_axes_text(axes)}"] + (["keepdims=True"] if keepdims else [])


def _cumsum(x, reverse):
    return G.cumsum(x, attr=reverse)


# ---------------------------------------------------------------- numerics


def _sigmoid(a):
    # Two branches so that neither exp overflows: exact to rounding everywhere.
    out = np.empty(np.shape(a))
    positive = a >= 0
    z = np.exp(-np.abs(a))
    np.divide(1.0, 1.0 + z, out=out, where=positive)
    np.divide(z, 1.0 + z, out=out, where=~positive)
    return out


def _zero_dominant(f, either=False):
    """f, except that a zero first operand (or, for products, either) gives 0
    where f would give nan or inf."""
    def kernel(a, b):
        out = f(a, b)
        bad = ~np.isfinite(out)
        if bad.any():
            zero = (a == 0) | (b == 0) if either else (a == 0)
            out = np.where(bad & zero, 0.0, out)
        return out
    return kernel


def _to_float(f):
    return lambda a, b: f(a, b).astype(np.float64)


def _logsumexp_kernel(node):
    axes = _reduce_axes(len(node.args[0].shape), node.attr)
    keep = _keeps(node.attr)

    def logsumexp(a):
        m = np.max(a, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        s = np.sum(np.exp(a - m), axis=axes, keepdims=True)
        out = np.log(s) + m
        return out if keep else np.squeeze(out, axis=axes)
    return logsumexp


# softmax's attr: None (over the whole value, as scipy.special.softmax's default) or
# the sorted, non-negative value axes it normalises over.
def _softmax_axes(node):
    rank = len(node.shape)
    return value_axes(node.shape) if node.attr is None else tuple(a - rank for a in node.attr)


def _softmax_kernel(node):
    axes = _softmax_axes(node)

    def softmax(a):
        m = np.max(a, axis=axes, keepdims=True)
        e = np.exp(a - np.where(np.isfinite(m), m, 0.0))
        return e / np.sum(e, axis=axes, keepdims=True)
    return softmax


def _reduction_kernel(f):
    def kernel(node):
        axes = _reduce_axes(len(node.args[0].shape), node.attr)
        if not _keeps(node.attr):
            return lambda a: f(a, axis=axes)
        return lambda a: f(a, axis=axes, keepdims=True)
    return kernel


def _norm(a, axis, keepdims=False):
    return np.sqrt(np.sum(np.square(a), axis=axis, keepdims=keepdims))


def _cumulative(f):
    def kernel(node):
        axis = -len(node.shape)
        if node.attr:  # reversed: accumulate from the end of the leading value axis
            return lambda a: np.flip(f(np.flip(a, axis), axis=axis), axis)
        return lambda a: f(a, axis=axis)
    return kernel


def _matmul_kernel(node):
    a, b = (len(arg.shape) for arg in node.args)
    if a == 2 and b == 2:
        return np.matmul
    if a == 2 and b == 1:
        return lambda x, y: np.matmul(x, y[..., None])[..., 0]
    if a == 1 and b == 2:
        return lambda x, y: np.matmul(x[..., None, :], y)[..., 0, :]
    if a == 1 and b == 1:
        return lambda x, y: np.einsum("...i,...i->...", x, y)
    return _batched_matmul(a, b)


def _batched_matmul(ra, rb):
    """NumPy's matmul on the value axes: vectors promoted to one-row or one-column
    matrices, and the value batch axes padded to one rank after the points' batch
    axes, so that broadcasting lines up batch with batch and value with value."""
    r1, r2 = max(ra, 2), max(rb, 2)
    rank = max(r1, r2)

    def pad(v, r):
        start = v.ndim - r
        return np.expand_dims(v, tuple(range(start, start + rank - r))) if r < rank else v

    def matmul(x, y):
        x = x[..., None, :] if ra == 1 else x
        y = y[..., :, None] if rb == 1 else y
        out = np.matmul(pad(x, r1), pad(y, r2))
        if rb == 1:
            out = out[..., 0]
        return out[..., 0, :] if ra == 1 else out
    return matmul


def _matmul_shape(shapes, attr):
    a, b = shapes
    if not a or not b:
        raise ShapeMismatch("'@' needs vectors or arrays (use '*' for scalars)")
    inner = b[0] if len(b) == 1 else b[-2]
    if a[-1] != inner:
        raise ShapeMismatch(f"'@' needs the inner sizes to match: {describe(a)} @ {describe(b)}")
    try:
        batch = tuple(np.broadcast_shapes(a[:-2], b[:-2]))
    except ValueError:
        raise ShapeMismatch(f"'@' needs the batch axes to broadcast: {describe(a)} @ {describe(b)}") from None
    rows = a[-2:-1]  # none for a vector
    columns = b[-1:] if len(b) > 1 else ()
    return batch + rows + columns


def matmul_subscripts(ra: int, rb: int) -> tuple:
    """matmul of value ranks ra and rb as einsum subscripts (batch axes lettered from
    the end, as they broadcast)."""
    batch = "ABCDEFGHLMNOPQRSTUVWXYZ"[:max(ra, rb, 2) - 2]
    a = "j" if ra == 1 else batch[len(batch) - (ra - 2):] + "ij"
    b = "j" if rb == 1 else batch[len(batch) - (rb - 2):] + "jk"
    return (a, b), batch + ("i" if ra > 1 else "") + ("k" if rb > 1 else "")


def _matmul_vjp(g, ans, a, b):
    ra, rb = len(a.shape), len(b.shape)
    if ra <= 2 and rb <= 2:
        if ra == 1 and rb == 1:
            return g * b, g * a
        if ra == 2 and rb == 1:
            return _reshape(g, (-1, 1)) * _reshape(b, (1, -1)), G.matmul(G.transpose(a), g)
        if ra == 1 and rb == 2:
            return G.matmul(b, g), _reshape(a, (-1, 1)) * _reshape(g, (1, -1))
        return G.matmul(g, G.transpose(b)), G.matmul(G.transpose(a), g)
    return _einsum_cotangents(g, matmul_subscripts(ra, rb), (a, b))


def _transpose_kernel(node):
    k = len(node.shape)
    return lambda a: np.moveaxis(a, range(-k, 0), range(-1, -k - 1, -1))


def _trace_shape(shapes, attr):
    if len(shapes[0]) < 2:
        raise ShapeMismatch(f"trace needs a matrix or an array, got {describe(shapes[0])}")
    return shapes[0][2:]


# trace's attr: None, or the offset of the diagonal it sums (NumPy's offset=); over
# the first two value axes, as NumPy's default axis1=0, axis2=1.
def _trace_kernel(node):
    rank, offset = len(node.args[0].shape), node.attr or 0
    return lambda a: np.trace(a, offset=offset, axis1=-rank, axis2=1 - rank)


def _user_trace(graph, args, span, options=None):
    options = options or {}
    offset = options["offset"].value if "offset" in options else 0
    return graph.apply("trace", args, offset or None, span=span)


def _trace_vjp(g, ans, a):
    n, m = a.shape[:2]
    rest = (1,) * (len(a.shape) - 2)
    eye = a.graph.const(np.eye(n, m, k=ans.attr or 0).reshape((n, m) + rest))
    return (_reshape(g, (1, 1) + ans.shape) * eye,)


# ---------------------------------------------------------------- einsum

# attr: (subscripts of each operand, subscripts of the result), letters only; the
# points' batch axes are an ellipsis in front of every operand (language/arrays.py
# writes users' subscripts so, '...' included).
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _einsum_sizes(shapes, attr) -> dict:
    ins, out = attr
    sizes: dict[str, int] = {}
    for k, (letters, shape) in enumerate(zip(ins, shapes), start=1):
        if len(letters) != len(shape):
            raise ShapeMismatch(f"einsum: operand {k} is {describe(shape)} but its subscripts '{letters}' "
                                f"name {len(letters)} axes")
        own: dict[str, int] = {}
        for letter, n in zip(letters, shape):
            if own.setdefault(letter, n) != n:
                raise ShapeMismatch(f"einsum: operand {k} repeats '{letter}' on axes of sizes {own[letter]} "
                                    f"and {n}")
            known = sizes.get(letter)
            if known is None or known == 1:
                sizes[letter] = n
            elif n not in (1, known):
                raise ShapeMismatch(f"einsum: '{letter}' is {known} in one operand and {n} in operand {k}")
    for letter in out:
        if letter not in sizes:
            raise ShapeMismatch(f"einsum: the result's '{letter}' is in no operand")
    return sizes


def _einsum_shape(shapes, attr):
    if len(shapes) != len(attr[0]):
        raise ShapeMismatch(f"einsum: the subscripts name {len(attr[0])} operands, given {len(shapes)}")
    sizes = _einsum_sizes(shapes, attr)
    return tuple(sizes[letter] for letter in attr[1])


def einsum_text(attr) -> str:
    return ",".join(attr[0]) + "->" + attr[1]


def _einsum_kernel(node):
    ins, out = node.attr
    spec = ",".join("..." + s for s in ins) + "->..." + out
    # A contraction order (and BLAS) pays for its planning only on larger operands.
    optimize = len(ins) > 2 or sum(a.size for a in node.args) > 4096
    if len(ins) == 1:  # one operand: np.einsum may answer a view of it
        return lambda a: np.array(np.einsum(spec, a))
    return lambda *arrays: np.einsum(spec, *arrays, optimize=optimize)


def _einsum_vjp(g, ans, *operands):
    return _einsum_cotangents(g, ans.attr, operands)


def _einsum_cotangents(g, attr, operands):
    """The cotangent of each operand is itself an einsum: of g and the other operands,
    onto that operand's subscripts. A letter an operand repeats (a diagonal) is
    spread back by an identity; a letter only it has (summed away) by ones; an
    axis it broadcast from size 1 is summed back (sum_to)."""
    ins, out = attr
    sizes = _einsum_sizes([x.shape for x in operands], attr)
    unused = iter(c for c in LETTERS if c not in sizes)
    graph = g.graph
    cotangents = []
    for k, x in enumerate(operands):
        if x.op == "const":
            cotangents.append(None)
            continue
        terms = [(g, out)] + [(y, s) for j, (y, s) in enumerate(zip(operands, ins)) if j != k]
        target, seen = [], set()
        for letter in ins[k]:
            if letter in seen:
                fresh = next(unused)
                terms.append((graph.const(np.eye(sizes[letter])), letter + fresh))
                target.append(fresh)
            else:
                seen.add(letter)
                target.append(letter)
        present = set("".join(s for _, s in terms))
        terms += [(graph.const(np.ones(sizes[c])), c) for c in sorted(seen - present)]
        cotangent = G.einsum(*(t for t, _ in terms), attr=(tuple(s for _, s in terms), "".join(target)))
        if cotangent.shape != x.shape:  # x broadcast from 1 (summed back), or the others did (spread)
            smaller = tuple(min(n, m) for n, m in zip(cotangent.shape, x.shape))
            if smaller != cotangent.shape:
                cotangent = G.sum_to(cotangent, attr=smaller)
            if smaller != x.shape:
                cotangent = G.broadcast_to(cotangent, attr=x.shape)
        cotangents.append(cotangent)
    return tuple(cotangents)


def _stack_shape(shapes, attr):
    first = shapes[0]
    for i, s in enumerate(shapes[1:], start=2):
        if s != first:
            raise ShapeMismatch(f"ragged array literal: element {i} is {describe(s)}"
                                f" but element 1 is {describe(first)}")
    return (len(shapes),) + first


def _stack_kernel(node):
    axis = -len(node.shape)
    return lambda *arrays: np.stack(np.broadcast_arrays(*arrays), axis=axis)


def _stack_vjp(g, ans, *items):
    return tuple(G.index(g, attr=(i,)) for i in range(len(items)))


# Index items: an int (already in range and non-negative) or a (start, stop, step) slice.
def _index_key(items, rank):
    key = tuple(i if isinstance(i, int) else slice(*i) for i in items)
    return (Ellipsis,) + key + (slice(None),) * (rank - len(items))


def _index_shape(shapes, items):
    shape = shapes[0]
    out = []
    for n, item in zip(shape, items):
        if not isinstance(item, int):
            out.append(len(range(n)[slice(*item)]))
            if out[-1] == 0:  # nothing to differentiate, and max/min/prod of it are undefined
                raise ShapeMismatch(f"this slice of an axis of size {n} is empty")
    return tuple(out) + shape[len(items):]


def _index_kernel(node):
    key = _index_key(node.attr, len(node.args[0].shape))
    return lambda a: a[key]


def _scatter_kernel(node):
    items, shape = node.attr
    key = _index_key(items, len(shape))
    rank = len(node.args[0].shape)

    def scatter(g):
        out = np.zeros(g.shape[:g.ndim - rank] + shape)
        out[key] = g
        return out
    return scatter


def _scatter_sum_kernel(node):
    """scatter(a1) + scatter(a2) + ... into one array: a variable's cotangent
    gathered from several slices of it (x[1:] and x[:-1]) in one pass each."""
    parts, shape = node.attr
    keys = [_index_key(items, len(shape)) for items in parts]
    ranks = [len(a.shape) for a in node.args]
    outside = outside_box(parts[0], shape)

    def scatter_sum(*values, out=None):
        leads = [v.shape[:v.ndim - r] for v, r in zip(values, ranks)]
        lead = leads[0] if leads.count(leads[0]) == len(leads) else np.broadcast_shapes(*leads)
        if out is None or out.shape != lead + shape:
            out = np.empty(lead + shape)
        if outside is None:
            out[...] = 0.0
            first = 0
        else:
            # Written, not added to zeros: 0 + a (as add(scatter(a), ...) makes it)
            # straight into its place, and zeros only around it.
            place = out[keys[0]]
            np.add(values[0], 0.0, out=place)
            for key in outside:
                out[key] = 0.0
            first = 1
        for key, v in zip(keys[first:], values[first:]):
            place = out[key]
            np.add(place, v, out=place)  # then + b: the additions add(scatter(a), scatter(b)) makes
        return out
    scatter_sum.writes_into = True  # takes out=, as a ufunc does (evaluate.py)
    return scatter_sum


def outside_box(items, shape) -> list | None:
    """Keys that together cover every entry of an array of this shape outside the
    slice items (None unless items are unit-step slices: a box)."""
    ranges = []
    for n, item in zip(shape, items):
        if isinstance(item, int) or item[2] not in (None, 1):
            return None
        found = range(n)[slice(*item)]
        ranges.append((found.start, found.stop) if found else (0, 0))
    keys, inside = [], []
    for n, (low, high) in zip(shape, ranges):
        for outer in (slice(0, low), slice(high, n)):
            if outer.stop > outer.start:
                keys.append((Ellipsis, *inside, outer) + (slice(None),) * (len(shape) - len(inside) - 1))
        inside.append(slice(low, high))
    return keys


def _reshape_kernel(node):
    rank, shape = len(node.args[0].shape), node.shape
    return lambda a: a.reshape(a.shape[:a.ndim - rank] + shape)


def _reshape_shape(shapes, attr):
    return tuple(int(s) for s in np.empty(shapes[0], dtype=np.bool_).reshape(attr).shape)


def _broadcast_to_kernel(node):
    rank, shape = len(node.shape), node.shape
    return lambda a: np.broadcast_to(a, a.shape[:a.ndim - rank] + shape)


# Its result is a view of its argument: it holds no memory of its own (evaluate.py's
# memory estimate counts it so).
_broadcast_to_kernel.returns_view = True


def _sum_to_kernel(node):
    source, target = node.args[0].shape, node.shape
    axes = tuple(i - len(source) for i, (s, t) in enumerate(zip(source, target)) if t == 1 and s != 1)
    return lambda a: np.sum(a, axis=axes, keepdims=True)


# ---------------------------------------------------------------- moving entries by constant positions


class Positions:
    """A gather's constant map, as a hashable attribute: for each result entry, its
    entry in the sources flattened one after another, or -1 for a zero. sources: the
    value shapes of the operands (of a gather), or the one shape a gather_t fills."""

    __slots__ = ("_key", "positions", "sources")

    def __init__(self, positions, sources):
        positions = np.array(positions, dtype=np.int64)
        positions.flags.writeable = False
        self.positions = positions
        self.sources = tuple(tuple(int(n) for n in shape) for shape in sources)
        self._key = (self.sources, positions.shape, positions.tobytes())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return type(other) is Positions and self._key == other._key

    def __repr__(self):
        return f"Positions({self.positions.shape} from {self.sources})"

    def offsets(self) -> list[int]:
        sizes = [math.prod(shape) for shape in self.sources]
        return [sum(sizes[:i]) for i in range(len(sizes))]

    def part(self, i: int) -> Positions:
        """The positions that read source i, numbered within it (-1 elsewhere)."""
        start = self.offsets()[i]
        inside = (self.positions >= start) & (self.positions < start + math.prod(self.sources[i]))
        return Positions(np.where(inside, self.positions - start, -1), (self.sources[i],))


def _gather_shape(shapes, attr):
    if tuple(shapes) != attr.sources:  # built by the functions that made the map, for these shapes
        raise ShapeMismatch(f"entries moved from {attr.sources}, given {tuple(shapes)}")
    return attr.positions.shape


def _gather_kernel(node):
    ranks = [len(shape) for shape in node.attr.sources]
    flat = node.attr.positions.ravel()
    shape = node.attr.positions.shape
    zeros = bool((flat < 0).any())  # -1 reads a zero put after the last entry

    def gather(*arrays):
        leads = [a.shape[:a.ndim - r] for a, r in zip(arrays, ranks)]
        lead = leads[0] if leads.count(leads[0]) == len(leads) else np.broadcast_shapes(*leads)
        if len(arrays) == 1 and not zeros:
            source = arrays[0].reshape(lead + (-1,))
        else:
            parts = [np.broadcast_to(a, lead + a.shape[a.ndim - r:]).reshape(lead + (-1,))
                     for a, r in zip(arrays, ranks)]
            if zeros:
                parts.append(np.zeros(lead + (1,)))
            source = np.concatenate(parts, axis=-1)
        # C order whatever the leading axes (NumPy may lay out a[..., idx] otherwise), so
        # that a sum over it adds in the same order at one point and in a batch
        return np.ascontiguousarray(source[..., flat]).reshape(lead + shape)
    return gather


def _gather_vjp(g, ans, *sources):
    cotangents = []
    for i, x in enumerate(sources):
        part = ans.attr.part(i)
        useless = x.op == "const" or not (part.positions >= 0).any()
        cotangents.append(None if useless else G.gather_t(g, attr=part))
    return tuple(cotangents)


def _gather_t_kernel(node):
    """The transpose of a gather from one source: each entry of g added into the
    entry it was read from (np.add.at where an entry was read more than once)."""
    (target,) = node.attr.sources
    size = math.prod(target)
    flat = node.attr.positions.ravel()
    read = np.flatnonzero(flat >= 0)
    into = flat[read]
    once = len(np.unique(into)) == len(into)
    rank = len(node.args[0].shape)

    def gather_t(g):
        lead = g.shape[:g.ndim - rank]
        rows = math.prod(lead)
        values = g.reshape((rows, -1))[:, read]
        out = np.zeros((rows, size))
        if once:
            out[:, into] = values
        else:
            np.add.at(out, (slice(None), into), values)
        return out.reshape(lead + target)
    return gather_t


def _take_along_axis_kernel(node):
    axis = node.attr

    def take_along_axis(v, order):
        v, order = np.broadcast_arrays(v, order)
        return np.take_along_axis(v, order.astype(np.intp), axis)
    return take_along_axis


def _take_along_axis_shape(shapes, attr):
    if shapes[0] != shapes[1]:
        raise ShapeMismatch(f"take_along_axis needs indices of the array's shape: {describe(shapes[0])} "
                            f"and {describe(shapes[1])}")
    return shapes[0]


def _ties_along_axis(node):
    """1.0 where two entries of argsort's argument are equal (neighbours once sorted)."""
    x, axis = node.args[0], node.attr
    if x.shape[axis] < 2:
        return node.graph.const(0.0)
    ordered = G.take_along_axis(x, node, attr=axis)
    before = ((None, None, None),) * (len(x.shape) + axis)
    return G.eq(G.index(ordered, attr=before + ((1, None, None),)), G.index(ordered, attr=before + ((0, -1, None),)))


# ---------------------------------------------------------------- Taylor rules of the operations above
# (series: (K+1,) + batch + value shape; a constant's leading axis has length 1;
# every kernel here broadcasts the leading axes, so the coefficient axis rides along.)


def _multilinear_taylor(node, kernel):
    """einsum: linear in each operand, so c_k is the sum over j_1 + ... + j_m = k of the
    kernel on the varying operands' coefficients j_1 ... j_m (the constants' own
    coefficient 0 throughout): the truncated convolution of m series."""
    def rule(*args):
        varying = [i for i, a in enumerate(args) if not series.is_constant(a)]
        if len(varying) <= 1:  # linear: the kernel on the stacked coefficients
            return kernel(*args)
        n = max(args[i].shape[0] for i in varying)
        full = [series.full(a, n) if i in varying else a for i, a in enumerate(args)]
        first = kernel(*(a[:1] for a in full))
        out = np.zeros((n,) + first.shape[1:])
        for k in range(n):
            for split in _compositions(k, len(varying)):
                operands = list(full)
                for i, j in zip(varying, split):
                    operands[i] = full[i][j:j + 1]
                out[k] += kernel(*operands)[0]
        return out
    return rule


def _compositions(k: int, parts: int):
    """Every way to write k as an ordered sum of parts non-negative integers."""
    if parts == 1:
        yield (k,)
        return
    for first in range(k + 1):
        for rest in _compositions(k - first, parts - 1):
            yield (first,) + rest


def _value_as_evaluated(factory):
    """A rule whose coefficient 0 is the kernel on the values alone: a sum over axes
    (einsum, trace, BLAS) may round differently with the coefficient axis in front,
    and coefficient 0 must be the value evaluation gives, bit for bit."""
    def taylor(node, kernel):
        rule = factory(node, kernel)

        def exact(*args):
            out = rule(*args)
            out[0] = kernel(*(np.ascontiguousarray(a[0]) for a in args))
            return out
        return exact
    return taylor


def _take_along_axis_taylor(node, kernel):
    """Linear in v with the permutation fixed (argsort's series is its value, then zeros)."""
    def rule(v, order):
        return kernel(v, order[:1])
    return rule


def _nan_to_num_taylor(node, kernel):
    """x's own series where x is finite (derivative 1), the constant elsewhere."""
    def rule(x):
        out = np.where(np.isfinite(x[0]), x, 0.0)
        out[0] = kernel(x[0])
        return out
    return rule


def _nan_to_num_vjp(g, ans, x):
    # 1 where x is finite; nan and +-inf become constants
    return (G.where(G.lt(G.abs(x), math.inf), g, 0.0),)


def _cumprod_vjp(g, ans, x):
    # grad_i = (prod_{k<i} x_k) * S_i with S_i = g_i + x_{i+1} S_{i+1}: no division,
    # so exact when entries are zero, and a polynomial, so its own derivatives are
    # right too (the rcumsum(g * ans) / x shortcut is neither).
    first = np.zeros(x.shape)
    first[0] = 1.0
    before = _shift(ans, 1) + first
    return (before * G.linscan(g, _shift(x, -1), attr=True),)


def _shift(v, by):
    """v moved along its leading axis by +1 (towards the end) or -1, zero-filled."""
    n = v.shape[0]
    if n == 1:
        return v * 0.0
    source, target = ((0, n - 1, None), (1, n, None)) if by > 0 else ((1, n, None), (0, n - 1, None))
    return G.scatter(G.index(v, attr=(source,)), attr=((target,), v.shape))


def _linscan_kernel(node):
    """S_i = h_i + a_i S_{i+1} from the end (attr True), or T_i = h_i + a_i T_{i-1}
    from the start, along the leading value axis: a loop over that axis, each step
    vectorised over the batch."""
    axis = -len(node.shape)
    backwards = node.attr

    def linscan(h, a):
        h, a = np.broadcast_arrays(h, a)
        h, a = np.moveaxis(h, axis, 0), np.moveaxis(a, axis, 0)
        out = np.empty(h.shape)
        steps = range(len(h) - 1, -1, -1) if backwards else range(len(h))
        previous = None
        for i in steps:
            out[i] = h[i] if previous is None else h[i] + a[i] * out[previous]
            previous = i
        return np.moveaxis(out, 0, axis)
    return linscan


def _linscan_vjp(c, ans, h, a):
    # The scan solves a bidiagonal system; its transpose is the scan the other way
    # with the coefficients shifted by one.
    backwards = ans.attr
    if backwards:  # S_i = h_i + a_i S_{i+1}
        u = G.linscan(c, _shift(a, 1), attr=False)
        return u, u * _shift(ans, -1)
    v = G.linscan(c, _shift(a, -1), attr=True)  # T_i = h_i + a_i T_{i-1}
    return v, v * _shift(ans, 1)


def _pow_kernel(node):
    # Constant small exponents are common (x^2, x^-1) and np.power does not
    # take its fast paths for a 0-d exponent array: pick the ufunc up front. These
    # are the correctly rounded (or exactly equal) results np.power gives.
    exponent = node.args[1].scalar if node.args[1].op == "const" else None
    if exponent == 2.0:
        return lambda a, b: np.square(a)
    if exponent == 1.0:
        return lambda a, b: a
    if exponent == -1.0:
        return lambda a, b: np.reciprocal(a)
    return np.power


_pow_kernel.elementwise = True


def _pow_vjp(g, ans, a, b):
    return _pow_base_vjp(g, a, b), _pow_exponent_vjp(g, ans, a, b)


def _pow_base_vjp(g, a, b):
    """d/da a**b = b a**(b-1), and 0 where b == 0, as PyTorch (pow_backward_self) and
    autograd: a**0 is 1 for every a, while the formula gives 0 * 0**-1 = nan at a = 0.
    The where makes every higher derivative zero-dominant there too (x^2 at 0: order
    3 is 0, not 2 * 1 * 0 * 0**-1)."""
    if a.op == "const":
        return None  # a constant needs no cotangent
    if b.op == "const" and b.value.all():
        return g * b * a ** (b - 1.0)
    if b.op == "const" and not b.value.any():
        return None
    # Only where a is 0 too: elsewhere the formula is finite, and a where on b alone
    # would cut the derivative b' a^(b-1) of the next order wherever b passes 0
    # (x^y at y = 2: the fourth derivative's a^(b-2) term).
    return G.where(G.mul(G.eq(b, 0.0), G.eq(a, 0.0)), 0.0, g * b * a ** (b - 1.0))


def _pow_exponent_vjp(g, ans, a, b):
    """d/db a**b = log(a) a**b, and 0 where a == 0 and b >= 0 (0**b is 0 for every
    b > 0): PyTorch's pow_backward_exponent, which JAX agrees with for b >= 0. At a = 0
    with b < 0 it is log(0) * inf = -inf (for a = +0), the limit as a -> +0, as PyTorch."""
    if b.op == "const":
        return None
    if a.op == "const" and a.value.all():
        return g * (G.log(a) * ans)
    at_zero = G.mul(G.eq(a, 0.0), G.ge(b, 0.0))
    # log(1) in the branch not taken: no -inf is made there, nor warned about
    return g * G.where(at_zero, 0.0, G.log(G.where(at_zero, 1.0, a)) * ans)


def _extreme_vjp(g, ans, x):
    tied = G.eq(x, _expand_reduced(ans, x, ans.attr))
    share = _expand_reduced(g / G.sum(tied, attr=ans.attr), x, ans.attr)
    return (G.where(tied, share, 0.0),)


def _pairwise_extreme_vjp(first, second):
    # where(), not g * mask: the side not selected gets exactly 0 even if g is nan.
    def vjp(g, ans, a, b):
        tie = G.eq(a, b)
        half = g * 0.5
        return (G.where(first(a, b), g, G.where(tie, half, 0.0)),
                G.where(second(a, b), g, G.where(tie, half, 0.0)))
    return vjp


def _nan_ignoring_extreme_vjp(first):
    # As maximum's, except that a nan loses: fmax(a, nan) is a, so a gets g there.
    def vjp(g, ans, a, b):
        tie = G.eq(a, b)
        half = g * 0.5
        return (G.where(G.where(G.ne(b, b), 1.0, first(a, b)), g, G.where(tie, half, 0.0)),
                G.where(G.where(G.ne(a, a), 1.0, first(b, a)), g, G.where(tie, half, 0.0)))
    return vjp


# sinc'(x) = (cos(pi x) - sinc(x)) / x, which is 0 / 0 at 0 and loses digits near it:
# there (|x| < 1/4) its Taylor series, sum over k >= 1 of (-1)^k 2k pi^2k x^(2k-1) / (2k+1)!,
# to 10 terms (the 11th is below 1e-20 of the first), exact at 0 at every order the
# series reaches; the quotient's operand is kept away from 0 in the branch not taken.
_SINC_SERIES = tuple((-1) ** k * 2 * k * math.pi ** (2 * k) / math.factorial(2 * k + 1) for k in range(1, 11))


def _sinc_slope(x):
    x2 = x * x
    small = G.lt(x2, 0.0625)
    series = x2 * _SINC_SERIES[-1] + _SINC_SERIES[-2]
    for c in reversed(_SINC_SERIES[:-2]):
        series = series * x2 + c
    safe = G.where(small, 1.0, x)
    quotient = (G.cos(math.pi * safe) - G.sinc(safe)) / safe
    return G.where(small, series * x, quotient)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_SQRT_PI_OVER_TWO = math.sqrt(math.pi) / 2.0
_SPECIAL = "scipy.special's kernel, which no C expression here reproduces"


def _special(name):
    """A scipy.special ufunc as a kernel: scipy (about 0.1 s) is imported when a plan
    needs it, never when diffcli starts."""
    def kernel(node):
        import scipy.special

        return getattr(scipy.special, name)
    kernel.elementwise = True
    return kernel


def _polygamma_kernel(node):
    import scipy.special

    order = node.attr
    return lambda a: scipy.special.polygamma(order, a)


_polygamma_kernel.elementwise = True


def _user_polygamma(graph, args, span):
    """polygamma(n, x) as scipy.special writes it: n a constant integer >= 0 (the
    order of the derivative of digamma), which is the operation's attr."""
    n, x = args
    if n.op != "const" or n.shape or not (0 <= float(n.value) < 2 ** 31 and float(n.value) == int(n.value)):
        raise ExpressionError("polygamma(n, x) needs n a constant integer >= 0", span)
    order = int(n.value)
    return graph.apply("digamma", (x,), span=span) if order == 0 else graph.apply("polygamma", (x,), order, span=span)


def _norm_vjp(g, ans, x):
    nonzero = G.where(G.eq(ans, 0.0), 1.0, ans)
    return (_expand_reduced(g / nonzero, x, ans.attr) * x,)


def _logsumexp_vjp(g, ans, x):
    return (_expand_reduced(g, x, ans.attr) * G.exp(x - _expand_reduced(ans, x, ans.attr)),)


def _softmax_vjp(g, ans, x):
    if ans.attr is None:
        return (ans * (g - _expand_as_reduced(G.sum(g * ans), x)),)
    return (ans * (g - G.sum(g * ans, attr=(ans.attr, True))),)


def _sum_vjp(g, ans, x):
    return (G.broadcast_to(_expand_reduced(g, x, ans.attr), attr=x.shape),)


def _no_derivative(g, ans, *args):
    return (None,) * len(args)


LN2, LN10 = math.log(2.0), math.log(10.0)

# ---------------------------------------------------------------- kinks
#
# Where an operation is not differentiable: its Kink's condition(node) is a node
# that is 1.0 there (per element, or per point for reductions). diffcli answers with
# the subgradient the rules use, and says so; --kink nan puts nan there instead.


def _at_zero(node):
    return G.eq(node.args[0], 0.0)


def _at_integers(node):
    return G.eq(node.args[0], node)


def _tied(node):
    x = node.args[0]
    return _kink_frame(G.gt(G.sum(G.eq(x, _expand_reduced(node, x, node.attr)), attr=node.attr), 1.0), node)


def _kink_frame(condition, node):
    """A reduction's kink condition along axes, its reduced axes kept as 1s so that
    it broadcasts against the operand (autodiff.py lays the cotangent out alike)."""
    return condition if node.attr is None else _expand_reduced(condition, node.args[0], node.attr)


def _on_boundary(node):
    return G.eq(node.args[0], node.args[1])


def _where_on_boundary(node):
    condition = node.args[0]
    if condition.op in OPS and OPS[condition.op].compares:
        return _on_boundary(condition)
    return G.mul(condition, 0.0)  # a condition that is not a comparison has no boundary to sit on


_PYTORCH = ", as PyTorch does"


def _one_sided(name, slopes):
    return Kink(_at_zero, f"{name} is not differentiable at 0 (one-sided derivatives {slopes})",
                "using 0" + _PYTORCH)


def _jump(condition, what):
    return Kink(condition, what, "using the derivative 0")


def _pairwise_kink(name):
    return Kink(_on_boundary, f"{name} of two equal values (one-sided derivatives 0 and 1 for each)",
                "giving half to each" + _PYTORCH)


def _ties_kink(name):
    return Kink(_tied, f"{name} of tied elements", "sharing the derivative evenly among them" + _PYTORCH)


def _comparison(f, symbol, precedence=COMPARE):
    return {"kernel": elementwise(_to_float(f)), "vjp": _no_derivative, "broadcasting": True,
            "kink": Kink(_on_boundary, f"'{symbol}' is exactly on its boundary (both sides equal), where "
                                       f"its value jumps", "derivatives through it use the side it chose"),
            "c": C(f"{{a}} {symbol} {{b}} ? 1.0 : 0.0", True), "notation": Infix(symbol, precedence, (symbol,)),
            "taylor": series.constant_rule,
            "rule": f"piecewise constant: (u {symbol} v)' = 0 (it jumps where u = v)"}


# ---------------------------------------------------------------- facts for the other layers

def _pow_c(node):
    """pow's kernel's fast paths for a constant exponent, which are exact; other
    exponents are np.power's own."""
    exponent = node.args[1]
    return _EXACT_POWERS.get(exponent.scalar) if exponent.op == "const" else None


_EXACT_POWERS = {2.0: "{a} * {a}", 1.0: "{a}", -1.0: "1.0 / {a}"}


def _library(name):
    return C(f"{name}({{a}})", False)


def _user_cumulative(name):
    """cumsum(x) and cumprod(x) as users write them: from the start of the leading axis,
    or along axis=, which is brought to the front and back by reshapes and transposes
    (they move numbers only, so the results are NumPy's)."""
    def build(graph, args, span, options=None):
        options = options or {}
        (x,) = args
        if not x.shape:
            raise ShapeError(f"{name} needs a vector or an array, not a scalar", span)
        axis = options.get("axis")
        (k,) = (0,) if axis is None else axes_option(axis, x.shape, name)
        if k == 0:
            return graph.apply(name, (x,), False, span=span)
        if k == len(x.shape) - 1:  # the leading axis of the transpose, which reverses the axes
            along = graph.apply(name, (graph.apply("transpose", (x,), span=span),), False, span=span)
            return graph.apply("transpose", (along,), span=span)
        return _along_middle_axis(graph, name, x, k, span)
    return build


def _along_middle_axis(graph, name, x, k, span):
    """x of shape before + rest (rest starting with axis k) as a (before, rest) matrix,
    transposed, is rest + (before,) with axis k leading: the scan runs there."""
    before, rest = math.prod(x.shape[:k]), x.shape[k:]
    flat = graph.reshape(x, (before, math.prod(rest)))
    leading = graph.reshape(graph.apply("transpose", (flat,), span=span), rest + (before,))
    along = graph.apply(name, (leading,), False, span=span)
    back = graph.apply("transpose", (graph.reshape(along, (math.prod(rest), before)),), span=span)
    return graph.reshape(back, x.shape)


def axes_option(option, shape, name, in_order=False) -> tuple[int, ...]:
    """The sorted (or as given), non-negative axes an axis= option names (an int or a
    tuple of them, negative counting from the end, as NumPy), or a ShapeError pointing at it."""
    rank = len(shape)
    given = option.value if isinstance(option.value, tuple) else (option.value,)
    axes = []
    for a in given:
        if not -rank <= a < rank:
            allowed = f"axes 0 to {rank - 1} or -{rank} to -1" if rank > 1 else "axis 0 or -1" if rank else "no axes"
            raise ShapeError(f"{name}: axis {a} is out of range for {describe(shape)} ({allowed})", option.span)
        axes.append(a % rank)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{name}: axis={option.value} names an axis twice", option.span)
    return tuple(axes) if in_order else tuple(sorted(axes))


def _reduction_attr(x, options, name):
    """None (the whole value, as without keywords) or (axes, keepdims)."""
    keepdims = options["keepdims"].value if "keepdims" in options else False
    axis = options.get("axis")
    axes = tuple(range(len(x.shape))) if axis is None else axes_option(axis, x.shape, name)
    if len(axes) == len(x.shape) and not keepdims:
        return None  # one node for sum(A) and sum(A, axis=(0, 1))
    return (axes, keepdims)


def _user_reduction(name):
    def build(graph, args, span, options=None):
        options = options or {}
        (x,) = args
        return graph.apply(name, (x,), _reduction_attr(x, options, name), span=span)
    return build


def _user_softmax(graph, args, span, options=None):
    options = options or {}
    (x,) = args
    attr = _reduction_attr(x, {"axis": options["axis"]} if "axis" in options else {}, "softmax")
    return graph.apply("softmax", (x,), None if attr is None else attr[0], span=span)


REDUCTION_KEYWORDS = (Param("axis", "axes", True), Param("keepdims", "flag"))


def _reduction(name, kernel, vjp, **facts):
    """A reduction users call name(x, axis=..., keepdims=...): over the whole value by default."""
    function(name, kernel, vjp, shape=_reduced_shape, pattern="probe", notation=Call(_reduction_arguments),
             build=_user_reduction(name), keywords=REDUCTION_KEYWORDS, **facts)


_NOT_WRITTEN = "no C form written: a NumPy step between the loops"

_PRODUCT = "product rule: (u v)' = u' v + u v'"
_QUOTIENT = "quotient rule: (u / v)' = (u' v - u v') / v^2"
_LINEAR = "linearity: the same rearrangement of u'"


def _pow_rule(node) -> str:
    base, exponent = node.args
    if exponent.op == "const":
        return "power rule: (u^n)' = n u^(n-1) u'"
    if base.op == "const":
        return "exponential rule: (a^u)' = log(a) a^u u'"
    return "general power rule: (u^v)' = u^v (v' log(u) + v u' / u)"

# ---------------------------------------------------------------- arithmetic

defop("add", elementwise(np.add), lambda g, ans, a, b: (g, g), broadcasting=True, rewrite=rewrites.add,
      c=C("{a} + {b}", True), diagonal="sum", notation=Infix("+", ADD, ("+",)), names=("add",), arity=2, taylor=series.linear, rule="sum rule: (u + v)' = u' + v'")
defop("sub", elementwise(np.subtract), lambda g, ans, a, b: (g, -g), broadcasting=True, rewrite=rewrites.sub,
      c=C("{a} - {b}", True), diagonal="sum", notation=Infix("-", ADD, ("-",)), names=("subtract",), arity=2, taylor=series.linear, rule="difference rule: (u - v)' = u' - v'")
defop("mul", elementwise(np.multiply), lambda g, ans, a, b: (g * b, g * a), broadcasting=True,
      rewrite=rewrites.mul, c=C("{a} * {b}", True), diagonal="product", notation=Infix("*", MUL, ("*",)),
      names=("multiply",), arity=2, taylor=series.bilinear, rule=_PRODUCT)
defop("div", elementwise(np.divide), lambda g, ans, a, b: (g / b, -(g * ans) / b), broadcasting=True,
      rewrite=rewrites.div, c=C("{a} / {b}", True), diagonal="quotient", notation=Infix("/", MUL, ("/",)),
      names=("divide", "true_divide"), arity=2, taylor=series.div_rule, rule=_QUOTIENT)
defop("pow", _pow_kernel, _pow_vjp, broadcasting=True, rewrite=rewrites.power_of_one, c=C(_pow_c, True),
      notation=Infix("^", POWER, ("**", "^")), names=("pow", "power"), arity=2, taylor=series.power_rule, rule=_pow_rule)
defop("neg", elementwise(np.negative), lambda g, ans, x: (-g,), rewrite=rewrites.neg, c=C("-{a}", True),
      diagonal="negation", notation=OWN, names=("negative",), arity=1, taylor=series.linear, rule="constant multiple rule: (-u)' = -u'")

# Zero-dominant products and quotients for cotangents that may hold zeros meaning
# "no contribution" (a branch of where not taken, a kink's subgradient): there
# 0 * inf and 0 / 0 are 0, so an untaken branch's nan or inf cannot leak out.
# Formulas write them as * and /: the same numbers wherever every value involved is finite.
defop("cmul", elementwise(_zero_dominant(np.multiply, either=True)),
      lambda c, ans, g, local: (G.cmul(c, local), G.cmul(c, g)), broadcasting=True, selects=True,
      c=C("cmul({a}, {b})", True), diagonal="zero_dominant_product", notation=Infix("*", MUL, ()), rule=_PRODUCT, taylor=series.zero_dominant_product)
defop("cdiv", elementwise(_zero_dominant(np.divide)),
      lambda c, ans, g, local: (G.cdiv(c, local), -G.cdiv(G.cmul(c, ans), local)), broadcasting=True,
      selects=True, c=C("cdiv({a}, {b})", True), notation=Infix("/", MUL, ()), rule=_QUOTIENT, taylor=series.zero_dominant_quotient)

# ---------------------------------------------------------------- elementwise functions

function("sin", elementwise(np.sin), lambda g, ans, x: (g * G.cos(x),), c=_library("sin"), taylor=series.SIN)
function("cos", elementwise(np.cos), lambda g, ans, x: (-(g * G.sin(x)),), c=_library("cos"), taylor=series.COS)
function("tan", elementwise(np.tan), lambda g, ans, x: (g * (1.0 + ans * ans),), c=_library("tan"), taylor=series.TAN)
function("asin", elementwise(np.arcsin), lambda g, ans, x: (g / G.sqrt(1.0 - x * x),), c=_library("asin"),
         aliases=("arcsin",), taylor=series.ASIN)
function("acos", elementwise(np.arccos), lambda g, ans, x: (-(g / G.sqrt(1.0 - x * x)),), c=_library("acos"),
         aliases=("arccos",), taylor=series.ACOS)
function("atan", elementwise(np.arctan), lambda g, ans, x: (g / (1.0 + x * x),), c=_library("atan"),
         aliases=("arctan",), taylor=series.ATAN)
function("sinh", elementwise(np.sinh), lambda g, ans, x: (g * G.cosh(x),), c=_library("sinh"), taylor=series.SINH)
function("cosh", elementwise(np.cosh), lambda g, ans, x: (g * G.sinh(x),), c=_library("cosh"), taylor=series.COSH)
function("tanh", elementwise(np.tanh), lambda g, ans, x: (g * (1.0 - ans * ans),), c=_library("tanh"), taylor=series.TANH)
function("asinh", elementwise(np.arcsinh), lambda g, ans, x: (g / G.sqrt(x * x + 1.0),), c=_library("asinh"),
         aliases=("arcsinh",), taylor=series.ASINH)
function("acosh", elementwise(np.arccosh),
         lambda g, ans, x: (g / (G.sqrt(x - 1.0) * G.sqrt(x + 1.0)),), c=_library("acosh"),
         aliases=("arccosh",), taylor=series.ACOSH)
function("atanh", elementwise(np.arctanh), lambda g, ans, x: (g / (1.0 - x * x),), c=_library("atanh"),
         aliases=("arctanh",), taylor=series.ATANH)
function("exp", elementwise(np.exp), lambda g, ans, x: (g * ans,), c=_library("exp"), taylor=series.EXP)
function("exp2", elementwise(np.exp2), lambda g, ans, x: (g * (ans * LN2),), c=_library("exp2"), taylor=series.EXP2)
function("expm1", elementwise(np.expm1), lambda g, ans, x: (g * (ans + 1.0),), c=_library("expm1"), taylor=series.EXPM1)
function("log", elementwise(np.log), lambda g, ans, x: (g / x,), c=_library("log"), aliases=("ln",), taylor=series.LOG)
function("log1p", elementwise(np.log1p), lambda g, ans, x: (g / (1.0 + x),), c=_library("log1p"), taylor=series.LOG1P)
function("log2", elementwise(np.log2), lambda g, ans, x: (g / (x * LN2),), c=_library("log2"), taylor=series.LOG2)
function("log10", elementwise(np.log10), lambda g, ans, x: (g / (x * LN10),), c=_library("log10"), taylor=series.LOG10)
function("sqrt", elementwise(np.sqrt), lambda g, ans, x: (g / (2.0 * ans),), c=C("sqrt({a})", True),
         kink=Kink(_at_zero, "sqrt is not differentiable at 0", "using the derivative from the right, +inf",
                   infinite=True), taylor=series.SQRT)
function("cbrt", elementwise(np.cbrt), lambda g, ans, x: (g / (3.0 * (ans * ans)),), c=_library("cbrt"), taylor=series.CBRT)
function("abs", elementwise(np.abs), lambda g, ans, x: (G.where(G.eq(x, 0.0), 0.0, g * G.sign(x)),),
         c=C("fabs({a})", True), kink=_one_sided("abs", "-1 and 1"), selects=True, aliases=("absolute", "fabs"), taylor=series.ABS)
function("sign", elementwise(np.sign), _no_derivative, no_c=_NOT_WRITTEN, kink=_jump(_at_zero, "sign jumps at 0"), taylor=series.constant_rule)
function("floor", elementwise(np.floor), _no_derivative, c=C("floor({a})", True),
         kink=_jump(_at_integers, "floor jumps at integers"), taylor=series.constant_rule)
function("ceil", elementwise(np.ceil), _no_derivative, c=C("ceil({a})", True),
         kink=_jump(_at_integers, "ceil jumps at integers"), taylor=series.constant_rule)
function("sigmoid", elementwise(_sigmoid), lambda g, ans, x: (g * (ans * (1.0 - ans)),),
         no_c="NumPy's two-branch kernel (_sigmoid) has no C form written", aliases=("logistic",), taylor=series.SIGMOID)
function("relu", elementwise(lambda a: np.maximum(a, 0.0)), lambda g, ans, x: (G.where(G.gt(x, 0.0), g, 0.0),),
         no_c="np.maximum's nan and signed-zero rules have no C form written",
         kink=_one_sided("relu", "0 and 1"), selects=True, taylor=series.RELU)
function("softplus", elementwise(lambda a: np.logaddexp(0.0, a)), lambda g, ans, x: (g * G.sigmoid(x),),
         no_c="np.logaddexp has no C library twin", taylor=series.SOFTPLUS)

# ---------------------------------------------------------------- binary functions

_BINARY_LIBRARY = "the probe checks one-argument C library functions only"
function("atan2", elementwise(np.arctan2),
         lambda g, ans, y, x: (g * x / (x * x + y * y), -(g * y) / (x * x + y * y)), arity=2,
         broadcasting=True, no_c=_BINARY_LIBRARY, aliases=("arctan2",), taylor=series.atan2_rule)
function("hypot", elementwise(np.hypot), lambda g, ans, a, b: (g * a / ans, g * b / ans), arity=2,
         broadcasting=True, no_c=_BINARY_LIBRARY, taylor=series.hypot_rule)
function("maximum", elementwise(np.maximum), _pairwise_extreme_vjp(G.gt, G.lt), arity=2, broadcasting=True,
         no_c="C's fmax drops a nan that np.maximum passes on", kink=_pairwise_kink("maximum"), selects=True, taylor=series.pairwise_extreme(np.greater))
function("minimum", elementwise(np.minimum), _pairwise_extreme_vjp(G.lt, G.gt), arity=2, broadcasting=True,
         no_c="C's fmin drops a nan that np.minimum passes on", kink=_pairwise_kink("minimum"), selects=True, taylor=series.pairwise_extreme(np.less))
function("where", elementwise(lambda c, a, b: np.where(c != 0, a, b)),
         lambda g, ans, c, a, b: (None, G.where(c, g, 0.0), G.where(c, 0.0, g)), arity=3,
         broadcasting=True, c=C("{a} != 0.0 ? {b} : {c}", True), selects=True,
         kink=Kink(_where_on_boundary, "the condition of where is exactly on its boundary (both sides "
                                       "of the comparison equal)", "differentiating the branch it chose"), taylor=series.where_rule)

# ---------------------------------------------------------------- NumPy's other functions (issue 19)

defop("mod", elementwise(np.mod), lambda g, ans, a, b: (g, -(g * G.floor(a / b))), broadcasting=True,
      kink=Kink(lambda node: G.eq(node, 0.0), "mod jumps where a is a multiple of b (its value falls back to 0)",
                "using the derivatives 1 and -floor(a/b) of the side it is on, as PyTorch does"),
      no_c="np.mod's sign fix-ups have no C form written", notation=Infix("%", MUL, ("%",)),
      names=("mod", "remainder"), arity=2, taylor=series.mod_rule,
      rule="remainder: (u % v)' = u' - floor(u / v) v' (away from its jumps)")
function("logaddexp", elementwise(np.logaddexp),
         lambda g, ans, a, b: (g * G.exp(a - ans), g * G.exp(b - ans)), arity=2, broadcasting=True,
         no_c=_BINARY_LIBRARY, taylor=series.logaddexp_rule("e"))
function("logaddexp2", elementwise(np.logaddexp2),
         lambda g, ans, a, b: (g * G.exp2(a - ans), g * G.exp2(b - ans)), arity=2, broadcasting=True,
         no_c=_BINARY_LIBRARY, taylor=series.logaddexp_rule(2))
function("fmax", elementwise(np.fmax), _nan_ignoring_extreme_vjp(G.gt), arity=2, broadcasting=True,
         no_c="C's fmax returns either zero of two signed zeros, np.fmax the first",
         kink=_pairwise_kink("fmax"), selects=True, taylor=series.pairwise_extreme(series.nan_losing(np.greater)))
function("fmin", elementwise(np.fmin), _nan_ignoring_extreme_vjp(G.lt), arity=2, broadcasting=True,
         no_c="C's fmin returns either zero of two signed zeros, np.fmin the first",
         kink=_pairwise_kink("fmin"), selects=True, taylor=series.pairwise_extreme(series.nan_losing(np.less)))
function("round", elementwise(np.rint), _no_derivative, no_c=_NOT_WRITTEN,
         kink=_jump(lambda node: G.eq(G.abs(node.args[0] - node), 0.5), "round jumps half-way between integers"),
         taylor=series.constant_rule)
function("sinc", elementwise(np.sinc), lambda g, ans, x: (g * _sinc_slope(x),), no_c=_NOT_WRITTEN,
         taylor=series.SINC)

# scipy.special's, imported when a plan first runs one (never when diffcli starts).
function("erf", _special("erf"), lambda g, ans, x: (g * (_TWO_OVER_SQRT_PI * G.exp(-(x * x))),),
         no_c=_SPECIAL, taylor=series.ERF)
function("erfc", _special("erfc"), lambda g, ans, x: (-(g * (_TWO_OVER_SQRT_PI * G.exp(-(x * x)))),),
         no_c=_SPECIAL, taylor=series.ERFC)
function("erfinv", _special("erfinv"), lambda g, ans, x: (g * (_SQRT_PI_OVER_TWO * G.exp(ans * ans)),),
         no_c=_SPECIAL, taylor=series.ERFINV)
function("lgamma", _special("gammaln"), lambda g, ans, x: (g * G.digamma(x),), no_c=_SPECIAL,
         aliases=("gammaln",), taylor=series.polygamma_family(-1))
function("digamma", _special("psi"), lambda g, ans, x: (g * G.polygamma(x, attr=1),), no_c=_SPECIAL,
         aliases=("psi",), taylor=series.polygamma_family(0))
function("polygamma", _polygamma_kernel, lambda g, ans, x: (g * G.polygamma(x, attr=ans.attr + 1),),
         no_c=_SPECIAL, arity=2, build=_user_polygamma,
         notation=Call(lambda node, texts: [str(node.attr)] + texts), taylor=series.polygamma_family(None))

# ---------------------------------------------------------------- comparisons (0.0 / 1.0)

defop("lt", **_comparison(np.less, "<"))
defop("le", **_comparison(np.less_equal, "<="))
defop("gt", **_comparison(np.greater, ">"))
defop("ge", **_comparison(np.greater_equal, ">="))
defop("eq", **_comparison(np.equal, "=="))
defop("ne", **_comparison(np.not_equal, "!="))

# ---------------------------------------------------------------- reductions over the whole value

# The ufuncs' reduce methods directly: np.sum and friends add microseconds of
# Python per call, which is most of the cost for one point.
_reduction("sum", _reduction_kernel(np.add.reduce), _sum_vjp, taylor=series.linear)
_reduction("max", _reduction_kernel(np.maximum.reduce), _extreme_vjp, rewrite=rewrites.identity_on_scalars,
           kink=_ties_kink("max"), selects=True, taylor=series.extreme_reduction)
_reduction("min", _reduction_kernel(np.minimum.reduce), _extreme_vjp, rewrite=rewrites.identity_on_scalars,
           kink=_ties_kink("min"), selects=True, taylor=series.extreme_reduction)
# norm(x) is the 2-norm (Frobenius for a matrix); norm(x, ord=...) is built by
# functions.py from sum, max, min and abs, which are exact compositions.
_reduction("norm", _reduction_kernel(_norm), _norm_vjp,
           kink=Kink(lambda n: _kink_frame(G.eq(n, 0.0), n), "norm is not differentiable at 0",
                     "using the subgradient 0" + _PYTORCH), taylor=series.norm_rule)
_reduction("logsumexp", _logsumexp_kernel, _logsumexp_vjp, taylor=series.logsumexp_rule)
function("softmax", _softmax_kernel, _softmax_vjp, pattern="probe",
         notation=Call(lambda node, texts: texts + ([] if node.attr is None else [f"axis={_axes_text(node.attr)}"])),
         build=_user_softmax, keywords=(Param("axis", "axes", True),), taylor=series.softmax_rule)

# ---------------------------------------------------------------- along the leading value axis

defop("cumsum", _cumulative(np.cumsum), lambda g, ans, x: (_cumsum(g, not ans.attr),), pattern="probe",
      rewrite=rewrites.identity_on_scalars, diagonal="cumulative_sum", notation=OWN,
      names=("cumsum",), arity=1, build=_user_cumulative("cumsum"), keywords=(Param("axis", "int", True),), taylor=series.linear, rule="linearity: cumsum(u)' = cumsum(u')")
defop("cumprod", _cumulative(np.cumprod), _cumprod_vjp, pattern="probe", rewrite=rewrites.identity_on_scalars,
      notation=CALL, names=("cumprod",), arity=1, build=_user_cumulative("cumprod"),
      keywords=(Param("axis", "int", True),), taylor=series.cumprod_rule, rule="product rule for each running product: (u0 u1 ... ui)' = sum over k of u'k times the others")
defop("linscan", _linscan_kernel, _linscan_vjp, broadcasting=True, pattern="probe", permutes=True, notation=OWN, taylor=series.linscan_rule, rule="sum and product rules, entry by entry: (h + a s)' = h' + a' s + a s'")

# ---------------------------------------------------------------- linear algebra

defop("matmul", _matmul_kernel, _matmul_vjp, shape=_matmul_shape, pattern="probe",
      notation=Infix("@", MUL, ("@",)), rule="product rule: (A B)' = A' B + A B'",
      taylor=_value_as_evaluated(series.bilinear))
function("transpose", _transpose_kernel, lambda g, ans, a: (G.transpose(g),),
         shape=lambda shapes, attr: shapes[0][::-1], pattern="moves", rewrite=rewrites.transpose, permutes=True, taylor=series.linear, rule=_LINEAR)
function("trace", _trace_kernel, _trace_vjp, shape=_trace_shape, pattern="probe", build=_user_trace,
         notation=Call(lambda node, texts: texts + ([f"offset={node.attr}"] if node.attr else [])),
         keywords=(Param("offset", "int", True),), taylor=_value_as_evaluated(series.linear), rule=_LINEAR)

# ---------------------------------------------------------------- structure

defop("stack", _stack_kernel, _stack_vjp, shape=_stack_shape, pattern="moves", notation=OWN,
      rule="entry by entry: [u, v]' = [u', v']", taylor=series.linear)
defop("index", _index_kernel,
      lambda g, ans, x: (G.scatter(g, attr=(ans.attr, x.shape)),),
      shape=_index_shape, pattern="moves", notation=OWN, rule="entry by entry: u[i]' = u'[i]", taylor=series.linear)
defop("scatter", _scatter_kernel,
      lambda g, ans, x: (G.index(g, attr=ans.attr[0]),),
      shape=lambda shapes, attr: attr[1], pattern="moves", notation=OWN, rule=_LINEAR, taylor=series.linear)
defop("scatter_sum", _scatter_sum_kernel,
      lambda g, ans, *parts: tuple(G.index(g, attr=items) for items in ans.attr[0]),
      shape=lambda shapes, attr: attr[1], pattern="moves", notation=OWN, rule=_LINEAR, taylor=series.linear)
defop("reshape", _reshape_kernel, lambda g, ans, x: (_reshape(g, x.shape),), shape=_reshape_shape,
      pattern="moves", rewrite=rewrites.reshape, notation=OWN, rule=_LINEAR, taylor=series.linear)
defop("broadcast_to", _broadcast_to_kernel,
      lambda g, ans, x: (G.sum_to(g, attr=x.shape),), shape=_attr_shape,
      pattern="moves", rewrite=rewrites.same_shape, notation=OWN, rule=_LINEAR, taylor=series.linear)
defop("sum_to", _sum_to_kernel,
      lambda g, ans, x: (G.broadcast_to(g, attr=x.shape),), shape=_attr_shape,
      pattern="probe", rewrite=rewrites.same_shape, notation=OWN, rule=_LINEAR, taylor=series.linear)


# ---------------------------------------------------------------- n-dimensional products and moves (issue 19)

defop("einsum", _einsum_kernel, _einsum_vjp, shape=_einsum_shape, pattern="probe", notation=OWN,
      taylor=_value_as_evaluated(_multilinear_taylor),
      rule="product rule, operand by operand: each operand's derivative contracted with the others")
# A linear map that moves entries by constant positions (flip, roll, tile, diag, tril,
# fancy indexing, concatenate, ...: language/arrays.py makes the map with NumPy's own
# function on numbered entries); gather_t is its transpose (adds back).
defop("gather", _gather_kernel, _gather_vjp, shape=_gather_shape, pattern="moves", notation=OWN,
      taylor=series.linear, rule=_LINEAR)
defop("gather_t", _gather_t_kernel, lambda g, ans, x: (G.gather(g, attr=ans.attr),),
      shape=lambda shapes, attr: attr.sources[0], pattern="probe", notation=OWN, taylor=series.linear, rule=_LINEAR)
# sort(x) = take_along_axis(x, argsort(x)): the derivative is the permutation (the
# transpose of a permutation is its inverse, argsort of it); ties as a stable sort
# orders them, each tied entry getting the derivative of the place it is sorted to.
defop("argsort", lambda node: lambda a: np.argsort(a, axis=node.attr, kind="stable").astype(np.float64),
      _no_derivative, pattern="dense", notation=OWN, taylor=series.constant_rule,
      rule="piecewise constant: argsort(u)' = 0 (the order jumps where entries tie)",
      kink=Kink(_ties_along_axis, "sort of tied elements (the order among them jumps)",
                "using the order a stable sort gives them, as PyTorch does"))
defop("take_along_axis", _take_along_axis_kernel,
      lambda g, ans, v, order: (G.take_along_axis(g, G.argsort(order, attr=ans.attr), attr=ans.attr), None),
      shape=_take_along_axis_shape, pattern="dense", notation=OWN, taylor=_take_along_axis_taylor,
      rule="linearity: the same rearrangement of u' (the order held fixed)")
function("nan_to_num", elementwise(np.nan_to_num), _nan_to_num_vjp, selects=True, taylor=_nan_to_num_taylor,
         no_c="np.nan_to_num's largest finite numbers have no C form written")


def operator(token: str) -> str:
    """The operation an infix token of the language stands for ('+' -> 'add')."""
    return _OPERATORS[token]


_OPERATORS = {token: op.name for op in OPS.values() if type(op.notation) is Infix for token in op.notation.tokens}


def describe(shape: tuple) -> str:
    """A shape in words, for error messages."""
    if len(shape) == 0:
        return "a scalar"
    if len(shape) == 1:
        return f"a {shape[0]}-vector"
    if len(shape) == 2:
        return f"a {shape[0]}x{shape[1]} matrix"
    return f"an array of shape {shape}"
