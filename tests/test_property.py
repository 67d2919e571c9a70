"""Random expressions from the grammar (a seeded generator, reproducible),
derivatives checked against central finite differences of the forward pass.
DIFFCLI_FUZZ_CASES=5000 runs a longer campaign; the default run is short."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

import diffcli

from .helpers import numeric_jacobian

CASES = int(os.environ.get("DIFFCLI_FUZZ_CASES", "300"))

# Every generated subexpression is smooth everywhere and stays moderate in size,
# so that finite differences are a fair reference at any point.
UNARY = ["sin({})", "cos({})", "tanh({})", "sigmoid({})", "atan({})", "softplus({})",
         "sqrt(1 + ({})^2)", "log(1 + ({})^2)", "exp(-({})^2)", "({})^2", "-{}", "2{}",
         "cbrt(2 + tanh({}))", "asinh({})", "expm1(tanh({}))", "log1p(sigmoid({}))"]
BINARY = ["({}) + ({})", "({}) - ({})", "({}) * ({})", "({}) / (1 + ({})^2)", "hypot(1, {}) * {}",
          "atan2(2 + tanh({}), 1 + sigmoid({}))", "pow(1 + sigmoid({}), {})"]
SCALAR_LEAVES = ["x", "y", "v[0]", "v[-1]", "sum(v)", "mean(v * v)", "norm(v)", "logsumexp(v)",
                 "dot(v, w)", "v @ w", "prod(w)", "max(v * 0 + w)", "cumsum(v)[1]", "softmax(v)[2]",
                 "1.5", "pi"]
VECTOR_FORMS = ["sum({})", "mean({})", "norm({}) + 0.1", "logsumexp({})"]


def random_scalar(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(SCALAR_LEAVES)
    if rng.random() < 0.15:
        # a vector-valued subexpression reduced back to a scalar
        inner = rng.choice(["v * ({})", "w + ({})", "sin(v) * ({})", "cumsum(v) * ({})",
                            "v[1:] * ({})", "softmax(v) * ({})"]).format(random_scalar(rng, depth - 1))
        return rng.choice(VECTOR_FORMS).format(inner)
    if rng.random() < 0.5:
        return rng.choice(UNARY).format(random_scalar(rng, depth - 1))
    return rng.choice(BINARY).format(random_scalar(rng, depth - 1), random_scalar(rng, depth - 1))


def test_random_expressions_match_finite_differences():
    rng = random.Random(20261125)
    failures = []
    for case in range(CASES):
        expression = random_scalar(rng, rng.randint(1, 5))
        point = {"x": rng.uniform(-2, 2), "y": rng.uniform(-2, 2),
                 "v": [rng.uniform(-2, 2) for _ in range(3)], "w": [rng.uniform(0.5, 2) for _ in range(3)]}
        function = diffcli.compile(expression)
        at = {k: point[k] for k in function.variables}
        result = function.grad(at)
        for name in function.variables:
            expected = numeric_jacobian(function, at, name)
            if not np.allclose(result[name], expected, rtol=1e-5, atol=1e-6):
                at_args = " ".join(f"--at '{k}={v}'" for k, v in at.items())
                failures.append(f"diffcli grad '{expression}' {at_args}  # d/d{name}: "
                                f"{result[name]} vs finite differences {expected}")
    assert not failures, "\n".join(failures[:5])


@pytest.mark.parametrize("seed", range(3))
def test_batched_evaluation_equals_pointwise(seed):
    """One vectorised pass over a batch gives, bit for bit, what one point at a time gives."""
    rng = random.Random(seed)
    expression = random_scalar(rng, 4)
    function = diffcli.compile(expression)
    n = 7
    data = np.random.default_rng(seed)
    batch = {"x": data.uniform(-2, 2, n), "y": data.uniform(-2, 2, n),
             "v": data.uniform(-2, 2, (n, 3)), "w": data.uniform(0.5, 2, (n, 3))}
    batch = {k: batch[k] for k in function.variables}
    together = function.grad(batch, batch_ndim=1)
    for i in range(n):
        alone = function.grad({k: v[i] for k, v in batch.items()})
        np.testing.assert_array_equal(together.value[i], alone.value, err_msg=expression)
        for name in function.variables:
            np.testing.assert_array_equal(together[name][i], alone[name], err_msg=expression)
