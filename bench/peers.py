"""The peers, each behind an import guard: a peer that is not installed is
reported as such and the other rows still run (`pip install '.[bench]'`)."""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_ENABLE_X64", "1")


def load(name: str):
    """The module, or None when the peer is not installed."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install is as good as none here
        return None


def jax():
    jax = load("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
    return jax


def torch():
    torch = load("torch")
    if torch is not None:
        torch.set_default_dtype(torch.float64)
    return torch


# ---------------------------------------------------------------- T1 / T2 functions, per library

def t1(np):
    return lambda x: np.sin(x) * np.exp(-x * x / 2) + np.log(1 + x * x) + np.tanh(x) ** 2


def t2(np):
    return lambda x, y, z: x * y + np.sin(y) * z + np.log(x) * np.exp(-z) + np.sqrt(x * x + y * y + z * z)


def rosenbrock(np):
    return lambda x: np.sum(100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2, axis=-1)
