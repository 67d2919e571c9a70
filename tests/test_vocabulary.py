"""The NumPy vocabulary of issue 19 against finite differences: HIPS/autograd's own
tests of these functions ported to diffcli expressions (tests/test_scalar_ops.py and
tests/test_systematic.py at autograd bff107b: the functions, their input domains and
shapes, first and second order, as autograd's check_grads checks them), and a property
test drawing random expressions from the vocabulary, with axes and keyword arguments,
checking gradients and Hessian-vector products."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

import diffcli

from .helpers import numeric_jacobian

NPR = np.random.default_rng(1)  # autograd seeds numpy's generator with 1 (scalar ops) and 0 (systematic)


def _hessian_vector_by_differences(function, at, tangents, h=1e-6):
    """(grad(x + h v) - grad(x - h v)) / 2h for each variable: autograd's check of the
    second order (the gradient's rules are checked against the forward pass first)."""
    plus = {k: np.asarray(v, dtype=float) + h * tangents.get(k, 0.0) for k, v in at.items()}
    minus = {k: np.asarray(v, dtype=float) - h * tangents.get(k, 0.0) for k, v in at.items()}
    up, down = function.grad(plus), function.grad(minus)
    return {k: (up[k] - down[k]) / (2 * h) for k in function.variables}


def check_grads(expression: str, at: dict, order: int = 2, rtol: float = 1e-5, atol: float = 1e-6):
    """autograd.test_util.check_grads, for a diffcli expression: the Jacobian against
    central differences of the forward pass; then, for order 2, the Hessian-vector
    product of sum(w * f) against differences of its gradient, along a random v."""
    function = diffcli.compile(expression)
    at = {k: np.asarray(v, dtype=float) for k, v in at.items() if k in function.variables}
    jacobian = function.jacobian(at)
    for name in function.variables:
        np.testing.assert_allclose(jacobian[name], numeric_jacobian(function, at, name), rtol=rtol, atol=atol,
                                   err_msg=f"d({expression})/d{name} at {at}")
    if order < 2:
        return
    value = function.eval(at).value
    rng = np.random.default_rng(abs(hash(expression)) % 2**32)
    weights = rng.uniform(0.5, 1.5, np.shape(value))
    scalar = diffcli.compile(f"sum(w_ * ({expression}))")
    point = {**at, "w_": weights}
    tangents = {k: rng.uniform(-1, 1, np.shape(v)) for k, v in at.items()}
    got = scalar.hvp(tangents, point)
    want = _hessian_vector_by_differences(scalar, point, tangents)
    for name in at:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5,
                                   err_msg=f"H v of sum(w * ({expression})) for {name} at {at}")


# ---------------------------------------------------------------- autograd's tests/test_scalar_ops.py

def _randn():
    return float(NPR.standard_normal())


def _rand():
    return float(NPR.uniform())


