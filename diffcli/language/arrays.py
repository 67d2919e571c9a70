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

import math

import numpy as np

from ..errors import ExpressionError, ShapeError
from ..graph.ops import LETTERS, Param, Positions

# name -> (least operands, most operands, build(graph, args, span, options), keywords):
# functions.py's FunctionSpec. Keywords are NumPy's parameter names; those marked
# positional may also come by position after the operands (roll(x, 1, 0)).
ARRAY_FUNCTIONS: dict[str, tuple] = {}
MAX_OPERANDS = 26


def _function(name, least, most=None, keywords=()):
    def register(build):
        ARRAY_FUNCTIONS[name] = (least, least if most is None else most, build, tuple(keywords))
        return build
    return register


def _p(name, kind="int"):
    return Param(name, kind, True)


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


def _values(options, defaults=None) -> dict:
    """The options' values by name (NumPy's keyword names), over the defaults."""
    values = dict(defaults or {})
    values.update((name, option.value) for name, option in (options or {}).items())
    return values


def _require(name, options, required, span):
    for param in required:
        if param not in (options or {}):
            raise ExpressionError(f"{name} needs {param} (by position or as {param}=...)", span)


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
    return gathered(graph, (x,), positions, span, name)


def gathered(graph, sources, positions, span, name):
    positions = np.asarray(positions, dtype=np.int64)
    if not positions.size:  # as an empty slice: nothing to differentiate, no max or min
        raise ShapeError(f"{name} would give an empty array", span)
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
    except MemoryError:
        raise ShapeError(f"{name}: the result would not fit in memory", span) from None


# Entries a move may make for one point: 1 GiB of float64, the value nodes.py refuses
# beyond (MAX_VALUE_BYTES; not imported, graph.nodes comes after the names), checked
# before NumPy makes the map, for the functions whose arguments can grow it.
MAX_ENTRIES = (1 << 30) // 8


def _repeated_size(shape, values):
    repeats = np.abs(np.atleast_1d(values.get("repeats", 1)))
    return math.prod(shape) * int(repeats.max(initial=1))


def _tiled_size(shape, values):
    return math.prod(shape) * math.prod(abs(int(r)) for r in np.atleast_1d(values.get("reps", 1)))


def _diag_size(shape, values):
    n = max(shape, default=1) + abs(int(values.get("k", 0)))
    return n * n


def _moving(name, f, keywords=(), required=(), zeros=False, size=None):
    """A function of one array and constant keyword arguments, moving its entries
    as f (NumPy's function, called with the same keywords) moves numbered ones.
    size(shape, values): at most how many entries it makes, where that can grow."""
    def build(graph, args, span, options=None):
        _require(name, options, required, span)
        x = _array(args[0], span, name)
        values = _values(options)
        if size is not None and size(x.shape, values) > MAX_ENTRIES:
            raise ShapeError(f"{name} would make more than {MAX_ENTRIES:,} entries for one point; refusing "
                             f"to allocate them", span)
        return moved(graph, x, name, span, lambda a: f(a, **values), zeros=zeros)
    _function(name, 1, 1, keywords)(build)


_moving("flip", np.flip, (_p("axis", "axes"),))
_moving("flipud", np.flipud)
_moving("fliplr", np.fliplr)
_moving("rot90", np.rot90, (_p("k"), _p("axes", "axes")))
_moving("roll", np.roll, (_p("shift", "axes"), _p("axis", "axes")), required=("shift",))
_moving("repeat", np.repeat, (_p("repeats", "axes"), _p("axis")), required=("repeats",), size=_repeated_size)
_moving("tile", np.tile, (_p("reps", "axes"),), required=("reps",), size=_tiled_size)
_moving("swapaxes", np.swapaxes, (_p("axis1"), _p("axis2")), required=("axis1", "axis2"))
_moving("moveaxis", np.moveaxis, (_p("source", "axes"), _p("destination", "axes")),
        required=("source", "destination"))
