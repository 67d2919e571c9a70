"""Every rule in the op table against central finite differences, and the
subgradients chosen at kinks against their documented values."""

from __future__ import annotations

import math

import numpy as np
import pytest

import diffcli
from diffcli.graph import autodiff
from diffcli.graph.nodes import topological_order
from diffcli.graph.ops import OPS

from .helpers import assert_matches_fd

V = [0.3, -1.2, 2.1]          # a generic vector
P = [0.4, 1.3, 2.7]           # positive entries
U = [-0.7, 0.2, 0.55]         # inside (-1, 1)
A = [[1.0, -2.0, 0.5], [0.3, 0.8, -1.1]]
S = [[1.0, 2.0], [-0.5, 3.0]]

CASES = [
    ("x + y", {"x": V, "y": 0.7}),
    ("A - x", {"A": A, "x": V}),
    ("x * y", {"x": A, "y": [2.0, -1.0, 0.5]}),
    ("x / y", {"x": V, "y": P}),
    ("x ** y", {"x": P, "y": [1.5, -0.5, 2.0]}),
    ("x ** 3", {"x": V}),
    ("2 ** x", {"x": V}),
    ("-x", {"x": V}),
    ("sin(x)", {"x": V}), ("cos(x)", {"x": V}), ("tan(x)", {"x": V}),
    ("asin(x)", {"x": U}), ("acos(x)", {"x": U}), ("atan(x)", {"x": V}),
    ("sinh(x)", {"x": V}), ("cosh(x)", {"x": V}), ("tanh(x)", {"x": V}),
    ("asinh(x)", {"x": V}), ("acosh(x)", {"x": [1.2, 2.0, 5.0]}), ("atanh(x)", {"x": U}),
    ("exp(x)", {"x": V}), ("expm1(x)", {"x": V}), ("exp2(x)", {"x": V}),
    ("log(x)", {"x": P}), ("log1p(x)", {"x": U}), ("log2(x)", {"x": P}), ("log10(x)", {"x": P}),
    ("sqrt(x)", {"x": P}), ("cbrt(x)", {"x": V}),
    ("abs(x)", {"x": V}), ("sign(x) * x", {"x": V}), ("floor(x) + x", {"x": V}),
    ("ceil(x) * x", {"x": V}),
    ("sigmoid(x)", {"x": [-30.0, -1.0, 0.5, 30.0]}), ("relu(x)", {"x": V}),
    ("softplus(x)", {"x": [-30.0, -1.0, 0.5, 30.0]}),
    ("atan2(y, x)", {"y": V, "x": [1.0, -2.0, -0.5]}),
    ("hypot(a, b)", {"a": V, "b": P}),
    ("maximum(a, b)", {"a": V, "b": [0.0, 0.0, 3.0]}),
    ("minimum(a, b)", {"a": V, "b": [0.0, 0.0, 3.0]}),
    ("where(x > 0, x^2, sin(x))", {"x": V}),
    ("where(x > 0, log(x + 3), x / 2)", {"x": V}),
    ("(x < y) * x + (x <= y) * y + (x > y) * x^2 + (x >= y) * y^2 + (x == y) + (x != y) * x",
     {"x": V, "y": [1.0, -1.0, 0.0]}),
    ("sum(x * x)", {"x": A}), ("mean(x^3)", {"x": V}), ("max(x)", {"x": V}), ("min(x)", {"x": A}),
    ("norm(x)", {"x": A}), ("logsumexp(x)", {"x": [1000.0, 999.0, 998.5]}),
    ("softmax(x)", {"x": V}), ("prod(x)", {"x": A}),
    ("cumsum(x)", {"x": V}), ("cumsum(A)", {"A": A}),
    ("cumprod(x)", {"x": V}), ("cumprod(x)", {"x": [0.5, 0.0, 2.0, 0.0, 3.0]}),
    ("prod(x)", {"x": [2.0, 0.0, 3.0]}),
    ("A @ x", {"A": A, "x": V}), ("x @ A", {"A": A, "x": [1.0, -1.0]}),
    ("x @ y", {"x": V, "y": P}), ("A @ B", {"A": A, "B": [[1.0, 0.0], [2.0, 1.0], [-1.0, 3.0]]}),
    ("dot(x, y)", {"x": V, "y": P}), ("outer(x, y)", {"x": V, "y": [1.0, 2.0]}),
    ("transpose(A) * 2", {"A": A}), ("trace(S @ S)", {"S": S}),
    ("[x * y, sin(y)]", {"x": 1.5, "y": 2.0}),
    ("x[1:] * x[:-1] + x[0]", {"x": [0.3, -1.2, 2.1, 0.9]}),
    ("A[:, 0] * A[1, ::2]", {"A": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}),
    ("x[::-1] * x", {"x": V}),
    ("T @ A", {"T": [A, [[0.5, 1.5, -1.0], [2.0, -0.3, 0.9]]], "A": [[1.0, 0.0], [2.0, 1.0], [-1.0, 3.0]]}),
    ("trace(T)", {"T": [[[1.0, 2.0], [0.5, -1.0]], [[3.0, 4.0], [-2.0, 0.7]]]}),
    ("einsum('ij,jk->ki', A, B)", {"A": A, "B": [[1.0, 0.0], [2.0, 1.0], [-1.0, 3.0]]}),
    ("flip(x) * roll(x, 1) + tril(S)[1]", {"x": [0.3, -1.2], "S": S}),
    ("sort(x) * x", {"x": V}), ("nan_to_num(x * y)", {"x": V, "y": P}),
    # issue 19: NumPy's other functions, and reductions along axes
    ("x % y", {"x": [2.5, -1.2, 7.1], "y": [0.7, 0.9, -2.0]}),
    ("logaddexp(x, y)", {"x": V, "y": [1.0, -30.0, 2.1]}), ("logaddexp2(x, y)", {"x": V, "y": [1.0, -30.0, 2.2]}),
    ("fmax(a, b)", {"a": V, "b": [0.0, 0.0, 3.0]}), ("fmin(a, b)", {"a": V, "b": [0.0, 0.0, 3.0]}),
    ("round(x) * x", {"x": V}), ("sinc(x)", {"x": [-1.7, -0.2, 0.1, 0.3, 2.5]}),
    ("erf(x)", {"x": V}), ("erfc(x)", {"x": V}), ("erfinv(x)", {"x": U}),
    ("lgamma(x)", {"x": [0.3, 2.5, -1.5]}), ("digamma(x)", {"x": [0.3, 2.5, -1.5]}),
    ("polygamma(2, x)", {"x": [0.3, 2.5, -1.5]}),
    ("sum(A * A, axis=0)", {"A": A}), ("max(A, axis=1, keepdims=True)", {"A": A}),
    ("logsumexp(A, axis=0)", {"A": A}), ("softmax(A, axis=1)", {"A": A}), ("norm(A, axis=1)", {"A": A}),
    ("trace(A, offset=1)", {"A": A}),
]


