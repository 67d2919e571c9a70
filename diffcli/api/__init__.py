"""The public Python API. The CLI is a thin layer over this module.

    >>> import diffcli
    >>> f = diffcli.compile("sin(x)*y")
    >>> r = f.grad(x=0.0, y=2.0)
    >>> float(r.value), float(r["x"]), float(r["y"])
    (0.0, 2.0, 0.0)

Values may carry leading batch axes (`batch_ndim`), evaluated in one
vectorised pass. Graphs and plans are built once per set of variable shapes
and reused. Every derivative is a graph built by reverse mode (autodiff.py);
higher orders, Hessians, JVPs and HVPs differentiate those graphs again.
Batched identity seeds on leading axes give all rows of a Jacobian (or of an
Nth-derivative tensor) in one pass.

The pieces, one job each: result.py (Result), function.py (compile, Function and
its per-shape cache), binding.py (one expression's graph and plans at one set
of shapes), requests.py (one class per kind of request, and seed layouts),
growth.py (refusing an order before it outgrows the budget), check.py (the
finite-difference check).
"""

from .check import CHECK_METHOD, Check, check
from .function import Function, compile, constant
from .result import Result

__all__ = ["CHECK_METHOD", "Check", "Function", "Result", "check", "compile", "constant"]