_moving("diagonal", np.diagonal, (_p("offset"), _p("axis1"), _p("axis2")))
_moving("tril", np.tril, (_p("k"),), zeros=True)
_moving("triu", np.triu, (_p("k"),), zeros=True)
_moving("ravel", np.ravel)
_moving("flatten", np.ravel)
_moving("squeeze", np.squeeze, (_p("axis", "axes"),))
_moving("expand_dims", np.expand_dims, (_p("axis", "axes"),), required=("axis",))
_moving("reshape", lambda a, shape: np.reshape(a, shape), (_p("shape", "axes"),), required=("shape",))


def _diag(a, k=0):
    if a.ndim not in (1, 2):
        raise ValueError(f"needs a vector or a matrix, not an array of {a.ndim} axes")
    return np.diag(a, k)


_moving("diag", _diag, (_p("k"),), zeros=True, size=_diag_size)


@_function("transpose", 1, 1, (_p("axes", "axes"),))
def _transpose(graph, args, span, options=None):
    x = _array(args[0], span, "transpose")
    if not options:
        return graph.apply("transpose", (x,), span=span)
    axes = options["axes"].value
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
    return gathered(graph, tuple(arrays), positions, span, name)


def _joining(name, join, keywords=()):
    def build(graph, args, span, options=None):
        arrays = _sequence(graph, args[0], span, name)
        values = _values(options)
        return _joined(graph, arrays, span, name, lambda *a: join(list(a), **values))
    build.takes_sequence = True  # parse.py: the list literal [a, b] is a list, not an array
    _function(name, 1, 1, keywords)(build)


_joining("concatenate", np.concatenate, (_p("axis"),))
_joining("stack", np.stack, (_p("axis"),))
_joining("hstack", np.hstack)
_joining("vstack", np.vstack)


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
def _einsum(graph, args, span, options=None):
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
def _matmul(graph, args, span, options=None):
    return graph.apply("matmul", tuple(_array(a, span, "matmul") for a in args), span=span)


@_function("dot", 2)
def _dot(graph, args, span, options=None):
    a, b = (_array(x, span, "dot") for x in args)
    if not a.shape or not b.shape:
        return graph.apply("mul", (a, b), span=span)
    if len(a.shape) <= 2 and len(b.shape) <= 2:
        return graph.apply("matmul", (a, b), span=span)
    # sum over a's last axis and b's second-to-last
    sa = _letters(len(a.shape))
    if len(b.shape) == 1:
        return _contract(graph, (sa, sa[-1]), sa[:-1], (a, b), span, "dot")
    sb = _letters(len(b.shape), len(sa))
    sb = sb[:-2] + sa[-1] + sb[-1:]
    return _contract(graph, (sa, sb), sa[:-1] + sb[:-2] + sb[-1:], (a, b), span, "dot")


def _contract(graph, ins, out, operands, span, name):
    """An einsum for dot, inner, tensordot: the summed axes must agree exactly (NumPy's
    einsum broadcasts an axis of size 1 against any size; these functions do not)."""
    sizes: dict[str, int] = {}
    for letters, x in zip(ins, operands):
        for letter, n in zip(letters, x.shape):
            if letter not in out and sizes.setdefault(letter, n) != n:
                raise ShapeError(f"{name}: the summed axes do not match: {_describe(operands[0].shape)} and "
                                 f"{_describe(operands[1].shape)}", span)
    try:
        return _einsum_node(graph, ins, out, operands, span)
    except ShapeError as e:
        raise ShapeError(f"{name}: {e.message}", span) from None


@_function("inner", 2)
def _inner(graph, args, span, options=None):
    a, b = (_array(x, span, "inner") for x in args)
    if not a.shape or not b.shape:
        return graph.apply("mul", (a, b), span=span)
    sa = _letters(len(a.shape))
    sb = _letters(len(b.shape) - 1, len(sa)) + sa[-1]
    return _contract(graph, (sa, sb), sa[:-1] + sb[:-1], (a, b), span, "inner")


