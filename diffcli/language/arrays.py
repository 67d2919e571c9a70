"""NumPy's array functions as users call them (issue 19): products of any rank
(matmul, dot, inner, tensordot, einsum, kron, cross, trace) and the functions
that only move entries (reshape, flip, roll, tile, diag, tril, concatenate, ...).

Each is built from the primitives of ops.py: einsum for products; reshape where
entries keep their order; and otherwise gather, a linear map by constant positions
that NumPy's own function computes here, applied to the numbered entries of the
argument (np.flip(arange) says where each entry of flip(x) comes from), so every
axis rule and every error is NumPy's. Axis and count arguments are constants,
written positionally as in NumPy (moveaxis(a, 0, 1), tensordot(a, b, 2)).
"""

from __future__ import annotations

import numpy as np

from ..errors import ExpressionError, ShapeError
from ..graph.ops import LETTERS, Positions

# name -> (least arguments, most arguments, build(graph, args, span))
ARRAY_FUNCTIONS: dict[str, tuple] = {}
MAX_OPERANDS = 26


def _function(name, least, most=None):
    def register(build):
        ARRAY_FUNCTIONS[name] = (least, least if most is None else most, build)
        return build
    return register


# ---------------------------------------------------------------- constant arguments


def _constant(node, span, what: str) -> np.ndarray:
    if isinstance(node, str) or type(node) is tuple or node.op != "const":
        raise ExpressionError(f"{what} must be a constant", span)
    return np.asarray(node.value)


def _integers(node, span, what: str) -> np.ndarray:
    value = _constant(node, span, what)
    if not np.all(np.isfinite(value)) or np.any(value != np.round(value)) or np.any(np.abs(value) > 2**31):
        raise ExpressionError(f"{what} must be integers", span)
    return value.astype(np.int64)


def _integer(node, span, what: str) -> int:
    value = _integers(node, span, what)
    if value.ndim:
        raise ExpressionError(f"{what} must be one integer", span)
    return int(value)


def _axes(node, span, what: str = "the axis"):
    """An int or a tuple of ints (from a literal [0, 1])."""
    value = _integers(node, span, what)
    return int(value) if value.ndim == 0 else tuple(int(v) for v in value.ravel())


def _optional(args, i, read, default):
    return read(args[i]) if len(args) > i else default


def _array(node, span, name: str):
    if isinstance(node, str) or type(node) is tuple:
        raise ExpressionError(f"{name} takes arrays here, not {'text' if isinstance(node, str) else 'a list'}",
                              span)
    return node


# ---------------------------------------------------------------- moving entries


def moved(graph, x, name: str, span, f, *, zeros: bool = False):
    """x's entries where f puts them: f applied to x's numbered entries (plus one,
    with 0 for a zero entry where zeros is set) gives each result entry's source."""
    numbered = np.arange(x.size, dtype=np.int64).reshape(x.shape) + (1 if zeros else 0)
    positions = _numpy(name, span, f, numbered)
    if zeros:
        positions = positions - 1
    return gathered(graph, (x,), positions, span)


def gathered(graph, sources, positions, span):
    positions = np.asarray(positions, dtype=np.int64)
    if len(sources) == 1:
        (x,) = sources
        if positions.size == x.size and np.array_equal(positions.ravel(), np.arange(x.size)):
            return x if positions.shape == x.shape else graph.apply("reshape", (x,), positions.shape, span=span)
    return graph.apply("gather", tuple(sources), Positions(positions, [x.shape for x in sources]), span=span)


def _numpy(name, span, f, *arrays):
    """NumPy's answer, or its complaint as diffcli's one-line shape error."""
    try:
        return np.asarray(f(*arrays))
    except (ValueError, IndexError, TypeError) as e:
        message = str(e).split("\n")[0]
        raise ShapeError(f"{name}: {message}", span) from None


def _moving(name, least, most, f, zeros=False, reads=()):
    """A function of one array and constant arguments: reads[i] turns argument i+1
    into what f takes."""
    def build(graph, args, span):
        x = _array(args[0], span, name)
        extra = [read(a, span) for read, a in zip(reads, args[1:])]
        return moved(graph, x, name, span, lambda a: f(a, *extra), zeros=zeros)
    _function(name, least, most)(build)


