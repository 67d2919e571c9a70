"""Identity seeds kept diagonal: the same derivatives as the dense identity,
checked against it, against closed forms, and where nan and inf arise."""

from __future__ import annotations

import random

import numpy as np
import pytest

import diffcli
from diffcli.api import requests
from diffcli.engine import sparsity
from diffcli.engine.diagonal import Diagonal, structured_kernel
from diffcli.graph.nodes import Graph

from .test_property import random_scalar
from .test_sparsity import VECTOR_EXPRESSIONS, _points

# Beyond the shared vector expressions: every rule (div, neg, sub both ways, a
# diagonal plus a diagonal, cumsum both ways) and the kinks' zero-dominant products.
MORE_EXPRESSIONS = [
    "cumsum(sin(v)) * v", "cumsum(v) / w", "-(v * w) - cumsum(w)", "cumsum(w) - v / w", "v * w + v / w",
    "cumsum(cumsum(v) * w)", "abs(v) * w - relu(v)", "sqrt(w) * cumsum(v)", "v @ outer(v, w)",
]
# Matrix variables: two value axes, and a transpose's strided (non-C-order) operands.
MATRIX_EXPRESSIONS = [
    "X * sum(X) + transpose(X)", "transpose(X) - X * Y", "X * Y - transpose(Y)", "-transpose(X) + X @ Y",
    "cumsum(X) * Y - X",
]


def _seeds(monkeypatch, diagonal: bool):
    """Identity seeds for every Jacobian and Hessian row (no shared seeds), as a
    Diagonal from two rows on, or always dense."""
    monkeypatch.setattr(sparsity, "MAX_PATTERN_CELLS", 0)
    monkeypatch.setattr(requests, "DIAGONAL_MIN_ROWS", 2 if diagonal else 1 << 62)
    requests.identity_seed.cache_clear()


def _both_ways(monkeypatch, compute):
    _seeds(monkeypatch, diagonal=True)
    kept = compute()
    _seeds(monkeypatch, diagonal=False)
    dense = compute()
    requests.identity_seed.cache_clear()
    return kept, dense


@pytest.mark.parametrize("expression", VECTOR_EXPRESSIONS + MORE_EXPRESSIONS)
@pytest.mark.parametrize("batch", [None, 4])
def test_jacobian_with_diagonal_seeds_equals_dense_seeds(monkeypatch, expression, batch):
    at = _points(np.random.default_rng(0), batch)
    variables = diffcli.compile(expression).variables
    at = {k: at[k] for k in variables}
    ndim = 0 if batch is None else 1
    kept, dense = _both_ways(monkeypatch, lambda: diffcli.compile(expression).jacobian(at, batch_ndim=ndim))
    np.testing.assert_array_equal(kept.value, dense.value)
    for name in variables:
        np.testing.assert_array_equal(kept[name], dense[name], err_msg=expression)


def test_random_hessians_with_diagonal_seeds_equal_dense_seeds(monkeypatch):
    data = np.random.default_rng(1)
    for seed in range(40):
        expression = random_scalar(random.Random(seed), 4)
        variables = diffcli.compile(expression).variables
        at = {k: v for k, v in _points(data).items() if k in variables}
        kept, dense = _both_ways(monkeypatch, lambda: diffcli.compile(expression).hessian(at))
        for a in variables:
            for b in variables:
                np.testing.assert_array_equal(kept[a][b], dense[a][b], err_msg=expression)


def _cumsum_times_x_jacobian(x):
    """d/dx of cumsum(sin(x)) * x: x_k cos(x_j) for j <= k, plus cumsum(sin(x))_k on the diagonal."""
    return np.tril(np.outer(x, np.cos(x))) + np.diag(np.cumsum(np.sin(x)))


def test_cumsum_jacobian_matches_its_closed_form_and_never_goes_dense(monkeypatch):
    def refuse(self):
        raise AssertionError("the seed was made dense")
    monkeypatch.setattr(Diagonal, "dense", refuse)
    rng = np.random.default_rng(2)
    x = rng.uniform(-2, 2, 100)
    got = diffcli.compile("cumsum(sin(x)) * x").jacobian(x=x)["x"]
    np.testing.assert_allclose(got, _cumsum_times_x_jacobian(x), rtol=1e-14, atol=1e-14)
    batch = rng.uniform(-2, 2, (3, 100))
    got = diffcli.compile("cumsum(sin(x)) * x").jacobian(x=batch, batch_ndim=1)["x"]
    for point, row in zip(batch, got):
        np.testing.assert_allclose(row, _cumsum_times_x_jacobian(point), rtol=1e-14, atol=1e-14)


def test_forward_cumsum_of_a_diagonal_in_a_hessian():
    # f = sum(c^3) with c = L x (L lower triangular ones): H = L^T diag(6c) L.
    x = np.random.default_rng(3).uniform(-1, 1, 80)
    lower = np.tri(80)
    c = lower @ x
    want = lower.T @ np.diag(6 * c) @ lower
    got = diffcli.compile("sum(cumsum(x)^3)").hessian(x=x)["x"]["x"]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_nan_and_inf_arise_where_they_do_with_dense_seeds(monkeypatch):
    at = {"v": np.array([1.0, 0.0, -2.0, 3.0]), "w": np.array([0.0, 1.0, np.inf, 2.0])}
    for expression in ["cumsum(v) / w", "cumsum(v * w)", "v * w - w", "log(v) * cumsum(w)"]:
        kept, dense = _both_ways(monkeypatch, lambda: diffcli.compile(expression).jacobian(at))
        for name in ("v", "w"):
            np.testing.assert_array_equal(kept[name], dense[name], err_msg=expression)
        assert [d.message for d in kept.diagnostics] == [d.message for d in dense.diagnostics]


