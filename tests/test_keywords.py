"""Keyword arguments in calls (issue 19): sum(A, axis=0), mean(A, axis=-1, keepdims=True),
norm(x, ord=1), trace(A, offset=1), ... give NumPy's numbers, derivatives that match
finite differences, formulas that parse back, and caret-pointed errors checked when
the expression is parsed."""

from __future__ import annotations

import numpy as np
import pytest

import diffcli
from diffcli.errors import ExpressionError, ShapeError
from diffcli.language.parse import parse

from .helpers import assert_matches_fd

RNG = np.random.default_rng(19)
A = RNG.uniform(-2, 2, (3, 4))
T = RNG.uniform(-2, 2, (2, 3, 4))
V = RNG.uniform(-2, 2, 5)
SQUARE = RNG.uniform(-2, 2, (4, 4))

# (expression, NumPy's value of it); A, T, V, S as above.
CASES = [
    ("sum(A, axis=0)", A.sum(axis=0)), ("sum(A, 1)", A.sum(1)), ("sum(A, axis=-1, keepdims=True)", A.sum(-1, keepdims=True)),
    ("sum(T, axis=(0, 2))", T.sum(axis=(0, 2))), ("sum(T, axis=[2, 0])", T.sum(axis=(0, 2))),
    ("sum(A, axis=None)", A.sum()), ("sum(A, keepdims=True)", A.sum(keepdims=True)),
    ("mean(A, axis=-1, keepdims=1)", A.mean(axis=-1, keepdims=True)), ("mean(T, axis=1)", T.mean(axis=1)),
    ("max(A, axis=0)", A.max(axis=0)), ("min(T, axis=(1, 2), keepdims=True)", T.min(axis=(1, 2), keepdims=True)),
    ("prod(A, axis=1)", A.prod(axis=1)), ("prod(A, axis=0, keepdims=True)", A.prod(axis=0, keepdims=True)),
    ("norm(A, axis=1)", np.linalg.norm(A, axis=1)), ("norm(V, ord=1)", np.linalg.norm(V, 1)),
    ("norm(V, ord=2)", np.linalg.norm(V, 2)), ("norm(V, ord=inf)", np.linalg.norm(V, np.inf)),
    ("norm(V, ord=-inf)", np.linalg.norm(V, -np.inf)), ("norm(V, 3)", np.linalg.norm(V, 3)),
    ("norm(V, 0.5)", np.linalg.norm(V, 0.5)), ("norm(A, ord=1)", np.linalg.norm(A, 1)),
    ("norm(A, ord=inf)", np.linalg.norm(A, np.inf)), ("norm(A, ord=-1)", np.linalg.norm(A, -1)),
    ("norm(T, ord=1, axis=(2, 0))", np.linalg.norm(T, 1, axis=(2, 0))),
    ("norm(A, 1, axis=0, keepdims=True)", np.linalg.norm(A, 1, axis=0, keepdims=True)),
    ("logsumexp(A, axis=1)", np.log(np.exp(A).sum(axis=1))),
    ("logsumexp(T, axis=(0, 1), keepdims=True)", np.log(np.exp(T).sum(axis=(0, 1), keepdims=True))),
    ("softmax(A, axis=-1)", np.exp(A) / np.exp(A).sum(axis=-1, keepdims=True)),
    ("softmax(A)", np.exp(A) / np.exp(A).sum()),
    ("cumsum(A, axis=1)", np.cumsum(A, axis=1)), ("cumsum(T, axis=-1)", np.cumsum(T, axis=-1)),
    ("cumprod(A, axis=1)", np.cumprod(A, axis=1)), ("cumprod(A, axis=0)", np.cumprod(A, axis=0)),
    ("cumsum(T, axis=1)", np.cumsum(T, axis=1)), ("cumprod(T, axis=-2)", np.cumprod(T, axis=1)),
    ("prod(T, axis=1, keepdims=True)", T.prod(axis=1, keepdims=True)),
    ("trace(S, offset=1)", np.trace(SQUARE, 1)), ("trace(S, offset=-2)", np.trace(SQUARE, -2)),
    ("trace(A, 2)", np.trace(A, 2)),
    ("var(A, axis=0)", A.var(axis=0)), ("var(A)", A.var()), ("std(A, axis=1, ddof=1)", A.std(axis=1, ddof=1)),
    ("var(T, axis=(0, 2), keepdims=True)", T.var(axis=(0, 2), keepdims=True)),
    ("clip(V, -1, 0.5)", np.clip(V, -1, 0.5)),
]
AT = {"A": A, "T": T, "V": V, "S": SQUARE}


