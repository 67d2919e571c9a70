"""diffcli: exact derivatives of expressions, from the command line or from Python.

    import diffcli
    f = diffcli.compile("sin(x) * y")
    f.grad(x=1.0, y=2.0)["x"]      # 2 cos(1)

This module imports neither click nor rich.
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
