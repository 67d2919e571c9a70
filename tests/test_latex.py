"""graph/latex.py: every formula of a corpus (every operation of the table, and
textbook functions) renders with matplotlib's mathtext; the LaTeX of scalar
formulas, read back by a small translator of its own notation, gives the
derivative's numbers (so no parenthesis is missing); literal forms of the
notations the issue asks for."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.mathtext import MathTextParser

import diffcli
from diffcli.graph import autodiff
from diffcli.graph.latex import latex, spell_name
from diffcli.graph.nodes import topological_order
from diffcli.graph.ops import OPS

from .test_ops import CASES

# Textbook functions (scalars): products, quotients, compositions, exponentials,
# inverse trig, hyperbolics, atan2 / hypot, and nested parentheses.
TEXTBOOK = [
    "x/(1+x^2)", "sqrt(x^2+y^2)*atan2(y,x)", "sin(x)^2*exp(x)", "exp(-x^2/2)", "x^x", "2^x * log(x)",
    "(x+1)^(-2)", "tan(x) - x^3/3", "log10(x) + log2(x)", "cbrt(x) + asin(x/3)", "acos(x/3)*atan(x)",
    "sinh(x)*cosh(x) + tanh(x)", "-(x - y)^3", "x - (y - (x - y))", "1/(1/(x+y))", "x^(y^2)", "(x^y)^2",
    "exp2(x) + expm1(x) + log1p(x)", "asinh(x) + acosh(x+1) + atanh(x/3)", "x*y/(x-y)", "hypot(x, y) * x",
    "log(x^2 + 1)/sqrt(y)", "sigmoid(x*y)", "softplus(x) - relu(y)", "exp(sin(x*y))", "atan(1/x)",
    "x*exp(-x)*cos(3*x)", "(x^2 - y^2)/(x^2 + y^2)", "-x^-y", "1e-5 * x + 2.5e20 * y",
]
POINT = {"x": 0.7, "y": 1.3}
_PARSER = MathTextParser("path")


def _renders(text: str) -> None:
    _PARSER.parse(f"${text}$")  # raises ValueError with the position of what it cannot read


def _formulas(expression: str, at: dict) -> list[str]:
    """The LaTeX of the expression and of its derivative per variable (Jacobian blocks)."""
    function = diffcli.compile(expression)
    shapes = {k: np.shape(v) for k, v in at.items()}
    binding = function._binding(shapes)
    texts = [latex(binding.output, function.variables)]
    return texts + list(function.formulas("jacobian", shapes, form="latex").values())


# Arrays: the operations on vectors and matrices and the structure their derivatives
# have (scatters, scans, broadcasts, sums to a shape).
ARRAYS = [case for case in CASES if case[0] in (
    "A - x", "x * y", "sum(x * x)", "mean(x^3)", "max(x)", "norm(x)", "logsumexp(x)", "softmax(x)", "prod(x)",
    "cumsum(A)", "cumprod(x)", "A @ x", "x @ A", "dot(x, y)", "outer(x, y)", "transpose(A) * 2", "trace(S @ S)",
    "[x * y, sin(y)]", "x[1:] * x[:-1] + x[0]", "A[:, 0] * A[1, ::2]", "x[::-1] * x",
    "where(x > 0, x^2, sin(x))", "maximum(a, b)")]


def test_the_corpus_has_40_formulas_and_more():
    assert len(TEXTBOOK) + len({case[0] for case in ARRAYS}) >= 40


@pytest.mark.parametrize("expression,at", ARRAYS + [(t, POINT) for t in TEXTBOOK],
                         ids=[c[0] for c in ARRAYS] + TEXTBOOK)
def test_every_formula_of_the_corpus_renders_with_mathtext(expression, at):
    at = {k: v for k, v in at.items() if k in diffcli.compile(expression).variables}
    for text in _formulas(expression, at):
        _renders(text)


def test_the_corpus_writes_every_operation_of_the_table():
    """The corpus above reaches each operation (in the expressions or their
    derivatives), so a new operation without a LaTeX notation fails here."""
    seen = set()
    for expression, at in CASES:
        function = diffcli.compile(expression)
        binding = function._binding({k: np.shape(v) for k, v in at.items()})
        seed = binding.graph.var("g", binding.output.shape)
        outputs = [binding.output] + autodiff.vjp(binding.graph, binding.output, seed, binding.inputs)
        for node in topological_order(outputs):
            if node.op not in seen:
                _renders(latex(node))
                seen.add(node.op)
    assert set(OPS) - seen == set()


def test_hessians_render_as_a_labelled_matrix():
    # A few: mathtext takes about a millisecond a character.
    for expression in ("sqrt(x^2+y^2)*atan2(y,x)", "sin(x)^2*exp(x)", "x^x", "sigmoid(x*y)"):
        lets, entries = diffcli.compile(expression).formula_table("hessian", form="latex")
        for name, text in lets + entries:
            _renders(f"{name} = {text}")


# ---------------------------------------------------------------- reading the LaTeX back

# The notation latex.py writes, as diffcli text; braces become parentheses.
_WORDS = [(r"\left\|", "norm("), (r"\right\|", ")"), (r"\left|", "abs("), (r"\right|", ")"),
          (r"\left(", "("), (r"\right)", ")"), (r"\left[", "("), (r"\right]", ")"),
          (r"\cdot", "*"), (r"\odot", "*"), (r"\times", "*"), (r"\leq", "<="), (r"\geq", ">="), (r"\neq", "!="),
          (r"\sqrt[3]", "cbrt"), (r"\sqrt", "sqrt"), (r"\arcsin", "asin"), (r"\arccos", "acos"),
          (r"\arctan", "atan"), (r"\sinh", "sinh"), (r"\cosh", "cosh"), (r"\tanh", "tanh"), (r"\sin", "sin"),
          (r"\cos", "cos"), (r"\tan", "tan"), (r"\log_{2}", "log2"), (r"\log_{10}", "log10"), (r"\log", "log"),
          (r"\max", "maximum"), (r"\min", "minimum"), (r"\sigma", "sigmoid"), (r"\pi", "pi")]
_NAMES = {"arsinh": "asinh", "arcosh": "acosh", "artanh": "atanh", "sgn": "sign"}


def _as_diffcli(text: str) -> str:
    text = re.sub(r"\\operatorname\{(\w+)\}", lambda m: _NAMES.get(m.group(1), m.group(1)), text)
    text = re.sub(r"_\{(\d+)\}", r"\1", text)  # t_{1} -> t1
    text = re.sub(r"\\left\[([^\[\]]*?) = ([^\[\]]*?)\\right\]", r"\\left[\1 == \2\\right]", text)  # [a = b]
    for word, replacement in _WORDS:
        text = text.replace(word, replacement)
    text = text.replace("e^{", "exp{")
    out, stack, skip_brace = [], [], False
    i = 0
    while i < len(text):  # \frac{a}{b} -> ((a)/(b)); other braces group
        if text.startswith(r"\frac{", i):
            out.append("((")
            stack.append("numerator")
            i += 6
            continue
        c = text[i]
        if c == "{":
            stack.append("denominator" if skip_brace else "group")
            out.append("" if skip_brace else "(")
            skip_brace = False
        elif c == "}":
            kind = stack.pop()
            out.append({"numerator": ")/(", "denominator": "))", "group": ")"}[kind])
            skip_brace = kind == "numerator"
        else:
            out.append(c)
        i += 1
    return "".join(out).replace(r"\,", " @ ")


def _latex_value(text: str, at: dict) -> float:
    main, _, where = text.partition(r",\quad \mathrm{where}\ ")
    lets = [let.split(" = ", 1) for let in where.split(r",\ ")] if where else []
    source = "; ".join([f"{_as_diffcli(name)} = {_as_diffcli(value)}" for name, value in lets] + [_as_diffcli(main)])
    return float(diffcli.compile(source).eval(at).value)


@pytest.mark.parametrize("expression", TEXTBOOK)
def test_the_latex_of_a_derivative_reads_back_to_its_numbers(expression):
    """Parentheses are where the meaning needs them: the LaTeX, read as written
    (\\frac groups, ^{} groups, \\left( \\right) group), gives grad's numbers."""
    function = diffcli.compile(expression)
    at = {k: POINT[k] for k in function.variables}
    gradient = function.grad(at)
    for name, text in function.formulas("gradient", form="latex").items():
        assert _latex_value(text, at) == pytest.approx(float(gradient[name]), rel=1e-12), text


