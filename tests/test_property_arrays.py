"""Random expressions over the array vocabulary of issue 19 (a seeded generator,
reproducible): products of any rank, moves, joins, sorts and fancy indexing, with
positional and keyword arguments, mixed with smooth elementwise functions. The
gradient and a Hessian-vector product of sum(W * sin(f)) are checked against
central differences along a random direction. Combinations whose shapes do not
fit are refused by diffcli (a ShapeError) and drawn again.
DIFFCLI_FUZZ_CASES=... runs a longer campaign (default 120 expressions)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

import diffcli
from diffcli.errors import ShapeError

CASES = int(os.environ.get("DIFFCLI_FUZZ_CASES", "120")) // 2

SHAPES = {"A": (2, 3), "B": (3, 2), "S": (3, 3), "v": (3,), "w": (2,), "T": (2, 3, 2)}

UNARY = ["flip({})", "flip({}, axis=0)", "roll({}, 1)", "roll({}, shift=-1, axis=0)", "transpose({})",
         "rot90({})", "tril({})", "triu({}, k=1)", "sort({})", "sort({}, axis=0)", "diff({})",
         "repeat({}, 2, axis=0)", "tile({}, 2)", "ravel({})", "expand_dims({}, 0)", "moveaxis({}, 0, -1)",
         "swapaxes({}, 0, 1)", "diag({})", "diagonal({})", "trace({})", "({})[[1, 0]]", "nan_to_num({})",
         "sin({})", "tanh({})", "({}) * 0.5 + 1", "reshape({}, -1)", "flipud({})", "fliplr({})",
         "transpose({}, (1, 0, 2))", "trace({}, offset=1)", "squeeze(expand_dims({}, axis=1))"]
BINARY = ["({}) @ ({})", "matmul({}, {})", "dot({}, {})", "inner({}, {})", "outer({}, {})", "kron({}, {})",
          "einsum('ij,jk->ik', {}, {})", "einsum('i...,i...', {}, {})", "tensordot({}, {}, 1)",
          "tensordot({}, {}, axes=[[0], [0]])", "concatenate([{}, {}])", "concatenate([{}, {}], axis=-1)",
          "stack([{}, {}])", "hstack([{}, {}])", "vstack([{}, {}])", "({}) * ({})", "({}) + ({})",
          "cross({}, {})"]


def random_expression(rng: random.Random, depth: int, root: bool = False) -> str:
    if depth == 0 or (not root and rng.random() < 0.25):
        return rng.choice(list(SHAPES))
    if rng.random() < 0.6:
        return rng.choice(UNARY).format(random_expression(rng, depth - 1))
    return rng.choice(BINARY).format(random_expression(rng, depth - 1), random_expression(rng, depth - 1))


def fitting_expressions(seed: int, count: int):
    """count expressions whose shapes fit, each with its binding's output shape."""
    rng = random.Random(seed)
    found = []
    while len(found) < count:
        text = random_expression(rng, 3, root=True)
        function = diffcli.compile(text)
        shapes = {name: SHAPES[name] for name in function.variables}
        if not shapes:
            continue
        try:
            out = function._binding(shapes).output
        except ShapeError:
            continue
        if out.size:
            found.append((text, shapes, out.shape))
    return found


def _directional(f, at, direction, h=1e-5):
    plus = f({k: v + h * direction.get(k, 0.0) for k, v in at.items()})
    minus = f({k: v - h * direction.get(k, 0.0) for k, v in at.items()})
    return (plus - minus) / (2 * h)


@pytest.mark.parametrize("seed", [1, 2])
def test_random_array_expressions_gradients_and_hessian_vector_products(seed):
    rng = np.random.default_rng(seed)
    for text, shapes, out_shape in fitting_expressions(seed, CASES):
        scalar = diffcli.compile(f"sum(W * sin({text}))")
        at = {k: rng.uniform(-1.5, 1.5, s) for k, s in shapes.items()}
        at["W"] = rng.uniform(0.5, 1.5, out_shape)
        names = list(shapes)
        v = {k: rng.standard_normal(s) for k, s in shapes.items()}

        def grad_dot_v(p):
            g = scalar.grad(p, wrt=names)
            return float(sum(np.sum(g[k] * v[k]) for k in names))

        def value(p):
            return float(scalar.eval(p).value)

        g = grad_dot_v(at)
        np.testing.assert_allclose(g, _directional(value, at, v), rtol=1e-5, atol=1e-5 * max(1.0, abs(g)),
                                   err_msg=text)
        hv = scalar.hvp(v, at)
        vhv = float(sum(np.sum(hv[k] * v[k]) for k in names))
        np.testing.assert_allclose(vhv, _directional(grad_dot_v, at, v), rtol=1e-4,
                                   atol=1e-4 * max(1.0, abs(vhv)), err_msg=text)


def test_the_generator_reaches_the_whole_vocabulary():
    """Across both seeds, each template is drawn into some expression that fits."""
    texts = " ".join(text for seed in (1, 2) for text, _, _ in fitting_expressions(seed, CASES))
    names = {t.split("(")[0] for t in UNARY + BINARY if t[0].isalpha()}
    missing = {name for name in names if name + "(" not in texts}
    assert len(missing) <= len(names) // 5, missing