# (autograd's test, the diffcli expression, the points it checks at, the order it checks)
SCALAR_OPS = [
    ("test_abs", "3 * abs(x)", [1.1, -1.1], 2), ("test_abs at 0", "3 * abs(x)", [0.0], 1),
    ("test_absolute", "3 * absolute(x)", [1.1, -1.1], 2), ("test_absolute at 0", "3 * absolute(x)", [0.0], 1),
    ("test_sin", "3 * sin(x)", [_randn()], 2), ("test_sign", "3 * sign(x)", [1.1, -1.1], 2),
    ("test_exp", "3 * exp(x)", [_randn()], 2), ("test_log", "3 * log(x)", [abs(_randn())], 2),
    ("test_log2", "3 * log2(x)", [abs(_randn())], 2), ("test_log10", "3 * log10(x)", [abs(_randn())], 2),
    ("test_log1p", "3 * log1p(x)", [abs(_randn())], 2), ("test_expm1", "3 * expm1(x)", [abs(_randn())], 2),
    ("test_exp2", "3 * exp2(x)", [abs(_randn())], 2), ("test_neg", "3 * -x", [_randn()], 2),
    ("test_cos", "3 * cos(x)", [_randn()], 2), ("test_tan", "3 * tan(x)", [_randn()], 2),
    ("test_cosh", "3 * cosh(x)", [_randn()], 2), ("test_sinh", "3 * sinh(x)", [_randn()], 2),
    ("test_tanh", "3 * tanh(x)", [_randn()], 2), ("test_arccos", "3 * arccos(x)", [0.1], 2),
    ("test_arcsin", "3 * arcsin(x)", [0.1], 2), ("test_arctan", "3 * arctan(x)", [0.2], 2),
    ("test_arccosh", "3 * arccosh(x)", [_randn() ** 2 + 1.2], 2), ("test_arcsinh", "3 * arcsinh(x)", [_randn()], 2),
    ("test_arctanh", "3 * arctanh(x)", [0.2], 2), ("test_sqrt", "3 * sqrt(x)", [10.0 * _rand()], 2),
    ("test_power_arg0", f"power(x, {_randn() ** 2 + 1.0!r})", [_rand() ** 2 + 1.0], 2),
    ("test_power_arg1", f"power({_randn() ** 2!r}, x)", [_rand() ** 2], 2),
    ("test_power_arg1_zero", "power(0, x)", [_rand() ** 2], 2),
    ("test_reciprocal", "reciprocal(x)", [_rand()], 2), ("test_negative", "negative(x)", [_rand()], 2),
    ("test_rad2deg", "3 * rad2deg(x)", [10.0 * _rand()], 2), ("test_deg2rad", "3 * deg2rad(x)", [10.0 * _rand()], 2),
    ("test_radians", "3 * radians(x)", [10.0 * _rand()], 2), ("test_degrees", "3 * degrees(x)", [10.0 * _rand()], 2),
    ("test_sinc", "3 * sinc(x)", [10.0 * _rand()], 2),
]
BINARY_SCALAR_OPS = [
    ("test_mod", "mod(x, y)"), ("test_divide", "divide(x, y)"), ("test_multiply", "multiply(x, y)"),
    ("test_true_divide", "true_divide(x, y)"),
]


@pytest.mark.parametrize("test,expression,points,order", SCALAR_OPS, ids=[c[0] for c in SCALAR_OPS])
def test_autograd_scalar_ops(test, expression, points, order):
    for x in points:
        check_grads(expression, {"x": x}, order=order)


@pytest.mark.parametrize("test,expression", BINARY_SCALAR_OPS, ids=[c[0] for c in BINARY_SCALAR_OPS])
def test_autograd_binary_scalar_ops(test, expression):
    check_grads(expression, {"x": _rand(), "y": _rand()})


def test_autograd_power_of_a_zero_exponent():
    """test_power_arg0's special case (autograd #116): d/dx x^0 and d2/dx2 at 0 are 0."""
    function = diffcli.compile("power(x, 0)")
    assert function.grad(x=0.0)["x"] == 0.0 and function.derivative(2, x=0.0)["x"] == 0.0


# ---------------------------------------------------------------- autograd's tests/test_systematic.py

SYSTEMATIC = np.random.default_rng(0)


def _transform(lims, x):
    return x * (lims[1] - lims[0]) + lims[0]


def _unary_inputs(lims):
    """numpy_utils.unary_ufunc_check's real inputs: a scalar, a 2-vector, 3x2 and 1x2 matrices."""
    return [_transform(lims, 0.4), _transform(lims, SYSTEMATIC.uniform(size=2)),
            _transform(lims, SYSTEMATIC.uniform(size=(3, 2))), _transform(lims, SYSTEMATIC.uniform(size=(1, 2)))]


# (autograd's test, the expression of x, lims)
UNARY = [
    ("test_abs", "abs(x)", (0.1, 4.0)), ("test_absolute", "absolute(x)", (0.1, 4.0)),
    ("test_arccosh", "arccosh(x)", (1.1, 4.0)), ("test_arcsinh", "arcsinh(x)", (-0.9, 0.9)),
    ("test_arctanh", "arctanh(x)", (-0.9, 0.9)), ("test_ceil", "ceil(x)", (-1.5, 1.5)),
    ("test_cos", "cos(x)", None), ("test_cosh", "cosh(x)", None), ("test_deg2rad", "deg2rad(x)", None),
    ("test_degrees", "degrees(x) / 50", None), ("test_exp", "exp(x)", None), ("test_exp2", "exp2(x)", None),
    ("test_expm1", "expm1(x)", None), ("test_fabs", "fabs(x)", None), ("test_floor", "floor(x)", (-1.5, 1.5)),
    ("test_log", "log(x)", (0.2, 2.0)), ("test_log10", "log10(x)", (0.2, 2.0)), ("test_log1p", "log1p(x)", (0.2, 2.0)),
    ("test_log2", "log2(x)", (0.2, 2.0)), ("test_rad2deg", "rad2deg(x) / 50", None), ("test_radians", "radians(x)", None),
    ("test_sign", "sign(x)", None), ("test_sin", "sin(x)", None), ("test_sinh", "sinh(x)", None),
    ("test_sqrt", "sqrt(x)", (1.0, 3.0)), ("test_square", "square(x)", None), ("test_tan", "tan(x)", (-1.1, 1.1)),
    ("test_tanh", "tanh(x)", None),
]


