"""The functions a user can call, by name: each primitive of OPS under the names
its record gives (ops.py), and the short compositions of primitives below (whose
derivatives then follow from the rule table)."""

from __future__ import annotations

import math
from collections import namedtuple

from ..graph.ops import OPS
from .arrays import ARRAY_FUNCTIONS

CONSTANTS = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan}


# build(graph, args, span) -> Node
FunctionSpec = namedtuple("FunctionSpec", "min_args max_args build")


def arity_text(spec: FunctionSpec) -> str:
    n = spec.min_args
    if spec.min_args == spec.max_args:
        return f"{n} argument" + ("" if n == 1 else "s")
    return f"{spec.min_args} to {spec.max_args} arguments"


def _primitive(name):
    return lambda graph, args, span: graph.apply(name, args, span=span)


def _mean(graph, args, span):
    (x,) = args
    return graph.apply("div", (graph.apply("sum", (x,), span=span), float(max(x.size, 1))), span=span)


def _prod(graph, args, span):
    # The last running product: its derivative (from cumprod's rule) stays exact
    # when some entries are zero, where g * prod / x would give nan.
    (x,) = args
    if not x.shape:
        return x
    flat = graph.reshape(x, (x.size,))
    return graph.apply("index", (graph.apply("cumprod", (flat,), span=span),), (x.size - 1,), span=span)


# By the user's name (not an operation's): every name an operation's record gives,
# then the compositions.
FUNCTIONS: dict[str, FunctionSpec] = {
    name: FunctionSpec(op.arity, op.arity, op.build or _primitive(op.name))
    for op in OPS.values() for name in op.names}
FUNCTIONS.update(mean=FunctionSpec(1, 1, _mean), prod=FunctionSpec(1, 1, _prod))
# NumPy's array functions (arrays.py); transpose and trace take NumPy's optional arguments too.
FUNCTIONS.update((name, FunctionSpec(*spec)) for name, spec in ARRAY_FUNCTIONS.items())
