"""autodiff.py through its own interface (vjp, vjp_many, adjoint_nodes,
depends_on, jacobian_node): derivative graphs built on a Graph, evaluated by a
plain Plan, and compared with closed forms and central finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from diffcli.graph import autodiff
from diffcli.engine.evaluate import Plan
from diffcli.graph.nodes import Graph, topological_order
from diffcli.language.parse import parse


def _build(text: str, shapes: dict):
    """(graph, output node, {name: variable node}) for an expression."""
    graph = Graph()
    program = parse(text)
    output = program.build(graph, shapes)
    return graph, output, {name: graph.var(name, shapes[name]) for name in program.variables}


def _values(nodes, variables: dict, at: dict) -> list[np.ndarray]:
    names = list(variables)
    return Plan(list(nodes), [variables[n] for n in names]).run([np.asarray(at[n], dtype=float) for n in names])


def _central_difference(text: str, shapes: dict, at: dict, name: str, h: float = 1e-6) -> np.ndarray:
    """d value / d name, entry by entry: shape value.shape + name's shape."""
    graph, output, variables = _build(text, shapes)
    base = np.asarray(at[name], dtype=float)
    columns = []
    for k in range(base.size):
        step = np.zeros(base.size)
        step[k] = h
        up = _values([output], variables, {**at, name: base + step.reshape(base.shape)})[0]
        down = _values([output], variables, {**at, name: base - step.reshape(base.shape)})[0]
        columns.append((up - down) / (2 * h))
    return np.moveaxis(np.array(columns), 0, -1).reshape(np.shape(columns[0]) + base.shape)


def test_the_gradient_of_a_scalar_is_the_closed_form():
    graph, output, v = _build("sin(x) * exp(y) - x^2 * y", {"x": (), "y": ()})
    dx, dy = autodiff.vjp(graph, output, graph.const(1.0), [v["x"], v["y"]])
    x, y = 0.7, -0.4
    got = _values([dx, dy], v, {"x": x, "y": y})
    np.testing.assert_allclose(got[0], np.cos(x) * np.exp(y) - 2 * x * y, rtol=1e-15)
    np.testing.assert_allclose(got[1], np.sin(x) * np.exp(y) - x * x, rtol=1e-15)


def test_a_vector_jacobian_product_is_the_seed_times_the_finite_difference_jacobian():
    text = "[x[0] * x[1], sin(x[2]) + x[0]^3, sum(x * x)]"
    shapes, at = {"x": (3,)}, {"x": np.array([0.5, -1.5, 2.0])}
    graph, output, v = _build(text, shapes)
    seed = np.array([1.0, -2.0, 0.5])
    (product,) = autodiff.vjp(graph, output, graph.const(seed), [v["x"]])
    got = _values([product], v, at)[0]
    np.testing.assert_allclose(got, seed @ _central_difference(text, shapes, at, "x"), rtol=1e-7)


def test_vjp_many_adds_the_products_of_every_pair():
    graph, output, v = _build("[x * y, x + y]", {"x": (), "y": ()})
    first = graph.apply("index", (output,), (0,))
    second = graph.apply("index", (output,), (1,))
    together = autodiff.vjp_many(graph, [(first, graph.const(3.0)), (second, graph.const(-1.0))], [v["x"], v["y"]])
    x, y = 2.0, 5.0
    np.testing.assert_array_equal(_values(together, v, {"x": x, "y": y}), [3 * y - 1, 3 * x - 1])


def test_a_variable_the_output_does_not_depend_on_gets_a_zero_of_its_shape():
    graph, output, v = _build("sum(x^2)", {"x": (2,)})
    unused = graph.var("w", (3, 2))
    dx, dw = autodiff.vjp(graph, output, graph.const(1.0), [v["x"], unused])
    assert dw.op == "const" and dw.shape == (3, 2) and not dw.value.any()
    np.testing.assert_array_equal(_values([dx], v, {"x": [1.5, -2.0]})[0], [3.0, -4.0])


