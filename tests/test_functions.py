"""functions.py through its own interface: FUNCTIONS[name].build(graph, args,
span) makes the nodes of a call, with the arity the table states; the
compositions (mean, prod, dot, outer, cumsum, cumprod, transpose, trace) give
the numbers and derivatives of their closed forms; CONSTANTS and arity_text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffcli.graph import autodiff
from diffcli.errors import ShapeError
from diffcli.engine.evaluate import Plan
from diffcli.language.functions import CONSTANTS, FUNCTIONS, arity_text
from diffcli.graph.nodes import Graph
from diffcli.graph.ops import OPS

SPAN = (0, 1)  # errors.Span: where in the source text the call is


def _call(name: str, *values):
    """(graph, the call's node, its variable nodes, their arrays) for a call on variables."""
    graph = Graph()
    arrays = [np.asarray(v, dtype=float) for v in values]
    variables = [graph.var(f"v{i}", a.shape) for i, a in enumerate(arrays)]
    return graph, FUNCTIONS[name].build(graph, variables, SPAN), variables, arrays


def _value_and_gradient(name: str, *values):
    """The call's value and, for a scalar result, its gradient for each argument."""
    graph, node, variables, arrays = _call(name, *values)
    outputs = [node]
    if node.shape == ():
        outputs += autodiff.vjp(graph, node, graph.const(1.0), variables)
    results = Plan(outputs, variables).run(arrays)
    return results[0], results[1:]


def test_every_primitive_is_an_operation_of_its_own_name_and_arity():
    graph = Graph()
    for name, spec in FUNCTIONS.items():
        if spec.build.__name__ != "<lambda>":  # a composition, tested below
            continue
        # (3, 3): of a scalar max(x) is x, and of a vector transpose(x) is x
        args = [graph.var(f"a{i}", (3, 3)) for i in range(spec.min_args)]
        node = spec.build(graph, args, SPAN)
        assert node.op in OPS and name in OPS[node.op].names and node.args == tuple(args), name  # or an alias
        assert spec.min_args == spec.max_args


def test_mean_and_its_gradient():
    x = np.array([1.0, 2.0, 4.5, -3.0])
    value, (dx,) = _value_and_gradient("mean", x)
    assert value == np.mean(x)
    np.testing.assert_array_equal(dx, np.full(4, 0.25))


@pytest.mark.parametrize("x", [[2.0, 3.0, -0.5], [2.0, 0.0, 5.0], [0.0, 0.0, 7.0]])
def test_prod_and_its_gradient_stay_exact_with_zeros(x):
    """d prod / d x_i is the product of the others: finite where x_i is 0 (not
    prod / x_i = 0 / 0)."""
    x = np.array(x)
    value, (dx,) = _value_and_gradient("prod", x)
    assert value == np.prod(x)
    np.testing.assert_array_equal(dx, [np.prod(np.delete(x, i)) for i in range(3)])


def test_prod_of_a_scalar_is_the_scalar():
    graph, node, (x,), _ = _call("prod", 3.0)
    assert node is x


def test_dot_of_vectors_and_of_a_scalar():
    a, b = np.array([1.0, -2.0, 3.0]), np.array([0.5, 4.0, -1.0])
    value, (da, db) = _value_and_gradient("dot", a, b)
    assert value == a @ b
    np.testing.assert_array_equal(da, b)
    np.testing.assert_array_equal(db, a)
    graph, node, variables, arrays = _call("dot", 2.0, [1.0, 3.0])
    assert node.op == "mul"
    np.testing.assert_array_equal(Plan([node], variables).run(arrays)[0], [2.0, 6.0])


def test_outer_flattens_its_arguments():
    a, b = np.array([[1.0, 2.0]]), np.array([3.0, -1.0, 0.5])
    graph, node, variables, arrays = _call("outer", a, b)
    assert node.shape == (2, 3)
    np.testing.assert_array_equal(Plan([node], variables).run(arrays)[0], np.outer(a, b))


def test_transpose_and_trace():
    m = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    graph, node, variables, arrays = _call("transpose", m)
    np.testing.assert_array_equal(Plan([node], variables).run(arrays)[0], m.T)
    square = np.array([[1.0, 2.0], [3.0, 4.0]])
    value, (dm,) = _value_and_gradient("trace", square)
    assert value == 5.0
    np.testing.assert_array_equal(dm, np.eye(2))


@pytest.mark.parametrize("name, numpy", [("cumsum", np.cumsum), ("cumprod", np.cumprod)])
def test_cumulative_functions_run_forward_and_refuse_a_scalar(name, numpy):
    x = np.array([1.5, -2.0, 3.0, 0.5])
    graph, node, variables, arrays = _call(name, x)
    np.testing.assert_array_equal(Plan([node], variables).run(arrays)[0], numpy(x))
    (seeded,) = autodiff.vjp(graph, node, graph.const(np.ones(4)), variables)
    want = np.array([np.sum(np.cumprod(x)[i:] / x[i]) for i in range(4)]) if name == "cumprod" \
        else np.array([4.0, 3.0, 2.0, 1.0])
    np.testing.assert_allclose(Plan([seeded], variables).run(arrays)[0], want, rtol=1e-15)
    with pytest.raises(ShapeError, match=f"{name} needs a vector"):
        _call(name, 2.0)


def test_constants_and_arity_text():
    assert CONSTANTS["pi"] == math.pi and CONSTANTS["e"] == math.e and CONSTANTS["inf"] == math.inf
    assert math.isnan(CONSTANTS["nan"])
    assert arity_text(FUNCTIONS["sin"]) == "1 argument"
    assert arity_text(FUNCTIONS["where"]) == "3 arguments"
    assert arity_text(FUNCTIONS["atan2"]) == "2 arguments"
    assert arity_text(FUNCTIONS["sin"]._replace(max_args=3)) == "1 to 3 arguments"
