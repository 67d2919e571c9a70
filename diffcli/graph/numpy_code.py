"""Graph -> Python source: a NumPy function a user can paste into a program.

    import numpy as np

    def d_dx(x, y):
        t1 = np.sqrt(x ** 2 + y ** 2)
        return (np.sin(t1) + t1 * np.cos(t1)) / (2 * t1) * 2 * x

The walk is formula.py's (topological, never recursive): a shared or long
subexpression becomes one assignment. Variables are NumPy values of the shapes
the formula was built for (one point, no batch axes). Operations NumPy has no
one-call spelling for (sigmoid's two branches, scatters, scans) become small
helper functions, printed once above the functions that use them, each the
same arithmetic as diffcli's kernel.
"""

from __future__ import annotations

import keyword
import math

import numpy as np

from .formula import check_literal_size, number_text, renderer, subscript_text, walk
from .nodes import Node
from .ops import ADD, ATOM, COMPARE, OPS, POSTFIX, POWER, UNARY

HELPERS = {
    "_sigmoid": '''def _sigmoid(x):
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))''',
    "_logsumexp": '''def _logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)''',
    "_softmax": '''def _softmax(x, axis=None):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0.0))
    return e / np.sum(e, axis=axis, keepdims=True)''',
    "_gather": '''def _gather(positions, *arrays):
    flat = np.concatenate([np.ravel(a) for a in arrays] + [np.zeros(1)])  # -1 reads the 0 after the last
    return flat[positions]''',
    "_gather_t": '''def _gather_t(g, positions, shape):
    out = np.zeros(int(np.prod(shape)) + 1)
    np.add.at(out, np.ravel(positions), np.ravel(g))
    return out[:-1].reshape(shape)''',
    "_scatter": '''def _scatter(values, where, shape):
    out = np.zeros(shape)
    out[where] = values
    return out''',
    "_linscan": '''def _linscan(h, a, backwards):
    """out[i] = h[i] + a[i] * out[i + 1] (backwards) or out[i - 1], along the first axis."""
    h, a = np.broadcast_arrays(h, a)
    out = np.empty(h.shape)
    previous = None
    for i in (range(len(h) - 1, -1, -1) if backwards else range(len(h))):
        out[i] = h[i] if previous is None else h[i] + a[i] * out[previous]
        previous = i
    return out''',
}


def spell_name(name: str) -> str:
    """A variable's name as a Python parameter: keywords and 'np' get a trailing _."""
    return name + "_" if keyword.iskeyword(name) or name == "np" else name


def function_source(root: Node, function_name: str, parameters: tuple[str, ...]) -> tuple[str, set[str]]:
    """def function_name(parameters): its body computing root, and the helpers it calls."""
    used: set[str] = set()

    def render(node, args):
        text, level = _render(node, args)
        used.update(h for h in HELPERS if h + "(" in text)
        if "scipy.special." in text:
            used.add("scipy")
        return text, level

    spelled = tuple(spell_name(p) for p in parameters)
    lets, (text,) = walk([root], render, spelled + ("np",) + tuple(HELPERS))
    lines = [f"def {function_name}({', '.join(spelled)}):"]
    lines += [f"    {name} = {value}" for name, value in lets]
    lines.append(f"    return {text}")
    return "\n".join(lines), used


def module_source(functions: list[tuple[str, set[str]]]) -> str:
    """The import, the helpers any function needs, then the functions."""
    needed = set().union(*(used for _, used in functions)) if functions else set()
    imports = "import numpy as np" + ("\nimport scipy.special" if "scipy" in needed else "")
    parts = [imports] + [HELPERS[h] for h in HELPERS if h in needed] + [f for f, _ in functions]
    return "\n\n\n".join(parts) + "\n"


def _wrap(part: tuple[str, int], minimum: int) -> str:
    text, level = part
    return text if level >= minimum else f"({text})"


def _call(head: str, args, *extra: str) -> tuple[str, int]:
    return f"{head}({', '.join([text for text, _ in args] + list(extra))})", ATOM


def _ufunc_name(op: str) -> str:
    """The NumPy function an elementwise operation's kernel is (np.arcsin for asin)."""
    kernel = OPS[op].kernel(None) if OPS[op].elementwise else None
    name = getattr(kernel, "__name__", "")
    if not isinstance(kernel, np.ufunc) or getattr(np, name, None) is not kernel:
        raise KeyError(f"no NumPy spelling for the operation '{op}'")
    return name


def _infix(node: Node, notation, args) -> tuple[str, int]:
    a, b = args
    level = notation.precedence
    if level == COMPARE:  # diffcli's comparisons are 1.0 or 0.0
        return f"np.where({_wrap(a, ADD)} {notation.symbol} {_wrap(b, ADD)}, 1.0, 0.0)", ATOM
    if node.op == "add" and node.args[1].op == "neg" and b[1] == UNARY:  # x + (-y) is exactly x - y
        return f"{_wrap(a, ADD)} - {b[0][1:]}", ADD
    # Left-associative like diffcli's, so the same parentheses keep the same order.
    return f"{_wrap(a, level)} {notation.symbol} {_wrap(b, level + 1)}", level


def _shape(shape: tuple) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else f"({', '.join(map(str, shape))})"


def _key(items) -> str:
    return f"np.s_[{', '.join(subscript_text(i) for i in items)}]"


def _cumulative(node, args):
    name = f"np.{node.op}"
    if node.attr:  # accumulated from the end of the first axis
        return f"np.flip({name}(np.flip({args[0][0]}, 0), axis=0), 0)", ATOM
    return _call(name, args, "axis=0")


