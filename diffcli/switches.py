"""One switch per speed-up layer, read from the environment when a layer is first asked.

Every layer gives the numbers the plain plan gives (bit for bit, but that
diagonal and shared seeds may give 0.0 where dense seeds give -0.0), so a switch
only trades speed for simplicity, for instance to rule a layer out when looking
for a bug:

    DIFFCLI_NATIVE=0     compiled C loops for big batches (native.py); "wait" waits for them
    DIFFCLI_DIAGONAL=0   identity seeds of big Jacobians and Hessians kept diagonal (diagonal.py)
    DIFFCLI_WINDOWS=0    steps on column windows run over their spans (windows.py)
    DIFFCLI_SPARSITY=0   derivative rows that cannot overlap share seeds (sparsity.py)
    DIFFCLI_TAYLOR=0     higher orders by Taylor propagation (engine/taylor.py), not by
                         differentiating the derivative graph again per order

0, off, false and no switch a layer off; anything else (or nothing) leaves it on.
Set a switch before computing: whether an expression's plan uses compiled loops,
and whether its rows share seeds, is decided once per compiled function and
variable shapes (an environment look-up costs 1-2 us, too much for every call).
"""

from __future__ import annotations

import os

LAYERS = ("native", "diagonal", "windows", "sparsity", "taylor")
OFF = ("0", "off", "false", "no")


def setting(layer: str) -> str:
    """The layer's environment variable (DIFFCLI_ and its name), lower case, "" when unset."""
    return os.environ.get(f"DIFFCLI_{layer.upper()}", "").strip().lower()


def enabled(layer: str) -> bool:
    return setting(layer) not in OFF
