"""The functions a user can call, by name: each is a primitive of OPS or a short
composition of primitives (whose derivatives then follow from the rule table)."""

from __future__ import annotations

import math
from collections import namedtuple

from .errors import ShapeError

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


def _dot(graph, args, span):
    a, b = args
    if not a.shape or not b.shape:
        return graph.apply("mul", (a, b), span=span)
    return graph.apply("matmul", (a, b), span=span)


def _outer(graph, args, span):
    a, b = (graph.reshape(x, (x.size,)) for x in args)
    return graph.apply("mul", (graph.reshape(a, (a.size, 1)), graph.reshape(b, (1, b.size))), span=span)


def _transpose(graph, args, span):
    return graph.apply("transpose", args, span=span)


def _trace(graph, args, span):
    return graph.apply("trace", args, span=span)


def _cumulative(name):
    def build(graph, args, span):
        (x,) = args
        if not x.shape:
            raise ShapeError(f"{name} needs a vector or an array, not a scalar", span)
        return graph.apply(name, (x,), False, span=span)
    return build


FUNCTIONS: dict[str, FunctionSpec] = {}

for _name in ["sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "exp", "expm1", "log", "log1p", "log2", "log10", "sqrt", "cbrt", "abs", "sign", "floor", "ceil", "sigmoid", "relu", "softplus", "logsumexp", "softmax", "sum", "max", "min", "norm"]:
    FUNCTIONS[_name] = FunctionSpec(1, 1, _primitive(_name))
for _name in ("atan2", "hypot", "minimum", "maximum"):
    FUNCTIONS[_name] = FunctionSpec(2, 2, _primitive(_name))
FUNCTIONS["pow"] = FunctionSpec(2, 2, _primitive("pow"))
FUNCTIONS["where"] = FunctionSpec(3, 3, _primitive("where"))
FUNCTIONS["mean"] = FunctionSpec(1, 1, _mean)
FUNCTIONS["prod"] = FunctionSpec(1, 1, _prod)
FUNCTIONS["cumsum"] = FunctionSpec(1, 1, _cumulative("cumsum"))
FUNCTIONS["cumprod"] = FunctionSpec(1, 1, _cumulative("cumprod"))
FUNCTIONS["dot"] = FunctionSpec(2, 2, _dot)
FUNCTIONS["outer"] = FunctionSpec(2, 2, _outer)
FUNCTIONS["transpose"] = FunctionSpec(1, 1, _transpose)
FUNCTIONS["trace"] = FunctionSpec(1, 1, _trace)