@pytest.mark.parametrize("expression,expected", [
    ("(a + b)^2", r"\left(a + b\right)^{2}"),
    ("a - (b - c)", r"a - \left(b - c\right)"),
    ("(a - b) - c", r"a - b - c"),
    ("-(a + b)", r"-\left(a + b\right)"),
    ("a / (b + c) / d", r"\frac{\frac{a}{b + c}}{d}"),
    ("(a / b)^c", r"\left(\frac{a}{b}\right)^{c}"),
    ("a^(b^c)", r"a^{b^{c}}"),
    ("(a^b)^c", r"\left(a^{b}\right)^{c}"),
    ("sqrt(a + b) * atan2(a, b)", r"\sqrt{a + b} \cdot \operatorname{atan2}\left(a, b\right)"),
    ("exp(a) * log(b) * abs(a)", r"e^{a} \cdot \log\left(b\right) \cdot \left|a\right|"),
    ("theta1 * alpha + rate", r"\theta_{1} \cdot \alpha + \mathrm{rate}"),
    ("a * 1e-07", r"a \cdot 10^{-7}"),
    ("a * 2.5e+20", r"a \cdot \left(2.5 \times 10^{20}\right)"),
    ("a * (b < c)", r"a \cdot \left[b < c\right]"),
])
def test_notation(expression, expected):
    function = diffcli.compile(expression)
    assert latex(function._binding({n: () for n in function.variables}).output, function.variables) == expected


def test_names_subscripts_and_vectors():
    assert spell_name("x2") == "x_{2}" and spell_name("Omega") == r"\Omega" and spell_name("my_var") == \
        r"\mathrm{my\_var}"
    function = diffcli.compile("x[0] * transpose(A) @ x")
    text = latex(function._binding({"x": (2,), "A": (2, 2)}).output, function.variables)
    assert text == r"x_{0} \cdot A^{\top} \, x"
    _renders(text)


def test_shared_subexpressions_are_named_once_with_where():
    text = diffcli.compile("x/(1+x^2)").formulas("gradient", form="latex", simplify=False)["x"]
    assert text.endswith(r",\quad \mathrm{where}\ t_{1} = 1 + x^{2}") and text.count("t_{1}") >= 3


def test_a_named_part_never_looks_like_a_variable():
    """A variable t_1 is written t_{1}, as the part t1 would be: parts start at t_{2}."""
    text = diffcli.compile("exp(t_1 * x) * exp(t_1 * x)").formulas("gradient", form="latex", simplify=False)["x"]
    assert text.endswith(r"\mathrm{where}\ t_{2} = e^{t_{1} \cdot x}")