@pytest.mark.parametrize("expression,at", CASES, ids=[c[0] for c in CASES])
def test_rule_matches_finite_differences(expression, at):
    assert_matches_fd(expression, at)


def test_every_op_in_the_table_is_exercised():
    """Each op appears in the forward or derivative graph of some case above, so a
    new entry in OPS cannot go untested."""
    seen = set()
    for expression, at in CASES:
        function = diffcli.compile(expression)
        shapes = {k: np.shape(v) for k, v in at.items()}
        binding = function._binding(shapes)
        seed = binding.graph.var("$seed", binding.output.shape)
        outputs = [binding.output] + autodiff.vjp(binding.graph, binding.output, seed, binding.inputs)
        seen |= {node.op for node in topological_order(outputs)}
    assert set(OPS) - seen == set()


def test_second_derivative_graph_is_a_graph_too():
    """The gradient graph can be differentiated again: d2/dx2 of sin(x)*x^2."""
    function = diffcli.compile("sin(x) * x^2")
    binding = function._binding({"x": ()})
    graph = binding.graph
    (dx,) = autodiff.vjp(graph, binding.output, graph.const(1.0), binding.inputs)
    (dxx,) = autodiff.vjp(graph, dx, graph.const(1.0), binding.inputs)
    from diffcli.engine.evaluate import Plan

    x = 0.7
    (value,) = Plan([dxx], binding.inputs).run([np.array(x)])
    expected = -np.sin(x) * x**2 + 4 * x * np.cos(x) + 2 * np.sin(x)
    assert value == pytest.approx(expected, rel=1e-14)


