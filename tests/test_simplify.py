"""graph/simplify.py: the normal forms it reaches (literal texts), that every
rewrite is an identity where both sides are defined (random expressions, their
values and derivatives before and after), and that it walks deep graphs without
recursing."""

from __future__ import annotations

import random

import numpy as np
import pytest

import diffcli
from diffcli.engine.evaluate import Plan
from diffcli.graph.formula import formula
from diffcli.graph.nodes import Graph
from diffcli.graph.simplify import simplified
from diffcli.language.parse import parse

from .test_property import random_scalar
from .test_roundtrip import random_case, random_point, VARIABLES


def _simplified_text(text: str, shapes: dict | None = None) -> str:
    shapes = shapes or {}
    graph = Graph()
    node = parse(text).build(graph, {n: shapes.get(n, ()) for n in parse(text).variables})
    return formula(simplified(node), tuple(shapes))


def _value(node, at: dict):
    names = sorted(at)
    graph = node.graph
    inputs = [graph.var(n, np.shape(at[n])) for n in names]
    return Plan([node], inputs).run([np.asarray(at[n], dtype=float) for n in names])[0]


@pytest.mark.parametrize("text, want", [
    ("x * x", "x ^ 2"),
    ("2*x + 3*x", "5 * x"),
    ("a / (2 * b) * 2", "a / b"),
    ("-(-x)", "x"),
    ("x * y / x", "y"),
    ("x^3 / x^5", "1 / x ^ 2"),
    ("sqrt(t) / t", "1 / sqrt(t)"),
    ("sqrt(x)^2", "x"),
    ("-x * -y", "x * y"),
    ("1/x - 1/y", "(y - x) / (x * y)"),
    ("x / (x + 1) + 1 / (x + 1)", "1"),
    ("2 * x * y + 2 * x * z", "2 * x * (y + z)"),
    ("hypot(x, 1)^2", "1 + x ^ 2"),
    ("0 - x - y", "-(x + y)"),
])
def test_normal_forms(text, want):
    assert _simplified_text(text) == want


@pytest.mark.parametrize("text, at", [
    ("sqrt(x^2)", {"x": -2.0}),  # |x|, not x
    ("(x^2)^0.5 * 3", {"x": -2.0}),
    ("sqrt(x * y)", {"x": -1.0, "y": -4.0}),  # not sqrt(x) * sqrt(y), undefined here
    ("(x * y)^1.5", {"x": -1.0, "y": -4.0}),
    ("cbrt(x)^3", {"x": -8.0}),
])
def test_powers_are_not_split_where_a_base_can_be_negative(text, at):
    graph = Graph()
    node = parse(text).build(graph, {n: () for n in at})
    want = _value(node, at)
    assert np.isfinite(want)
    again = diffcli.compile(formula(simplified(node))).eval(at).value
    np.testing.assert_allclose(again, want, rtol=1e-15)


def test_literals_fold_into_numbers():
    """Issue 21: sum(x^2) printed [2] * x."""
    f = diffcli.compile("sum(x^2)")
    assert f.formulas("gradient", {"x": (3,)}) == {"x": "2 * x"}


@pytest.mark.parametrize("expression, want", [
    ("x / (1 + x^2)", "(1 - x ^ 2) / (1 + x ^ 2) ^ 2"),
    ("log(1 + x^2)", "2 * x / (1 + x ^ 2)"),
    ("sqrt(1 - x^2)", "-x / sqrt(1 - x ^ 2)"),
    ("x^3 * exp(-x)", "x ^ 2 * exp(-x) * (3 - x)"),
    ("hypot(x, 1) * atan(x)", "(1 + x * atan(x)) / sqrt(1 + x ^ 2)"),
    ("x^x", "x ^ x * (1 + log(x))"),
    ("sin(x) * cos(x)", "cos(2 * x)"),
    ("log(cos(x))", "-tan(x)"),
])
def test_derivatives_are_as_short_as_a_cas_writes_them(expression, want):
    assert diffcli.compile(expression).formulas("gradient")["x"] == want


