"""An independent check: finite-difference estimates of a result's derivatives."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import UsageError
from .function import Function
from .result import Result

class Check:
    """Finite-difference estimates of a result's derivatives, laid out like them,
    with an error per entry: |autodiff - fd| / max(1, |fd|). worst: the entry with
    the largest error, as a path like "x[2]" or "x/y[0,1]"."""

    def __init__(self, estimates: dict, errors: dict, tolerance: float, max_error: float, worst: str):
        self.estimates = estimates
        self.errors = errors
        self.tolerance = tolerance
        self.max_error = max_error
        self.worst = worst

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance


CHECK_METHOD = "central differences with Richardson extrapolation, h = 1e-3 * max(1, |x|) and h/2"


def check(function: Function, result: Result, at: Mapping, *, seed=None, tolerance: float = 1e-6) -> Check:
    """Recompute the derivatives of result (gradient, jacobian, vjp or hessian) by
    a second, independent route: central differences of the forward evaluation
    (of the gradient, for a Hessian), Richardson-extrapolated, all perturbed
    points in one vectorised pass."""
    kind = result.kind
    if kind not in ("gradient", "jacobian", "vjp", "hessian"):
        raise UsageError(f"--check works on grad, jac, vjp and hess, not {kind}")
    at = {k: np.asarray(v, dtype=np.float64) for k, v in at.items() if k in function.variables}
    names = list(result.derivatives)
    estimates = {}
    for name in names:
        if kind == "hessian":
            def f(points, name=name):
                r = function.grad(points, wrt=names, batch_ndim=1)
                return {b: r[b] for b in names}
            partials = _richardson(f, at, name)
            for b in names:
                estimates.setdefault(b, {})[name] = partials[b]
        else:
            d = _richardson(lambda points: {"value": function.eval(points, batch_ndim=1).value}, at, name)["value"]
            if kind == "vjp":  # seed . J
                d = np.tensordot(np.asarray(seed, dtype=np.float64), d, axes=np.ndim(result.value))
            estimates[name] = d
    errors, worst, max_error = {}, "", 0.0
    for path, got, want in _pairs(result.derivatives, estimates):
        error = _entry_errors(got, want)
        _assign(errors, path, error)
        if error.size and float(np.max(error)) >= max_error:
            max_error = float(np.max(error))
            index = np.unravel_index(int(np.argmax(error)), error.shape) if error.ndim else ()
            worst = "/".join(path) + (f"[{','.join(map(str, index))}]" if index else "")
    return Check(estimates, errors, tolerance, max_error, worst)


def _richardson(f, at: dict, name: str) -> dict:
    """d f / d at[name] for each array f returns: (4 D(h/2) - D(h)) / 3, with
    D the central difference; shape = f's shape + the variable's shape."""
    x = at[name]
    n = x.size
    steps = 1e-3 * np.maximum(1.0, np.abs(x.ravel()))
    offsets = []
    for scale in (1.0, 0.5, -0.5, -1.0):
        block = np.zeros((n, n))
        block[np.arange(n), np.arange(n)] = scale * steps
        offsets.append(block)
    perturbed = x.ravel()[None, :] + np.concatenate(offsets)  # (4n, n)
    points = {k: np.broadcast_to(v, (4 * n,) + v.shape) for k, v in at.items()}
    points[name] = perturbed.reshape((4 * n,) + x.shape)
    values = f(points)
    out = {}
    for key, v in values.items():
        v = np.asarray(v).reshape((4, n) + np.shape(v)[1:])
        d_h = (v[0] - v[3]) / (2 * steps.reshape((n,) + (1,) * (v.ndim - 2)))
        d_half = (v[1] - v[2]) / (steps.reshape((n,) + (1,) * (v.ndim - 2)))
        d = (4 * d_half - d_h) / 3  # (n, *f shape)
        out[key] = np.moveaxis(d, 0, -1).reshape(np.shape(d)[1:] + x.shape)
    return out


def _pairs(got, want, path=()):
    for key, value in got.items():
        if isinstance(value, dict):
            yield from _pairs(value, want[key], path + (key,))
        else:
            yield path + (key,), np.asarray(value), np.asarray(want[key])


def _assign(tree, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _entry_errors(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        error = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    same = (got == want) | (np.isnan(got) & np.isnan(want))  # equal infinities, or nan on both sides
    return np.where(same, 0.0, np.where(np.isnan(error), np.inf, error))
