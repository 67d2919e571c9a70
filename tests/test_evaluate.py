"""The evaluator: big batches in blocks on threads give exactly what one pass gives."""

from __future__ import annotations

import numpy as np

import diffcli
from diffcli import evaluate


def _blocked_and_whole(monkeypatch, fn):
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 10)  # many blocks even for a modest batch
    blocked = fn()
    monkeypatch.setattr(evaluate, "BLOCK_ELEMENTS", 1 << 40)  # one pass
    whole = fn()
    return blocked, whole


def test_blocked_gradient_is_bit_for_bit_the_whole_pass(monkeypatch):
    rng = np.random.default_rng(0)
    n = 50_000
    at = {"x": rng.uniform(0.5, 2, n), "y": rng.uniform(-1, 1, n), "z": 0.25}
    f = diffcli.compile("x*y + sin(y)*z + log(x)*exp(-z) + sqrt(x^2 + y^2 + z^2) + 2*z")
    at["z"] = np.full(n, 0.25)
    blocked, whole = _blocked_and_whole(monkeypatch, lambda: f.grad(at, batch_ndim=1))
    np.testing.assert_array_equal(blocked.value, whole.value)
    for name in "xyz":
        np.testing.assert_array_equal(blocked[name], whole[name])
    assert blocked.value.shape == (n,) and blocked["z"].shape == (n,)


def test_blocked_jacobian_with_seed_axes_and_constant_rows(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (20_000, 3))
    f = diffcli.compile("[x[0] * x[1], 2 * x[2], sum(x^2)]")  # the middle row is constant
    blocked, whole = _blocked_and_whole(monkeypatch, lambda: f.jacobian(x=x, batch_ndim=1))
    np.testing.assert_array_equal(blocked["x"], whole["x"])
    assert blocked["x"].shape == (20_000, 3, 3)
    np.testing.assert_array_equal(blocked["x"][:, 1], np.tile([0.0, 0.0, 2.0], (20_000, 1)))


def test_an_output_that_is_an_input_is_a_copy():
    y = np.array([1.0, 2.0, 3.0])
    r = diffcli.compile("sum(x * y)").grad(x=np.zeros(3), y=y)
    r["x"][0] = 99.0  # d/dx is y itself: changing the result must not change y
    assert y[0] == 1.0