@_function("outer", 2)
def _outer(graph, args, span, options=None):
    a, b = (graph.reshape(_array(x, span, "outer"), (x.size,)) for x in args)
    return graph.apply("mul", (graph.reshape(a, (a.size, 1)), graph.reshape(b, (1, b.size))), span=span)


@_function("tensordot", 2, 2, (_p("axes", "ints"),))
def _tensordot(graph, args, span, options=None):
    """np.tensordot: axes=N sums a's last N axes with b's first N; axes=((axes of a),
    (axes of b)) (or [[...], [...]], or a pair of integers) pairs them."""
    a, b = (_array(x, span, "tensordot") for x in args[:2])
    axes = _values(options, {"axes": 2})["axes"]
    ra, rb = len(a.shape), len(b.shape)
    if isinstance(axes, int):
        if not 0 <= axes <= min(ra, rb):
            raise ShapeError(f"tensordot: {axes} axes to sum over, but the arrays have {ra} and {rb}", span)
        pairs = list(zip(range(ra - axes, ra), range(axes)))
    else:
        if len(axes) != 2:
            raise ShapeError("tensordot's axes are a number or two lists, ((axes of a), (axes of b))", span)
        first, second = (side if isinstance(side, tuple) else (side,) for side in axes)
        if len(first) != len(second) or any(isinstance(i, tuple) for i in first + second):
            raise ShapeError("tensordot: the two lists of axes must pair integers one to one", span)
        pairs = list(zip(first, second))
    sa, sb = list(_letters(ra)), list(_letters(rb, ra))
    for i, j in pairs:
        if not (-ra <= i < ra and -rb <= j < rb):
            raise ShapeError(f"tensordot: axis pair ({i}, {j}) is out of range for {ra} and {rb} axes", span)
        sb[j % rb] = sa[i % ra]
    summed = {sa[i % ra] for i, _ in pairs}
    if len(summed) != len(pairs) or len({j % rb for _, j in pairs}) != len(pairs):
        raise ShapeError("tensordot: an axis is summed over twice", span)
    out = "".join(c for c in sa if c not in summed) + "".join(c for c in sb if c not in summed)
    return _contract(graph, ("".join(sa), "".join(sb)), out, (a, b), span, "tensordot")


@_function("kron", 2)
def _kron(graph, args, span, options=None):
    """np.kron: a's and b's axes interleaved by an outer product, then merged."""
    a, b = (_array(x, span, "kron") for x in args)
    rank = max(len(a.shape), len(b.shape))
    sa, sb = (1,) * (rank - len(a.shape)) + a.shape, (1,) * (rank - len(b.shape)) + b.shape
    a2 = graph.reshape(a, tuple(n for m in sa for n in (m, 1)))
    b2 = graph.reshape(b, tuple(n for m in sb for n in (1, m)))
    return graph.reshape(graph.apply("mul", (a2, b2), span=span), tuple(m * n for m, n in zip(sa, sb)))


@_function("cross", 2)
def _cross(graph, args, span, options=None):
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


@_function("trace", 1, 1, (_p("offset"), _p("axis1"), _p("axis2")))
def _trace(graph, args, span, options=None):
    """np.trace: the sum of a diagonal over two axes (the first two by default)."""
    x = _array(args[0], span, "trace")
    values = _values(options, {"offset": 0, "axis1": 0, "axis2": 1})
    if len(x.shape) < 2:
        raise ShapeError(f"trace needs a matrix or an array, got {_describe(x.shape)}", span)
    if (values["axis1"], values["axis2"]) == (0, 1):
        return graph.apply("trace", (x,), values["offset"] or None, span=span)
    diagonal = moved(graph, x, "trace", span, lambda a: np.diagonal(a, **values))
    letters = _letters(len(diagonal.shape))
    return graph.apply("einsum", (diagonal,), ((letters,), letters[:-1]), span=span)