# ---------------------------------------------------------------- kinks (PyTorch's subgradients)

@pytest.mark.parametrize("expression,at,expected", [
    ("abs(x)", {"x": 0.0}, {"x": 0.0}),
    ("relu(x)", {"x": 0.0}, {"x": 0.0}),
    ("sign(x)", {"x": 0.0}, {"x": 0.0}),
    ("norm(x)", {"x": [0.0, 0.0]}, {"x": [0.0, 0.0]}),
    ("maximum(x, y)", {"x": 1.0, "y": 1.0}, {"x": 0.5, "y": 0.5}),
    ("minimum(x, y)", {"x": 1.0, "y": 1.0}, {"x": 0.5, "y": 0.5}),
    ("max(x)", {"x": [3.0, 1.0, 3.0]}, {"x": [0.5, 0.0, 0.5]}),
    ("min(x)", {"x": [1.0, 1.0, 1.0, 4.0]}, {"x": [1 / 3, 1 / 3, 1 / 3, 0.0]}),
    ("floor(x)", {"x": 2.0}, {"x": 0.0}),
    ("prod(x)", {"x": [2.0, 0.0, 3.0]}, {"x": [0.0, 6.0, 0.0]}),
    ("prod(x)", {"x": [0.0, 0.0, 3.0]}, {"x": [0.0, 0.0, 0.0]}),
    ("x ** 2", {"x": 0.0}, {"x": 0.0}),
    ("x ** y", {"x": 0.0, "y": 2.0}, {"x": 0.0, "y": 0.0}),
])
def test_subgradient_at_kink(expression, at, expected):
    result = diffcli.compile(expression).grad(at)
    for name, value in expected.items():
        np.testing.assert_array_equal(result[name], np.asarray(value))


def test_cumprod_with_zero_exact_jacobian():
    x = np.array([2.0, 0.0, 3.0, 4.0])
    result = diffcli.compile("cumprod(x)").jacobian(x=x)
    expected = np.zeros((4, 4))
    for i in range(4):
        for j in range(i + 1):
            expected[i, j] = np.prod([x[k] for k in range(i + 1) if k != j])
    np.testing.assert_array_equal(result["x"], expected)


def test_sigmoid_is_accurate_in_both_tails():
    r = diffcli.compile("sigmoid(x)").eval(x=[-40.0, 40.0])
    np.testing.assert_allclose(r.value, [np.exp(-40.0) / (1 + np.exp(-40.0)), 1 / (1 + np.exp(-40.0))],
                               rtol=1e-15)


def test_slices_gathered_back_fill_one_array_as_the_separate_adds_would():
    """A gradient through x[1:], x[:-1] and x[::2] is one scatter_sum node; its
    numbers are those of the zero arrays added one by one, in a batch too."""
    expression = "sum(sin(x[1:]) * x[:-1]) + sum(x[::2] ^ 3)"
    function = diffcli.compile(expression)
    x = np.random.default_rng(8).uniform(-2, 2, (6, 7))
    got = function.grad(x=x, batch_ndim=1)["x"]
    want = np.zeros_like(x)
    want[:, 1:] = want[:, 1:] + np.cos(x[:, 1:]) * x[:, :-1]
    want[:, :-1] = want[:, :-1] + np.sin(x[:, 1:])
    want[:, ::2] = want[:, ::2] + 3 * x[:, ::2] ** 2
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    (binding,) = function._bindings.values()
    gradient = binding.gradient(["x"])[0]
    assert gradient.op == "scatter_sum" and len(gradient.args) == 3
    formula = function.formulas("gradient", {"x": (7,)})["x"]
    again = diffcli.compile(formula).eval(x=x[0]).value
    np.testing.assert_array_equal(again, diffcli.compile(expression).grad(x=x[0])["x"])