def _axis_arg(node, span):
    return _axes(node, span)


def _int_arg(node, span):
    return _integer(node, span, "this argument")


def _ints_arg(node, span):
    value = _integers(node, span, "this argument")
    return int(value) if value.ndim == 0 else value


_moving("flip", 1, 2, lambda a, axis=None: np.flip(a, axis), reads=(_axis_arg,))
_moving("flipud", 1, 1, np.flipud)
_moving("fliplr", 1, 1, np.fliplr)
_moving("rot90", 1, 3, lambda a, k=1, axes=(0, 1): np.rot90(a, k, axes), reads=(_int_arg, _axis_arg))
_moving("roll", 2, 3, lambda a, shift, axis=None: np.roll(a, shift, axis), reads=(_ints_arg, _axis_arg))
_moving("repeat", 2, 3, lambda a, n, axis=None: np.repeat(a, n, axis), reads=(_ints_arg, _int_arg))
_moving("tile", 2, 2, np.tile, reads=(_ints_arg,))
_moving("swapaxes", 3, 3, np.swapaxes, reads=(_int_arg, _int_arg))
_moving("moveaxis", 3, 3, np.moveaxis, reads=(_axis_arg, _axis_arg))
_moving("diagonal", 1, 4, lambda a, offset=0, axis1=0, axis2=1: np.diagonal(a, offset, axis1, axis2),
        reads=(_int_arg, _int_arg, _int_arg))
_moving("tril", 1, 2, lambda a, k=0: np.tril(a, k), zeros=True, reads=(_int_arg,))
_moving("triu", 1, 2, lambda a, k=0: np.triu(a, k), zeros=True, reads=(_int_arg,))
_moving("ravel", 1, 1, np.ravel)
_moving("flatten", 1, 1, np.ravel)
_moving("squeeze", 1, 2, lambda a, axis=None: np.squeeze(a, axis), reads=(_axis_arg,))
_moving("expand_dims", 2, 2, np.expand_dims, reads=(_axis_arg,))
_moving("reshape", 2, 2, lambda a, shape: np.reshape(a, shape), reads=(_axis_arg,))


def _diag(a, k=0):
    if a.ndim not in (1, 2):
        raise ValueError(f"needs a vector or a matrix, not an array of {a.ndim} axes")
    return np.diag(a, k)


_moving("diag", 1, 2, _diag, zeros=True, reads=(_int_arg,))


@_function("transpose", 1, 2)
def _transpose(graph, args, span):
    x = _array(args[0], span, "transpose")
    if len(args) == 1:
        return graph.apply("transpose", (x,), span=span)
    axes = _axes(args[1], span, "transpose's axes")
    return moved(graph, x, "transpose", span, lambda a: np.transpose(a, axes))


def fancy_index(graph, x, key, span):
    """x[key] where key holds integer arrays (constants): NumPy's advanced indexing,
    applied to the numbered entries."""
    return moved(graph, x, "indexing", span, lambda a: a[key])


# ---------------------------------------------------------------- joining arrays


def _sequence(graph, arg, span, name):
    """The arrays of a list literal, or the sub-arrays of an array along its first axis."""
    if type(arg) is tuple:
        return [_array(a, span, name) for a in arg]
    x = _array(arg, span, name)
    if not x.shape:
        raise ShapeError(f"{name} needs a list of arrays, not a scalar", span)
    return [graph.apply("index", (x,), (i,), span=span) for i in range(x.shape[0])]


def _joined(graph, arrays, span, name, join):
    """join (NumPy's, on numbered entries of every array) as one gather."""
    offsets = np.cumsum([0] + [a.size for a in arrays])
    numbered = [np.arange(start, start + a.size, dtype=np.int64).reshape(a.shape)
                for start, a in zip(offsets, arrays)]
    positions = _numpy(name, span, join, *numbered)
    return gathered(graph, tuple(arrays), positions, span)


def _joining(name, least, most, join):
    def build(graph, args, span):
        arrays = _sequence(graph, args[0], span, name)
        extra = [_axes(a, span) for a in args[1:]]
        return _joined(graph, arrays, span, name, lambda *a: join(list(a), *extra))
    build.takes_sequence = True  # parse.py: the list literal [a, b] is a list, not an array
    _function(name, least, most)(build)


