"""Each speed-up layer switches off on its own (switches.py), and the numbers are
the same with it off: the layer was used with the switch on, not used with it
off, and every result is the same number (diagonal seeds and shared seeds may
give 0.0 where the dense seeds give -0.0, which compares equal).

The compiled loops (DIFFCLI_NATIVE) are compared with the plain steps bit for
bit in tests/test_native.py, which also checks that DIFFCLI_NATIVE=0 runs none."""

from __future__ import annotations

import numpy as np
import pytest

import diffcli
from diffcli.engine import diagonal, native, sparsity, windows
from diffcli.api import requests
from diffcli import switches

ROSENBROCK = "sum(100*(x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)"


def _counting(monkeypatch, module, name) -> list:
    """Calls of module.name, recorded (the layers look their helpers up at call time)."""
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)
    return calls


def _on_and_off(monkeypatch, layer, compute):
    """compute() with the layer on and then off (a fresh Function each time)."""
    requests.identity_seed.cache_clear()
    monkeypatch.delenv(f"DIFFCLI_{layer.upper()}", raising=False)
    on = compute()
    requests.identity_seed.cache_clear()  # (the seeds are shared between calls)
    monkeypatch.setenv(f"DIFFCLI_{layer.upper()}", "0")
    off = compute()
    requests.identity_seed.cache_clear()
    return on, off


def test_diagonal_seeds_switch_off(monkeypatch):
    x = np.linspace(-2, 2, 100)  # 100 rows: past requests.DIAGONAL_MIN_ROWS
    made = _counting(monkeypatch, diagonal.Diagonal, "identity")
    counts = []

    def compute():
        result = diffcli.compile("sin(x) * x + cumsum(x)").jacobian(x=x)
        counts.append(len(made))
        return result
    on, off = _on_and_off(monkeypatch, "diagonal", compute)
    assert counts == [1, 1]  # a Diagonal seed the first time only
    np.testing.assert_array_equal(on["x"], off["x"])
    want = np.diag(np.cos(x) * x + np.sin(x)) + np.tril(np.ones((100, 100)))
    np.testing.assert_allclose(off["x"], want, rtol=1e-14, atol=0)


def test_windows_switch_off(monkeypatch):
    x = np.random.default_rng(3).uniform(-1, 1, (500, 30))
    wrapped = _counting(monkeypatch, windows, "wrap_step")
    counts = []

    def compute():
        result = diffcli.compile(ROSENBROCK).grad(x=x, batch_ndim=1)
        counts.append(len(wrapped))
        return result
    on, off = _on_and_off(monkeypatch, "windows", compute)
    assert counts[0] > 0 and counts[1] == counts[0]  # no step was wrapped with the switch off
    np.testing.assert_array_equal(on["x"], off["x"])
    np.testing.assert_array_equal(np.signbit(on["x"]), np.signbit(off["x"]))
    np.testing.assert_array_equal(on.value, off.value)
    a, b = x[:, :-1], x[:, 1:]
    want = np.zeros_like(x)
    want[:, :-1] += -400 * a * (b - a * a) - 2 * (1 - a)
    want[:, 1:] += 200 * (b - a * a)
    np.testing.assert_allclose(off["x"], want, rtol=1e-12, atol=1e-10)


def test_sparsity_switch_off(monkeypatch):
    x = np.random.default_rng(4).uniform(-1, 1, 12)
    compressed = _counting(monkeypatch, sparsity, "compress_rows")
    counts = []

    def compute():
        result = diffcli.compile(ROSENBROCK).hessian(x=x)
        counts.append(len(compressed))
        return result
    on, off = _on_and_off(monkeypatch, "sparsity", compute)
    assert counts == [1, 1]  # the rows shared seeds the first time only
    np.testing.assert_array_equal(on["x"]["x"], off["x"]["x"])
    a, b = x[:-1], x[1:]
    want = np.zeros((12, 12))
    want[np.arange(11), np.arange(11)] += 1200 * a * a - 400 * b + 2
    want[np.arange(1, 12), np.arange(1, 12)] += 200
    want[np.arange(11), np.arange(1, 12)] = want[np.arange(1, 12), np.arange(11)] = -400 * a
    np.testing.assert_allclose(off["x"]["x"], want, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("value, on", [("", True), ("1", True), ("on", True), ("wait", True),
                                       ("0", False), ("off", False), ("False", False), (" no ", False)])
def test_what_switches_a_layer_off(monkeypatch, value, on):
    for layer in switches.LAYERS:
        monkeypatch.setenv(f"DIFFCLI_{layer.upper()}", value)
        assert switches.enabled(layer) is on
    assert native.enabled() is on


def test_native_keeps_its_wait_setting(monkeypatch):
    monkeypatch.setenv("DIFFCLI_NATIVE", "Wait")
    assert native.mode() == "wait"
    monkeypatch.setenv("DIFFCLI_NATIVE", "no")
    assert native.mode() == "off"
