"""Derivatives of derivatives: Hessians, order-N tensors, JVP/HVP, formulas,
and the `graph` command's pictures of the DAG and the backward pass."""

from __future__ import annotations

import io
import json
import random
import time

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

import diffcli
from diffcli.cli import cli
from diffcli.io.render import dot_text, print_backward_table, print_graph_tree

from .test_ops import CASES
from .test_property import random_scalar


def fd(fn, x: np.ndarray, h_scale=1e-6) -> np.ndarray:
    """Central differences of an array-valued fn at x: shape fn(x).shape + x.shape."""
    x = np.asarray(x, dtype=np.float64)
    base = np.asarray(fn(x))
    out = np.zeros(base.shape + x.shape)
    for index in np.ndindex(*x.shape):
        h = h_scale * max(1.0, abs(float(x[index])))
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        out[(...,) + index] = (np.asarray(fn(plus)) - np.asarray(fn(minus))) / (2 * h)
    return out


def _scalarised(expression, at):
    """sum(W * expr) with fixed, distinct weights, so every output component counts."""
    shape = np.shape(diffcli.compile(expression).eval(at).value)
    weights = (0.3 + 0.1 * np.arange(int(np.prod(shape)))).reshape(shape)
    literal = np.array2string(weights, separator=", ", floatmode="unique", threshold=10**6) \
        if shape else repr(float(weights))
    return diffcli.compile(f"sum(({expression}) * {literal})")


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("expression,at", CASES, ids=[c[0] for c in CASES])
def test_higher_derivatives_of_every_rule_match_fd_of_the_one_below(expression, at, order):
    """The order-N tensor against central differences of the order-(N-1) tensor.
    Differencing a derivative (h = 1e-6) costs about six digits, hence 1e-5."""
    f = _scalarised(expression, at)
    name = f.variables[0]
    at = {k: np.asarray(v, dtype=np.float64) for k, v in at.items()}

    def lower(x):
        return f.derivative(order - 1, {**at, name: x}, wrt=name)[name]

    got = f.derivative(order, at, wrt=name)[name]
    np.testing.assert_allclose(got, fd(lower, at[name]), rtol=1e-5, atol=1e-5,
                               err_msg=f"order {order} of {expression}")


def test_order_two_is_the_second_derivative_not_an_accumulation():
    result = diffcli.compile("cos(x)+sin(x)").derivative(2, x=2.0)
    assert result["x"] == pytest.approx(-np.cos(2) - np.sin(2), rel=1e-15)
    assert f"{float(result['x']):.7f}" == "-0.4931506"
    third = diffcli.compile("cos(x)+sin(x)").derivative(3, x=2.0)["x"]
    assert third == pytest.approx(np.sin(2) - np.cos(2), rel=1e-15)


def test_order_n_tensor_shape_and_values():
    x = np.array([0.5, -1.0])
    t = diffcli.compile("[sum(x^3), x[0] * x[1]^2]").derivative(3, x=x)["x"]
    assert t.shape == (2, 2, 2, 2)
    expected = np.zeros((2, 2, 2, 2))
    expected[0, 0, 0, 0] = expected[0, 1, 1, 1] = 6.0
    for perm in [(0, 1, 1), (1, 0, 1), (1, 1, 0)]:
        expected[(1,) + perm] = 2.0
    # by interpolation from 4 directions: zeros to rounding (a few 1e-16)
    np.testing.assert_allclose(t, expected, rtol=1e-15, atol=1e-15)


