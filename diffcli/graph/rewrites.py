"""Exact rewrites, by operation: each takes the graph, the operation's arguments
and its result's shape, and returns a simpler node or None.

They are facts about their operations, named in each operation's record in
ops.py (its `rewrite`), and run by Graph.apply while it builds a graph. They read
the graph only through the arguments they are given (its apply, reshape and
deriving), so this module imports nothing of diffcli's: ops.py, the lowest
step, can point at them.
"""

from __future__ import annotations

import math
import sys

# Cheap rewrites, by operation; each returns a simpler node or None. Every one is
# exact in IEEE double arithmetic: the simpler node gives, bit for bit, what the
# operation's NumPy kernel gives, for every input, the sign of a zero included (NaN
# as NaN, whatever its payload) -- except the few marked "derivative graphs only"
# below, which apply only while autodiff builds a derivative (graph.deriving), say why,
# and are tested bit for bit in tests/test_parse.py. Signed zeros are the trap:
# x + 0 is not x (-0 + 0 = +0), 0 - x is not -x (0 - 0 = +0, -0 = -0), 0 * x is not
# 0 (inf, nan, and -x * 0 = -0); those are left alone. A constant only stands for its
# value when it cannot change the other operand's shape by broadcasting (hence the
# shape checks).

def _normal(c: float) -> bool:
    """A finite, nonzero number with all its bits (not subnormal, not underflowed
    to 0): safe to fold two constants into."""
    return math.isfinite(c) and abs(c) >= sys.float_info.min


def _in_derivative(graph) -> bool:
    """Rewrites that change which operations run apply only inside derivative
    graphs: there, warnings name "the derivative of ..."; in what the user wrote,
    a warning names the operation the user wrote."""
    return graph.deriving


def _power_of_two(c: float | None) -> bool:
    """c = +-2^k (k within range): multiplying or dividing by it only moves the
    exponent, so it commutes with rounding."""
    if c is None or c == 0.0 or not math.isfinite(c):
        return False
    mantissa, exponent = math.frexp(c)
    return abs(mantissa) == 0.5 and -1000 < exponent < 1000


def _zero_signed(c: float | None, negative: bool) -> bool:
    """c is the zero of that sign (-0.0 when negative, +0.0 otherwise)."""
    return c == 0.0 and (math.copysign(1.0, c) < 0) == negative


def add(graph, args, shape):
    a, b = args
    if a is b:  # x + x is 2x rounded once, as 2 * x is (-0 + -0 = -0 = 2 * -0); and reads better
        return graph.apply("mul", (2.0, a))
    # x + (-0) is x for every x (-0 + -0 = -0, +0 + -0 = +0); x + (+0) is not (-0 + +0 = +0).
    if _zero_signed(b.scalar, negative=True) and a.shape == shape:
        return a
    if _zero_signed(a.scalar, negative=True) and b.shape == shape:
        return b
    if a.op in _SCATTERS and b.op in _SCATTERS and a.shape == b.shape == shape and _in_derivative(graph):
        # Derivative graphs only (index's and cumprod's rules make the scatters): slices
        # of one array gathered back (x[1:] and x[:-1] in a gradient), one array filled
        # part by part instead of a zero array per part and an add. The same sums,
        # except that an entry that is -0 in every part covering it comes out +0
        # ((-0 + 0) + -0 where the adds give -0 + -0): the sign of a zero cotangent,
        # which rules only multiply, divide (as numerator) or select, so it can
        # change only the sign of a zero derivative.
        parts = _scatter_parts(a) + _scatter_parts(b)
        return graph.apply("scatter_sum", tuple(p for p, _ in parts), (tuple(k for _, k in parts), shape))
    if b.op == "neg" and _in_derivative(graph):  # a + (-b) is a - b, by IEEE's definition of subtraction
        return graph.apply("sub", (a, b.args[0]))
    if a.op == "neg" and _in_derivative(graph):  # (-a) + b = b + (-a): addition commutes exactly
        return graph.apply("sub", (b, a.args[0]))
    return None


_SCATTERS = ("scatter", "scatter_sum")


def _scatter_parts(node) -> list:
    """(value, index items) for each part of a scatter or scatter_sum."""
    if node.op == "scatter":
        return [(node.args[0], node.attr[0])]
    return list(zip(node.args, node.attr[0]))


def sub(graph, args, shape):
    a, b = args
    # x - (+0) = x + (-0) is x for every x; x - (-0) = x + (+0) is not.
    if _zero_signed(b.scalar, negative=False) and a.shape == shape:
        return a
    # (-0) - x = -0 + (-x) is -x for every x; (+0) - x is not (+0 - +0 = +0, but -(+0) = -0).
    if _zero_signed(a.scalar, negative=True) and b.shape == shape:
        return graph.apply("neg", (b,))
    if b.op == "neg" and _in_derivative(graph):  # a - (-b) = a + (-(-b)) = a + b: negation is exact
        return graph.apply("add", (a, b.args[0]))
    return None