def test_a_box_slice_written_first_and_zeros_around_it_give_the_separate_adds():
    """scatter_sum writes its first part (a box: unit-step slices) straight into
    place and zeros only the rest; checked on two axes against the zero arrays
    added one by one."""
    expression = "sum(sin(A[1:, :-2]) * A[:-1, 2:]) + sum(A[1:3, 1:] ^ 2)"
    a = np.random.default_rng(9).uniform(-2, 2, (5, 4, 6))
    got = diffcli.compile(expression).grad(A=a, batch_ndim=1)["A"]
    want = np.zeros_like(a)
    want[:, 1:, :-2] += np.cos(a[:, 1:, :-2]) * a[:, :-1, 2:]
    want[:, :-1, 2:] += np.sin(a[:, 1:, :-2])
    want[:, 1:3, 1:] += 2 * a[:, 1:3, 1:]
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    untouched = np.ones((4, 6), dtype=bool)
    untouched[1:, :-2] = untouched[:-1, 2:] = untouched[1:3, 1:] = False
    assert untouched.any() and np.all(got[:, untouched] == 0)


# ---------------------------------------------------------------- pow where its formulas meet 0 * inf


def test_a_zero_exponent_has_derivative_zero_everywhere_at_every_order():
    """x^0 is 1 for every x, 0 included (autograd's test_power_arg0, PyTorch): the
    formula 0 * x^-1 gave nan with an "inf" warning at x = 0."""
    for expression in ("x^0", "pow(x, 0)", "x^(1 - 1)"):
        function = diffcli.compile(expression)
        for x in (0.0, -0.0, 2.0, -3.0):
            result = function.grad(x=x)
            assert result["x"] == 0.0 and result.diagnostics == [], (expression, x)
            for order in (2, 3):
                assert function.derivative(order, x=x)["x"] == 0.0, (expression, x, order)


def test_pow_at_the_origin_as_pytorch():
    result = diffcli.compile("pow(x, y)").grad(x=0.0, y=0.0)
    assert (result.value, result["x"], result["y"], result.diagnostics) == (1.0, 0.0, 0.0, [])


@pytest.mark.parametrize("x", [0.0, -0.0, 2.0, 0.5, -2.0])
@pytest.mark.parametrize("y", [-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 3.0])
def test_pow_exponent_derivative_is_pytorchs(x, y):
    """d/dy x^y = x^y log(x), but 0 where x == 0 and y >= 0 (0^y is 0 for every
    y > 0): torch's pow_backward_exponent, JAX's pow jvp for y >= 0. At x = 0 with
    y < 0 it is x^y log(x), infinite, as in PyTorch; for x < 0, log(x) is nan."""
    with np.errstate(all="ignore"):
        want = 0.0 if x == 0 and y >= 0 else np.power(x, y) * np.log(x)
    got = diffcli.compile("pow(x, y)").grad(x=x, y=y)["y"]
    np.testing.assert_array_equal(got, want)


def _power_derivative(n: int, order: int, x: float) -> float:
    """d^order/dx^order x^n = n (n-1) ... (n-order+1) x^(n-order), and exactly 0 when
    the coefficient is (the polynomial ran out of powers), whatever x^(n-order) is."""
    coefficient = math.prod(n - j for j in range(order))
    if coefficient == 0:
        return 0.0
    with np.errstate(all="ignore"):
        return coefficient * np.power(x, float(n - order))


