"""Steps on column windows run over their spans: the same numbers, bit for bit,
as the row-by-row steps; checked against them, against a closed form, and
where non-finite values sit between the windows' rows."""

from __future__ import annotations

import numpy as np
import pytest

import diffcli
from diffcli.engine import evaluate
from diffcli.engine.windows import Window, last_axis_window

ROSENBROCK = "sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)"
# Windows of one and of two columns less, unary and binary ufuncs, a pow that is
# np.power, kernels that are not ufuncs (square, where, the kinks' products),
# an operand that is not a window (a vector variable), and one that is a
# reduction's result broadcast back.
VECTOR_EXPRESSIONS = [
    ROSENBROCK,
    "sum(x[1:] * x[:-1])",
    "sum(sin(x[1:]) * exp(x[:-1]) / (1 + x[1:]^2))",
    "sum((x[2:] - 2*x[1:-1] + x[:-2])^2)",
    "sum(where(x[1:] > x[:-1], x[1:], x[:-1]))",
    "sum(abs(x[1:] - x[:-1]) + relu(x[:-1]))",
    "sum(x[1:]^3 + 2^x[:-1] + x[1:]^-1)",
    "sum(x[1:] * w[:-1] + w[1:])",
    "sum(x[1:] * x[:-1] * sum(x))",
    "sum(cumsum(x[1:]) * x[:-1])",
]
MATRIX_EXPRESSIONS = [
    "sum(X[:, 1:] * X[:, :-1])",
    "sum(sin(X[:, 1:]) - X[:, :-1]^2)",
    "sum(X[1:, :] * X[:-1, :])",  # a window on the first axis: contiguous already, no Window
    "sum(X[:, 1:] @ transpose(X[:, :-1]))",
]


def _plain_steps(monkeypatch):
    monkeypatch.setattr(evaluate.Plan, "_windowed_steps", lambda self: self._steps)


def _assert_identical(got, want):
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def _grad_both_ways(monkeypatch, expression, values, batch_ndim=1, **options):
    f = diffcli.compile(expression)
    spans = f.grad(values, batch_ndim=batch_ndim, **options)
    with monkeypatch.context() as m:
        _plain_steps(m)
        rows = diffcli.compile(expression).grad(values, batch_ndim=batch_ndim, **options)
    return spans, rows


@pytest.mark.parametrize("expression", VECTOR_EXPRESSIONS)
def test_vector_windows_give_the_row_by_row_numbers(monkeypatch, expression):
    rng = np.random.default_rng(1)
    values = {"x": rng.uniform(-2, 2, (3_000, 12)), "w": rng.uniform(-2, 2, (3_000, 12))}
    values = {name: values[name] for name in diffcli.compile(expression).variables}
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 12)  # many blocks, into the outputs
    spans, rows = _grad_both_ways(monkeypatch, expression, values)
    _assert_identical(spans.value, rows.value)
    for name in values:
        _assert_identical(spans[name], rows[name])


@pytest.mark.parametrize("expression", MATRIX_EXPRESSIONS)
def test_matrix_windows_give_the_row_by_row_numbers(monkeypatch, expression):
    values = {"X": np.random.default_rng(2).uniform(-2, 2, (500, 5, 8))}
    spans, rows = _grad_both_ways(monkeypatch, expression, values)
    _assert_identical(spans.value, rows.value)
    _assert_identical(spans["X"], rows["X"])


def test_two_batch_axes_threads_and_a_strided_input(monkeypatch):
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 10)
    monkeypatch.setattr(evaluate, "MIN_BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(evaluate, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setenv("DIFFCLI_THREADS", "3")
    x = np.random.default_rng(3).uniform(-2, 2, (40, 30, 20))
    for given in (x, np.asfortranarray(x), x[:, :, ::-1]):  # C order, then layouts with no windows
        spans, rows = _grad_both_ways(monkeypatch, ROSENBROCK, {"x": given}, batch_ndim=2)
        _assert_identical(spans.value, rows.value)
        _assert_identical(spans["x"], rows["x"])


def test_rosenbrock_gradient_matches_its_closed_form():
    x = np.random.default_rng(4).uniform(-2, 2, (5_000, 100))
    got = diffcli.compile(ROSENBROCK).grad(x=x, batch_ndim=1)["x"]
    a, b = x[:, :-1], x[:, 1:]
    want = np.zeros_like(x)
    want[:, :-1] += -400 * a * (b - a * a) - 2 * (1 - a)
    want[:, 1:] += 200 * (b - a * a)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-10)