# ---------------------------------------------------------------- along an axis


@_function("diff", 1, 1, (_p("n"), _p("axis")))
def _diff(graph, args, span, options=None):
    """np.diff: a[1:] - a[:-1] along the axis, n times, as NumPy computes it."""
    x = _array(args[0], span, "diff")
    values = _values(options, {"n": 1, "axis": -1})
    n = values["n"]
    rank = len(x.shape)
    if not rank:
        raise ShapeError("diff needs a vector or an array, not a scalar", span)
    axis = _axis_in(x, values["axis"], "diff", span)
    if n < 0 or n >= x.shape[axis]:
        raise ShapeError(f"diff: order {n} needs more than {n} entries along axis {axis % rank}", span)
    before = ((None, None, None),) * (axis % rank)
    for _ in range(n):
        later = graph.apply("index", (x,), before + ((1, None, None),), span=span)
        earlier = graph.apply("index", (x,), before + ((0, -1, None),), span=span)
        x = graph.apply("sub", (later, earlier), span=span)
    return x


def _axis_in(x, axis, name, span) -> int:
    """One axis of x, counted from the end (as the value axes follow the batch axes)."""
    rank = len(x.shape)
    if not rank:
        raise ShapeError(f"{name} needs a vector or an array, not a scalar", span)
    if not -rank <= axis < rank:
        raise ShapeError(f"{name}: axis {axis} is out of bounds for {_describe(x.shape)}", span)
    return axis - rank if axis >= 0 else axis


@_function("argsort", 1, 1, (_p("axis"),))
def _argsort(graph, args, span, options=None):
    x = _array(args[0], span, "argsort")
    axis = _axis_in(x, _values(options, {"axis": -1})["axis"], "argsort", span)
    return graph.apply("argsort", (x,), axis, span=span)


@_function("sort", 1, 1, (_p("axis"),))
def _sort(graph, args, span, options=None):
    """np.sort: its derivative is the permutation it applies (take_along_axis of argsort)."""
    x = _array(args[0], span, "sort")
    axis = _axis_in(x, _values(options, {"axis": -1})["axis"], "sort", span)
    order = graph.apply("argsort", (x,), axis, span=span)
    return graph.apply("take_along_axis", (x, order), axis, span=span)


@_function("take_along_axis", 2, 2, (_p("axis"),))
def _take_along_axis(graph, args, span, options=None):
    _require("take_along_axis", options, ("axis",), span)
    v, order = (_array(a, span, "take_along_axis") for a in args[:2])
    axis = _axis_in(v, options["axis"].value, "take_along_axis", span)
    if order.op == "const":
        indices = _integers(order, span, "take_along_axis's indices")
        return moved(graph, v, "take_along_axis", span, lambda a: np.take_along_axis(a, indices, axis))
    if order.op != "argsort" or order.attr != axis:
        raise ExpressionError("take_along_axis takes constant indices or argsort(...) along the same axis",
                              span)
    return graph.apply("take_along_axis", (v, order), axis, span=span)


@_function("linspace", 2, 2, (_p("num"), _p("endpoint", "flag")))
def _linspace(graph, args, span, options=None):
    """np.linspace of constants: a constant."""
    ends = [_constant(a, span, "linspace's start and stop") for a in args[:2]]
    if any(end.ndim for end in ends):
        raise ExpressionError("linspace's start and stop must be numbers", span)
    values = _values(options, {"num": 50, "endpoint": True})
    num = values["num"]
    if not 1 <= num <= 1 << 24:
        raise ShapeError(f"linspace: num must be between 1 and {1 << 24:,}, not {num}", span)
    return graph.const(np.linspace(float(ends[0]), float(ends[1]), num, endpoint=values["endpoint"]))
