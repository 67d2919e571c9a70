"""Shared seeds for Jacobian and Hessian rows: the same numbers as a seed per
row, found from a structural pattern that never misses an entry."""

from __future__ import annotations

import random

import numpy as np
import pytest

import diffcli
from diffcli.engine import sparsity

from .test_property import random_scalar

ROSENBROCK = "sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)"

# Vector-valued expressions reaching every kind of operation the pattern handles:
# elementwise with broadcasting, nan-probed structure, zero-derivative ops, dense reductions.
VECTOR_EXPRESSIONS = [
    "sin(v) * exp(w)", "v * 2 + w[0]", "cumsum(sin(v)) * w", "cumprod(v) + w", "[v[0] * w[1], v[2], sum(w)]",
    "softmax(v) * w", "v[1:] - v[:-1]^2", "outer(v, w)[1]", "transpose(outer(v, w))[0] * 3",
    "where(v > 0, v^2, w)", "maximum(v, w) * minimum(v, 1)", "v * max(w) + min(v)", "v * norm(w)",
    "v * logsumexp(w)", "floor(v) + sign(w) * v", "[trace(outer(v, w)), dot(v, w), v[0]]",
    "cumsum(v)[1:] * w[:-1]", "[v[2], v[1], v[0]] * w", "abs(v) + relu(w) + sqrt(w)",
]


def _points(rng, n=None):
    lead = () if n is None else (n,)
    return {"v": rng.uniform(-2, 2, lead + (3,)), "w": rng.uniform(0.5, 2, lead + (3,)),
            "x": rng.uniform(-2, 2, lead), "y": rng.uniform(-2, 2, lead)}


def _one_seed_per_row(monkeypatch, fn):
    shared = fn()
    monkeypatch.setattr(sparsity, "MAX_PATTERN_CELLS", 0)  # no pattern: identity seeds
    return shared, fn()


@pytest.mark.parametrize("expression", VECTOR_EXPRESSIONS)
@pytest.mark.parametrize("batch", [None, 4])
def test_jacobian_with_shared_seeds_equals_a_seed_per_row(monkeypatch, expression, batch):
    at = _points(np.random.default_rng(0), batch)
    function = diffcli.compile(expression)
    at = {k: at[k] for k in function.variables}
    ndim = 0 if batch is None else 1
    shared, alone = _one_seed_per_row(monkeypatch, lambda: diffcli.compile(expression).jacobian(at, batch_ndim=ndim))
    for name in function.variables:
        np.testing.assert_array_equal(shared[name], alone[name], err_msg=expression)


def test_random_hessians_with_shared_seeds_equal_a_seed_per_row(monkeypatch):
    data = np.random.default_rng(1)
    compressed = 0
    for seed in range(60):
        expression = random_scalar(random.Random(seed), 4)
        function = diffcli.compile(expression)
        at = {k: v for k, v in _points(data).items() if k in function.variables}
        shared = function.hessian(at)
        monkeypatch.setattr(sparsity, "MAX_PATTERN_CELLS", 0)  # no pattern: identity seeds
        alone = diffcli.compile(expression).hessian(at)
        monkeypatch.undo()
        (binding,) = function._bindings.values()
        compressed += any(c is not None for found in binding._compressions.values() for c in found)
        for a in function.variables:
            for b in function.variables:
                np.testing.assert_array_equal(shared[a][b], alone[a][b], err_msg=expression)
    assert compressed >= 10  # the shared-seed path really ran, in many of them


def _compression(expression, shapes, kind):
    function = diffcli.compile(expression)
    at = {name: np.full(shape, 0.5) for name, shape in shapes.items()}
    getattr(function, kind)(at)
    (binding,) = function._bindings.values()
    (found,) = binding._compressions.values()
    return found


def test_banded_and_diagonal_structure_needs_few_seeds():
    (rosenbrock,) = _compression(ROSENBROCK, {"x": (100,)}, "hessian")
    assert rosenbrock.count == 3  # tridiagonal
    (elementwise,) = _compression("sin(x) * exp(x) + x^2", {"x": (50,)}, "jacobian")
    assert elementwise.count == 1  # diagonal
    assert _compression("sum(x)^2", {"x": (20,)}, "hessian") == [None]  # dense: nothing to share
    (mixed_x, mixed_y) = _compression("sum(x^2 * y) + sum(sin(y))", {"x": (30,), "y": (30,)}, "hessian")
    assert mixed_x.count == 1 and mixed_y.count == 1  # row i of either block meets only x_i and y_i