def test_spans_are_used_for_a_batch_and_not_for_one_point():
    f = diffcli.compile(ROSENBROCK)
    f.grad(x=np.zeros((50, 100)), batch_ndim=1, value=False)
    (binding,) = f._bindings.values()
    (compiled,) = binding._plans.values()
    plan = compiled.plan
    slots = plan._execute([np.ones((50, 100))], release=False, steps=plan._windowed_steps())
    assert sum(type(s) is Window for s in slots) >= 6  # two windows of x and the steps on them
    slots = plan._execute([np.ones(100)], release=False, steps=plan._windowed_steps())
    assert not any(type(s) is Window for s in slots)  # one vector: its slices are contiguous


def test_nonfinite_entries_between_rows_stay_there(monkeypatch):
    """x[:, -1] is never read by x[:-1], nor x[:, 0] by x[1:], but a span passes
    over them: an inf or nan there must not reach a value or a gradient entry
    that does not depend on it, nor raise a warning."""
    import warnings

    x = np.random.default_rng(5).uniform(-1, 1, (2_000, 10))
    x[::3, -1] = np.inf
    x[1::3, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spans, rows = _grad_both_ways(monkeypatch, "sum(x[1:] * x[:-1]) + sum(log(x[1:] - x[:-1] + 3))",
                                      {"x": x})
    _assert_identical(spans["x"], rows["x"])
    _assert_identical(spans.value, rows.value)
    assert np.isfinite(spans["x"][2::3, :-2]).all()  # rows without inf or nan stay finite


def test_a_jacobian_whose_rows_are_windows(monkeypatch):
    x = np.random.default_rng(6).uniform(-1, 1, (400, 9))
    f = diffcli.compile("x[1:] * x[:-1] - sin(x[:-1])")
    spans = f.jacobian(x=x, batch_ndim=1)
    with monkeypatch.context() as m:
        _plain_steps(m)
        rows = diffcli.compile("x[1:] * x[:-1] - sin(x[:-1])").jacobian(x=x, batch_ndim=1)
    _assert_identical(np.asarray(spans["x"]), np.asarray(rows["x"]))
    want = np.zeros((400, 8, 9))
    k = np.arange(8)
    want[:, k, k + 1] = x[:, :-1]
    want[:, k, k] = x[:, 1:] - np.cos(x[:, :-1])
    np.testing.assert_allclose(np.asarray(spans["x"]).reshape(want.shape), want, rtol=1e-15, atol=0)


@pytest.mark.parametrize("items, shape, want", [
    (((1, None, None),), (100,), (1, 99)),
    (((None, -1, None),), (100,), (0, 99)),
    (((2, -2, None),), (100,), (2, 96)),
    (((None, None, None), (1, None, None)), (4, 8), (1, 7)),
    (((1, None, None), (None, None, None)), (4, 8), None),  # first axis
    (((1, None, None),), (4, 8), None),  # first axis (the last one whole)
    (((None, None, 2),), (100,), None),  # a step
    (((1, None, None),), (3,), None),  # a third of each row left between
    (((0, None, None),), (10,), None),  # the whole axis
    ((3,), (10,), None),  # one entry
])
def test_which_slices_are_windows(items, shape, want):
    assert last_axis_window(items, shape) == want


def test_a_windows_view_is_the_strided_array():
    x = np.arange(60.0).reshape(3, 4, 5)
    window = Window(x.reshape(-1)[1:1 + x.size - 5 + 3], (3, 4, 3), 5)
    np.testing.assert_array_equal(window.view, x[..., 1:4])
    np.testing.assert_array_equal(np.asarray(window), x[..., 1:4])
