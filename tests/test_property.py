"""Random expressions from the grammar (a seeded generator, reproducible),
derivatives checked against central finite differences of the forward pass.
DIFFCLI_FUZZ_CASES=100000 runs a longer campaign; the default is 2,000 cases."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

import diffcli

from .helpers import numeric_jacobian

CASES = int(os.environ.get("DIFFCLI_FUZZ_CASES", "2000"))

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


def random_tree(rng: random.Random, depth: int):
    """(template, children): a random scalar expression as a tree, so that a
    failing case can be shrunk."""
    if depth == 0 or rng.random() < 0.25:
        return (rng.choice(SCALAR_LEAVES),)
    if rng.random() < 0.15:
        # a vector-valued subexpression reduced back to a scalar
        inner = rng.choice(["v * ({})", "w + ({})", "sin(v) * ({})", "cumsum(v) * ({})",
                            "v[1:] * ({})", "softmax(v) * ({})"])
        return (rng.choice(VECTOR_FORMS).format(inner), random_tree(rng, depth - 1))
    if rng.random() < 0.5:
        return (rng.choice(UNARY), random_tree(rng, depth - 1))
    return (rng.choice(BINARY), random_tree(rng, depth - 1), random_tree(rng, depth - 1))


def render(tree) -> str:
    template, *children = tree
    return template.format(*(render(c) for c in children)) if children else template


def random_scalar(rng: random.Random, depth: int) -> str:
    return render(random_tree(rng, depth))


def smaller(tree):
    """Candidate simplifications: each child in place of its parent, each subtree
    replaced by a leaf."""
    template, *children = tree
    for child in children:
        yield child
    for i, child in enumerate(children):
        for simpler in smaller(child):
            yield (template, *children[:i], simpler, *children[i + 1:])
    if children:
        yield ("x",)


def shrink(tree, fails):
    """Greedy shrinking: keep taking the first simpler tree that still fails."""
    improved = True
    while improved:
        improved = False
        for candidate in smaller(tree):
            if fails(candidate):
                tree, improved = candidate, True
                break
    return tree


def mismatch(expression: str, at: dict) -> str | None:
    """None if diffcli's gradient agrees with finite differences; else a
    ready-to-paste command and what differed."""
    function = diffcli.compile(expression)
    at = {k: at[k] for k in function.variables}
    result = function.grad(at)
    for name in function.variables:
        expected = numeric_jacobian(function, at, name)
        if not np.allclose(result[name], expected, rtol=1e-5, atol=1e-6):
            at_args = " ".join(f"--at '{k}={np.asarray(v).tolist()}'" for k, v in at.items())
            return (f"diffcli grad '{expression}' {at_args}   # d/d{name}: {result[name]} vs "
                    f"finite differences {expected}")
    return None


def coordinate(rng: random.Random) -> float:
    """Uniform in (-2, 2), or one of the signed zeros one time in five (every generated
    expression is smooth at 0 too; norm(v) is kept off its kink, at most v[0] is 0)."""
    return rng.choice([0.0, -0.0]) if rng.random() < 0.2 else rng.uniform(-2, 2)


def test_random_expressions_match_finite_differences():
    """A differential test over thousands of seeded cases; a failure is shrunk
    and printed as a diffcli command to paste."""
    rng = random.Random(20261125)
    failures = []
    for case in range(CASES):
        tree = random_tree(rng, rng.randint(1, 5))
        point = {"x": coordinate(rng), "y": coordinate(rng),
                 "v": [coordinate(rng)] + [rng.uniform(-2, 2) for _ in range(2)],
                 "w": [rng.uniform(0.5, 2) for _ in range(3)]}
        if mismatch(render(tree), point) is not None:
            small = shrink(tree, lambda t: mismatch(render(t), point) is not None)
            failures.append(mismatch(render(small), point))
    assert not failures, "\n".join(failures[:5])


def test_shrinking_finds_a_small_case():
    tree = ("({}) + ({})", ("sin({})", ("x",)), ("({}) * ({})", ("y",), ("cos({})", ("x",))))
    small = shrink(tree, lambda t: "cos" in render(t))
    assert render(small) == "cos(x)"


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


# ---------------------------------------------------------------- signed zeros, bit for bit

# Expressions full of the rewrites' look-alikes and of zeros of both signs, with
# operations that turn the sign of a zero into a different number (atan2, 1 / x,
# sign): the simplified graph must give, bit for bit, what NumPy's kernels give on
# the expression as written (tests/test_graph.py's reference: no rewrites, no folding).
ZERO_LEAVES = ["x", "y", "0", "-0", "(x - x)", "(0 * y)", "(-0 * x)", "(x * -0)", "1", "-1", "0.5",
               "v[0]", "v[2]", "sum(v)", "max(v)", "min(v * 0)"]
ZERO_UNARY = ["-({})", "--({})", "({}) * 1", "1 * ({})", "({}) * -1", "({}) / 1", "({})^1", "({})^2", "({})^0",
              "({}) + 0", "0 + ({})", "({}) + -0", "-0 + ({})", "({}) - 0", "({}) - -0", "0 - ({})",
              "-0 - ({})", "({}) * 0", "-0 * ({})", "2 * ({})", "({}) / 2", "({}) * 0.25", "-(({}) * 3)",
              "(-({})) * 3", "sum({})", "max({})", "min({})", "mean({})", "logsumexp({})", "transpose({})",
              "atan2({}, -1)", "1 / ({})", "sign({})", "sin({})", "tanh({})", "sqrt({})", "abs({})", "relu({})",
              "floor({})", "cbrt({})", "expm1({})", "log1p({})",
              "sum(v * ({}))", "(v * [1, 1, 1])[1] + ({})", "([0, -0, 0] + ({}))[1]",
              "([-0, -0, -0] - v * ({}))[2]", "([2, 2, 2] * ({}))[0]", "max([1, 1, 1] * ({}))",
              "cumsum(v * ({}))[1]", "prod([{}, -0])"]
ZERO_BINARY = ["({}) + ({})", "({}) - ({})", "({}) * ({})", "({}) / ({})", "atan2({}, {})", "hypot({}, {})",
               "minimum({}, {})", "maximum({}, {})", "pow({}, {})", "({}) + -({})", "-({}) + ({})",
               "({}) - -({})", "where({} >= 0, {}, -0)"]
ZERO_VALUES = [0.0, -0.0, 0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324]


def zero_tree(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.2:
        return (rng.choice(ZERO_LEAVES),)
    if rng.random() < 0.6:
        return (rng.choice(ZERO_UNARY), zero_tree(rng, depth - 1))
    return (rng.choice(ZERO_BINARY), zero_tree(rng, depth - 1), zero_tree(rng, depth - 1))


def bits_differ(expression: str, batch: dict) -> str | None:
    """None if simplified and as-written evaluation agree bit for bit at every point
    of the batch (nan matching nan); else the first point that differs, as a command."""
    from .test_graph import unsimplified

    function = diffcli.compile(expression)
    batch = {k: batch[k] for k in function.variables}
    got = np.asarray(function.eval(batch, batch_ndim=1).value, dtype=np.float64)
    want = unsimplified(expression, batch, batch_ndim=1)
    got = np.broadcast_to(got, want.shape)  # (a value that does not vary over the batch)
    same = (got.view(np.uint64) == want.view(np.uint64)) | (np.isnan(got) & np.isnan(want))
    if same.all():
        return None
    i = int(np.flatnonzero(~same)[0])
    at = " ".join(f"--at '{k}={np.asarray(v[i]).tolist()}'" for k, v in batch.items())
    return f"diffcli eval '{expression}' {at}   # {got.ravel()[i]!r}, NumPy as written: {want.ravel()[i]!r}"


def test_signed_zeros_evaluate_bit_for_bit_as_written():
    """A differential test of the simplifier: seeded random expressions over ±0 (and
    values making ±0: x - x, 0 * y), inf, nan and subnormals, each at a batch of 24
    points; a failure is shrunk and printed as a command."""
    rng = random.Random(20261203)
    data = np.random.default_rng(20261203)
    failures = []
    for case in range(max(CASES // 2, 1)):
        tree = zero_tree(rng, rng.randint(1, 4))
        batch = {"x": data.choice(ZERO_VALUES, 24), "y": data.choice(ZERO_VALUES, 24),
                 "v": data.choice(ZERO_VALUES, (24, 3))}
        if bits_differ(render(tree), batch) is not None:
            small = shrink(tree, lambda t: bits_differ(render(t), batch) is not None)
            failures.append(bits_differ(render(small), batch))
    assert not failures, "\n".join(failures[:5])
