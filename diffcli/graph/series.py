"""Taylor rules: each operation's map from its operands' truncated Taylor series
to its result's (Griewank & Walther, Evaluating Derivatives, 2nd ed., ch. 13).

A series is an array of shape (K+1,) + batch + value shape whose entry k is
the Taylor coefficient f_k = f^(k)(x0)[v, ..., v] / k! of f(x0 + t v) (leading
axis first, so every kernel, which works on the trailing value axes, applies to
it as to one more batch axis). A *constant* series has a leading axis of length
1: its coefficients above 0 are zero (an operand that does not depend on the
variables; is_constant).

Linear operations apply their kernel to the stacked coefficients; products are
truncated convolutions; every other function follows the recurrence of an ODE
it satisfies (exp: y' = y x', tan: y' = (1 + y^2) x', ...), so that order K
costs O(K^2) times one evaluation, never a graph that grows with the order.
Coefficient 0 is always the kernel's own value, so the value is bit for bit
the one evaluation gives.

The rules are written here and named in ops.py's table (the Op field taylor):
taylor(node, kernel) -> rule(*series) -> series, where kernel is the node's
NumPy forward. Non-smooth operations follow the subgradients the vjp rules
use (abs'(0) = 0, a tie of maximum gives half to each, ...).
"""

from __future__ import annotations

import math

import numpy as np


def is_constant(series) -> bool:
    return series.shape[0] == 1


def full(series, n: int):
    """A series of n coefficients (a constant's padded with zeros)."""
    if series.shape[0] == n:
        return series
    out = np.zeros((n,) + series.shape[1:])
    out[0] = series[0]
    return out


def _length(*series) -> int:
    return max(s.shape[0] for s in series)


def _new(n: int, *like):
    return np.zeros((n,) + np.broadcast_shapes(*(s.shape[1:] for s in like)))


def _dot(a, b):
    """sum_j a[j] * b[j] over the leading axis (the other axes broadcast)."""
    if a.ndim == 1 and b.ndim == 1:
        return np.dot(a, b)
    if a.shape != b.shape:
        a, b = np.broadcast_arrays(a, b)
    return np.einsum("i...,i...->...", a, b)