_joining("concatenate", 1, 2, lambda arrays, axis=0: np.concatenate(arrays, axis))
_joining("stack", 1, 2, lambda arrays, axis=0: np.stack(arrays, axis))
_joining("hstack", 1, 1, np.hstack)
_joining("vstack", 1, 1, np.vstack)


# ---------------------------------------------------------------- products


def _einsum_node(graph, ins, out, operands, span):
    return graph.apply("einsum", tuple(operands), (tuple(ins), out), span=span)


def parse_subscripts(text: str, ranks: list[int], span) -> tuple[tuple[str, ...], str]:
    """NumPy's einsum subscripts (implicit or explicit, with '...') as letters only."""
    text = text.replace(" ", "")
    if text.count("->") > 1 or not set(text) <= set(LETTERS + ",.->"):
        raise ExpressionError(f"einsum subscripts are letters, ',', '->' and '...', not {text!r}", span)
    inputs, arrow, out = text.partition("->")
    ins = inputs.split(",")
    if len(ins) != len(ranks):
        raise ShapeError(f"einsum: the subscripts '{text}' name {len(ins)} operands, given {len(ranks)}", span)
    for s in ins + [out]:
        if s.replace("...", "").count(".") or s.count("...") > 1:
            raise ExpressionError(f"einsum: a '.' outside '...' in {text!r}", span)
    used = set(text)
    spare = [c for c in LETTERS if c not in used]
    ellipsis_rank = max((r - len(s) + 3 for s, r in zip(ins, ranks) if "..." in s), default=0)
    if ellipsis_rank > len(spare):
        raise ShapeError("einsum: too many axes under '...'", span)
    broadcast = "".join(spare[:ellipsis_rank])
    expanded = []
    for k, (s, r) in enumerate(zip(ins, ranks), start=1):
        if "..." in s:
            n = r - (len(s) - 3)
            if n < 0:
                raise ShapeError(f"einsum: operand {k} has {r} axes, fewer than '{s}' names", span)
            s = s.replace("...", broadcast[len(broadcast) - n:] if n else "")
        expanded.append(s)
    if arrow:
        if "..." in out:
            out = out.replace("...", broadcast)
        elif broadcast:
            raise ExpressionError("einsum: the result must keep '...' when the operands have it", span)
        if len(set(out)) != len(out):
            raise ExpressionError(f"einsum: the result repeats a subscript in {text!r}", span)
    else:  # implicit: the letters that occur once, in alphabetical order, after the ellipsis
        counts = {c: inputs.count(c) for c in set(inputs.replace(".", "").replace(",", ""))}
        out = broadcast + "".join(sorted(c for c, n in counts.items() if n == 1))
    return tuple(expanded), out


@_function("einsum", 2, MAX_OPERANDS + 1)
def _einsum(graph, args, span):
    subscripts, operands = args[0], args[1:]
    if not isinstance(subscripts, str):
        raise ExpressionError("einsum's first argument is its subscripts, in quotes: einsum('ij,jk->ik', A, B)",
                              span)
    operands = [_array(a, span, "einsum") for a in operands]
    ins, out = parse_subscripts(subscripts, [len(a.shape) for a in operands], span)
    return _einsum_node(graph, ins, out, operands, span)


def _letters(n: int, start: int = 0) -> str:
    return LETTERS[start:start + n]


@_function("matmul", 2)
def _matmul(graph, args, span):
    return graph.apply("matmul", tuple(_array(a, span, "matmul") for a in args), span=span)


@_function("dot", 2)
def _dot(graph, args, span):
    a, b = (_array(x, span, "dot") for x in args)
    if not a.shape or not b.shape:
        return graph.apply("mul", (a, b), span=span)
    if len(a.shape) <= 2 and len(b.shape) <= 2:
        return graph.apply("matmul", (a, b), span=span)
    # sum over a's last axis and b's second-to-last
    sa = _letters(len(a.shape))
    sb = _letters(len(b.shape), len(sa))
    sb = sb[:-2] + sa[-1] + sb[-1:] if len(sb) >= 2 else sa[-1]
    return _contract(graph, (sa, sb), sa[:-1] + sb[:-2] + sb[-1:], (a, b), span, "dot")


