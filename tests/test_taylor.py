"""Taylor propagation (graph/series.py, engine/taylor.py, engine/tensors.py):
against the graph method (DIFFCLI_TAYLOR=0) on every operation, against
mpmath at 50 digits, the interpolated tensors against nested reverse passes,
and the `series` command."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

import diffcli
from diffcli.api import requests
from diffcli.cli import cli
from diffcli.engine.tensors import interpolation, multi_indices

from .test_ops import CASES


def _graph_method(monkeypatch, call):
    """call() with higher orders by differentiating the graph again per order."""
    with monkeypatch.context() as m:
        m.setenv("DIFFCLI_TAYLOR", "0")
        return call()


def _tangents(at: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-1.0, 1.0, np.shape(value)) for name, value in at.items()}


# ---------------------------------------------------------------- against the graph method


@pytest.mark.parametrize("expression,at", CASES, ids=[c[0] for c in CASES])
def test_every_operation_along_a_direction_matches_the_graph_method_to_order_6(expression, at, monkeypatch):
    """derivatives_along, orders 1-6, by Taylor propagation and by differentiating the
    graph six times: the same numbers to rounding, on every case of the op table."""
    at = {k: np.asarray(v, dtype=np.float64) for k, v in at.items()}
    tangents = _tangents(at, 7)
    order = 6 if sum(np.size(v) for v in at.values()) <= 6 else 4  # keep the graph method's growth in seconds
    taylor = diffcli.compile(expression).derivatives_along(order, tangents, at)
    graph = _graph_method(monkeypatch, lambda: diffcli.compile(expression).derivatives_along(order, tangents, at))
    for k in range(1, order + 1):
        scale = max(1.0, float(np.max(np.abs(graph[k]), initial=0.0)))
        np.testing.assert_allclose(taylor[k], graph[k], rtol=1e-11, atol=1e-11 * scale,
                                   err_msg=f"order {k} of {expression}")


SCALAR_CASES = [
    ("tan(x)", 0.7), ("sin(x) * exp(x)", 0.3), ("x ^ 2.5", 1.3), ("log(1 + x^2) / (2 + cos(x))", 0.4),
    ("atan(x) + asin(x / 2) + acos(x / 3)", 0.2), ("sqrt(x) * cbrt(x)", 2.0), ("x ^ x", 1.5),
    ("tanh(x) + sinh(x) * cosh(x) + asinh(x) + acosh(x + 2) + atanh(x / 2)", 0.3),
    ("sigmoid(x) + softplus(x) + relu(x) + abs(x)", -0.3), ("atan2(x, 2) + hypot(x, 3)", 0.5),
    ("2 ^ x + x ^ -3 + 1 / x", 0.8), ("x ^ 2", 0.0), ("x ^ 3 - x", 0.0), ("x ^ 2.5", 0.0),
    ("maximum(x, 1) + minimum(x ^ 2, 0.5)", 0.5), ("where(x > 0, log(x), x)", 0.5),
]


@pytest.mark.parametrize("expression,x", SCALAR_CASES)
def test_order_n_of_a_scalar_matches_the_graph_method_to_order_6(expression, x, monkeypatch):
    f = diffcli.compile(expression)
    for order in range(1, 7):
        got = float(f.derivative(order, x=x)["x"])
        want = float(_graph_method(monkeypatch, lambda: diffcli.compile(expression).derivative(order, x=x))["x"])
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), f"order {order} of {expression} at {x}"


def test_a_batch_gets_each_points_own_derivative():
    x = np.linspace(-1.0, 1.0, 7)
    got = diffcli.compile("exp(2 * x) * sin(x)").derivative(5, x=x, batch_ndim=1)["x"]
    # d^n/dx^n e^{2x} sin x = 5^{n/2} e^{2x} sin(x + n atan(1/2))
    want = 5 ** 2.5 * np.exp(2 * x) * np.sin(x + 5 * math.atan(0.5))
    np.testing.assert_allclose(got, want, rtol=1e-13)


# ---------------------------------------------------------------- high orders


def test_order_1000_is_answered_and_an_overflow_is_said():
    r = diffcli.compile("tan(x)").derivative(1000, x=0.7)
    assert float(r["x"]) == math.inf  # tan^(1000)(0.7) is about 1000! * 1.15^1000: no float holds it
    assert [d.message for d in r.diagnostics] == ["the order-1000 derivative overflows float64 (beyond 1.8e308)"]


@pytest.mark.parametrize("order", [171, 500, 1000])
def test_coefficients_that_underflow_are_propagated_again_along_a_longer_tangent(order):
    """sin's coefficients sin^(n)/n! underflow past n ~ 170 (1/1000! is 1e-2568); the
    derivative itself is sin(x + n pi/2): propagated along 2^m, scaled back exactly."""
    x = 0.7
    got = float(diffcli.compile("sin(x) * 3").derivative(order, x=x)["x"])
    assert got == pytest.approx(3 * math.sin(x + order * math.pi / 2), rel=1e-12)
    got = float(diffcli.compile("exp(x / 2)").derivative(order, x=x)["x"])
    assert got == pytest.approx(math.exp(x / 2 - order * math.log(2.0)), rel=1e-11)


def test_an_order_above_the_limit_is_refused():
    with pytest.raises(diffcli.UsageError, match="orders up to 1,000 are answered, not 1,001"):
        diffcli.compile("sin(x)").derivative(1001, x=0.5)


# ---------------------------------------------------------------- against mpmath at 50 digits

# Held out: none of these was used while writing the rules.
MPMATH_CORPUS = [
    ("exp(sin(x))", 0.4, "exp(sin(x))"), ("log(2 + cos(x))", 0.9, "log(2 + cos(x))"),
    ("1 / (1 + x^2)", 0.3, "1 / (1 + x**2)"), ("sqrt(1 + x^2)", 0.6, "sqrt(1 + x**2)"),
    ("atan(2 * x)", 0.25, "atan(2 * x)"), ("x * tanh(x)", 0.8, "x * tanh(x)"),
    ("sin(x)^2 * cos(x)", 1.1, "sin(x)**2 * cos(x)"), ("exp(-x^2)", 0.5, "exp(-x**2)"),
    ("x ^ 3 * log(x)", 1.7, "x**3 * log(x)"), ("cosh(x) / (1 + x)", 0.2, "cosh(x) / (1 + x)"),
    ("asinh(x) * x", 0.4, "asinh(x) * x"), ("acos(x / 2)", 0.3, "acos(x / 2)"),
    ("sigmoid(3 * x)", 0.1, "1 / (1 + exp(-3 * x))"), ("softplus(x)", -0.5, "log(1 + exp(x))"),
    ("log1p(x^2)", 0.7, "log(1 + x**2)"), ("expm1(x) / x", 0.9, "expm1(x) / x"),
    ("x ^ 0.3", 2.0, "x**0.3"), ("cbrt(1 + x)", 0.5, "cbrt(1 + x)"), ("2 ^ x", 0.6, "2**x"),
    ("log2(3 + x) + log10(x)", 1.5, "log(3 + x, 2) + log10(x)"), ("atanh(x / 3)", 0.5, "atanh(x / 3)"),
    ("acosh(1 + x^2)", 0.8, "acosh(1 + x**2)"), ("tan(x / 2)", 1.0, "tan(x / 2)"),
    ("sinh(x) * sin(x)", 0.5, "sinh(x) * sin(x)"), ("asin(x) ^ 2", 0.4, "asin(x)**2"),
    ("exp(x) / (1 + exp(x))", -0.2, "exp(x) / (1 + exp(x))"), ("x ^ x", 1.2, "x**x"),
    ("atan2(1, x)", 0.7, "atan2(1, x)"), ("hypot(x, 2)", 0.9, "sqrt(x**2 + 4)"),
    ("sin(x) / x", 0.6, "sin(x) / x"),
]


def test_the_corpus_has_thirty_functions():
    assert len(MPMATH_CORPUS) == 30 and len({c[0] for c in MPMATH_CORPUS}) == 30


def _mpmath_coefficients(reference: str, x: float, order: int):
    mpmath = pytest.importorskip("mpmath")  # in the test extra: never skipped in CI
    mpmath.mp.dps = 50
    namespace = {name: getattr(mpmath, name) for name in ("exp", "sin", "cos", "tan", "log", "sqrt", "atan",
                                                          "tanh", "cosh", "sinh", "asinh", "acos", "asin",
                                                          "expm1", "cbrt", "log10", "atanh", "acosh", "atan2")}
    f_reference = eval("lambda x: " + reference, namespace)  # the test's own text, not a user's
    return mpmath.taylor(f_reference, mpmath.mpf(x), order)


def _flagged_from(result) -> int | None:
    """The order from which the result says digits were lost to cancellation."""
    for d in result.diagnostics:
        found = re.match(r"from order (\d+) on, the coefficients", d.message)
        if found:
            return int(found.group(1))
    return None


@pytest.mark.parametrize("expression,x,reference", MPMATH_CORPUS, ids=[c[0] for c in MPMATH_CORPUS])
def test_orders_1_to_40_agree_with_mpmath_at_50_digits_or_say_they_do_not(expression, x, reference):
    """Relative error <= 1e-10 at every order, except from an order on which the
    output says digits were lost (quotients like sin(x)/x: README, "Taylor mode")."""
    want = _mpmath_coefficients(reference, x, 40)
    result = diffcli.compile(expression).series(40, None, x=x)
    got, flagged = result["coefficients"], _flagged_from(result)
    for k in range(1, 41):
        error = abs((got[k] - want[k]) / want[k]) if want[k] != 0 else abs(got[k])
        if flagged is None or k < flagged:
            assert error <= 1e-10, f"order {k}: {got[k]!r} against {want[k]}, and the output said nothing"


def test_at_least_25_of_the_30_functions_are_right_at_every_order_without_a_warning():
    clean = 0
    for expression, x, reference in MPMATH_CORPUS:
        want = _mpmath_coefficients(reference, x, 40)
        result = diffcli.compile(expression).series(40, None, x=x)
        errors = [abs((result["coefficients"][k] - want[k]) / want[k]) for k in range(1, 41)]
        clean += max(errors) <= 1e-10 and _flagged_from(result) is None
    assert clean >= 25  # measured: 25 (sin(x)/x, expm1(x)/x, acosh(1+x^2), sinh*sin, x^3 log x warn)


# ---------------------------------------------------------------- tensors by interpolation


def test_the_interpolation_coefficients_invert_the_directional_expansion():
    """f^(d) along j is sum over |i| = d of d!/i! j^i (d^i f): gamma undoes it."""
    for n, d in [(2, 2), (3, 3), (4, 4), (10, 3)]:
        indices = multi_indices(n, d)
        assert len(indices) == math.comb(n + d - 1, d)
        expansion = np.array([[math.factorial(d) / math.prod(math.factorial(a) for a in i)
                               * math.prod(float(jm) ** a for jm, a in zip(j, i)) for i in indices]
                              for j in indices])
        np.testing.assert_allclose(interpolation(n, d) @ expansion, np.eye(len(indices)), atol=1e-9)


def test_the_third_order_tensor_of_ten_variables_equals_nested_passes(monkeypatch):
    expression = "sum(sin(x) * x[::-1]) + prod(x[:4]) * exp(sum(x) / 10) + norm(x)^3"
    x = np.linspace(0.2, 1.1, 10)
    monkeypatch.setattr(requests, "taylor_cheaper", lambda n, order: True)  # the rule picks the passes here
    taylor = diffcli.compile(expression).derivative(3, x=x)["x"]
    monkeypatch.undo()
    nested = _graph_method(monkeypatch, lambda: diffcli.compile(expression).derivative(3, x=x))["x"]
    assert taylor.shape == nested.shape == (10, 10, 10)
    np.testing.assert_allclose(taylor, nested, rtol=1e-11, atol=1e-11 * np.abs(nested).max())


def test_the_rule_takes_taylor_for_scalars_and_high_orders_and_passes_for_hessians():
    assert requests.taylor_cheaper(1, 2) and requests.taylor_cheaper(1, 1000)
    assert not requests.taylor_cheaper(10, 2) and not requests.taylor_cheaper(10, 3)
    assert requests.taylor_cheaper(5, 3) and requests.taylor_cheaper(10, 4)


def test_a_tensor_of_a_vector_valued_expression_in_a_batch(monkeypatch):
    expression = "[sum(x^3) * x[0], sin(x[1]) * x[2]^2]"
    x = np.array([[0.5, -1.0, 0.25], [1.5, 0.5, -2.0]])
    taylor = diffcli.compile(expression).derivative(4, x=x, batch_ndim=1)["x"]
    nested = _graph_method(monkeypatch, lambda: diffcli.compile(expression).derivative(4, x=x, batch_ndim=1))["x"]
    assert taylor.shape == (2, 2, 3, 3, 3, 3)
    np.testing.assert_allclose(taylor, nested, rtol=1e-11, atol=1e-11)


# ---------------------------------------------------------------- kinks, domains, fallbacks


def test_kinks_are_reported_and_nan_where_asked():
    f = diffcli.compile("relu(x) + x^3")
    r = f.derivative(3, x=0.0)
    assert float(r["x"]) == 6.0 and any("relu is not differentiable at 0" in k.message for k in r.kinks)
    nan = diffcli.compile("relu(x) + x^3", kink="nan").derivative(3, x=np.array([0.0, 1.0]), batch_ndim=1)
    assert np.isnan(nan["x"][0]) and nan["x"][1] == 6.0


def test_a_value_outside_the_domain_is_named(monkeypatch):
    r = diffcli.compile("log(x) * 2").derivative(4, x=-1.0)
    assert r.diagnostics[0].message == "log produced nan (input -1.0)"
    graph = _graph_method(monkeypatch, lambda: diffcli.compile("log(x) * 2").derivative(4, x=-1.0))
    assert float(r["x"]) == float(graph["x"]) == -12.0  # 2 * -3! / x^4: log's derivatives exist there


def test_a_variable_exponent_of_a_negative_base_falls_back_to_the_graph(monkeypatch):
    f = diffcli.compile("x ^ y")
    got = f.derivatives_along(3, {"x": 1.0, "y": 0.0}, x=-2.0, y=3.0)
    want = _graph_method(monkeypatch, lambda: diffcli.compile("x ^ y").derivatives_along(
        3, {"x": 1.0, "y": 0.0}, x=-2.0, y=3.0))
    # the same numbers, nan included: order 1 holds log(-2) * 0 from the exponent's side
    np.testing.assert_array_equal([got[k] for k in (1, 2, 3)], [want[k] for k in (1, 2, 3)])
    assert [float(got[k]) for k in (2, 3)] == [-12.0, 6.0]


# ---------------------------------------------------------------- the series command


def _run(args):
    return CliRunner().invoke(cli, args)


def test_series_json_gives_the_coefficients():
    result = _run(["series", "exp(2*x)", "--at", "x=0", "--order", "5", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["series"]["order"] == 5
    assert doc["series"]["coefficients"] == pytest.approx([2.0 ** k / math.factorial(k) for k in range(6)],
                                                          rel=1e-15)


def test_the_polynomial_reads_back_and_approximates_the_function():
    result = _run(["series", "tan(x)", "--at", "x=0.7", "--order", "12", "--polynomial", "-q"])
    assert result.exit_code == 0, result.stderr
    text = result.stdout.strip()
    assert text.startswith("0.8422883804630794 + 1.7094497158631172 * (x - 0.7)")
    near = diffcli.compile(text).eval(x=0.72).value
    assert float(near) == pytest.approx(math.tan(0.72), rel=1e-14)


def test_series_along_a_tangent_and_at_many_points(tmp_path):
    result = _run(["series", "sin(x[0]) * x[1]", "--at", "x=[1, 2]", "--tangent", "x=[1, 0]", "--order", "3",
                   "--json"])
    doc = json.loads(result.stdout)
    assert doc["tangent"] == {"x": [1.0, 0.0]}
    assert doc["series"]["coefficients"] == pytest.approx(
        [2 * math.sin(1), 2 * math.cos(1), -math.sin(1), -math.cos(1) / 3], rel=1e-15)
    points = tmp_path / "p.csv"
    points.write_text("x\n0.0\n0.5\n")
    result = _run(["series", "exp(x)", "--points", str(points), "--order", "2", "--csv"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "value,c[0],c[1],c[2]"
    assert [float(v) for v in lines[2].split(",")] == pytest.approx([math.exp(0.5)] * 3 + [math.exp(0.5) / 2],
                                                                    rel=1e-15)


@pytest.mark.parametrize("args,message", [
    (["series", "x*y", "--at", "x=1,y=2", "--order", "3"], "a series needs a direction"),
    (["series", "sin(x)", "--at", "x=1", "--order", "1001"], "orders up to 1,000 are answered"),
    (["series", "x*y", "--at", "x=1,y=2", "--order", "2", "--wrt", "x", "--tangent", "y=1"], "not both"),
    (["series", "[x, x^2]", "--at", "x=1", "--order", "2", "--polynomial"], "needs a scalar expression"),
])
def test_series_refuses_what_it_cannot_answer(args, message):
    result = _run(args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""