def _at(expression):
    return {k: v for k, v in AT.items() if k in diffcli.compile(expression).variables}


@pytest.mark.parametrize("expression,expected", CASES, ids=[c[0] for c in CASES])
def test_values_are_numpys(expression, expected):
    """To the last bit (the compositions compute what NumPy's functions compute, in its
    order), but for logsumexp and softmax, whose references here are the naive formulas."""
    got = diffcli.compile(expression).eval(_at(expression)).value
    assert got.shape == np.shape(expected)
    if expression.startswith(("logsumexp", "softmax")):
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15)
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("expression", [c[0] for c in CASES])
def test_derivatives_match_finite_differences(expression):
    assert_matches_fd(expression, _at(expression))


@pytest.mark.parametrize("expression", [c[0] for c in CASES])
def test_formulas_of_the_gradient_parse_back_to_the_same_numbers(expression):
    """--symbolic writes keyword arguments where the operation has them (sum(t, axis=1))."""
    function = diffcli.compile(f"sum(({expression}) * ({expression}))")
    at = _at(expression)
    shapes = {k: np.shape(v) for k, v in at.items()}
    gradient = function.grad(at)
    for name, text in function.formulas("gradient", shapes).items():
        np.testing.assert_allclose(diffcli.compile(text).eval(at).value, gradient[name], rtol=1e-13, atol=1e-14)


def test_axis_reductions_keep_batch_axes_in_front():
    batch = RNG.uniform(-1, 1, (6, 3, 4))
    f = diffcli.compile("sum(max(A, axis=0) * logsumexp(A, axis=1, keepdims=True))")
    got = f.grad(A=batch, batch_ndim=1)["A"]
    for i in range(6):
        np.testing.assert_allclose(got[i], f.grad(A=batch[i])["A"], rtol=1e-15)


def test_the_whole_value_and_all_axes_are_one_node():
    """sum(A) and sum(A, axis=(0, 1)) are the same node (the attr is canonical)."""
    f = diffcli.compile("sum(A) - sum(A, axis=(0, 1))")
    assert f.eval(A=A).value == 0.0
    (binding,) = [f._binding({"A": A.shape})]
    assert binding.output.op == "const" or binding.output.args[0] is binding.output.args[1]