@pytest.mark.parametrize("test,expression,lims", UNARY, ids=[c[0] for c in UNARY])
def test_autograd_unary_ufuncs(test, expression, lims):
    for x in _unary_inputs(lims or (-2.0, 2.0)):
        check_grads(expression, {"x": x})


def _binary_inputs(lims_a, lims_b, same_args_ok):
    """numpy_utils.binary_ufunc_check(_no_same_args)'s real inputs, every pairing of
    a scalar, a 2-vector, 3x2 and 1x2 matrices (they broadcast)."""
    def shapes():
        return [0.6, SYSTEMATIC.uniform(size=2), SYSTEMATIC.uniform(size=(3, 2)), SYSTEMATIC.uniform(size=(1, 2))]
    first = shapes()
    second = first if same_args_ok else [0.7] + shapes()[1:]
    return [(_transform(lims_a, a), _transform(lims_b, b)) for a, b in itertools.product(first, second)]


# (autograd's test, expression of a and b, lims of a, lims of b, whether a and b may hold the same numbers)
BINARY = [
    ("test_add", "add(a, b)", None, None, True), ("test_logaddexp", "logaddexp(a, b)", None, None, True),
    ("test_logaddexp2", "logaddexp2(a, b)", None, None, True),
    ("test_remainder", "remainder(a, b)", (-0.9, 0.9), (0.7, 1.9), False),
    ("test_true_divide", "true_divide(a, b)", None, (0.8, 1.2), True),
    ("test_mod", "mod(a, b)", None, (0.8, 2.1), False),
    ("test_true_divide_neg", "true_divide(a, b)", None, (-0.3, -2.0), True),
    ("test_mod_neg", "mod(a, b)", None, (-0.3, -2.0), False),
    ("test_op_mul", "a * b", None, None, True), ("test_op_add", "a + b", None, None, True),
    ("test_op_sub", "a - b", None, None, True), ("test_op_mod", "a % b", None, (0.3, 2.0), False),
    ("test_op_mod_neg", "a % b", None, (-0.3, -2.0), False),
]


@pytest.mark.parametrize("test,expression,lims_a,lims_b,same", BINARY, ids=[c[0] for c in BINARY])
def test_autograd_binary_ufuncs(test, expression, lims_a, lims_b, same):
    for a, b in _binary_inputs(lims_a or (-2.0, 2.0), lims_b or (-2.0, 2.0), same):
        check_grads(expression, {"a": a, "b": b})


@pytest.mark.parametrize("name", ["maximum", "fmax", "minimum", "fmin"])
def test_autograd_pairwise_extremes(name):
    """test_maximum, test_fmax, ...: every pairing of R(1), R(1, 4), R(3, 4)."""
    shapes = [(1,), (1, 4), (3, 4)]
    for sa, sb in itertools.product(shapes, shapes):
        check_grads(f"{name}(a, b)", {"a": SYSTEMATIC.standard_normal(sa), "b": SYSTEMATIC.standard_normal(sb)})


def _stat_cases():
    """numpy_utils.stat_check: scalars; B (3), C (2x3), D (1x3) with axis None or 0,
    keepdims True or False; C and D with axis 1 too."""
    x, a = 3.5, float(SYSTEMATIC.standard_normal())
    b, c, d = (SYSTEMATIC.standard_normal(s) for s in [(3,), (2, 3), (1, 3)])
    cases = [(x, None, False), (a, None, False)]
    cases += [(v, axis, keep) for v in (b, c, d) for axis in (None, 0) for keep in (True, False)]
    cases += [(v, 1, keep) for v in (c, d) for keep in (True, False)]
    return cases


