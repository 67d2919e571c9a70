"""Graph -> LaTeX, for papers and notebooks: \\frac, \\sqrt, ^{}, \\operatorname{atan2}.

The walk is formula.py's (topological, never recursive, shared subexpressions
named once); only how each node is written differs. Every formula renders with
matplotlib's mathtext (tests/test_latex.py), so only commands it knows are used:
no matrix environments (literals are bracketed lists), no \\text.
Structural operations that the language has no syntax for (broadcasts, sums
to a shape, scatters, scans) are written as named operators with their shapes.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .formula import check_literal_size, number_text, renderer, subscript_text, walk
from .nodes import Node
from .ops import ADD, ATOM, COMPARE, MUL, POSTFIX, POWER, UNARY

GREEK = frozenset("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi pi rho sigma tau "
                  "upsilon phi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi "
                  "Omega".split())
# Functions LaTeX has a command for; the others are \operatorname{name}.
NAMED = {"sin": r"\sin", "cos": r"\cos", "tan": r"\tan", "asin": r"\arcsin", "acos": r"\arccos",
         "atan": r"\arctan", "sinh": r"\sinh", "cosh": r"\cosh", "tanh": r"\tanh", "log": r"\log",
         "log2": r"\log_{2}", "log10": r"\log_{10}", "maximum": r"\max", "minimum": r"\min", "max": r"\max",
         "min": r"\min", "sign": r"\operatorname{sgn}", "trace": r"\operatorname{tr}", "sigmoid": r"\sigma",
         "asinh": r"\operatorname{arsinh}", "acosh": r"\operatorname{arcosh}",
         "atanh": r"\operatorname{artanh}"}
RELATIONS = {"<": "<", "<=": r"\leq", ">": ">", ">=": r"\geq", "==": "=", "!=": r"\neq"}


def latex(root: Node, reserved: tuple[str, ...] = ()) -> str:
    """One formula: the result, then its named parts ('..., where t_{1} = ...')."""
    lets, (text,) = latex_parts([root], reserved)
    if not lets:
        return text
    return text + r",\quad \mathrm{where}\ " + r",\ ".join(f"{name} = {value}" for name, value in lets)


def latex_parts(roots: list[Node], reserved: tuple[str, ...] = (),
                leaf=None) -> tuple[list[tuple[str, str]], list[str]]:
    """Several formulas sharing their named parts: ([(name, text)], [text per root])."""
    # A variable t_1 is written t_{1}, as the name t1 would be: that name is taken too.
    taken = tuple(reserved) + tuple(re.sub(r"_(?=\d+$)", "", name) for name in reserved)
    return walk(roots, _render, taken, leaf, spell=spell_name)


def spell_name(name: str) -> str:
    """x, x_{1}, \\theta, \\theta_{2}, \\mathrm{rate}: a variable's name as LaTeX."""
    match = re.fullmatch(r"([A-Za-z]+)_?(\d+)", name)
    head, sub = (match.group(1), match.group(2)) if match else (name, None)
    if len(head) == 1:
        text = head
    elif head in GREEK:
        text = "\\" + head
    else:
        text = r"\mathrm{" + head.replace("_", r"\_") + "}"
    return f"{text}_{{{sub}}}" if sub is not None else text


def _wrap(part: tuple[str, int], minimum: int) -> str:
    text, level = part
    return text if level >= minimum else rf"\left({text}\right)"


def _call(head: str, args) -> tuple[str, int]:
    return rf"{head}\left({', '.join(text for text, _ in args)}\right)", POSTFIX


def _infix(node: Node, notation, args) -> tuple[str, int]:
    a, b = args
    if notation.precedence == COMPARE:  # 1 or 0: Iverson's bracket
        return rf"\left[{a[0]} {RELATIONS[notation.symbol]} {b[0]}\right]", ATOM
    if node.op in ("div", "cdiv"):
        return rf"\frac{{{a[0]}}}{{{b[0]}}}", POWER
    if node.op in ("add", "sub"):
        if node.op == "add" and node.args[1].op == "neg" and b[1] == UNARY:  # x + (-y) is x - y
            return f"{_wrap(a, ADD)} - {b[0][1:]}", ADD
        return f"{_wrap(a, ADD)} {notation.symbol} {_wrap(b, ADD + 1)}", ADD
    if node.op == "matmul":
        return rf"{_wrap(a, MUL)} \, {_wrap(b, POWER)}", MUL
    # A product of arrays is entrywise (Hadamard's), of a scalar an ordinary one.
    symbol = r"\odot" if node.args[0].size > 1 and node.args[1].size > 1 else r"\cdot"
    return f"{_wrap(a, MUL)} {symbol} {_wrap(b, POWER)}", MUL


def _power(node, args):
    a, b = args
    exponent = node.args[1]
    if exponent.op == "const" and exponent.size == 1 and float(exponent.value.ravel()[0]) == 0.5:
        return rf"\sqrt{{{a[0]}}}", POSTFIX
    return f"{_wrap(a, POSTFIX)}^{{{b[0]}}}", POWER  # x_{0}^{2}, \sin\left(x\right)^{2}


def _index(node, args):
    items = ", ".join(subscript_text(i) for i in node.attr)
    return f"{_subscriptable(args[0])}_{{{items}}}", POSTFIX