def test_ties_along_an_axis_share_the_derivative():
    got = diffcli.compile("sum(max(A, axis=1))").grad(A=[[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]])
    np.testing.assert_array_equal(got["A"], [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    assert "max of tied elements" in got.kinks[0].message
    poisoned = diffcli.compile("sum(max(A, axis=1)) + sum(norm(A, axis=0))", kink="nan").grad(
        A=[[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]])["A"]
    assert np.isnan(poisoned[0]).all() and not np.isnan(poisoned[1]).any()


def test_true_false_and_none_are_keyword_values():
    assert diffcli.compile("sum(A, axis=None, keepdims=False)").eval(A=A).value == A.sum()
    assert diffcli.compile("sum(A, None)").eval(A=A).value == A.sum()
    assert diffcli.compile("mean(A, axis=0, keepdims=True)").eval(A=A).value.shape == (1, 4)


# (expression, message, column of the caret): checked by parse(), before any shape is known
PARSE_ERRORS = [
    ("sum(x, axes=0)", "sum has no keyword argument 'axes' (it takes axis, keepdims)", 7),
    ("sin(x, axis=0)", "sin has no keyword argument 'axis' (it takes none)", 7),
    ("sum(x, axis=0, axis=1)", "sum: axis is given twice", 15),
    ("sum(x, 0, axis=1)", "sum: axis is given twice", 10),
    ("sum(x, keepdims=True, 0)", "a positional argument follows a keyword argument", 22),
    ("sum(x, axis=k)", "keyword arguments are constants, and 'k' is not one", 12),
    ("sum(x, axis=sin(1))", "keyword arguments are constants", 12),
    ("(1, 2) + x", "a tuple (a, b) is only a keyword argument's value", 0),
    ("sin((1, 2))", "a tuple (a, b) is only a keyword argument's value", 4),
    ("sum(x, 0, 1)", "sum takes 1 argument, then axis by position or keyword, keepdims by keyword (3 given)", 0),
    ("norm(x, 1, 0, 1)", "norm takes 1 argument, then ord, axis by position or keyword", 0),
]


@pytest.mark.parametrize("expression,message,column", PARSE_ERRORS, ids=[e[0] for e in PARSE_ERRORS])
def test_bad_keyword_arguments_are_refused_when_parsed(expression, message, column):
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        parse(expression)
    assert error.value.span[0] == column


# (expression, message, column): need the shapes, so refused when the graph is built
BUILD_ERRORS = [
    ("sum(A, axis=2)", ShapeError, "sum: axis 2 is out of range for a 3x4 matrix (axes 0 to 1 or -2 to -1)", 7),
    ("sum(V, axis=-2)", ShapeError, "axis 0 or -1", 7),
    ("sum(A, axis=(0, -2))", ShapeError, "names an axis twice", 7),
    ("sum(A, axis=0.5)", ExpressionError, "axis takes a constant integer or a tuple of them", 7),
    ("sum(A, keepdims=2)", ExpressionError, "keepdims takes True or False", 7),
    ("sum(A, axis=[[0]])", ExpressionError, "axis takes a constant integer or a tuple of them", 7),
    ("trace(S, offset=1e30)", ExpressionError, "offset takes a constant integer", 9),
    ("trace(S, offset=[1, 2])", ExpressionError, "offset takes a constant integer", 9),
    ("norm(S, ord=2)", ShapeError, "its largest singular value, which diffcli does not compute", 8),
    ("norm(T, ord=1)", ShapeError, "norm with ord= needs a vector or a matrix", 8),
    ("cumsum(T, axis=3)", ShapeError, "cumsum: axis 3 is out of range for an array of shape (2, 3, 4)", 10),
    ("prod(T, axis=(0, 1))", ShapeError, "prod runs along one axis at a time", 8),
    ("sum(A, axis=((0, 1), 1))", ExpressionError, "axis takes a constant integer or a tuple of them", 7),
]


@pytest.mark.parametrize("expression,kind,message,column", BUILD_ERRORS, ids=[e[0] for e in BUILD_ERRORS])
def test_bad_keyword_values_point_at_the_keyword(expression, kind, message, column):
    with pytest.raises(kind, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        diffcli.compile(expression).eval(_at(expression))
    assert error.value.span[0] == column


def test_the_cli_points_a_caret_at_a_bad_keyword():
    from .test_cli import _diffcli_command, _env
    import subprocess

    done = subprocess.run(_diffcli_command() + ["grad", "sum(x, axes=0)", "--at", "x=[1,2]"],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["error: sum has no keyword argument 'axes' (it takes axis, keepdims)",
                                        "  sum(x, axes=0)", "         ^^^^"]


def test_nested_tuples_of_integers_are_read_for_the_ints_kind():
    """The kind "ints" (for tensordot's axes=((1, 2), (0, 1)) and the like) reads integers in
    tuples and literals nested to any depth; other kinds refuse a nested tuple."""
    from diffcli.graph.nodes import Graph
    from diffcli.graph.ops import Param
    from diffcli.language.functions import read_option
    from diffcli.language.parse import Tuple

    graph = Graph()
    axes = Param("axes", "ints")
    value = Tuple([Tuple([graph.const(1.0), graph.const(2.0)]), graph.const(np.array([0.0, -1.0]))])
    assert read_option(axes, value, (0, 1), "f").value == ((1, 2), (0, -1))
    assert read_option(axes, graph.const(3.0), (0, 1), "f").value == 3
    with pytest.raises(ExpressionError, match="f: axes takes constant integers, alone or in tuples"):
        read_option(axes, Tuple([graph.const(0.5)]), (0, 1), "f")
    parse("sum(A, axis=((0, 1), 1))")  # nested tuples are keyword values as well