@pytest.mark.parametrize("name", ["max", "mean", "min", "sum", "prod", "var", "std"])
def test_autograd_statistics(name):
    for value, axis, keepdims in _stat_cases():
        if axis is not None and np.ndim(value) == 0:
            continue
        expression = f"{name}(x, axis={axis}, keepdims={keepdims})"
        if name == "std" and (np.size(value) if axis is None else np.shape(value)[axis]) == 1:
            # the standard deviation of one number is sqrt(0): not differentiable (diffcli says so; PyTorch
            # gives nan); autograd's check never reaches this case with its numpy_utils shapes
            result = diffcli.compile(expression).jacobian(x=value)
            assert result.kinks and "sqrt is not differentiable at 0" in result.kinks[0].message
            continue
        check_grads(expression, {"x": value})


# ---------------------------------------------------------------- the vocabulary, at random

# Matrix-valued templates over 2x3 matrices ({} a matrix; A, B variables of that shape),
# vector reductions of a matrix, and scalar reductions of a vector. Every template is
# smooth at the points drawn, or has its kinks on a set the seeded points miss.
MATRIX_UNARY = ["erf({})", "erfc({}) / 2", "sinc({})", "square({})", "tanh({})", "logaddexp({}, B)",
                "logaddexp2(B, {})", "lgamma(2.5 + sigmoid({}))", "digamma(3 + square({}))",
                "polygamma(1, 2 + square({}))", "erfinv(0.9 * tanh({}))", "softmax({}, axis=1)", "softmax({}, axis=0)",
                "softmax({}, axis=(0, 1))", "cumsum({}, axis=1)", "cumsum({}, axis=0)", "cumprod(1 + 0.1 * {}, axis=-1)",
                "fmax({}, B)", "fmin(B, {})", "clip({}, -1.7, 1.7)", "degrees({}) / 50", "rsqrt(1 + square({}))",
                "({}) % 1.5", "remainder({}, -1.25)", "arctan2({}, 1 + square(B))", "power(1 + square({}), 0.5)",
                "true_divide({}, 2 + cos(B))", "negative({})", "logistic({})", "ln(1 + square({}))",
                "reciprocal(2 + sin({}))", "exp2(tanh({}))", "radians({})", "absolute({}) + 1"]
MATRIX_BINARY = ["({}) * ({})", "add({}, {})", "logaddexp({}, {})", "subtract({}, {}) / 2", "fmax({}, {})"]
TO_VECTOR = ["sum({}, axis=0)", "mean({}, axis=1)", "max({}, axis=1)", "min({}, 0)", "norm({}, axis=0)",
             "logsumexp({}, axis=1)", "var({}, axis=0)", "std({}, axis=1, ddof=1)", "prod({}, axis=1)",
             "sum({}, axis=-1, keepdims=True)[:, 0]", "norm({}, ord=1, axis=1)", "norm({}, ord=inf, axis=0)",
             "logsumexp({}, axis=0, keepdims=True)[0]", "mean({}, axis=(0, 1), keepdims=True)[0]"]
TO_SCALAR = ["sum({})", "norm({}, ord=1)", "norm({}, 3)", "logsumexp({})", "max({})", "mean({}) + var({})",
             "std({})", "trace([{}[:2], {}[:2]], offset=1)", "norm([{}[:2], {}[:2]], ord=inf)"]