@pytest.mark.parametrize("form", ["x^{n}", "pow(x, {n})", "pow(x, y)"])
@pytest.mark.parametrize("n", range(-3, 6))
def test_integer_powers_at_every_order_match_the_closed_form(form, n):
    """x^2 at 0: order 3 is 0; x^3 at 0: order 3 is 6, order 4 is 0; x^-1 at -0: -inf,
    then -inf, then ... as IEEE evaluates the closed form. With a constant exponent and
    with a variable one (y = n), at 0, -0, negative and positive bases, orders 1 to 4.
    Values compared (inf and nan included), not the sign of a zero derivative."""
    function = diffcli.compile(form.format(n=n))
    for x in (0.0, -0.0, -2.0, -0.5, 1.5):
        at = {"x": x, "y": float(n)} if "y" in form else {"x": x}
        for order in range(1, 5):
            got = function.derivative(order, at, wrt="x")["x"]
            # to rounding (Taylor propagation's recurrence is not the closed form's
            # one multiplication); infinities, nans and zeros exactly
            np.testing.assert_allclose(got, _power_derivative(n, order, x), rtol=1e-14, atol=0.0,
                                       err_msg=f"{form.format(n=n)}, order {order}, x = {x!r}")


@pytest.mark.parametrize("y,want", [(2.0, [[2.0, 0.0], [0.0, 0.0]]), (3.0, [[0.0, 0.0], [0.0, 0.0]])])
def test_pow_hessian_at_a_zero_base(y, want):
    """At x = 0, y > 1: d2/dx2 = y(y-1) x^(y-2), d2/dxdy = x^(y-1) (1 + y log x) -> 0,
    d2/dy2 = x^y log(x)^2 -> 0; no 0 * inf on the way."""
    result = diffcli.compile("pow(x, y)").hessian(x=0.0, y=y)
    got = [[result["x"]["x"], result["x"]["y"]], [result["y"]["x"], result["y"]["y"]]]
    np.testing.assert_array_equal(np.array(got, dtype=float), want)
    assert result.diagnostics == []


def test_pow_of_a_zero_base_warns_only_where_its_derivative_is_infinite():
    """d/dy 0^y is 0 for y >= 0, made without computing log(0) in the branch not
    taken (a warning about -inf for a finite answer, before); for y < 0 it is
    -inf, and that is said."""
    f = diffcli.compile("pow(0, y)")
    quiet = f.grad(y=0.0)
    assert (float(quiet["y"]), quiet.diagnostics) == (0.0, [])
    loud = f.grad(y=-1.0)
    assert float(loud["y"]) == -np.inf and loud.diagnostics


# ---------------------------------------------------------------- the records are complete

def _missing_facts(name, op) -> list[str]:
    """'name: field (why a layer needs it)' for each fact the record lacks."""
    from diffcli.engine import diagonal, sparsity
    from diffcli.graph.ops import CALL, OWN, TABLE, C, Call, Infix, Kink

    missing = []

    def need(ok, field, why):
        if not ok:
            missing.append(f"{name}: {field} ({why})")

    need(callable(op.kernel) and callable(op.shape), "kernel, shape", "the evaluator and graph.py run them")
    need(callable(op.vjp), "vjp", "autodiff.py differentiates through every operation")
    need(callable(op.taylor), "taylor", "engine/taylor.py propagates Taylor series through every operation")
    need(type(op.notation) in (Infix, Call) or op.notation in (CALL, OWN), "notation",
         "formula.py prints every operation")
    if op.notation == CALL or type(op.notation) is Call:
        need(name in op.names, "names", "a formula writes name(...), which must parse back to this operation")
    if op.names:
        need(isinstance(op.arity, int), "arity", "the parser checks a call's number of arguments")
    if op.elementwise:
        need((op.c is None) != (op.no_c is None), "c or no_c",
             "native.py fuses elementwise operations: a C expression, or why there is none")
        need(op.pattern is None, "pattern", "an elementwise operation's pattern is entry to entry")
    else:
        need(op.pattern in sparsity.PATTERNS, "pattern", "sparsity.py needs to know how to find its pattern")
        need(op.c is None, "c", "native.py fuses elementwise operations only")
    if op.c is not None:
        need(type(op.c) is C and (callable(op.c.expression) or isinstance(op.c.expression, str)), "c",
             "a C expression over {a}, {b}, {c}")
        need(op.c.exact or op.c.expression == f"{name}({{a}})", "c",
             "native.py probes a C library function of one argument, by the operation's name")
    need(op.diagonal is None or op.diagonal in diagonal.KINDS, "diagonal", "a kind of rule diagonal.py has")
    need(op.kink is None or type(op.kink) is Kink and callable(op.kink.condition), "kink", "api.py reports it")
    if op.zero_derivative:
        need(op.kink is not None, "kink", "a derivative that is 0 wherever it exists jumps somewhere, which is said")
    need(op.rewrite is None or callable(op.rewrite), "rewrite", "Graph.apply calls it")
    need(op.rule is TABLE or callable(op.rule) or isinstance(op.rule, str), "rule",
         "steps.py names the rule a derivation applies at it")
    return missing