@pytest.mark.parametrize("batch", [(), (1,), (3,), (2, 1)])
@pytest.mark.parametrize("shape", [(5,), (2, 3)])
def test_a_diagonal_is_the_identity_times_its_entries(batch, shape):
    d = np.random.default_rng(4).normal(size=batch + shape)
    m = int(np.prod(shape))
    full = np.asarray(Diagonal(d, len(shape)))
    rows = np.eye(m).reshape((m,) + (1,) * len(batch) + shape)
    np.testing.assert_array_equal(full, rows * d)
    assert Diagonal(d, len(shape)).shape == full.shape


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "cmul"])
@pytest.mark.parametrize("order", ["diagonal first", "diagonal second", "both"])
def test_each_rule_gives_the_dense_result(op, order):
    rng = np.random.default_rng(5)
    d = rng.normal(size=(1, 6))
    # add/sub meet operands with the row axis, here in transposed (Fortran) order
    other = rng.normal(size=(4, 6)) if op not in ("add", "sub") else rng.normal(size=(6, 4, 6)).T.copy().T
    g = Graph()
    node = g.apply(op, [g.var("a", (6,)), g.var("b", (6,))])
    kernel = diffcli.graph.ops.OPS[op].kernel(node)
    run = structured_kernel(node, kernel, unary=False)
    diagonal = Diagonal(d, 1)
    pair = {"diagonal first": (diagonal, other), "diagonal second": (other, diagonal),
            "both": (diagonal, Diagonal(rng.normal(size=(4, 6)), 1))}[order]
    with np.errstate(all="ignore"):  # the dense x / 0 off the diagonal
        got = np.asarray(run(*pair))
        want = kernel(*(np.asarray(a) for a in pair))
    np.testing.assert_array_equal(got, want)


def test_rules_decline_where_off_diagonal_zeros_would_not_stay_zero():
    g = Graph()
    node = g.apply("mul", [g.var("a", (3,)), g.var("b", (3,))])
    run = structured_kernel(node, np.multiply, unary=False)
    other = np.array([1.0, np.inf, 2.0])
    with np.errstate(invalid="ignore"):
        got = run(Diagonal(np.ones(3), 1), other)
        want = np.eye(3) * other
    assert type(got) is np.ndarray  # made dense: 0 * inf is nan off the diagonal
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("expression", MATRIX_EXPRESSIONS)
@pytest.mark.parametrize("batch", [None, 2])
def test_matrix_jacobians_with_diagonal_seeds_equal_dense_seeds(monkeypatch, expression, batch):
    rng = np.random.default_rng(6)
    lead = () if batch is None else (batch,)
    at = {"X": rng.normal(size=lead + (3, 3)), "Y": rng.normal(size=lead + (3, 3))}
    at = {k: at[k] for k in diffcli.compile(expression).variables}
    ndim = len(lead)
    kept, dense = _both_ways(monkeypatch, lambda: diffcli.compile(expression).jacobian(at, batch_ndim=ndim))
    for name in at:
        np.testing.assert_array_equal(kept[name], dense[name], err_msg=expression)


def test_matrix_hessian_matches_its_closed_form():
    # f = sum(X * transpose(X) * Y): d2f/dX[i,j]dX[k,l] = [k,l == j,i] (Y[i,j] + Y[j,i]).
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    got = diffcli.compile("sum(X * transpose(X) * Y)").hessian(X=x, Y=y)["X"]["X"]
    eye = np.eye(8)
    want = np.einsum("jk,il->ijkl", eye, eye) * (y + y.T)[:, :, None, None]
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-15)


def test_diagonal_seeds_over_threaded_chunks_give_the_one_pass_numbers(monkeypatch):
    from diffcli.engine import evaluate

    x = np.random.default_rng(8).uniform(-2, 2, (40, 70))
    one_pass = diffcli.compile("cumsum(sin(x)) * x").jacobian(x=x, batch_ndim=1)["x"]
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 12)
    monkeypatch.setattr(evaluate, "MIN_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setenv("DIFFCLI_THREADS", "3")
    chunked = diffcli.compile("cumsum(sin(x)) * x").jacobian(x=x, batch_ndim=1)["x"]
    np.testing.assert_array_equal(chunked, one_pass)
    for point, jacobian in zip(x[:3], chunked):
        np.testing.assert_allclose(jacobian, _cumsum_times_x_jacobian(point), rtol=1e-14, atol=1e-14)


def test_an_operand_with_more_axes_than_the_diagonal_is_met_densely():
    g = Graph()
    for op in ("mul", "add"):
        node = g.apply(op, [g.var("a", (3,)), g.var("b", (3,))])
        kernel = diffcli.graph.ops.OPS[op].kernel(node)
        other = np.random.default_rng(10).normal(size=(2, 3, 1, 3))
        got = structured_kernel(node, kernel, unary=False)(Diagonal(np.ones((1, 3)), 1), other)
        np.testing.assert_array_equal(got, kernel(np.asarray(Diagonal(np.ones((1, 3)), 1)), other))