def _matrix(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(["A", "B", "A * B", "sin(A)"])
    if rng.random() < 0.75:
        return rng.choice(MATRIX_UNARY).format(_matrix(rng, depth - 1))
    return rng.choice(MATRIX_BINARY).format(_matrix(rng, depth - 1), _matrix(rng, depth - 1))


def _scalar(rng: random.Random, depth: int) -> str:
    vector = rng.choice(TO_VECTOR).format(_matrix(rng, depth))
    template = rng.choice(TO_SCALAR)
    return template.format(*[vector] * template.count("{}"))


def _differs(expression, at):
    """None if the gradient and a Hessian-vector product match finite differences."""
    try:
        check_grads(expression, at, order=2, rtol=1e-5, atol=1e-5)
    except AssertionError as e:
        return f"{expression} at {at}: {str(e)[:400]}"
    return None


def test_random_expressions_of_the_vocabulary_match_finite_differences():
    """Seeded random expressions (60, a few seconds): elementwise functions of the
    vocabulary, reductions along axes with keywords, to a scalar; the gradient and
    the Hessian-vector product along a random direction against finite differences."""
    rng = random.Random(20261219)
    data = np.random.default_rng(20261219)
    failures, drawn = [], []
    for case in range(60):
        expression = _scalar(rng, rng.randint(1, 3))
        drawn.append(expression)
        at = {"A": data.uniform(-1.5, 1.5, (2, 3)), "B": data.uniform(-1.5, 1.5, (2, 3))}
        failure = _differs(expression, at)
        if failure is not None:
            failures.append(failure)
    assert not failures, "\n".join(failures[:5])
    text = " ".join(drawn)
    used = [t for t in MATRIX_UNARY + TO_VECTOR if t.replace("{}", "").split("(")[0] + "(" in text]
    assert len(used) >= 30, f"the draw reached only {len(used)} templates"


def test_taylor_rules_of_the_vocabulary_agree_with_the_derivative_graph():
    """Each issue-19 operation's Taylor rule (series.py), through engine/taylor.py:
    f(x0 + t) to order 5 along t against derivatives of the derivative graph."""
    from diffcli.engine.taylor import TaylorPlan, seeded

    order = 5
    cases = [("sinc(x)", 0.0), ("sinc(x)", 0.1), ("sinc(x)", 1.3), ("erf(x)", 0.4), ("erfc(x)", -0.7),
             ("erfinv(x)", 0.3), ("lgamma(x)", 2.5), ("digamma(x)", -1.5), ("polygamma(2, x)", 0.7),
             ("logaddexp(x, 2*x)", 0.3), ("logaddexp2(x, sin(x))", 0.3), ("x % 0.7", 2.0), ("fmax(x, 1-x)", 0.2),
             ("fmin(x, nan)", 0.2), ("round(x) * x", 1.2), ("logsumexp([[x, x^2], [1, x]], axis=1) @ [1, 2]", 0.3),
             ("sum(max([[x, x^2], [1, 2x]], axis=0, keepdims=True) * [[1, 3]])", 0.7),
             ("norm([[x, x^2], [1, 2x]], axis=1) @ [1, 3]", 0.7), ("softmax([x, x^2, 1], axis=0)[1]", 0.3)]
    for expression, x0 in cases:
        function = diffcli.compile(expression)
        binding = function._binding({"x": ()})
        (series,) = TaylorPlan([binding.output], binding.inputs).run([seeded(np.array(x0), np.array(1.0), order)], 0)
        got = [float(series[k]) * math.factorial(k) for k in range(order + 1)]
        want = [float(function.eval(x=x0).value)] + [float(function.derivative(k, {"x": x0}, wrt="x")["x"])
                                                     for k in range(1, order + 1)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=expression)


# ---------------------------------------------------------------- --symbolic writes each new operation back

SYMBOLIC = ["x % y", "remainder(x, -y)", "logaddexp(x, y)", "logaddexp2(x, y)", "fmax(x, y)", "fmin(x, y)",
            "round(x) * x", "sinc(x)", "erf(x)", "erfc(x)", "erfinv(x / 3)", "lgamma(y)", "digamma(y)",
            "polygamma(2, y)", "square(x)", "reciprocal(y)", "rsqrt(y)", "degrees(x)", "radians(x)",
            "clip(x, -0.5, 0.5)", "ln(y)", "power(y, x)", "arctan2(x, y)", "negative(x) * subtract(x, y)"]


@pytest.mark.parametrize("expression", SYMBOLIC)
def test_gradient_formulas_of_the_new_operations_parse_back_to_the_same_numbers(expression):
    """The printed gradient evaluates, bit for bit, to what diffcli computes, at four points."""
    function = diffcli.compile(expression)
    formulas = function.formulas("gradient", {"x": (), "y": ()})
    points = [(-1.7, 0.3), (0.0, 1.1), (0.45, 2.5), (1.3, 0.7)]
    for x, y in points:
        at = {k: v for k, v in {"x": x, "y": y}.items() if k in function.variables}
        gradient = function.grad(at)
        for name, text in formulas.items():
            again = diffcli.compile(text)
            value = again.eval({k: v for k, v in at.items() if k in again.variables}).value
            np.testing.assert_array_equal(value, gradient[name], err_msg=f"{text} at {at}")
