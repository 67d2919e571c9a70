"""HIPS/autograd's tests of NumPy's array functions (tests/test_systematic.py and
tests/test_numpy.py, at github.com/HIPS/autograd), ported to diffcli expressions:
the same functions, input shapes and keyword combinations (combo_check), checked
as autograd's check_grads checks them, to second order (third for dot, outer and
tensordot): the value against NumPy's, the gradient and a Hessian-vector product of
a scalar made of the result against central differences, and the third-order Taylor
coefficient against differences of the Hessian-vector product.

Where NumPy refuses a combination (autograd's combo_check skips nothing, its
grids are chosen to be valid; a few of ours are not, as repeat(axis=1) of a
vector), diffcli must refuse it too, with its own error.

Not ported: complex inputs (diffcli is real), and functions diffcli does not have
(gradient, partition, atleast_*d, split and friends, row_stack, column_stack,
rollaxis, append, select, einsum's integer-sublist form, cross's axisa/axisb/axisc),
and zero-size arrays (einsum_matmult_broadcast_leadzero; diff of a single entry
and repeat(a, 0), which NumPy answers with an empty array, are refused by diffcli, and
checked so)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import diffcli
from diffcli.errors import DiffcliError

RNG = np.random.default_rng(0)


def R(*shape):
    return RNG.standard_normal(shape)


# (test name, function, operand lists (one list of candidate arrays per operand),
#  keyword grids, order); operand None: a list literal of the arrays that follow
SYSTEMATIC = [
    ("transpose", "transpose", [[R(2, 3, 4)]],
     {"axes": [None, (0, 1, 2), (0, 2, 1), (2, 0, 1), (2, 1, 0), (1, 0, 2), (1, 2, 0)]}, 2),
    ("moveaxis", "moveaxis", [[R(2, 3, 4)]], {"source": [0, 1, 2], "destination": [0, 1, 2]}, 2),
    ("repeat", "repeat", [[R(2, 3, 4), R(3, 1)]], {"repeats": [0, 1, 2], "axis": [None, 0, 1]}, 2),
    ("diff", "diff", [[R(5, 5), R(5, 5, 5)]], {"n": [1, 2], "axis": [0, 1]}, 2),
    ("diff_1", "diff", [[R(1), R(1, 1)]], {"axis": [0]}, 2),
    ("diff_2", "diff", [[R(1, 1), R(3, 1)]], {"axis": [1]}, 2),
    ("tile", "tile", [[R(2, 1, 3, 1)]], {"reps": [(1, 4, 1, 2)]}, 2),
    ("tile_2", "tile", [[R(1, 2)]], {"reps": [(1, 2), (2, 3), (3, 2, 1)]}, 2),
    ("tile_3", "tile", [[R(1)]], {"reps": [(2,), 2]}, 2),
    ("kron", "kron", [[R(5, 5), R(4, 4), R(5), R(5, 1), R(1, 5), R()],
                      [R(3, 3), R(2, 2), R(3), R(1, 3), R(3, 1), R()]], {}, 2),
    ("inner", "inner", [[np.array(1.5), R(3), R(2, 3)], [np.array(0.3), R(3), R(4, 3)]], {}, 2),
    ("dot", "dot", [[np.array(1.5), R(3), R(2, 3), R(2, 2, 3)], [np.array(0.3), R(3), R(3, 4), R(2, 3, 4)]], {}, 3),
    ("outer", "outer", [[R(3)], [R(3)]], {}, 3),
    ("matmul", "matmul", [[R(3), R(2, 3), R(2, 2, 3)], [R(3), R(3, 4), R(2, 3, 4)]], {}, 2),
    ("matmul_broadcast", "matmul", [[R(1, 2, 2)], [R(3, 2, 1)]], {}, 2),
    ("tensordot_1", "tensordot", [[R(1, 3), R(2, 3, 2)], [R(3), R(3, 1), R(3, 4, 2)]], {"axes": [[[1], [0]]]}, 3),
    ("tensordot_2", "tensordot", [[R(3), R(3, 1), R(3, 4, 2)], [R(1, 3), R(2, 3, 2)]], {"axes": [[[0], [1]]]}, 3),
    ("tensordot_3", "tensordot", [[R(2, 3), R(2, 3, 4)], [R(1, 2, 3), R(2, 2, 3, 4)]],
     {"axes": [[[0, 1], [1, 2]], [[1, 0], [2, 1]]]}, 3),
    ("tensordot_4", "tensordot", [[R(2, 2), R(4, 2, 2)], [R(2, 2), R(2, 2, 4)]], {"axes": [1, 2]}, 3),
    ("tensordot_5", "tensordot", [[R(4)], [R()]], {"axes": [0]}, 3),
    ("tensordot_6", "tensordot", [[R(2, 6)], [R(6, 3)]], {"axes": [[[-1], [0]]]}, 3),
    ("tensordot_7", "tensordot", [[R(2, 6)], [R(6, 3)]], {"axes": [[-1, 0]]}, 3),
    ("tensordot_8", "tensordot", [[R(2)], [R(2, 2)]], {"axes": [[0, 1]]}, 3),
    ("sort", "sort", [[R(1), R(7)]], {}, 2),
    ("einsum_transpose", "einsum", [["ij->ji"], [R(1, 1), R(4, 4), R(3, 4)]], {}, 2),
    ("einsum_matmult", "einsum", [["ij,jk->ik"], [R(2, 3)], [R(3, 4)]], {}, 2),
    ("einsum_matmult_broadcast", "einsum", [["...ij,...jk->...ik"], [R(2, 3), R(2, 2, 3)], [R(3, 4), R(2, 3, 4)]],
     {}, 2),
    ("einsum_covsum", "einsum", [["ijk,lji->lki"], [R(3, 4, 4)], [R(4, 4, 3)]], {}, 2),
    ("einsum_ellipses", "einsum", [["...jk,...lj->...lk", "...,...->..."], [R(4, 4), R(3, 4, 4)],
                                   [R(4, 4), R(3, 4, 4)]], {}, 2),
    ("einsum_ellipses_tail", "einsum", [["jk...,lj...->lk..."], [R(3, 2), R(3, 2, 4)], [R(2, 3), R(2, 3, 4)]],
     {}, 2),
    ("einsum_ellipses_center", "einsum", [["j...k,lj...->lk..."], [R(2, 2), R(2, 2, 2)], [R(2, 2), R(2, 2, 2)]],
     {}, 2),
    ("einsum_three_args", "einsum", [["ijk,lji,lli->lki"], [R(3, 4, 4)], [R(4, 4, 3)], [R(4, 4, 3)]], {}, 2),
    ("einsum_naked_sum", "einsum", [["k,nk->"], [R(5)], [R(10, 5)]], {}, 2),
    ("einsum_naked_sum2", "einsum", [["abcd->bd"], [R(3, 2, 3, 2)]], {}, 2),
    ("einsum_naked_sum_ellipsis", "einsum", [["...k,...nk->..."], [R(3, 5)], [R(3, 10, 5)]], {}, 2),
    ("einsum_no_output_indices", "einsum", [["ij,k"], [R(3, 4)], [R(3)]], {}, 2),
    ("trace", "trace", [[R(5, 5), R(4, 5), R(5, 4), R(3, 4, 5)]], {"offset": [-1, 0, 1]}, 2),
    ("diag", "diag", [[R(5, 5)]], {"k": [-1, 0, 1]}, 2),
    ("diag_flat", "diag", [[R(5)]], {"k": [-1, 0, 1]}, 2),
    ("tril", "tril", [[R(5, 5)]], {"k": [-1, 0, 1]}, 2),
    ("triu", "triu", [[R(5, 5)]], {"k": [-1, 0, 1]}, 2),
    ("tril_3d", "tril", [[R(5, 5, 4)]], {"k": [-1, 0, 1]}, 2),
    ("triu_3d", "triu", [[R(5, 5, 4)]], {"k": [-1, 0, 1]}, 2),
    ("swapaxes", "swapaxes", [[R(3, 4, 5)]], {"axis1": [0, 1, 2], "axis2": [0, 1, 2]}, 2),
    ("cross", "cross", [[R(3, 3)], [R(3, 3)]], {}, 2),
    ("concatenate_list", "concatenate", [None, [R(1)], [R(3)]], {"axis": [0]}, 2),
    ("concatenate_2d", "concatenate", [None, [R(2, 2)], [R(2, 2)]], {"axis": [0, 1]}, 2),
    ("concatenate_3d", "concatenate", [None, [R(2, 2, 2)], [R(2, 2, 2)]], {"axis": [0, 1, 2]}, 2),
    ("vstack_1d", "vstack", [None, [R(2)], [R(2)]], {}, 2),
    ("vstack_2d", "vstack", [None, [R(2, 4)], [R(1, 4)]], {}, 2),
    ("vstack_3d", "vstack", [None, [R(2, 3, 4)], [R(5, 3, 4)]], {}, 2),
    ("hstack_1d", "hstack", [None, [R(2)], [R(2)]], {}, 2),
    ("hstack_2d", "hstack", [None, [R(3, 4)], [R(3, 5)]], {}, 2),
    ("hstack_3d", "hstack", [None, [R(2, 1, 4)], [R(2, 5, 4)]], {}, 2),
    ("stack_1d", "stack", [None, [R(2)], [R(2)]], {"axis": [0, 1]}, 2),
    # tests/test_numpy.py
    ("flipud", "flipud", [[R(10, 11)]], {}, 2),
    ("fliplr", "fliplr", [[R(10, 11)]], {}, 2),
    ("rot90", "rot90", [[R(10, 11)]], {}, 2),
    ("reshape_call", "reshape", [[R(5, 6, 4)]], {"shape": [(5 * 4, 6)]}, 2),
    ("ravel_call", "ravel", [[R(5, 6, 4)]], {}, 2),
    ("flatten", "flatten", [[R(5, 6, 4)]], {}, 2),
    ("concatenate_axis_1", "concatenate", [None, [R(5, 6, 4)], [R(5, 6, 4)], [R(5, 6, 4)]], {"axis": [1]}, 2),
    ("trace_offsets", "trace", [[R(10, 11), R(11, 10)]], {"offset": [-9, 3, 10]}, 2),
    ("trace_extradims", "trace", [[R(5, 6, 4, 3)]], {"offset": [-5, 2, 5]}, 2),
    ("trace_extradims2", "trace", [[R(5, 6, 4, 3)]], {"offset": [-2, 1], "axis1": [3], "axis2": [2]}, 2),
    ("diag_matrix", "diag", [[R(10, 10)]], {}, 2),
    ("roll", "roll", [[R(4, 5)]], {"shift": [2], "axis": [1, None]}, 2),
    ("triu_k2", "triu", [[R(5, 5)]], {"k": [2]}, 2),
    ("tril_k2", "tril", [[R(5, 5)]], {"k": [2]}, 2),
    ("squeeze", "squeeze", [[R(5, 1, 3, 1)]], {}, 2),
    ("repeat_axes", "repeat", [[R(3, 4), R(3)]], {"repeats": [2, 1], "axis": [0, 1]}, 2),
    ("expand_dims", "expand_dims", [[R(5, 4)]], {"axis": [1]}, 2),
    ("tensordot_kwargs_by_position", "tensordot", [[R(2, 3, 4)], [R(4, 3, 2)]], {"axes": [[[0, 1], [2, 1]]]}, 2),
    ("diagonal", "diagonal", [[R(3, 4, 5)]], {"offset": [0, 1], "axis1": [2], "axis2": [0]}, 2),
    ("nan_to_num", "nan_to_num", [[R(3, 2)]], {}, 2),
]

INDEXING = [  # test_numpy.py's index tests, as diffcli indexing
    ("index_ints", "x[3, 0, 1]", lambda x: x[3, 0, 1]),
    ("index_slice", "x[::-1, 2:4, :]", lambda x: x[::-1, 2:4, :]),
    ("index_lists", "x[[0, 1, 2], :, :]", lambda x: x[[0, 1, 2], :, :]),
    ("index_mixed", "x[3, 2:, [1, 3]]", lambda x: x[3, 2:, [1, 3]]),
    ("index_slice_fanout", "x[::-1, 2:4, :] + x[::-1, 3:5, :]", lambda x: x[::-1, 2:4, :] + x[::-1, 3:5, :]),
    ("multi_index", "x[[0, 0], [1, 1]]", lambda x: x[[0, 0], [1, 1]]),
    ("multi_index2", "x[[0, 1, 0], [1, 1, 0]]", lambda x: x[[0, 1, 0], [1, 1, 0]]),
]


def _literal(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return str(value)


def _numpy_value(value):
    return value if not isinstance(value, list) else tuple(_numpy_value(v) for v in value)


def _cases():
    for test, name, operands, grid, order in SYSTEMATIC:
        sequence = operands[0] is None
        lists = operands[1:] if sequence else operands
        keys = list(grid)
        for k, combination in enumerate(itertools.product(*lists, *(grid[key] for key in keys))):
            args, kwargs = combination[:len(lists)], dict(zip(keys, combination[len(lists):]))
            yield pytest.param(name, sequence, args, kwargs, order, id=f"{test}-{k}")


def _expression(name, sequence, args, kwargs):
    """The diffcli call and its variables (a string operand is einsum's subscripts)."""
    texts, at = [], {}
    for i, arg in enumerate(args):
        if isinstance(arg, str):
            texts.append(repr(arg))
        else:
            at[f"x{i}"] = np.asarray(arg, dtype=float)
            texts.append(f"x{i}")
    if sequence:
        texts = ["[" + ", ".join(texts) + "]"]
    texts += [f"{key}={_literal(value)}" for key, value in kwargs.items() if value is not None]
    return f"{name}({', '.join(texts)})", at


def _numpy(name, sequence, args, kwargs):
    f = getattr(np, {"flatten": "ravel"}.get(name, name))
    args = [np.asarray(a) if not isinstance(a, str) else a for a in args]
    kwargs = {k: _numpy_value(v) for k, v in kwargs.items()}
    return f(args, **kwargs) if sequence else f(*args, **kwargs)


def _weights(shape, seed):
    return np.random.default_rng(seed).uniform(0.5, 1.5, shape)


def _fd_directional(f, at, direction, h=1e-5):
    plus = f({k: v + h * direction[k] for k, v in at.items()})
    minus = f({k: v - h * direction[k] for k, v in at.items()})
    return (plus - minus) / (2 * h)


def _check(expression, at, want, order):
    """check_grads' modes for diffcli: the value; then, for s = sum(W * sin(f)), the
    gradient along a direction against differences of s, the Hessian-vector
    product against differences of the gradient, and (order 3) 6 c_3 of the
    Taylor series along the direction against differences of v.Hv."""
    function = diffcli.compile(expression)
    got = function.eval(at).value
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if not at or not np.size(want):
        return
    weights = diffcli.compile(expression)._binding({k: np.shape(v) for k, v in at.items()}).output.shape
    w = _weights(weights, 1)
    scalar = diffcli.compile(f"sum(W * sin({expression}))")
    point = {**at, "W": w}
    names = list(at)
    v = {k: np.random.default_rng(2 + i).standard_normal(np.shape(x)) for i, (k, x) in enumerate(at.items())}
    frozen = {"W": np.zeros_like(w)}

    def s(p):
        return np.asarray(scalar.eval(p).value)

    def grad_dot_v(p):
        g = scalar.grad(p, wrt=names)
        return np.asarray(sum(np.sum(g[k] * v[k]) for k in names))

    d1 = grad_dot_v(point)
    np.testing.assert_allclose(d1, _fd_directional(s, point, {**v, **frozen}), rtol=1e-6, atol=1e-6)
    hv = scalar.hvp(v, point) if order >= 2 else None
    if hv is not None:
        # the Hessian-vector product, dotted with v, against differences of grad . v
        vhv = sum(np.sum(hv[k] * v[k]) for k in names)
        np.testing.assert_allclose(vhv, _fd_directional(grad_dot_v, point, {**v, **frozen}), rtol=1e-5, atol=1e-5)
    if order >= 3:
        from diffcli.engine.taylor import TaylorPlan, coefficients, seeded

        binding = scalar._binding({k: np.shape(x) for k, x in point.items()})
        plan = TaylorPlan([binding.output], binding.inputs)

        def taylor(p):
            series = [seeded(p[n.attr], v.get(n.attr), 3) for n in binding.inputs]
            return coefficients(plan.run(series, 0)[0], 3)

        def vhv_at(p):
            return np.asarray(2 * taylor(p)[2])
        np.testing.assert_allclose(2 * taylor(point)[2], vhv, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(6 * taylor(point)[3], _fd_directional(vhv_at, point, {**v, **frozen}),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,sequence,args,kwargs,order", list(_cases()))
def test_autograd_systematic(name, sequence, args, kwargs, order):
    expression, at = _expression(name, sequence, args, kwargs)
    try:
        want = _numpy(name, sequence, args, kwargs)
    except (ValueError, IndexError, TypeError) as refused:
        with pytest.raises(DiffcliError):
            diffcli.compile(expression)._binding({k: np.shape(v) for k, v in at.items()})
        assert str(refused)  # NumPy refused it too
        return
    if not np.size(want):  # np.diff of one entry, repeat 0 times: empty, which diffcli refuses
        with pytest.raises(DiffcliError, match="needs more than|would give an empty array"):
            diffcli.compile(expression)._binding({k: np.shape(v) for k, v in at.items()})
        return
    _check(expression, at, want, order)


@pytest.mark.parametrize("name,expression,numpy", INDEXING, ids=[c[0] for c in INDEXING])
def test_autograd_indexing(name, expression, numpy):
    x = R(5, 6, 4)
    _check(expression, {"x": x}, numpy(x), 2)