def _subscriptable(part: tuple[str, int]) -> str:
    """A base that takes a subscript: t_{1} is grouped first ({t_{1}}_{0}), as a
    second subscript is an error."""
    text = _wrap(part, ATOM)
    return f"{{{text}}}" if "_" in text else text


def _reshape(node, args):
    source, target = node.args[0].shape, node.shape
    lifted = len(target) - len(source)
    if lifted >= 0 and target[lifted:] == source and all(s == 1 for s in target[:lifted]):
        return args[0]  # a rank lift: the same numbers, broadcast alike
    dropped = len(source) - len(target)
    if dropped > 0 and source[dropped:] == target and all(s == 1 for s in source[:dropped]):
        return f"{_subscriptable(args[0])}_{{{', '.join(['0'] * dropped)}}}", POSTFIX
    return _call(rf"\operatorname{{reshape}}_{{{_shape(target)}}}", args)


def _shape(shape: tuple) -> str:
    return r" \times ".join(map(str, shape)) if shape else "1"


def _scatter_text(items, shape, arg) -> str:
    where = ", ".join(subscript_text(i) for i in items)
    return rf"\operatorname{{scatter}}_{{[{where}] \to {_shape(shape)}}}\left({arg[0]}\right)"


def _scatter_sum(node, args):
    return " + ".join(_scatter_text(items, node.attr[1], arg) for items, arg in zip(node.attr[0], args)), ADD


def _broadcast(node, args):
    if not node.args[0].shape:  # a scalar times the array of ones
        return rf"{_wrap(args[0], POWER)} \, \mathbf{{1}}_{{{_shape(node.shape)}}}", MUL
    return _call(rf"\operatorname{{broadcast}}_{{{_shape(node.shape)}}}", args)


def _cumulative(node, args):
    head = rf"\operatorname{{{node.op}}}"
    return _call(head + (r"^{\leftarrow}" if node.attr else ""), args)  # the arrow: from the end


_OWN = {
    "pow": _power,
    "neg": lambda node, args: (f"-{_wrap(args[0], MUL)}", UNARY),
    "exp": lambda node, args: (f"e^{{{args[0][0]}}}", POWER),
    "exp2": lambda node, args: (f"2^{{{args[0][0]}}}", POWER),
    "expm1": lambda node, args: (f"e^{{{args[0][0]}}} - 1", ADD),
    "log1p": lambda node, args: (rf"\log\left(1 + {args[0][0]}\right)", POSTFIX),
    "sqrt": lambda node, args: (rf"\sqrt{{{args[0][0]}}}", POSTFIX),
    "cbrt": lambda node, args: (rf"\sqrt[3]{{{args[0][0]}}}", POSTFIX),
    "abs": lambda node, args: (rf"\left|{args[0][0]}\right|", ATOM),
    "norm": lambda node, args: (rf"\left\|{args[0][0]}\right\|", ATOM),
    "floor": lambda node, args: (rf"\left\lfloor {args[0][0]} \right\rfloor", ATOM),
    "ceil": lambda node, args: (rf"\left\lceil {args[0][0]} \right\rceil", ATOM),
    "transpose": lambda node, args: (rf"{_wrap(args[0], ATOM)}^{{\top}}", POWER),
    "sum": lambda node, args: (rf"\sum {_wrap(args[0], POSTFIX)}", MUL),
    "index": _index,
    "stack": lambda node, args: (rf"\left[{', '.join(t for t, _ in args)}\right]", ATOM),
    "reshape": _reshape,
    "broadcast_to": _broadcast,
    "sum_to": lambda node, args: _call(rf"\operatorname{{sum}}_{{\to {_shape(node.shape)}}}", args),
    "scatter": lambda node, args: (_scatter_text(node.attr[0], node.attr[1], args[0]), POSTFIX),
    "scatter_sum": _scatter_sum,
    "cumsum": _cumulative,
    "cumprod": _cumulative,
    "linscan": lambda node, args: _call(r"\operatorname{linscan}" + (r"^{\leftarrow}" if node.attr else ""), args),
}


def _number_latex(v: float) -> tuple[str, int]:
    if math.isnan(v):
        return r"\mathrm{NaN}", ATOM
    if math.isinf(v):
        return (r"\infty", ATOM) if v > 0 else (r"-\infty", UNARY)
    text, level = number_text(v)
    if text == "pi":
        return r"\pi", ATOM
    mantissa, _, exponent = text.partition("e")
    if exponent and text != "e":
        power = f"10^{{{int(exponent)}}}"
        if mantissa in ("1", "1.0"):
            return power, POWER
        return rf"{mantissa} \times {power}", (UNARY if v < 0 else MUL)
    return text, level


def _constant(value: np.ndarray) -> tuple[str, int]:
    if value.ndim == 0:
        return _number_latex(float(value))
    check_literal_size(value.shape)
    flat = [_number_latex(float(v))[0] for v in value.ravel()]
    for n in reversed(value.shape):
        flat = [r"\left[" + ", ".join(flat[i:i + n]) + r"\right]" for i in range(0, len(flat), n)]
    return flat[0], ATOM


_render = renderer(spell_name, _constant, _OWN, _infix,
                   lambda node, args: _call(NAMED.get(node.op, rf"\operatorname{{{node.op}}}"), args))