def rosenbrock_hessian(x):
    n = len(x)
    h = np.zeros((n, n))
    for i in range(n - 1):
        h[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        h[i + 1, i + 1] += 200
        h[i, i + 1] = h[i + 1, i] = -400 * x[i]
    return h


ROSENBROCK = "sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)"


def test_hessians_of_classic_functions():
    x = np.array([1.2, 0.8, -0.5, 2.0, 0.3])
    h = diffcli.compile(ROSENBROCK).hessian(x=x)["x"]["x"]
    np.testing.assert_allclose(h, rosenbrock_hessian(x), rtol=1e-14, atol=1e-12)

    r = diffcli.compile("x * sin(y) * exp(z)").hessian(x=0.7, y=1.3, z=-0.4)
    s, c, e = np.sin(1.3), np.cos(1.3), np.exp(-0.4)
    closed = {"x": {"x": 0, "y": c * e, "z": s * e}, "y": {"x": c * e, "y": -0.7 * s * e, "z": 0.7 * c * e},
              "z": {"x": s * e, "y": 0.7 * c * e, "z": 0.7 * s * e}}
    for a in "xyz":
        for b in "xyz":
            assert r[a][b] == pytest.approx(closed[a][b], rel=1e-14, abs=1e-15)

    v = np.array([0.5, -1.0, 2.0])
    soft = np.exp(v) / np.exp(v).sum()
    np.testing.assert_allclose(diffcli.compile("logsumexp(v)").hessian(v=v)["v"]["v"],
                               np.diag(soft) - np.outer(soft, soft), rtol=1e-13, atol=1e-15)

    a = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, -1.0], [0.5, 0.0, 2.0]])
    q = diffcli.compile("x @ A @ x").hessian(x=[1.0, -2.0, 0.5], A=a, wrt=["x"])
    np.testing.assert_array_equal(q["x"]["x"], a + a.T)


