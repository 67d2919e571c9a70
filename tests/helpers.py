"""Independent references for derivative tests: central finite differences of
diffcli's *forward* evaluation, which uses none of the derivative rules."""

from __future__ import annotations

import numpy as np

import diffcli


def numeric_jacobian(function: diffcli.Function, at: dict, name: str) -> np.ndarray:
    """d value / d at[name] by central differences, shape = value shape + variable shape.

    The step h = 1e-6 * max(1, |x|) balances truncation (~h^2 |f'''| / 6, about 1e-13
    for the smooth test functions) against rounding (~1e-16 |f| / h, about 1e-10), so
    agreement to rtol 1e-6 / atol 1e-6 leaves three orders of magnitude of margin.
    """
    at = {k: np.asarray(v, dtype=np.float64) for k, v in at.items()}
    x = at[name]
    value = function.eval(at).value
    jac = np.zeros(value.shape + x.shape)
    for index in np.ndindex(*x.shape):
        h = 1e-6 * max(1.0, abs(float(x[index])))
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        f_plus = function.eval({**at, name: plus}).value
        f_minus = function.eval({**at, name: minus}).value
        jac[(...,) + index] = (f_plus - f_minus) / (2 * h)
    return jac


def assert_matches_fd(expression: str, at: dict, rtol=1e-6, atol=1e-6) -> None:
    function = diffcli.compile(expression)
    result = function.jacobian(at)
    for name in function.variables:
        expected = numeric_jacobian(function, at, name)
        np.testing.assert_allclose(result[name], expected, rtol=rtol, atol=atol,
                                   err_msg=f"d({expression})/d{name} at {at}")