def _contract(graph, ins, out, operands, span, name):
    try:
        return _einsum_node(graph, ins, out, operands, span)
    except ShapeError as e:
        raise ShapeError(f"{name}: {e.message}", span) from None


@_function("inner", 2)
def _inner(graph, args, span):
    a, b = (_array(x, span, "inner") for x in args)
    if not a.shape or not b.shape:
        return graph.apply("mul", (a, b), span=span)
    sa = _letters(len(a.shape))
    sb = _letters(len(b.shape) - 1, len(sa)) + sa[-1]
    return _contract(graph, (sa, sb), sa[:-1] + sb[:-1], (a, b), span, "inner")


@_function("outer", 2)
def _outer(graph, args, span):
    a, b = (graph.reshape(_array(x, span, "outer"), (x.size,)) for x in args)
    return graph.apply("mul", (graph.reshape(a, (a.size, 1)), graph.reshape(b, (1, b.size))), span=span)


@_function("tensordot", 2, 3)
def _tensordot(graph, args, span):
    a, b = (_array(x, span, "tensordot") for x in args[:2])
    axes = _integers(args[2], span, "tensordot's axes") if len(args) > 2 else np.array(2)
    ra, rb = len(a.shape), len(b.shape)
    if axes.ndim == 0:
        n = int(axes)
        if not 0 <= n <= min(ra, rb):
            raise ShapeError(f"tensordot: {n} axes to sum over, but the arrays have {ra} and {rb}", span)
        pairs = list(zip(range(ra - n, ra), range(n)))
    else:
        if axes.shape[0] != 2:
            raise ShapeError("tensordot's axes are a number or two lists, [[axes of a], [axes of b]]", span)
        first, second = (np.atleast_1d(v) for v in axes)
        pairs = list(zip(first.tolist(), second.tolist()))
    sa, sb = list(_letters(ra)), list(_letters(rb, ra))
    for i, j in pairs:
        if not (-ra <= i < ra and -rb <= j < rb):
            raise ShapeError(f"tensordot: axis pair ({i}, {j}) is out of range for {ra} and {rb} axes", span)
        sb[j % rb] = sa[i % ra]
    summed = {sa[i % ra] for i, _ in pairs}
    if len(summed) != len(pairs):
        raise ShapeError("tensordot: an axis is summed over twice", span)
    out = "".join(c for c in sa if c not in summed) + "".join(c for c in sb if c not in summed)
    return _contract(graph, ("".join(sa), "".join(sb)), out, (a, b), span, "tensordot")


@_function("kron", 2)
def _kron(graph, args, span):
    """np.kron: a's and b's axes interleaved by an outer product, then merged."""
    a, b = (_array(x, span, "kron") for x in args)
    rank = max(len(a.shape), len(b.shape))
    sa, sb = (1,) * (rank - len(a.shape)) + a.shape, (1,) * (rank - len(b.shape)) + b.shape
    a2 = graph.reshape(a, tuple(n for m in sa for n in (m, 1)))
    b2 = graph.reshape(b, tuple(n for m in sb for n in (1, m)))
    return graph.reshape(graph.apply("mul", (a2, b2), span=span), tuple(m * n for m, n in zip(sa, sb)))


@_function("cross", 2)
def _cross(graph, args, span):
    """a x b along the last axis (3-vectors): a[1]b[2] - a[2]b[1], ... as NumPy."""
    a, b = (_array(x, span, "cross") for x in args)
    for x in (a, b):
        if not x.shape or x.shape[-1] != 3:
            raise ShapeError(f"cross needs 3-vectors along the last axis, got {_describe(x.shape)}", span)

    def turned(x, order):
        return moved(graph, x, "cross", span, lambda v: v[..., order])
    first = graph.apply("mul", (turned(a, [1, 2, 0]), turned(b, [2, 0, 1])), span=span)
    second = graph.apply("mul", (turned(a, [2, 0, 1]), turned(b, [1, 2, 0])), span=span)
    return graph.apply("sub", (first, second), span=span)


def _describe(shape):
    from ..graph.ops import describe
    return describe(shape)