def test_hessian_blocks_are_symmetric_to_rounding():
    rng = np.random.default_rng(3)
    r = diffcli.compile("sum(sin(x) * y) * norm(x) + x[0] * y^3").hessian(x=rng.normal(size=3), y=0.7)
    np.testing.assert_allclose(r["x"]["x"], r["x"]["x"].T, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(r["x"]["y"], r["y"]["x"], rtol=1e-14, atol=1e-14)
    assert r["x"]["y"].shape == (3,) and r["y"]["y"].shape == ()


def test_hvp_equals_hessian_times_vector_and_jvp_equals_jacobian_times_vector():
    x = np.array([1.2, 0.8, -0.5, 2.0])
    v = np.array([0.3, -1.0, 0.5, 2.0])
    f = diffcli.compile(ROSENBROCK)
    np.testing.assert_allclose(f.hvp({"x": v}, x=x)["x"], rosenbrock_hessian(x) @ v, rtol=1e-13)

    g = diffcli.compile("[x[0] * y, sin(x[1]) * y^2, cumsum(x)[-1]]")
    at = {"x": np.array([0.4, -1.1]), "y": 1.7}
    jac = g.jacobian(at)
    tangent = {"x": np.array([1.0, 2.0]), "y": -0.5}
    expected = jac["x"] @ tangent["x"] + jac["y"] * tangent["y"]
    np.testing.assert_allclose(g.jvp(tangent, at).jvp, expected, rtol=1e-14)
    np.testing.assert_allclose(g.jvp({"y": 1.0}, at).jvp, jac["y"], rtol=1e-14)  # x's tangent is 0


@pytest.mark.parametrize("seed", range(40))
def test_formulas_round_trip_through_eval(seed):
    """Print the gradient as a formula, parse it back, evaluate it at random
    points: the numbers are those of grad (the formula has the graph's structure)."""
    rng = random.Random(seed)
    expression = random_scalar(rng, rng.randint(1, 4))
    f = diffcli.compile(expression)
    formulas = f.formulas("gradient", {"v": (3,), "w": (3,)})
    data = np.random.default_rng(seed)
    for _ in range(3):
        at = {"x": data.uniform(-2, 2), "y": data.uniform(-2, 2), "v": data.uniform(-2, 2, 3),
              "w": data.uniform(0.5, 2, 3)}
        at = {k: at[k] for k in f.variables}
        grad = f.grad(at)
        for name, text in formulas.items():
            back = diffcli.compile(text)
            value = back.eval({k: at[k] for k in back.variables}).value
            np.testing.assert_allclose(value, grad[name], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{expression}: d/d{name} = {text}")


def test_formulas_for_hessians_and_orders_round_trip():
    f = diffcli.compile("x * sin(y) + y^3")
    hess = f.formulas("hessian")
    r = f.hessian(x=0.3, y=1.1)
    for a in "xy":
        for b in "xy":
            back = diffcli.compile(hess[a][b])
            got = back.eval({k: {"x": 0.3, "y": 1.1}[k] for k in back.variables}).value
            assert got == pytest.approx(float(r[a][b]), rel=1e-14, abs=1e-15)
    third = diffcli.compile("sin(x) + cos(x)").formulas("derivative", order=3)["x"]
    assert third == "sin(x) - cos(x)"


def test_symbolic_cli():
    out = CliRunner().invoke(cli, ["grad", "sin(x)+cos(x)", "--symbolic", "-q"]).stdout
    assert out == "cos(x) - sin(x)\n"
    doc = json.loads(CliRunner().invoke(cli, ["grad", "x^3", "--symbolic", "--order", "2", "--json"]).stdout)
    assert doc == {"expression": "x^3", "derivative": {"order": 2, "wrt": "x", "value": "6 * x"}}
    shared = CliRunner().invoke(cli, ["grad", "r = sqrt(x^2 + y^2); r * sin(r)", "--symbolic", "-q"]).stdout
    assert shared.splitlines()[0].startswith("t1 = sqrt(x ^ 2 + y ^ 2); ")


def test_hess_and_friends_through_the_cli():
    run = CliRunner().invoke
    doc = json.loads(run(cli, ["hess", "x * y^2", "--at", "x=2,y=3", "--json"]).stdout)
    assert doc["hessian"] == {"x": {"x": 0.0, "y": 6.0}, "y": {"x": 6.0, "y": 4.0}}
    doc = json.loads(run(cli, ["grad", "cos(x)+sin(x)", "--at", "x=2", "--order", "2", "--json"]).stdout)
    assert doc["derivative"] == {"order": 2, "wrt": "x", "value": -np.cos(2) - np.sin(2)}
    doc = json.loads(run(cli, ["jvp", "[x*y, sin(y)]", "--at", "x=1,y=2", "--tangent", "y=1", "--json"]).stdout)
    assert doc["jvp"] == [1.0, np.cos(2)] and doc["tangent"] == {"y": 1.0}
    doc = json.loads(run(cli, ["hvp", "x^2 * y", "--at", "x=1,y=2", "--tangent", "x=1", "--json"]).stdout)
    assert doc["hvp"] == {"x": 4.0, "y": 2.0}
    bad = run(cli, ["grad", "x*y", "--at", "x=1,y=2", "--order", "2"])
    assert bad.exit_code == 2 and "--order needs one --wrt variable" in bad.stderr
    bad = run(cli, ["hvp", "x", "--at", "x=[1,2]", "--tangent", "x=1"])
    assert bad.exit_code == 2


def test_hessian_columns_for_many_points(tmp_path):
    path = tmp_path / "p.ndjson"
    path.write_text('{"x": 1, "y": 2}\n{"x": 3, "y": 1}\n')
    out = CliRunner().invoke(cli, ["hess", "x * y^2", "--points", str(path), "--csv"]).stdout
    assert out.splitlines() == ["value,d2/dxdx,d2/dxdy,d2/dydx,d2/dydy", "4.0,0.0,4.0,4.0,2.0",
                                "3.0,0.0,2.0,2.0,6.0"]
    nd = CliRunner().invoke(cli, ["grad", "x^3 * y", "--points", str(path), "--order", "2", "--wrt", "x"])
    assert json.loads(nd.stdout.splitlines()[1])["derivative"] == {"order": 2, "wrt": "x", "value": 18.0}


def _render(fn, *args):
    buffer = io.StringIO()
    fn(Console(file=buffer, width=80, color_system=None), *args)
    return [line.rstrip() for line in buffer.getvalue().splitlines()]


def test_graph_tree_shows_shared_nodes_once():
    f = diffcli.compile("sin(x) * exp(sin(x)) + x")
    _, root = f.graph({"x": ()})
    assert _render(print_graph_tree, root) == [
        "#4 add", "├── #3 mul", "│   ├── #1 sin", "│   │   └── #0 var x", "│   └── #2 exp",
        "│       └── #1 (above)", "└── #0 (above)"]


def test_dot_output():
    _, root = diffcli.compile("x * y + y").graph({"x": (), "y": ()})
    assert dot_text(root).splitlines() == [
        "digraph diffcli {", "  rankdir=BT;", '  node [shape=box, fontname="monospace"];',
        '  n0 [label="#0 var x"];', '  n1 [label="#1 var y"];', '  n2 [label="#2 mul"];',
        "  n0 -> n2;", "  n1 -> n2;", '  n3 [label="#3 add"];', "  n2 -> n3;", "  n1 -> n3;", "}"]


def test_backward_pass_table_is_the_notebooks_hand_calculation():
    rows = diffcli.compile("cos(x) + sin(x)").backward_pass({"x": 2.0})
    assert [node.op for node, _, _ in rows] == ["add", "sin", "cos", "var"]
    adjoints = {node.op: float(adjoint) for node, _, adjoint in rows}
    assert adjoints == {"add": 1.0, "sin": 1.0, "cos": 1.0, "var": -np.sin(2) + np.cos(2)}
    lines = _render(print_backward_table, rows, 6)
    assert lines[-2].split() == ["#0", "var", "x", "2", "-1.32544"]


# ---------------------------------------------------------------- the limits of --order (issue 14)


@pytest.mark.parametrize("order", [65, 999, 1000])
def test_a_scalars_order_past_numpys_64_axes_is_answered(order):
    """A scalar's order needs no axes, so every order up to the limit is answered
    (by Taylor propagation, rescaled where sin's coefficients 1/n! underflow):
    sin's derivatives cycle, sin^(n)(x) = sin(x + n pi / 2)."""
    x = 0.3
    got = float(diffcli.compile("sin(x)").derivative(order, x=x)["x"])
    assert got == pytest.approx(np.sin(x + order * np.pi / 2), rel=1e-12)


def test_high_orders_of_a_growing_graph_match_the_closed_form_while_they_fit():
    """tan's odd derivatives at 0 are the tangent numbers; exp is its own derivative."""
    assert float(diffcli.compile("tan(x)").derivative(9, x=0.0)["x"]) == pytest.approx(7936, rel=1e-12)
    assert float(diffcli.compile("exp(x)").derivative(300, x=0.5)["x"]) == pytest.approx(np.exp(0.5), rel=1e-12)
    t = diffcli.compile("[sum(x^3), x[0] * x[1]^2]").derivative(3, x=np.array([0.5, -1.0]))["x"]
    assert t.shape == (2, 2, 2, 2)  # a vector's tensor keeps its axes


def test_a_vectors_order_past_64_axes_is_refused_naming_the_limit():
    f = diffcli.compile("sum(x^2)")
    with pytest.raises(diffcli.UsageError, match="the order-65 derivative with respect to a 2-vector x: its tensor "
                                                 "has 65 axes, and NumPy arrays have at most 64: lower the order"):
        f.derivative(65, x=np.array([1.0, 2.0]))


@pytest.mark.parametrize("expression,order,message", [
    ("sin(x)", 100_000, r"would take too long to build \(about "),
    ("tan(x)", 16, "the order-16 derivative would take too long to build"),
    ("tan(x)", 40, "the order-40 derivative would need a derivative graph of about"),
])
def test_orders_whose_graphs_grow_too_much_are_refused_before_they_are_built(expression, order, message,
                                                                            monkeypatch):
    monkeypatch.setenv("DIFFCLI_TAYLOR", "0")  # the graph method, which Taylor propagation replaces for scalars
    started = time.monotonic()
    with pytest.raises(diffcli.BudgetError, match=message):
        diffcli.compile(expression, max_memory="1G").derivative(order, x=0.7)
    assert time.monotonic() - started < 5


def test_symbolic_orders_are_bounded_too():
    result = CliRunner().invoke(cli, ["grad", "sin(x)", "--symbolic", "--order", "100000"])
    assert result.exit_code == 2
    assert "the order-100000 formula would take too long to build" in result.stderr
