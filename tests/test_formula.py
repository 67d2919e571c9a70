"""formula.py through its own interface: formula(node) writes a graph as text in
diffcli's language that parses back to the same numbers (derivatives included,
compared with closed forms), with the precedence and let-bindings it promises."""

from __future__ import annotations

import numpy as np
import pytest

from diffcli.graph import autodiff
from diffcli.errors import UsageError
from diffcli.engine.evaluate import Plan
from diffcli.graph.formula import LONG, MAX_LITERAL, formula
from diffcli.graph.nodes import Graph
from diffcli.language.parse import parse


def _build(text: str, shapes: dict, graph: Graph | None = None):
    graph = graph or Graph()
    program = parse(text)
    output = program.build(graph, shapes)
    return graph, output, {name: graph.var(name, shapes[name]) for name in shapes}


def _run(node, variables: dict, at: dict) -> np.ndarray:
    names = list(variables)
    return Plan([node], [variables[n] for n in names]).run([np.asarray(at[n], dtype=float) for n in names])[0]


def _reparsed(node, shapes: dict, at: dict) -> tuple[str, np.ndarray]:
    """The formula of node, and its value when parsed and built afresh."""
    text = formula(node, tuple(shapes))
    _, output, variables = _build(text, shapes)
    return text, _run(output, variables, at)


def _derivative(text: str, shapes: dict, name: str):
    graph, output, variables = _build(text, shapes)
    (d,) = autodiff.vjp(graph, output, graph.const(1.0), [variables[name]])
    return d, variables


@pytest.mark.parametrize("text, shapes, at", [
    ("a - b - (c - d)", {"a": (), "b": (), "c": (), "d": ()}, {"a": 1e16, "b": 1.0, "c": -1.0, "d": 3.0}),
    ("a + (b + c)", {"a": (), "b": (), "c": ()}, {"a": 1e16, "b": -1e16, "c": 1.0}),
    ("-x^2 + 2^-x", {"x": ()}, {"x": 1.5}),
    ("(a < b) * a + (a >= b) * b", {"a": (), "b": ()}, {"a": 2.0, "b": -3.0}),
    ("sum(x[1:] * x[:-1]) + x[0:2] @ [1, -1]", {"x": (4,)}, {"x": [1.0, -2.0, 3.5, 0.25]}),
    ("cumsum(X) * transpose(X) - X[1, :]", {"X": (2, 2)}, {"X": [[1.0, 2.0], [3.0, 4.5]]}),
])
def test_a_formula_parses_back_to_the_same_numbers(text, shapes, at):
    """Floating-point addition is not associative: a + (b + c) with these values
    shows whether the parentheses were kept."""
    _, output, variables = _build(text, shapes)
    printed, again = _reparsed(output, shapes, at)
    np.testing.assert_array_equal(again, _run(output, variables, at), err_msg=printed)


def test_parentheses_only_where_precedence_needs_them():
    _, output, _ = _build("a - b - (c - d)", {"a": (), "b": (), "c": (), "d": ()})
    assert formula(output) == "a - b - (c - d)"
    _, output, _ = _build("(a + b) * c ^ 2", {"a": (), "b": (), "c": ()})
    assert formula(output) == "(a + b) * c ^ 2"


@pytest.mark.parametrize("text, shapes, at, want", [
    ("sin(x) * x^3", {"x": ()}, {"x": 0.8}, lambda x: np.cos(x) * x**3 + 3 * np.sin(x) * x**2),
    ("log(1 + x^2) / x", {"x": ()}, {"x": 2.5}, lambda x: 2 / (1 + x * x) - np.log(1 + x * x) / x**2),
    ("sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)", {"x": (4,)}, {"x": [0.5, -0.3, 1.2, 0.9]},
     lambda x: np.concatenate([-400 * x[:-1] * (x[1:] - x[:-1]**2) - 2 * (1 - x[:-1]), [0.0]])
     + np.concatenate([[0.0], 200 * (x[1:] - x[:-1]**2)])),
    ("where(x > 0, sqrt(x), -x)", {"x": ()}, {"x": 4.0}, lambda x: 0.5 / np.sqrt(x)),
])
def test_a_derivatives_formula_is_its_closed_form(text, shapes, at, want):
    d, variables = _derivative(text, shapes, "x")
    printed, again = _reparsed(d, shapes, at)
    x = np.asarray(at["x"], dtype=float)
    np.testing.assert_allclose(again, want(x), rtol=1e-13, atol=1e-13, err_msg=printed)
    np.testing.assert_array_equal(again, _run(d, variables, at))


def test_a_shared_subexpression_is_named_once_avoiding_reserved_names():
    _, output, _ = _build("r = sin(x + y); r * r + r", {"x": (), "y": ()})
    text = formula(output, ("x", "y", "t1"))
    assert text.count("sin(") == 1 and text.startswith("t2 = sin(x + y); ") and "t1" not in text


def test_a_short_subexpression_is_written_out_where_a_name_would_not_shorten_the_text():
    _, output, _ = _build("x^2 / (1 + x^2)", {"x": ()})
    assert formula(output) == "x ^ 2 / (1 + x ^ 2)"


def test_a_long_subexpression_gets_a_name_and_the_text_stays_linear():
    shapes = {"x": ()}
    _, output, variables = _build(" + ".join(f"sin(x * {k})" for k in range(1, 60)) + " + 1", shapes)
    text, again = _reparsed(output, shapes, {"x": 0.3})
    assert ";" in text and len(text) < 3 * LONG + 60 * 20
    np.testing.assert_array_equal(again, _run(output, variables, {"x": 0.3}))


def test_a_formula_that_would_spell_out_too_many_entries_is_refused():
    """The derivative of x[1:] scatters the cotangent back into a literal vector."""
    d, _ = _derivative("sum(x[1:] * x[:-1])", {"x": (MAX_LITERAL + 1,)}, "x")
    with pytest.raises(UsageError, match="at most"):
        formula(d)
    small, variables = _derivative("sum(x[1:] * x[:-1])", {"x": (4,)}, "x")
    at = {"x": [1.0, 2.0, 3.0, 4.0]}
    np.testing.assert_array_equal(_reparsed(small, {"x": (4,)}, at)[1], [2.0, 4.0, 6.0, 3.0])