def _weighted(x):
    """j x_j: the series whose sums with y_{k-j} give (x' y) coefficients."""
    j = np.arange(x.shape[0], dtype=np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
    return j * x


# ---------------------------------------------------------------- series arithmetic

def mul(a, b, multiply=np.multiply):
    """The truncated product: c_k = sum_{j<=k} a_j b_{k-j}."""
    if is_constant(a) or is_constant(b):
        return multiply(a, b)
    n = _length(a, b)
    out = _new(n, a, b)
    for k in range(n):
        out[k] = multiply(a[:k + 1], b[k::-1]).sum(axis=0) if multiply is not np.multiply else \
            _dot(a[:k + 1], b[k::-1])
    return out


def div(a, b):
    """c = a / b: c_k = (a_k - sum_{j=1..k} b_j c_{k-j}) / b_0."""
    if is_constant(b):
        return a / b
    n = b.shape[0]
    a = full(a, n)
    out = _new(n, a, b)
    out[0] = a[0] / b[0]
    for k in range(1, n):
        out[k] = (a[k] - _dot(b[1:k + 1], out[k - 1::-1])) / b[0]
    return out


def exp(x, y0):
    """y = exp(x) (y0 its value): k y_k = sum_{j=1..k} j x_j y_{k-j}."""
    n = x.shape[0]
    dx = _weighted(x)
    out = _new(n, x)
    out[0] = y0
    for k in range(1, n):
        out[k] = _dot(dx[1:k + 1], out[k - 1::-1]) / k
    return out


def log(x, y0, x0=None):
    """y = log(x) (or log(c + x) with x0 = c + x_0): from x y' = x',
    y_k = (x_k - (1/k) sum_{j=1..k-1} j y_j x_{k-j}) / x_0."""
    n = x.shape[0]
    x0 = x[0] if x0 is None else x0
    out = _new(n, x)
    out[0] = y0
    dy = np.zeros_like(out)
    for k in range(1, n):
        out[k] = (x[k] - _dot(dy[1:k], x[k - 1:0:-1]) / k) / x0
        dy[k] = k * out[k]
    return out


def sincos(x, s0, c0, sign=-1.0):
    """(sin x, cos x) with sign -1 (s' = c x', c' = -s x'), (sinh x, cosh x) with +1."""
    n = x.shape[0]
    dx = _weighted(x)
    s, c = _new(n, x), _new(n, x)
    s[0], c[0] = s0, c0
    for k in range(1, n):
        s[k] = _dot(dx[1:k + 1], c[k - 1::-1]) / k
        c[k] = sign * _dot(dx[1:k + 1], s[k - 1::-1]) / k
    return s, c


def tangent(x, y0, sign=1.0):
    """y = tan x (sign +1: y' = (1 + y^2) x') or tanh x (sign -1: y' = (1 - y^2) x')."""
    n = x.shape[0]
    dx = _weighted(x)
    y, z = _new(n, x), _new(n, x)
    y[0] = y0
    z[0] = 1.0 + sign * y0 * y0
    for k in range(1, n):
        y[k] = _dot(dx[1:k + 1], z[k - 1::-1]) / k
        z[k] = sign * _dot(y[:k + 1], y[k::-1])
    return y


def logistic(x, y0):
    """y = sigmoid(x): y' = (y - y^2) x'."""
    n = x.shape[0]
    dx = _weighted(x)
    y, z = _new(n, x), _new(n, x)
    y[0] = y0
    z[0] = y0 - y0 * y0
    for k in range(1, n):
        y[k] = _dot(dx[1:k + 1], z[k - 1::-1]) / k
        z[k] = y[k] - _dot(y[:k + 1], y[k::-1])
    return y


def sqrt(x, y0):
    """y = sqrt(x): y_k = (x_k - sum_{j=1..k-1} y_j y_{k-j}) / (2 y_0)."""
    n = x.shape[0]
    out = _new(n, x)
    out[0] = y0
    for k in range(1, n):
        out[k] = (x[k] - _dot(out[1:k], out[k - 1:0:-1])) / (2.0 * y0)
    return out


def power(x, r, y0):
    """y = x^r for a constant r (y0 its value): from x y' = r y x',
    y_k = sum_{j<k} (r (k - j) - j) x_{k-j} y_j / (k x_0)."""
    n = x.shape[0]
    out = np.zeros((n,) + np.broadcast_shapes(x.shape[1:], np.shape(r)))
    out[0] = y0
    shape = (-1,) + (1,) * (out.ndim - 1)
    for k in range(1, n):
        j = np.arange(k, dtype=np.float64).reshape(shape)
        out[k] = _dot((r * (k - j) - j) * x[k:0:-1], out[:k]) / (k * x[0])
    return out


def integer_power(x, p: int):
    """x^p for a whole p >= 0, by squaring: exact where x_0 = 0 too."""
    result, base = None, x
    while p:
        if p & 1:
            result = base if result is None else mul(result, base)
        p >>= 1
        if p:
            base = mul(base, base)
    return result if result is not None else full(np.ones((1,) + x.shape[1:]), x.shape[0])


def derivative(x):
    """The series of dx/dt, one coefficient shorter: (k+1) x_{k+1}."""
    k = np.arange(1, x.shape[0], dtype=np.float64).reshape((-1,) + (1,) * (x.ndim - 1))
    return k * x[1:]


def integral(y0, p):
    """The series y with y_0 = y0 and y' = p (p one coefficient shorter)."""
    k = np.arange(1, p.shape[0] + 1, dtype=np.float64).reshape((-1,) + (1,) * (p.ndim - 1))
    out = np.empty((p.shape[0] + 1,) + np.broadcast_shapes(np.shape(y0), p.shape[1:]))
    out[0] = y0
    out[1:] = p / k
    return out


def chain(x, y0, slope):
    """y = f(x) from y0 = f(x_0) and slope(series) -> the series of f'(x), by
    y' = f'(x) x' (the series of f'(x) is needed to one order less)."""
    head = x[:-1]
    return integral(y0, mul(derivative(x), slope(head)))


def constant_like(x, value):
    return np.full((1,) + x.shape[1:], value) if np.ndim(value) == 0 else np.asarray(value)[None]


def plus(a, b):
    n = _length(a, b)
    return full(a, n) + full(b, n)


def minus(a, b):
    n = _length(a, b)
    return full(a, n) - full(b, n)


def flat(n: int, y0):
    """A piecewise-constant function's series: its value, then zeros (the
    derivative 0 its vjp rule gives)."""
    out = np.zeros((n,) + np.shape(y0))
    out[0] = y0
    return out


def select(condition, a, b):
    """where(condition, a, b) coefficient by coefficient (condition a value)."""
    n = _length(a, b)
    return np.where(condition, full(a, n), full(b, n))


# ---------------------------------------------------------------- the rules ops.py names
#
# Each is taylor(node, kernel) -> rule(*series). A rule is only called with at
# least one operand that is not constant (the evaluator runs the kernel itself
# on operations of constants only).

def _value_axes(shape) -> tuple:
    return tuple(range(-len(shape), 0))


def linear(node, kernel):
    """An operation linear in all its operands jointly: its kernel on the stacked
    coefficients (constants padded, so that they add to coefficient 0 only)."""
    def rule(*args):
        n = _length(*args)
        return kernel(*(full(a, n) for a in args))
    return rule


def bilinear(node, kernel):
    """A product (mul, matmul): with a constant operand, its kernel on the
    stacked coefficients; else the truncated convolution of kernel products."""
    def rule(a, b):
        if is_constant(a) or is_constant(b):
            return kernel(a, b)
        if kernel is np.multiply:
            return mul(a, b)
        n = a.shape[0]
        first = kernel(a[0], b[0])
        out = np.empty((n,) + first.shape)
        out[0] = first
        for k in range(1, n):
            out[k] = kernel(a[:k + 1], b[k::-1]).sum(axis=0)
        return out
    return rule


def unary(build):
    """A rule from build(x, y0, x0) -> series, where y0 = kernel(x0) is the value."""
    def factory(node, kernel):
        def rule(x):
            y0 = kernel(x[0])
            return build(x, y0, x[0])
        return rule
    return factory


def _one_over_sqrt(expression):
    """slope(series) = expression(series) ** -1/2."""
    def slope(x):
        inner = expression(x)
        return power(inner, -0.5, inner[0] ** -0.5)
    return slope


def _square(x):
    return mul(x, x)


def _reciprocal(inner):
    return div(constant_like(inner, 1.0), inner)


LN2, LN10 = np.log(2.0), np.log(10.0)

SIN = unary(lambda x, y0, x0: sincos(x, y0, np.cos(x0))[0])
COS = unary(lambda x, y0, x0: sincos(x, np.sin(x0), y0)[1])
TAN = unary(lambda x, y0, x0: tangent(x, y0))
SINH = unary(lambda x, y0, x0: sincos(x, y0, np.cosh(x0), sign=1.0)[0])
COSH = unary(lambda x, y0, x0: sincos(x, np.sinh(x0), y0, sign=1.0)[1])
TANH = unary(lambda x, y0, x0: tangent(x, y0, sign=-1.0))
ASIN = unary(lambda x, y0, x0: chain(x, y0, _one_over_sqrt(lambda h: minus(constant_like(h, 1.0), _square(h)))))
ACOS = unary(lambda x, y0, x0: chain(
    x, y0, lambda h: -_one_over_sqrt(lambda h: minus(constant_like(h, 1.0), _square(h)))(h)))
ATAN = unary(lambda x, y0, x0: chain(x, y0, lambda h: _reciprocal(plus(constant_like(h, 1.0), _square(h)))))
ASINH = unary(lambda x, y0, x0: chain(x, y0, _one_over_sqrt(lambda h: plus(_square(h), constant_like(h, 1.0)))))
ACOSH = unary(lambda x, y0, x0: chain(x, y0, _one_over_sqrt(lambda h: minus(_square(h), constant_like(h, 1.0)))))
ATANH = unary(lambda x, y0, x0: chain(x, y0, lambda h: _reciprocal(minus(constant_like(h, 1.0), _square(h)))))
EXP = unary(lambda x, y0, x0: exp(x, y0))
EXP2 = unary(lambda x, y0, x0: exp(x * LN2, y0))


def _expm1(x, y0, x0):
    out = exp(x, np.exp(x0))
    out[0] = y0
    return out


EXPM1 = unary(_expm1)
LOG = unary(lambda x, y0, x0: log(x, y0))
LOG1P = unary(lambda x, y0, x0: log(x, y0, 1.0 + x0))


def _scaled_log(scale):
    def build(x, y0, x0):
        out = log(x, 0.0) / scale
        out[0] = y0
        return out
    return build


LOG2 = unary(_scaled_log(LN2))
LOG10 = unary(_scaled_log(LN10))
SQRT = unary(lambda x, y0, x0: sqrt(x, y0))
CBRT = unary(lambda x, y0, x0: power(x, 1.0 / 3.0, y0))
SIGMOID = unary(lambda x, y0, x0: logistic(x, y0))
SOFTPLUS = unary(lambda x, y0, x0: chain(x, y0, lambda h: logistic(h, _sigmoid(h[0]))))


def _sigmoid(a):
    return np.exp(-np.logaddexp(0.0, -a))


def _abs(x, y0, x0):
    out = np.sign(x0) * x
    out[0] = y0
    return out


ABS = unary(_abs)


def _relu(x, y0, x0):
    out = np.where(x0 > 0.0, x, 0.0)
    out[0] = y0
    return out


RELU = unary(_relu)


def constant_rule(node, kernel):
    """Derivative 0 wherever it exists (sign, floor, ceil, comparisons)."""
    def rule(*args):
        return flat(_length(*args), kernel(*(a[0] for a in args)))
    return rule


def div_rule(node, kernel):
    def rule(a, b):
        if is_constant(b):
            return kernel(a, b)
        out = div(a, b)
        out[0] = kernel(a[0], b[0])
        return out
    return rule


def zero_dominant_product(node, kernel):
    """cmul: a product in which 0 times anything is 0 (kernel's rule), term by term."""
    def rule(a, b):
        return mul(a, b, multiply=kernel) if not (is_constant(a) or is_constant(b)) else kernel(a, b)
    return rule


def zero_dominant_quotient(node, kernel):
    """cdiv: a quotient whose zero numerator gives 0 (kernel's rule)."""
    def rule(a, b):
        if is_constant(b):
            return kernel(a, b)
        with np.errstate(all="ignore"):
            out = div(a, b)
        zero = np.all(full(a, b.shape[0]) == 0.0, axis=0)
        out[0] = kernel(a[0], b[0])
        return np.where(zero, 0.0, out)
    return rule


def power_rule(node, kernel):
    """a ** b. A constant exponent: by squaring for natural exponents (exact at a
    base of 0), else the recurrence of x y' = r y x' (where x_0 = 0, the closed
    form along the first-order term, binom(r, k) x_0^(r-k) x_1^k, as the vjp rule gives);
    a variable exponent: exp(b log a), for a positive base."""
    def rule(a, b):
        y0 = kernel(a[0], b[0])
        if is_constant(b):
            r = b[0]
            if np.ndim(r) == 0 or np.all(r == r.flat[0]):
                r = float(np.asarray(r).flat[0])
                if r == int(r) and 0 <= r <= 1024:
                    out = integer_power(a, int(r))
                    out = out * np.ones_like(full(a, a.shape[0]))
                    out[0] = y0
                    return out
            return _fractional_power(a, r, y0)
        if is_constant(a):
            return exp(b * np.log(a), y0)
        with np.errstate(all="ignore"):
            out = exp(mul(b, log(a, np.log(a[0]))), y0)
        if np.any(a[0] <= 0.0):
            raise NotTaylor("a power with a variable exponent of a base that is not positive")
        return out
    return rule


def _fractional_power(a, r, y0):
    with np.errstate(all="ignore"):
        out = power(a, r, y0)
        zero = a[0] == 0.0
        if np.any(zero):
            n = a.shape[0]
            k = np.arange(n, dtype=np.float64).reshape((-1,) + (1,) * (a.ndim - 1))
            falling = np.ones_like(out)
            for i in range(1, n):
                falling[i] = falling[i - 1] * (r - (i - 1)) / i
            # the closed form as IEEE evaluates it (a signed zero base gives a signed
            # infinity), and exactly 0 where the coefficient is (the powers ran out)
            at_zero = np.where(falling == 0.0, 0.0, falling * np.power(a[0], r - k) * a[1] ** k)
            at_zero[0] = y0
            out = np.where(zero, at_zero, out)
    return out


class NotTaylor(Exception):
    """A rule that cannot answer at these values; the caller uses the derivative graph."""


def atan2_rule(node, kernel):
    """atan2(y, x)' = (x y' - y x') / (x^2 + y^2)."""
    def rule(y, x):
        n = _length(y, x)
        y, x = full(y, n), full(x, n)
        hy, hx = y[:-1], x[:-1]
        slope = div(minus(mul(hx, derivative(y)), mul(hy, derivative(x))), plus(mul(hx, hx), mul(hy, hy)))
        return integral(kernel(y[0], x[0]), slope)
    return rule


def hypot_rule(node, kernel):
    def rule(a, b):
        n = _length(a, b)
        a, b = full(a, n), full(b, n)
        return sqrt(plus(mul(a, a), mul(b, b)), kernel(a[0], b[0]))
    return rule


def pairwise_extreme(first):
    """maximum/minimum: the operand the value comes from, half of each on a tie."""
    def factory(node, kernel):
        def rule(a, b):
            n = _length(a, b)
            a, b = full(a, n), full(b, n)
            out = np.where(first(a[0], b[0]), a, np.where(a[0] == b[0], 0.5 * (a + b), b))
            out[0] = kernel(a[0], b[0])
            return out
        return rule
    return factory


def where_rule(node, kernel):
    def rule(c, a, b):
        n = _length(a, b)
        out = np.where(c[0] != 0, full(a, n), full(b, n))
        out[0] = kernel(c[0], a[0], b[0])
        return out
    return rule


def _reduction_axes(node):
    """(the value axes a reduction runs over, counted from the end; keepdims), from
    its attr: None over the whole value, or (axes, keepdims) (ops.py)."""
    rank = len(node.args[0].shape)
    if node.attr is None:
        return _value_axes(node.args[0].shape), False
    axes, keepdims = node.attr
    return tuple(a - rank for a in axes), keepdims


def _kept(y0, axes, keepdims):
    """A reduction's value with its reduced axes as 1s, to broadcast against its operand."""
    return y0 if keepdims else np.expand_dims(y0, axes)


def extreme_reduction(node, kernel):
    """max/min: the entries tied with the extreme share evenly."""
    axes, keepdims = _reduction_axes(node)

    def rule(x):
        y0 = kernel(x[0])
        tied = x[0] == _kept(y0, axes, keepdims)
        out = np.sum(np.where(tied, x, 0.0), axis=axes, keepdims=keepdims) / \
            np.sum(tied, axis=axes, keepdims=keepdims)
        out[0] = y0
        return out
    return rule


def norm_rule(node, kernel):
    """sqrt(sum(x^2)); at 0 the subgradient 0 at every order."""
    axes, keepdims = _reduction_axes(node)

    def rule(x):
        y0 = kernel(x[0])
        with np.errstate(all="ignore"):
            out = sqrt(np.sum(mul(x, x), axis=axes, keepdims=keepdims), y0)
        return np.where(y0 == 0.0, flat(x.shape[0], y0), out)
    return rule


def logsumexp_rule(node, kernel):
    axes, keepdims = _reduction_axes(node)

    def rule(x):
        y0 = kernel(x[0])
        shift = _kept(y0, axes, keepdims)
        # sum exp(x - y0): its value is 1
        total = np.sum(exp(x, np.exp(x[0] - shift)), axis=axes, keepdims=keepdims)
        return log(total, y0)
    return rule


def softmax_rule(node, kernel):
    rank = len(node.shape)
    axes = _value_axes(node.shape) if node.attr is None else tuple(a - rank for a in node.attr)

    def rule(x):
        y0 = kernel(x[0])
        top = np.max(x[0], axis=axes, keepdims=True)
        e = exp(x, np.exp(x[0] - top))
        out = div(e, np.sum(e, axis=axes, keepdims=True))
        out[0] = y0
        return out
    return rule


def _along_leading_axis(node):
    """The index of the leading value axis in a series array, and whether reversed."""
    return -len(node.shape), bool(node.attr)


def cumprod_rule(node, kernel):
    """p_i = p_{i-1} x_i along the leading value axis: a series product per entry."""
    axis, backwards = _along_leading_axis(node)

    def rule(x):
        x = np.moveaxis(x, axis, 1)
        out = np.empty_like(x)
        steps = range(x.shape[1] - 1, -1, -1) if backwards else range(x.shape[1])
        previous = None
        for i in steps:
            out[:, i] = x[:, i] if previous is None else mul(out[:, previous], x[:, i])
            previous = i
        out = np.moveaxis(out, 1, axis)
        out[0] = kernel(np.moveaxis(x, 1, axis)[0])
        return out
    return rule


def linscan_rule(node, kernel):
    """s_i = h_i + a_i s_{i-+1}: a series product and sum per entry."""
    axis = -len(node.shape)
    backwards = node.attr

    def rule(h, a):
        n = _length(h, a)
        h, a = np.broadcast_arrays(full(h, n), full(a, n))
        h, a = np.moveaxis(h, axis, 1), np.moveaxis(a, axis, 1)
        out = np.empty(h.shape)
        steps = range(h.shape[1] - 1, -1, -1) if backwards else range(h.shape[1])
        previous = None
        for i in steps:
            out[:, i] = h[:, i] if previous is None else h[:, i] + mul(a[:, i], out[:, previous])
            previous = i
        return np.moveaxis(out, 1, axis)
    return rule


# ---------------------------------------------------------------- NumPy's other functions (issue 19)

def mod_rule(node, kernel):
    """a % b = a - floor(a/b) b, floor constant between its jumps (the vjp's rule)."""
    def rule(a, b):
        n = _length(a, b)
        quotient = np.floor(a[0] / b[0])
        out = full(a, n) - quotient * full(b, n)
        out[0] = kernel(a[0], b[0])
        return out
    return rule


def logaddexp_rule(base):
    """log(e^a + e^b) (base e) or log2(2^a + 2^b) (base 2): as logsumexp's rule,
    on a and b scaled by log(base)."""
    scale = 1.0 if base == "e" else LN2

    def factory(node, kernel):
        def rule(a, b):
            n = _length(a, b)
            a, b = full(a, n) * scale, full(b, n) * scale
            if a.shape != b.shape:  # (one operand batched or directed, the other not)
                shape = np.broadcast_shapes(a.shape, b.shape)
                a, b = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
            y0 = kernel(a[0] / scale, b[0] / scale)
            shift = y0 * scale
            total = plus(exp(a, np.exp(a[0] - shift)), exp(b, np.exp(b[0] - shift)))  # its value is 1
            out = log(total, shift) / scale
            out[0] = y0
            return out
        return rule
    return factory


def nan_losing(first):
    """fmax/fmin's choice of operand: first(a, b), or a where b is nan."""
    return lambda a, b: first(a, b) | np.isnan(b)


def compose(x, derivatives):
    """f(x) from f's derivatives at x_0 (derivatives[j] = f^(j)(x_0), j = 0..K): the
    truncated Taylor polynomial of f in h = x - x_0, by Horner's rule in series."""
    n = x.shape[0]
    h = x.copy()
    h[0] = 0.0
    out = flat(n, derivatives[n - 1] / math.factorial(n - 1))
    for j in range(n - 2, -1, -1):
        out = mul(out, h)
        out[0] = out[0] + derivatives[j] / math.factorial(j)
    return out


def _ode(x, y0, slope_of):
    """y with y_0 = y0 and y' = slope_of(y) x', solved order by order (erfinv)."""
    n = x.shape[0]
    dx = derivative(x)
    y = _new(n, x)
    y[0] = y0
    for k in range(1, n):
        y[k] = mul(dx[:k], slope_of(y[:k]))[k - 1] / k
    return y


def _gaussian(h):
    """The series of exp(-h^2)."""
    return exp(-mul(h, h), np.exp(-h[0] * h[0]))


TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
ERF = unary(lambda x, y0, x0: chain(x, y0, lambda h: TWO_OVER_SQRT_PI * _gaussian(h)))
ERFC = unary(lambda x, y0, x0: chain(x, y0, lambda h: -TWO_OVER_SQRT_PI * _gaussian(h)))
ERFINV = unary(lambda x, y0, x0: _ode(x, y0, lambda y: (0.5 * math.sqrt(math.pi)) * exp(mul(y, y), np.exp(y[0] * y[0]))))


def _polygammas(first, count):
    """polygamma(first), ..., polygamma(first + count - 1) as functions of x_0."""
    def derivatives(x0, y0):
        import scipy.special

        return [y0] + [scipy.special.polygamma(first + j, x0) for j in range(count - 1)]
    return derivatives


def polygamma_family(order):
    """lgamma (order -1), digamma (0), polygamma(n) (n): each derivative the next
    polygamma, composed with the operand's series."""
    def factory(node, kernel):
        n = order if order is not None else node.attr

        def rule(x):
            y0 = kernel(x[0])
            return compose(x, _polygammas(n + 1, x.shape[0])(x[0], y0))
        return rule
    return factory


def _sinc_series(x):
    """sinc as its power series sum (-1)^m (pi x)^2m / (2m+1)! (11 terms: the 12th is
    below 1e-22 for |x| < 1/4), composed with the operand's series."""
    x2 = mul(x, x)
    out = constant_like(x, (-1) ** 10 * math.pi ** 20 / math.factorial(21))
    for m in range(9, -1, -1):
        out = plus(mul(out, x2), constant_like(x, (-1) ** m * math.pi ** (2 * m) / math.factorial(2 * m + 1)))
    return out


def _sinc(x, y0, x0):
    """sin(pi x) / (pi x), and its power series where |x_0| < 1/4 (the vjp's branch)."""
    with np.errstate(all="ignore"):
        px = math.pi * x
        quotient = div(sincos(px, np.sin(px[0]), np.cos(px[0]))[0], px)
    out = np.where(np.abs(x0) < 0.25, full(_sinc_series(x), x.shape[0]), quotient)
    out[0] = y0
    return out


SINC = unary(_sinc)