def test_a_two_variable_gradient():
    """Issue 21: ... atan2(y, x) / (2 * t2) * 2 * x became this."""
    formulas = diffcli.compile("sqrt(x^2+y^2)*atan2(y,x)").formulas("gradient")
    assert formulas == {"x": "(x * atan2(y, x) - y) / sqrt(x ^ 2 + y ^ 2)",
                        "y": "(x + y * atan2(y, x)) / sqrt(x ^ 2 + y ^ 2)"}


def test_guards_of_derivative_rules_go_where_the_formula_is_undefined_anyway():
    """norm's rule divides by where(norm == 0, 1, norm): the formula divides by the
    norm, which is the same wherever the norm is not 0; at 0 grad answers with its
    subgradient 0 and the formula is 0/0 (as the README says)."""
    f = diffcli.compile("norm(v)")
    text = f.formulas("gradient", {"v": (3,)})["v"]
    assert text == "v / norm(v)"
    back = diffcli.compile(text)
    np.testing.assert_allclose(back.eval(v=np.array([3.0, 0.0, 4.0])).value, [0.6, 0.0, 0.8], rtol=1e-15)
    with np.errstate(all="ignore"):
        assert np.isnan(back.eval(v=np.zeros(3)).value).all()
    np.testing.assert_array_equal(f.grad(v=np.zeros(3))["v"], 0.0)


@pytest.mark.parametrize("seed", range(150))
def test_simplifying_an_expression_keeps_its_value(seed):
    """Every rewrite is an identity: the simplified forward expression (not only
    derivatives) gives the same numbers at random points."""
    rng = random.Random(seed)
    text = random_scalar(rng, rng.randint(1, 4))
    shapes = {"x": (), "y": (), "v": (3,), "w": (3,)}
    graph = Graph()
    program = parse(text)
    node = program.build(graph, {n: shapes[n] for n in program.variables})
    data = np.random.default_rng(seed)
    at = {"x": data.uniform(-2, 2), "y": data.uniform(-2, 2), "v": data.uniform(-2, 2, 3),
          "w": data.uniform(0.5, 2, 3)}
    at = {n: at[n] for n in program.variables}
    want = _value(node, at)
    printed = formula(simplified(node))
    got = diffcli.compile(printed).eval({n: at[n] for n in diffcli.compile(printed).variables}).value
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * max(1.0, np.max(np.abs(want))),
                               err_msg=f"{text} -> {printed}")


@pytest.mark.parametrize("seed", range(40))
def test_simplified_derivatives_of_every_operation_are_grads(seed):
    """Random cases from test_roundtrip (every operation, vectors and matrices):
    the simplified gradient at random points is grad's."""
    expression = random_case(50_000 + seed)
    f = diffcli.compile(expression)
    at = random_point(seed, f.variables)
    grad = f.grad(at)
    for name, text in f.formulas("gradient", {n: VARIABLES[n] for n in f.variables}).items():
        back = diffcli.compile(text)
        got = back.eval({k: at[k] for k in back.variables}).value
        want = grad[name]
        np.testing.assert_allclose(np.broadcast_to(got, np.shape(want)), want, rtol=1e-9,
                                   atol=1e-9 * max(1.0, float(np.max(np.abs(want)))), err_msg=text)


def test_deep_expressions_are_walked_without_recursion():
    """A derivative thousands of operations deep (nested sums and products, three
    times Python's recursion limit): simplified and printed without RecursionError,
    and still right."""
    depth = 3_000
    text = "x"
    for k in range(depth):
        text = f"(1 + 0.5 * {text})" if k % 2 else f"sin({text})"
    f = diffcli.compile(text)
    formula_text = f.formulas("gradient")["x"]
    back = diffcli.compile(formula_text)
    assert back.eval(x=0.3).value == pytest.approx(f.grad(x=0.3)["x"], rel=1e-9)