@_function("trace", 1, 4)
def _trace(graph, args, span):
    x = _array(args[0], span, "trace")
    given = [_integer(a, span, "trace's offset and axes") for a in args[1:]]
    offset, axis1, axis2 = given + [0, 0, 1][len(given):]
    if len(x.shape) < 2:
        raise ShapeError(f"trace needs a matrix or an array, got {_describe(x.shape)}", span)
    if (offset, axis1, axis2) == (0, 0, 1):
        return graph.apply("trace", (x,), span=span)
    diagonal = moved(graph, x, "trace", span, lambda a: np.diagonal(a, offset, axis1, axis2))
    return graph.apply("einsum", (diagonal,), ((_letters(len(diagonal.shape)),),
                                                _letters(len(diagonal.shape) - 1)), span=span)


# ---------------------------------------------------------------- along an axis


@_function("diff", 1, 3)
def _diff(graph, args, span):
    x = _array(args[0], span, "diff")
    n = _optional(args, 1, lambda a: _integer(a, span, "diff's n"), 1)
    axis = _optional(args, 2, lambda a: _integer(a, span, "diff's axis"), -1)
    rank = len(x.shape)
    if not rank:
        raise ShapeError("diff needs a vector or an array, not a scalar", span)
    if not -rank <= axis < rank:
        raise ShapeError(f"diff: axis {axis} is out of bounds for {_describe(x.shape)}", span)
    if n < 0 or n >= x.shape[axis]:
        raise ShapeError(f"diff: order {n} needs more than {n} entries along axis {axis % rank}", span)
    before = ((None, None, None),) * (axis % rank)
    for _ in range(n):  # a[1:] - a[:-1], as np.diff computes it
        later = graph.apply("index", (x,), before + ((1, None, None),), span=span)
        earlier = graph.apply("index", (x,), before + ((0, -1, None),), span=span)
        x = graph.apply("sub", (later, earlier), span=span)
    return x


def _axis_of(x, args, i, span, name, default=-1):
    axis = _optional(args, i, lambda a: _integer(a, span, f"{name}'s axis"), default)
    rank = len(x.shape)
    if not -rank <= axis < rank:
        raise ShapeError(f"{name}: axis {axis} is out of bounds for {_describe(x.shape)}", span)
    return axis - rank if axis >= 0 else axis


@_function("argsort", 1, 2)
def _argsort(graph, args, span):
    x = _array(args[0], span, "argsort")
    if not x.shape:
        raise ShapeError("argsort needs a vector or an array, not a scalar", span)
    return graph.apply("argsort", (x,), _axis_of(x, args, 1, span, "argsort"), span=span)


@_function("sort", 1, 2)
def _sort(graph, args, span):
    x = _array(args[0], span, "sort")
    if not x.shape:
        raise ShapeError("sort needs a vector or an array, not a scalar", span)
    axis = _axis_of(x, args, 1, span, "sort")
    order = graph.apply("argsort", (x,), axis, span=span)
    return graph.apply("take_along_axis", (x, order), axis, span=span)


@_function("take_along_axis", 3)
def _take_along_axis(graph, args, span):
    v, order = (_array(a, span, "take_along_axis") for a in args[:2])
    if not v.shape:
        raise ShapeError("take_along_axis needs a vector or an array, not a scalar", span)
    axis = _axis_of(v, args, 2, span, "take_along_axis")
    if order.op == "const":
        indices = _integers(order, span, "take_along_axis's indices")
        return moved(graph, v, "take_along_axis", span, lambda a: np.take_along_axis(a, indices, axis))
    if order.op != "argsort" or order.attr != axis:
        raise ExpressionError("take_along_axis takes constant indices or argsort(...) along the same axis",
                              span)
    return graph.apply("take_along_axis", (v, order), axis, span=span)


@_function("linspace", 2, 4)
def _linspace(graph, args, span):
    ends = [_constant(a, span, "linspace's start and stop") for a in args[:2]]
    if any(end.ndim for end in ends):
        raise ExpressionError("linspace's start and stop must be numbers", span)
    start, stop = (float(end) for end in ends)
    num = _optional(args, 2, lambda a: _integer(a, span, "linspace's num"), 50)
    endpoint = _optional(args, 3, lambda a: bool(_integer(a, span, "linspace's endpoint")), True)
    if not 1 <= num <= 1 << 24:
        raise ShapeError(f"linspace: num must be between 1 and {1 << 24:,}, not {num}", span)
    return graph.const(np.linspace(start, stop, num, endpoint=endpoint))
