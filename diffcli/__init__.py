"""diffcli: exact derivatives of expressions, from the command line or from Python.

    import diffcli
    f = diffcli.compile("sin(x) * y")
    f.grad(x=1.0, y=2.0)["x"]      # 2 cos(1)

This module imports neither click nor rich. diffcli.cluster (diffcli/io/cluster.py; Dask: partitioned
data frames and arrays; pip install 'diffcli[dask]') is imported on first use.
"""

from .api import Check, Function, Result, check, compile, constant
from .errors import (
    BudgetError,
    DiffcliError,
    ExpressionError,
    NumericError,
    ShapeError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = ["Check", "Function", "Result", "check", "compile", "constant", "BudgetError", "DiffcliError", "ExpressionError",
           "NumericError", "ShapeError", "UsageError", "__version__"]


def __getattr__(name: str):
    # diffcli.cluster without importing it (or Dask) at `import diffcli`.
    if name == "cluster":
        import importlib

        return importlib.import_module(".io.cluster", __name__)
    raise AttributeError(f"module 'diffcli' has no attribute {name!r}")