def test_every_record_holds_every_fact_its_layers_need():
    missing = [fact for name, op in OPS.items() for fact in _missing_facts(name, op)]
    assert missing == [], "\n".join(missing)


def test_a_record_without_a_fact_is_named_with_the_field():
    """The walk above catches an omission, naming the operation and the field."""
    sin = OPS["sin"]
    assert _missing_facts("sin", sin._replace(c=None)) == [
        "sin: c or no_c (native.py fuses elementwise operations: a C expression, or why there is none)"]
    assert _missing_facts("sin", sin._replace(names=())) == [
        "sin: names (a formula writes name(...), which must parse back to this operation)"]
    assert _missing_facts("sum", OPS["sum"]._replace(pattern=None))[0].startswith("sum: pattern")
    assert _missing_facts("tan", OPS["tan"]._replace(taylor=None)) == [
        "tan: taylor (engine/taylor.py propagates Taylor series through every operation)"]


def test_every_name_a_record_gives_calls_that_operation():
    from diffcli.language.functions import FUNCTIONS
    from diffcli.graph.ops import Infix, operator

    for name, op in OPS.items():
        for user_name in op.names:
            operands = ["1", "x0"] if name == "polygamma" else [f"x{i}" for i in range(op.arity)]  # (its order)
            call = f"{user_name}({', '.join(operands)})"
            graph = diffcli.compile(call)._binding({f"x{i}": (2, 2) for i in range(op.arity)}).graph
            assert FUNCTIONS[user_name].min_args == op.arity
            assert name in {node.op for node in graph.nodes}, user_name
        if type(op.notation) is Infix:
            assert all(operator(token) == name for token in op.notation.tokens)


def test_every_operation_is_written_in_formulas():
    """Each operation, as it occurs in the graphs of the cases above, is printed by
    formula.py (which raises UsageError for an operation it has no notation for)."""
    from diffcli.graph.formula import formula

    seen = {}
    for expression, at in CASES:
        function = diffcli.compile(expression)
        binding = function._binding({k: np.shape(v) for k, v in at.items()})
        seed = binding.graph.var("$seed", binding.output.shape)
        outputs = [binding.output] + autodiff.vjp(binding.graph, binding.output, seed, binding.inputs)
        for node in topological_order(outputs):
            seen.setdefault(node.op, formula(node))
    assert set(OPS) - set(seen) == set()


def test_exp2_and_its_derivatives_are_the_closed_forms():
    """exp2(x) = 2^x, d/dx = log(2) 2^x, d2/dx2 = log(2)^2 2^x, as NumPy computes them."""
    x = np.array([-30.0, -3.0, -0.0, 0.5, 10.0, 1023.9])
    f = diffcli.compile("exp2(x)")
    np.testing.assert_array_equal(f.eval(x=x, batch_ndim=1).value, np.exp2(x))
    np.testing.assert_allclose(f.grad(x=x, batch_ndim=1)["x"], math.log(2.0) * np.exp2(x), rtol=1e-15)
    np.testing.assert_allclose(f.derivative(2, {"x": x}, wrt="x", batch_ndim=1)["x"],
                               math.log(2.0) ** 2 * np.exp2(x), rtol=1e-15)
