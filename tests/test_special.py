"""The special functions (erf, erfc, erfinv, lgamma, digamma, polygamma): scipy.special's
values, measured against mpmath at 40 digits, derivatives against mpmath's, and scipy
imported only by an expression that uses one (start-up does not move)."""

from __future__ import annotations

import subprocess
import sys

import mpmath
import numpy as np
import pytest

import diffcli

from .test_cli import _diffcli_command, _env

RNG = np.random.default_rng(1919)


def _away_from_poles(x):
    return x[np.abs(x - np.round(x)) > 1e-3]


# name -> (diffcli expression of x, mpmath reference, points, bound on the error measured as
# |got - want| / max(|want|, 1): relative where the value is large, absolute near its zeros)
SPECIAL = {
    "erf": ("erf(x)", mpmath.erf, np.concatenate([RNG.uniform(-6, 6, 400), RNG.uniform(-1e-3, 1e-3, 50)]), 1e-15),
    "erfc": ("erfc(x)", mpmath.erfc, RNG.uniform(-6, 26, 400), 1e-15),
    "erfinv": ("erfinv(x)", mpmath.erfinv, RNG.uniform(-0.999999, 0.999999, 400), 1e-15),
    "lgamma": ("lgamma(x)", lambda x: mpmath.log(abs(mpmath.gamma(x))),
               _away_from_poles(np.concatenate([RNG.uniform(0.01, 50, 300), RNG.uniform(-9.9, -0.1, 300)])), 1e-14),
    "digamma": ("digamma(x)", mpmath.digamma,
                _away_from_poles(np.concatenate([RNG.uniform(0.01, 50, 300), RNG.uniform(-9.9, -0.1, 300)])), 1e-13),
    "polygamma(1)": ("polygamma(1, x)", lambda x: mpmath.polygamma(1, x),
                     _away_from_poles(np.concatenate([RNG.uniform(0.01, 50, 300), RNG.uniform(-9.9, -0.1, 300)])),
                     1e-14),
    "polygamma(2)": ("polygamma(2, x)", lambda x: mpmath.polygamma(2, x),
                     _away_from_poles(np.concatenate([RNG.uniform(0.01, 50, 300), RNG.uniform(-9.9, -0.1, 300)])),
                     1e-13),
}


def _error(got, want):
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))


@pytest.fixture(autouse=True, scope="module")
def _digits():
    saved = mpmath.mp.dps
    mpmath.mp.dps = 40
    yield
    mpmath.mp.dps = saved


@pytest.mark.parametrize("name", list(SPECIAL))
def test_values_against_mpmath(name):
    """The README states these maxima (python -m pytest tests/test_special.py -s prints them)."""
    expression, reference, points, bound = SPECIAL[name]
    got = diffcli.compile(expression).eval(x=points, batch_ndim=1).value
    want = np.array([float(reference(mpmath.mpf(float(x)))) for x in points])
    error = _error(got, want)
    print(f"{name}: max error {error:.2g} over {len(points)} points")
    assert error < bound


@pytest.mark.parametrize("name", list(SPECIAL))
def test_first_and_second_derivatives_against_mpmath(name):
    expression, reference, points, _ = SPECIAL[name]
    points = points[::20]
    function = diffcli.compile(expression)
    first = function.grad(x=points, batch_ndim=1)["x"]
    second = function.derivative(2, {"x": points}, wrt="x", batch_ndim=1)["x"]
    want1 = np.array([float(mpmath.diff(reference, mpmath.mpf(float(x)), 1)) for x in points])
    want2 = np.array([float(mpmath.diff(reference, mpmath.mpf(float(x)), 2)) for x in points])
    assert _error(first, want1) < 1e-12
    assert _error(second, want2) < 1e-12


def test_erfinv_is_infinite_at_its_ends_and_its_derivative_too():
    result = diffcli.compile("erfinv(x)").grad(x=[-1.0, 1.0], batch_ndim=1)
    np.testing.assert_array_equal(result.value, [-np.inf, np.inf])
    np.testing.assert_array_equal(result["x"], [np.inf, np.inf])


def test_lgamma_has_poles_at_the_non_positive_integers():
    result = diffcli.compile("lgamma(x)").eval(x=[0.0, -2.0], batch_ndim=1)
    np.testing.assert_array_equal(result.value, [np.inf, np.inf])


def test_polygamma_needs_a_constant_order():
    with pytest.raises(diffcli.DiffcliError, match="polygamma\\(n, x\\) needs n a constant integer >= 0"):
        diffcli.compile("polygamma(n, x)").eval(n=1.0, x=2.0)
    for n in ("1.5", "-1", "inf", "nan", "[1, 2]"):
        with pytest.raises(diffcli.DiffcliError, match="needs n a constant integer"):
            diffcli.compile(f"polygamma({n}, x)").eval(x=2.0)
    assert diffcli.compile("polygamma(0, x)").eval(x=2.0).value == pytest.approx(float(mpmath.digamma(2)))


def _modules_after(script: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", script + "\nimport sys; print(' '.join(sys.modules))"],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_importing_diffcli_and_a_plain_gradient_do_not_import_scipy():
    modules = _modules_after("import diffcli; diffcli.compile('sum(sin(x) * x, axis=0) @ [1, 2]')"
                             ".hessian(x=[[1.0, 2.0], [3.0, 4.0]])")
    assert "scipy" not in modules and "diffcli.graph.ops" in modules
    assert "scipy.special" in _modules_after("import diffcli; diffcli.compile('erf(x)').grad(x=1.0)")


def test_the_command_does_not_import_scipy_for_a_plain_gradient():
    done = subprocess.run(_diffcli_command() + ["grad", "sin(x) * x % 2", "--at", "x=1.5"],
                          capture_output=True, text=True, env={**_env(), "PYTHONPROFILEIMPORTTIME": "1"},
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip()
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "diffcli.graph.ops" in imported and not any(m.split(".")[0] == "scipy" for m in imported)