def test_adjoints_exist_only_on_paths_from_the_variables():
    graph, output, v = _build("r = exp(y); x * r + r", {"x": (), "y": ()})
    adjoints = autodiff.adjoint_nodes(graph, [(output, graph.const(1.0))], [v["x"]])
    on_path = autodiff.depends_on(topological_order([output]), {v["x"].id})
    assert v["x"].id in adjoints and output.id in adjoints
    assert set(adjoints) <= on_path and v["y"].id not in adjoints  # exp(y) does not depend on x
    np.testing.assert_allclose(_values([adjoints[v["x"].id]], v, {"x": 1.0, "y": 0.3})[0], np.exp(0.3), rtol=1e-15)


def test_depends_on_follows_every_path():
    graph, output, v = _build("a = x + 1; b = y * 2; a * b + b", {"x": (), "y": ()})
    order = topological_order([output])
    from_x = autodiff.depends_on(order, {v["x"].id})
    from_y = autodiff.depends_on(order, {v["y"].id})
    assert output.id in from_x and output.id in from_y
    assert v["y"].id not in from_x and v["x"].id not in from_y
    for node in order:  # against another walk: the variable is among the node's own ancestors
        ancestors = {n.id for n in topological_order([node])}
        assert (node.id in from_x, node.id in from_y) == (v["x"].id in ancestors, v["y"].id in ancestors)


def test_a_derivative_graph_is_differentiated_again():
    graph, output, v = _build("sin(x) * x^3", {"x": ()})
    x = v["x"]
    (first,) = autodiff.vjp(graph, output, graph.const(1.0), [x])
    (second,) = autodiff.vjp(graph, first, graph.const(1.0), [x])
    (third,) = autodiff.vjp(graph, second, graph.const(1.0), [x])
    t = 1.3
    got = _values([first, second, third], v, {"x": t})
    s, c = np.sin(t), np.cos(t)
    np.testing.assert_allclose(got[0], c * t**3 + 3 * s * t**2, rtol=1e-14)
    np.testing.assert_allclose(got[1], -s * t**3 + 6 * c * t**2 + 6 * s * t, rtol=1e-14)
    np.testing.assert_allclose(got[2], -c * t**3 - 9 * s * t**2 + 18 * c * t + 6 * s, rtol=1e-13)


@pytest.mark.parametrize("x, want", [(4.0, 0.25), (-1.0, 0.0), (0.0, 0.0)])
def test_an_untaken_branch_contributes_exactly_zero(x, want):
    """sqrt'(x) is nan for x < 0 and inf at 0, but where does not take that
    branch there: the cotangent is masked, so the derivative is 0, not nan."""
    graph, output, v = _build("where(x > 0, sqrt(x), 0)", {"x": ()})
    (dx,) = autodiff.vjp(graph, output, graph.const(1.0), [v["x"]])
    assert _values([dx], v, {"x": x})[0] == want


def test_the_jacobian_node_matches_finite_differences():
    text = "cumsum(x) * sin(x)"
    shapes, at = {"x": (4,)}, {"x": np.array([0.3, -0.8, 1.2, 2.0])}
    graph, output, v = _build(text, shapes)
    jacobian = autodiff.jacobian_node(graph, output, v["x"])
    assert jacobian.shape == (4, 4)
    x = at["x"]
    want = np.tril(np.ones((4, 4))) * np.sin(x)[:, None] + np.diag(np.cumsum(x) * np.cos(x))
    got = _values([jacobian], v, at)[0]
    np.testing.assert_allclose(got, want, rtol=1e-14)
    np.testing.assert_allclose(got, _central_difference(text, shapes, at, "x"), rtol=1e-7, atol=1e-9)


def test_a_deep_chain_is_differentiated_without_recursion():
    """5,000 nested sines (five times Python's recursion limit): the backward
    walk is a loop over the order."""
    graph = Graph()
    x = graph.var("x", ())
    node = x
    for _ in range(5_000):
        node = graph.apply("sin", (node,))
    (dx,) = autodiff.vjp(graph, node, graph.const(1.0), [x])
    value, derivative = 0.5, 1.0
    for _ in range(5_000):
        derivative *= np.cos(value)
        value = np.sin(value)
    np.testing.assert_allclose(Plan([dx], [x]).run([np.array(0.5)])[0], derivative, rtol=1e-10)