def mul(graph, args, shape):
    a, b = args
    if a is b and _in_derivative(graph):  # a * a is a^2 to the last bit (np.square): tanh's
        return graph.apply("pow", (a, 2.0))  # ans * ans is then the user's tanh(x)^2
    for one, other in ((b, a), (a, b)):
        if other.shape == shape and one.scalar is not None:
            if one.scalar == 1.0:  # x * 1 is x for every x (-0 * 1 = -0, inf, nan)
                return other
            if one.scalar == -1.0:  # x * -1 flips the sign bit only, as -x does
                return graph.apply("neg", (other,))
            if other.op == "neg":  # (-x) * c = x * (-c): the sign of a product is the xor of the
                # signs and rounding to nearest is symmetric, so only the sign moves (c = 0 included)
                return graph.apply("mul", (other.args[0], -one.scalar))
            if not _in_derivative(graph):
                continue
            # Derivative graphs only, where there is no user-written order of operations to
            # reproduce: these equal the original wherever neither an intermediate nor the
            # result overflows or is subnormal (checked bit for bit in tests/test_parse.py);
            # where one does, the rewritten form is the more accurate.
            if other.op == "mul":  # (x * c1) * c2 = x * (c1 c2) when either is a power of two
                for c, x in (other.args[::-1], other.args):
                    if c.scalar is not None and x.shape == shape and _normal(c.scalar * one.scalar) and \
                            (_power_of_two(c.scalar) or _power_of_two(one.scalar)):
                        return graph.apply("mul", (x, c.scalar * one.scalar))
            if other.op == "div" and _power_of_two(one.scalar):  # (c1 / x) * 2^k = (2^k c1) / x
                numerator, x = other.args
                if numerator.scalar is not None and x.shape == shape and _normal(numerator.scalar * one.scalar):
                    return graph.apply("div", (numerator.scalar * one.scalar, x), span=other.span)
    return None


def div(graph, args, shape):
    a, b = args
    if b.scalar == 1.0 and a.shape == shape:  # x / 1 is x for every x
        return a
    if not _in_derivative(graph):
        return None
    # x / 2^k and x * 2^-k are the same real number rounded once: equal for every x
    # (and one multiply is cheaper); derivative graphs only, so warnings name the user's div.
    if _power_of_two(b.scalar) and a.shape == shape:
        return graph.apply("mul", (a, 1.0 / b.scalar))
    # Derivative graphs only: c / (2^k x) = (c / 2^k) / x, equal as (x * c1) * c2 above.
    if a.scalar is not None and b.op == "mul" and b.shape == shape:
        for c, x in (b.args, b.args[::-1]):
            if _power_of_two(c.scalar) and x.shape == shape and _normal(a.scalar / c.scalar):
                return graph.apply("div", (a.scalar / c.scalar, x))
    return None


def power_of_one(graph, args, shape):  # x ** 1 is x for every x (C's pow(x, 1), and pow's kernel)
    a, b = args
    return a if b.scalar == 1.0 and a.shape == shape else None


def neg(graph, args, shape):
    x = args[0]
    if x.op == "neg":  # two sign flips
        return x.args[0]
    if x.op == "mul":  # -(a * c) is exactly a * (-c) (see mul): one pass over the data instead of two
        a, b = x.args
        if b.scalar is not None and a.shape == shape:
            return graph.apply("mul", (a, -b.scalar))
        if a.scalar is not None and b.shape == shape:
            return graph.apply("mul", (-a.scalar, b))
    return None


def same_shape(graph, args, shape):
    # broadcast_to its own shape is a view of the same numbers; sum_to its own shape
    # sums over no axis, which is the identity (NumPy's kernel would add +0 and turn a
    # -0 into +0; only derivative rules make sum_to, and _fit does not when shapes agree).
    return args[0] if args[0].shape == shape else None


def reshape(graph, args, shape):
    x = args[0]  # reshapes only move numbers, never change them
    if x.shape == shape:
        return x
    if x.op == "reshape":
        return graph.reshape(x.args[0], shape)
    return None


def identity_on_scalars(graph, args, shape):
    # max, min, cumsum and cumprod of one number are that number, -0 included (their
    # kernels start from the first element). Not sum or logsumexp: NumPy's sum starts
    # from +0 (sum(-0) = +0), and logsumexp(-0) = log(1) + -0 = +0.
    return args[0] if not args[0].shape else None


def transpose(graph, args, shape):
    return args[0] if len(args[0].shape) < 2 else None  # nothing to permute