def test_rosenbrock_hessian_matches_its_closed_form():
    x = np.random.default_rng(4).uniform(-1, 1, 100)
    h = diffcli.compile(ROSENBROCK).hessian(x=x)["x"]["x"]
    want = np.zeros((100, 100))
    i = np.arange(99)
    want[i, i] = 1200 * x[:-1] ** 2 - 400 * x[1:] + 2
    want[i + 1, i + 1] += 200
    want[i, i + 1] = want[i + 1, i] = -400 * x[:-1]
    np.testing.assert_allclose(h, want, rtol=1e-13, atol=1e-12)


def test_pattern_covers_every_entry_that_is_nonzero():
    """Numerically nonzero Jacobian entries at random points all lie inside the pattern."""
    data = np.random.default_rng(2)
    for expression in VECTOR_EXPRESSIONS:
        function = diffcli.compile(expression)
        at = {k: v for k, v in _points(data).items() if k in function.variables}
        jac = function.jacobian(at)
        (binding,) = function._bindings.values()
        (pattern,) = sparsity.dependency([binding.output], binding.inputs)
        numeric = np.concatenate([np.asarray(jac[n]).reshape(pattern.shape[0], -1) for n in function.variables],
                                 axis=1)
        assert not (numeric != 0)[~pattern].any(), expression


def test_a_nan_outside_the_pattern_is_reported_where_it_arose(monkeypatch):
    """At a point where a derivative is not finite, the seeds per row are used
    again, so nan and inf show in the same entries."""
    at = {"x": np.array([0.0, 1.0, 4.0, 0.0])}
    shared, alone = _one_seed_per_row(monkeypatch, lambda: diffcli.compile("sum(sqrt(x) * x[0])").hessian(at))
    np.testing.assert_array_equal(shared["x"]["x"], alone["x"]["x"])
    assert not np.isfinite(shared["x"]["x"]).all()


def test_too_big_a_pattern_is_not_attempted(monkeypatch):
    monkeypatch.setattr(sparsity, "MAX_PATTERN_CELLS", 10)
    assert _compression("sin(x)", {"x": (50,)}, "jacobian") == [None]


def test_a_huge_intermediate_is_taken_as_dense_instead_of_probed(monkeypatch):
    """outer(x, x) @ outer(x, x) would need a probe of 10^4 x 10^4 numbers: the
    matmul is taken as dense (never wrong), and the Hessian is the same."""
    x = np.random.default_rng(5).uniform(-1, 1, 100)
    expression = "sum(outer(x, x) @ outer(x, x)) + sum(x^3)"
    shared, alone = _one_seed_per_row(monkeypatch, lambda: diffcli.compile(expression).hessian(x=x))
    np.testing.assert_array_equal(shared["x"]["x"], alone["x"]["x"])
    probed = []
    monkeypatch.undo()
    original = sparsity._probed
    monkeypatch.setattr(sparsity, "_probed", lambda node, *rest: probed.append(node.op) or original(node, *rest))
    diffcli.compile(expression).hessian(x=x)
    assert "matmul" not in probed


def test_every_operation_has_a_pattern_rule():
    """A new operation must be placed in one of the pattern rules (else it would be
    taken as dense: correct, but every Jacobian through it would lose sharing)."""
    from diffcli.graph.ops import OPS

    elementwise = {name for name, op in OPS.items() if op.elementwise}
    selections = {name for name, op in OPS.items() if op.pattern == "moves"}
    nan_faithful = {name for name, op in OPS.items() if op.pattern == "probe"}
    zero_derivative = {name for name, op in OPS.items() if op.zero_derivative}
    # declared dense: which entries take_along_axis reads depends on the values argsort orders
    dense = {name for name, op in OPS.items() if op.pattern == "dense"}
    assert dense <= {"take_along_axis", "argsort"}  # (argsort: derivative 0, never reached)
    placed = elementwise | selections | nan_faithful | zero_derivative | dense
    assert set(OPS) - placed == set()
    assert not (selections & nan_faithful) and not (elementwise & selections)