def _sum_to(node, args):
    source, target = node.args[0].shape, node.shape
    axes = tuple(i for i, (s, t) in enumerate(zip(source, target)) if t == 1 and s != 1)
    return _call("np.sum", args, f"axis={axes}", "keepdims=True")


def _axes(node) -> list[str]:
    """A reduction's axis= and keepdims= (none for the whole value, its attr None)."""
    if node.attr is None:
        return []
    axes, keepdims = node.attr
    return [f"axis={axes}"] + (["keepdims=True"] if keepdims else [])


def _norm(node, args):
    inner = _call("np.sum", [(f"np.square({args[0][0]})", ATOM)], *_axes(node))[0]
    return f"np.sqrt({inner})", ATOM


def _special(name):
    return lambda node, args: _call("scipy.special." + name, args)


def _positions(node) -> str:
    return _int_array(node.attr.positions)


def _int_array(array) -> str:
    return f"np.array({np.asarray(array).tolist()!r})"


def _einsum(node, args):
    ins, out = node.attr
    return _call("np.einsum", [(repr(",".join(ins) + "->" + out), ATOM)] + list(args))


def _scatter_sum(node, args):
    shape = _shape(node.attr[1])
    parts = [f"_scatter({arg[0]}, {_key(items)}, {shape})" for items, arg in zip(node.attr[0], args)]
    return " + ".join(parts), ADD


_OWN = {
    "pow": lambda node, args: (f"{_wrap(args[0], POSTFIX)} ** {_wrap(args[1], UNARY)}", POWER),
    "neg": lambda node, args: (f"-{_wrap(args[0], UNARY)}", UNARY),
    "sigmoid": lambda node, args: _call("_sigmoid", args),
    "relu": lambda node, args: _call("np.maximum", args, "0.0"),
    "softplus": lambda node, args: (f"np.logaddexp(0.0, {args[0][0]})", ATOM),
    "where": lambda node, args: (f"np.where({_wrap(args[0], COMPARE + 1)} != 0, {args[1][0]}, {args[2][0]})",
                                 ATOM),
    "sum": lambda node, args: _call("np.sum", args, *_axes(node)),
    "max": lambda node, args: _call("np.max", args, *_axes(node)),
    "min": lambda node, args: _call("np.min", args, *_axes(node)),
    "norm": _norm,
    "logsumexp": lambda node, args: _call("_logsumexp", args, *_axes(node)),
    "softmax": lambda node, args: _call("_softmax", args, *([] if node.attr is None else [f"axis={node.attr}"])),
    "sinc": lambda node, args: _call("np.sinc", args),
    "nan_to_num": lambda node, args: _call("np.nan_to_num", args),
    "einsum": _einsum,
    "gather": lambda node, args: _call("_gather", [(_positions(node), ATOM)] + list(args)),
    "gather_t": lambda node, args: _call("_gather_t", args, _positions(node), _shape(node.attr.sources[0])),
    "argsort": lambda node, args: (f"np.argsort({args[0][0]}, axis={node.attr}, kind='stable').astype(float)",
                                   ATOM),
    "take_along_axis": lambda node, args: (f"np.take_along_axis({args[0][0]}, ({args[1][0]}).astype(int), "
                                           f"axis={node.attr})", ATOM),
    "erf": _special("erf"),
    "erfc": _special("erfc"),
    "erfinv": _special("erfinv"),
    "lgamma": _special("gammaln"),
    "digamma": _special("psi"),
    "polygamma": lambda node, args: _call("scipy.special.polygamma", [(str(node.attr), ATOM)] + list(args)),
    "cumsum": _cumulative,
    "cumprod": _cumulative,
    "linscan": lambda node, args: _call("_linscan", args, str(bool(node.attr))),
    "transpose": lambda node, args: _call("np.transpose", args),
    "trace": lambda node, args: _call("np.trace", args, *([f"offset={node.attr}"] if node.attr else [])),
    "stack": lambda node, args: (f"np.array([{', '.join(t for t, _ in args)}])", ATOM),
    "index": lambda node, args: (f"{_wrap(args[0], POSTFIX)}[{', '.join(subscript_text(i) for i in node.attr)}]",
                                 POSTFIX),
    "reshape": lambda node, args: _call("np.reshape", args, _shape(node.shape)),
    "broadcast_to": lambda node, args: _call("np.broadcast_to", args, _shape(node.shape)),
    "sum_to": _sum_to,
    "scatter": lambda node, args: _call("_scatter", args, _key(node.attr[0]), _shape(node.attr[1])),
    "scatter_sum": _scatter_sum,
}


def _number_text(v: float, in_array: bool = False) -> tuple[str, int]:
    if math.isnan(v):
        return "np.nan", ATOM
    if math.isinf(v):
        return ("np.inf", ATOM) if v > 0 else ("-np.inf", UNARY)
    text, level = number_text(v)
    if text in ("pi", "e"):
        return "np." + text, ATOM
    if in_array and "." not in text and "e" not in text:
        text += ".0"  # a float array: NumPy refuses integer arrays to negative integer powers
    return text, level


def _constant(value: np.ndarray) -> tuple[str, int]:
    if value.ndim == 0:
        return _number_text(float(value))
    check_literal_size(value.shape)
    flat = [_number_text(float(v), True)[0] for v in value.ravel()]
    for n in reversed(value.shape):
        flat = ["[" + ", ".join(flat[i:i + n]) + "]" for i in range(0, len(flat), n)]
    return f"np.array({flat[0]})", ATOM


_render = renderer(spell_name, _constant, _OWN, _infix, lambda node, args: _call("np." + _ufunc_name(node.op), args))
