"""The functions a user can call, by name: each primitive of OPS under the names
its record gives (ops.py), and the short compositions of primitives below (whose
derivatives then follow from the rule table).

A call's keyword arguments (and the trailing positional arguments that stand for
them, as NumPy's sum(x, 0)) are constants: parse.py checks their names when it
parses, and reads_option below turns each value into a Python number, tuple or
flag, with its span, for the function's build(graph, args, span, options)."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from ..errors import ExpressionError, ShapeError
from ..graph.ops import OPS, REDUCTION_KEYWORDS, Param, axes_option, describe
from .arrays import ARRAY_FUNCTIONS

# deg: one degree in radians, so that sin(30deg) is the sine of 30 degrees.
CONSTANTS = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan, "True": 1.0, "False": 0.0,
             "deg": math.pi / 180}


# build(graph, args, span, options) -> Node; keywords: the Params a call may give
# (those marked positional may also come, in order, after the last operand).
FunctionSpec = namedtuple("FunctionSpec", "min_args max_args build keywords", defaults=((),))
# A keyword argument's value (an int, float, bool or tuple of ints) and its span.
Option = namedtuple("Option", "value span")


def arity_text(spec: FunctionSpec) -> str:
    n = spec.min_args
    if spec.min_args == spec.max_args:
        text = f"{n} argument" + ("" if n == 1 else "s")
    else:
        text = f"{spec.min_args} to {spec.max_args} arguments"
    slots = [p.name for p in spec.keywords if p.positional]
    named = [p.name for p in spec.keywords if not p.positional]
    if slots:
        text += f", then {', '.join(slots)} by position or keyword"
    if named:
        text += f"{',' if slots else ', then'} {', '.join(named)} by keyword"
    return text


def positional_slots(spec: FunctionSpec) -> tuple[Param, ...]:
    """The keyword arguments that may be given by position, after the operands."""
    return tuple(p for p in spec.keywords if p.positional)


def read_option(param: Param, value, span, function: str) -> Option:
    """A keyword argument's built value (a constant node, or a tuple of them) as the
    Python value its kind asks for."""
    if param.kind == "ints":
        return Option(_nested_ints(value, param, span, function), span)
    numbers = value if isinstance(value, tuple) else (value,)
    found = []
    for node in numbers:
        if isinstance(node, tuple) or node.op != "const" or (node.shape and param.kind != "axes") \
                or len(node.shape) > 1:
            raise ExpressionError(f"{function}: {param.name} takes {_KIND_TEXT[param.kind]}", span)
        found += [float(v) for v in node.value.ravel()] if node.shape else [float(node.value)]
    if param.kind == "number":
        if len(found) != 1:
            raise ExpressionError(f"{function}: {param.name} takes one number", span)
        return Option(found[0], span)
    if not all(math.isfinite(v) and v == int(v) and abs(v) < _LARGEST for v in found) or \
            (param.kind != "axes" and len(found) != 1):
        raise ExpressionError(f"{function}: {param.name} takes {_KIND_TEXT[param.kind]}", span)
    ints = tuple(int(v) for v in found)
    if param.kind == "flag":
        if ints[0] not in (0, 1):
            raise ExpressionError(f"{function}: {param.name} takes True or False", span)
        return Option(bool(ints[0]), span)
    if param.kind == "axes" and (isinstance(value, tuple) or value.shape):
        return Option(ints, span)
    return Option(ints[0], span)


def _nested_ints(value, param, span, function):
    """kind "ints": an integer, or tuples and literals of them nested to any depth,
    as nested Python tuples (tensordot's axes=((1, 2), (0, 1)) or axes=[[1], [0]])."""
    if isinstance(value, tuple):
        return tuple(_nested_ints(v, param, span, function) for v in value)
    array = value.value if value.op == "const" else None
    if array is None or not np.all(np.isfinite(array)) or not np.all(array == np.round(array)) \
            or not np.all(np.abs(array) < _LARGEST):
        raise ExpressionError(f"{function}: {param.name} takes {_KIND_TEXT['ints']}", span)
    listed = array.astype(np.int64).tolist()
    return _as_tuples(listed)


def _as_tuples(listed):
    if not isinstance(listed, list):
        return listed
    return tuple(_as_tuples(v) for v in listed)


_LARGEST = 2 ** 31  # integers beyond it are no axis, offset or count of anything diffcli can hold

_KIND_TEXT = {"axes": "a constant integer or a tuple of them, as (0, 1)", "int": "a constant integer",
              "flag": "True or False", "number": "a constant number",
              "ints": "constant integers, alone or in tuples, as ((1, 2), (0, 1))"}


def _primitive(name):
    return lambda graph, args, span, options=None: graph.apply(name, args, span=span)


def _plain(build):
    """A build that takes no keyword arguments, called as those that do."""
    def plain(graph, args, span, options=None):
        return build(graph, args, span)
    plain.__name__ = build.__name__
    return plain


def _count(x, attr) -> int:
    """How many entries a reduction with this attr (ops.py) takes each result from."""
    axes = range(len(x.shape)) if attr is None else attr[0]
    return math.prod(x.shape[a] for a in axes)


def _sum(graph, args, span, options):
    return _RECORDS["sum"].build(graph, args, span, options)


def _mean(graph, args, span, options=None):
    options = dict(options or {})
    (x,) = args
    total = _sum(graph, args, span, options)
    return graph.apply("div", (total, float(max(_count(x, total.attr), 1))), span=span)


def _var(graph, args, span, options=None):
    options = dict(options or {})
    """NumPy's _var: the mean with keepdims, the squares of the deviations summed,
    divided by max(n - ddof, 0)."""
    (x,) = args
    ddof = options.pop("ddof").value if "ddof" in options else 0
    total = _sum(graph, args, span, options)
    n = _count(x, total.attr)
    kept = _sum(graph, args, span, {**options, "keepdims": Option(True, span)})
    deviation = graph.apply("sub", (x, graph.apply("div", (kept, float(max(n, 1))), span=span)), span=span)
    squares = graph.apply("mul", (deviation, deviation), span=span)
    return graph.apply("div", (_sum(graph, (squares,), span, options), float(max(n - ddof, 0))), span=span)


def _std(graph, args, span, options=None):
    options = dict(options or {})
    return graph.apply("sqrt", (_var(graph, args, span, options),), span=span)


def _prod(graph, args, span, options=None):
    options = dict(options or {})
    # The last running product: its derivative (from cumprod's rule) stays exact
    # when some entries are zero, where g * prod / x would give nan.
    (x,) = args
    if not x.shape:
        return x
    attr = _sum(graph, args, span, options).attr
    if attr is None or len(attr[0]) == len(x.shape):
        flat = graph.reshape(x, (x.size,))
        whole = graph.apply("index", (graph.apply("cumprod", (flat,), span=span),), (x.size - 1,), span=span)
        return whole if attr is None else graph.reshape(whole, (1,) * len(x.shape))  # keepdims
    axes, keepdims = attr
    if len(axes) > 1:
        raise ShapeError("prod runs along one axis at a time (or the whole value)", options["axis"].span)
    (axis,) = axes
    running = _RECORDS["cumprod"].build(graph, args, span, {"axis": Option(axis, options["axis"].span)})
    last = [(None, None, None)] * axis + [x.shape[axis] - 1]
    result = graph.apply("index", (running,), tuple(last), span=span)
    return graph.reshape(result, tuple(1 if i == axis else n for i, n in enumerate(x.shape))) if keepdims \
        else result


def _norm(graph, args, span, options=None):
    options = dict(options or {})
    """norm(x) is the 2-norm of the whole value; ord= gives NumPy's vector norms
    (over one axis, or a vector) and matrix norms (over two axes, or a matrix), each
    an exact composition of sum, max, min, abs and pow, as numpy.linalg.norm
    computes them."""
    (x,) = args
    order = options.pop("ord", None)
    if order is None:
        return _RECORDS["norm"].build(graph, args, span, options)
    p = order.value
    axis = options.get("axis")
    axes = axes_option(axis, x.shape, "norm", in_order=True) if axis is not None else tuple(range(len(x.shape)))
    keepdims = options["keepdims"].value if "keepdims" in options else False
    if len(axes) == 1:
        result = _vector_norm(graph, x, p, Option(axes, order.span), span)
    elif len(axes) == 2:
        result = _matrix_norm(graph, x, p, axes, order.span, span)
    else:
        raise ShapeError(f"norm with ord= needs a vector or a matrix, or axis= naming one or two axes, "
                         f"not {describe(x.shape)}", order.span)
    if keepdims:
        result = graph.reshape(result, tuple(1 if i in axes else n for i, n in enumerate(x.shape)))
    return result


def _vector_norm(graph, x, p, axis, span):
    magnitude = graph.apply("abs", (x,), span=span)
    if p == math.inf:
        return _sum_like(graph, "max", magnitude, axis, span)
    if p == -math.inf:
        return _sum_like(graph, "min", magnitude, axis, span)
    if p == 2:
        return _sum_like(graph, "norm", x, axis, span)
    if p == 1:
        return _sum_like(graph, "sum", magnitude, axis, span)
    if p == 0:
        return _sum_like(graph, "sum", graph.apply("ne", (x, 0.0), span=span), axis, span)
    powered = graph.apply("pow", (magnitude, p), span=span)
    return graph.apply("pow", (_sum_like(graph, "sum", powered, axis, span), 1.0 / p), span=span)


def _matrix_norm(graph, x, p, axes, order_span, span):
    rows, columns = axes  # NumPy's row_axis, col_axis
    if p in (2, -2):
        raise ShapeError(f"norm with ord={p:g} of a matrix is its {'largest' if p > 0 else 'smallest'} "
                         f"singular value, which diffcli does not compute", order_span)
    magnitude = graph.apply("abs", (x,), span=span)
    if p in (1, -1):  # the largest (smallest) column sum
        summed, then = rows, columns - (columns > rows)
    elif p in (math.inf, -math.inf):  # the largest (smallest) row sum
        summed, then = columns, rows - (rows > columns)
    else:
        raise ShapeError(f"norm: ord={p:g} is not a matrix norm (1, -1, inf, -inf, or none for Frobenius)",
                         order_span)
    sums = _sum_like(graph, "sum", magnitude, Option((summed,), span), span)
    return _sum_like(graph, "max" if p > 0 else "min", sums, Option((then,), span), span)


def _sum_like(graph, name, x, axis, span):
    return _RECORDS[name].build(graph, (x,), span, {"axis": axis})


def _clip(graph, args, span):
    """np.clip(x, low, high) = minimum(maximum(x, low), high), as NumPy's kernel
    computes it (nan passes through): at x == low or high the derivative is shared
    half and half, as maximum's and minimum's are."""
    x, low, high = args
    return graph.apply("minimum", (graph.apply("maximum", (x, low), span=span), high), span=span)


def _scaled(factor):
    """x * factor: NumPy's deg2rad and rad2deg are exactly this product (npy_deg2rad)."""
    def scaled(graph, args, span):
        return graph.apply("mul", (args[0], factor), span=span)
    return scaled


def _power(exponent):
    """square and reciprocal: pow's kernel runs np.square and np.reciprocal for these
    constant exponents, and formulas write x ^ 2 and x ^ -1."""
    def power(graph, args, span):
        return graph.apply("pow", (args[0], exponent), span=span)
    return power


def _rsqrt(graph, args, span):
    """1 / sqrt(x), as JAX's lax.rsqrt means (its value rounded twice, not once)."""
    return graph.apply("div", (1.0, graph.apply("sqrt", args, span=span)), span=span)


def _from_record(op):
    build = op.build if op.keywords else (_plain(op.build) if op.build else _primitive(op.name))
    return FunctionSpec(op.arity, op.arity, build, op.keywords)


_STATISTICS_KEYWORDS = (Param("axis", "axes", True), Param("ddof", "int"), Param("keepdims", "flag"))

# By the user's name (not an operation's): every name an operation's record gives,
# then the compositions.
FUNCTIONS: dict[str, FunctionSpec] = {name: _from_record(op) for op in OPS.values() for name in op.names}
_RECORDS = dict(FUNCTIONS)  # the operations' own, for the compositions (norm's is replaced below)
FUNCTIONS.update(
    mean=FunctionSpec(1, 1, _mean, REDUCTION_KEYWORDS),
    prod=FunctionSpec(1, 1, _prod, REDUCTION_KEYWORDS),
    var=FunctionSpec(1, 1, _var, _STATISTICS_KEYWORDS),
    std=FunctionSpec(1, 1, _std, _STATISTICS_KEYWORDS),
    clip=FunctionSpec(3, 3, _plain(_clip)),
    square=FunctionSpec(1, 1, _plain(_power(2.0))),
    reciprocal=FunctionSpec(1, 1, _plain(_power(-1.0))),
    rsqrt=FunctionSpec(1, 1, _plain(_rsqrt)),
    deg2rad=FunctionSpec(1, 1, _plain(_scaled(math.pi / 180.0))),
    radians=FunctionSpec(1, 1, _plain(_scaled(math.pi / 180.0))),
    rad2deg=FunctionSpec(1, 1, _plain(_scaled(180.0 / math.pi))),
    degrees=FunctionSpec(1, 1, _plain(_scaled(180.0 / math.pi))),
)
FUNCTIONS["norm"] = FunctionSpec(1, 1, _norm, (Param("ord", "number", True),) + REDUCTION_KEYWORDS)
# NumPy's array functions (arrays.py); transpose and trace with NumPy's optional arguments.
FUNCTIONS.update((name, FunctionSpec(*spec)) for name, spec in ARRAY_FUNCTIONS.items())

