"""NumPy's array vocabulary (issue 19): n-dimensional products and the functions
that move entries. Each case is checked against NumPy's own value, its Jacobian
against central finite differences, the same at a batch of points, the sparsity
layer against dense seeds, second derivatives against differences of the
gradient, and its value and gradient formulas (--symbolic) parsed back."""

from __future__ import annotations

import numpy as np
import pytest

import diffcli
from diffcli.errors import ExpressionError, ShapeError
from diffcli.graph import autodiff
from diffcli.graph.formula import formula
from diffcli.graph.nodes import topological_order

from .helpers import assert_matches_fd, numeric_jacobian

RNG = np.random.default_rng(19)


def r(*shape):
    return np.round(RNG.uniform(-2, 2, shape), 3)


v3, w3, v4 = r(3), r(3), r(4)
A23, B34, S33 = r(2, 3), r(3, 4), r(3, 3)
T234, T243, T2 = r(2, 3, 4), r(2, 4, 3), r(2, 2, 3)

# (expression, values, NumPy's answer)
CASES = [
    ("T @ B", {"T": T234[:, :, :3], "B": B34}, lambda T, B: T @ B),
    ("T @ U", {"T": T234, "U": T243}, lambda T, U: T @ U),
    ("v @ T", {"v": v3, "T": r(2, 3, 4)}, lambda v, T: v @ T),
    ("T @ v", {"T": T234, "v": v4}, lambda T, v: T @ v),
    ("matmul(A, B)", {"A": r(1, 2, 3), "B": r(4, 3, 2)}, np.matmul),
    ("dot(T, B)", {"T": T243, "B": B34}, np.dot),
    ("dot(A, v)", {"A": A23, "v": v3}, np.dot),
    ("dot(x, v)", {"x": 1.5, "v": v3}, np.dot),
    ("inner(T, v)", {"T": T234, "v": v4}, np.inner),
    ("inner(A, S)", {"A": A23, "S": S33}, np.inner),
    ("outer(A, v)", {"A": A23, "v": v3}, np.outer),
    ("tensordot(T, U, 2)", {"T": T234, "U": r(3, 4, 2)}, lambda T, U: np.tensordot(T, U, 2)),
    ("tensordot(T, U, [[0, 2], [1, 0]])", {"T": T234, "U": r(4, 2, 5)},
     lambda T, U: np.tensordot(T, U, [[0, 2], [1, 0]])),
    ("tensordot(A, B, [1, 0])", {"A": A23, "B": B34}, lambda A, B: np.tensordot(A, B, [1, 0])),
    ("einsum('ij,jk->ik', A, B)", {"A": A23, "B": B34}, lambda A, B: np.einsum("ij,jk->ik", A, B)),
    ("einsum('ii->i', S)", {"S": S33}, lambda S: np.einsum("ii->i", S)),
    ("einsum('ii', S)", {"S": S33}, lambda S: np.einsum("ii", S)),
    ("einsum('ij->', A)", {"A": A23}, lambda A: np.einsum("ij->", A)),
    ("einsum('i,j', v, w)", {"v": v3, "w": v4}, lambda v, w: np.einsum("i,j", v, w)),
    ("einsum('...ij,jk->...ik', T, B)", {"T": T234[:, :, :3], "B": B34},
     lambda T, B: np.einsum("...ij,jk->...ik", T, B)),
    ("einsum('bij,bjk,k->bi', T, U, v)", {"T": T234, "U": r(2, 4, 3), "v": v3},
     lambda T, U, v: np.einsum("bij,bjk,k->bi", T, U, v)),
    ("einsum('iij->j', T)", {"T": T2[:, :, :2].repeat(1, 0)}, lambda T: np.einsum("iij->j", T)),
    ("einsum('abc,c->ab', T, w)", {"T": r(2, 3, 1), "w": r(2)}, lambda T, w: np.einsum("abc,c->ab", T, w)),
    ("einsum('ij,ij->ij', A, C)", {"A": r(1, 3), "C": A23}, lambda A, C: np.einsum("ij,ij->ij", A, C)),
    ("kron(A, S)", {"A": A23, "S": S33}, np.kron),
    ("kron(v, A)", {"v": v3, "A": A23}, np.kron),
    ("cross(a, b)", {"a": v3, "b": w3}, np.cross),
    ("cross(A, b)", {"A": r(2, 3), "b": w3}, np.cross),
    ("trace(T)", {"T": T234[:, :2]}, np.trace),
    ("trace(A, 1)", {"A": r(3, 4)}, lambda A: np.trace(A, 1)),
    ("trace(T, -1, 1, 2)", {"T": T234}, lambda T: np.trace(T, -1, 1, 2)),
    ("reshape(T, [4, -1])", {"T": T234}, lambda T: np.reshape(T, (4, -1))),
    ("ravel(T)", {"T": T234}, np.ravel),
    ("flatten(A)", {"A": A23}, lambda A: A.flatten()),
    ("concatenate([A, B2])", {"A": A23, "B2": r(1, 3)}, lambda A, B2: np.concatenate([A, B2])),
    ("concatenate([A, B2], 1)", {"A": A23, "B2": r(2, 2)}, lambda A, B2: np.concatenate([A, B2], 1)),
    ("concatenate(T, -1)", {"T": T234}, lambda T: np.concatenate(T, -1)),
    ("stack([v, w], 1)", {"v": v3, "w": w3}, lambda v, w: np.stack([v, w], 1)),
    ("stack([v, 2 * v, w])", {"v": v3, "w": w3}, lambda v, w: np.stack([v, 2 * v, w])),
    ("hstack([v, w, x])", {"v": v3, "w": w3, "x": 1.5}, lambda v, w, x: np.hstack([v, w, x])),
    ("vstack([v, A])", {"v": v3, "A": A23}, lambda v, A: np.vstack([v, A])),
    ("diag(v)", {"v": v3}, np.diag),
    ("diag(v, -1)", {"v": v3}, lambda v: np.diag(v, -1)),
    ("diag(S, 1)", {"S": S33}, lambda S: np.diag(S, 1)),
    ("diagonal(T, 0, 1, 2)", {"T": T234}, lambda T: np.diagonal(T, 0, 1, 2)),
    ("diagonal(S)", {"S": S33}, np.diagonal),
    ("tril(S)", {"S": S33}, np.tril),
    ("triu(T, 1)", {"T": T234}, lambda T: np.triu(T, 1)),
    ("flip(T)", {"T": T234}, np.flip),
    ("flip(T, 1)", {"T": T234}, lambda T: np.flip(T, 1)),
    ("flip(T, [0, 2])", {"T": T234}, lambda T: np.flip(T, (0, 2))),
    ("flipud(A)", {"A": A23}, np.flipud),
    ("fliplr(A)", {"A": A23}, np.fliplr),
    ("rot90(A)", {"A": A23}, np.rot90),
    ("rot90(T, 3, [1, 2])", {"T": T234}, lambda T: np.rot90(T, 3, (1, 2))),
    ("roll(v, 1)", {"v": v4}, lambda v: np.roll(v, 1)),
    ("roll(T, -2, 2)", {"T": T234}, lambda T: np.roll(T, -2, 2)),
    ("roll(A, 4)", {"A": A23}, lambda A: np.roll(A, 4)),
    ("repeat(v, 2)", {"v": v3}, lambda v: np.repeat(v, 2)),
    ("repeat(A, [1, 0, 2], 1)", {"A": A23}, lambda A: np.repeat(A, [1, 0, 2], 1)),
    ("tile(v, 2)", {"v": v3}, lambda v: np.tile(v, 2)),
    ("tile(A, [2, 1, 2])", {"A": A23}, lambda A: np.tile(A, (2, 1, 2))),
    ("squeeze(A)", {"A": r(1, 3, 1)}, np.squeeze),
    ("squeeze(A, 0)", {"A": r(1, 3, 1)}, lambda A: np.squeeze(A, 0)),
    ("expand_dims(A, 1)", {"A": A23}, lambda A: np.expand_dims(A, 1)),
    ("expand_dims(v, [0, 2])", {"v": v3}, lambda v: np.expand_dims(v, (0, 2))),
    ("swapaxes(T, 0, 2)", {"T": T234}, lambda T: np.swapaxes(T, 0, 2)),
    ("moveaxis(T, 0, -1)", {"T": T234}, lambda T: np.moveaxis(T, 0, -1)),
    ("moveaxis(T, [0, 1], [2, 0])", {"T": T234}, lambda T: np.moveaxis(T, [0, 1], [2, 0])),
    ("transpose(T, [1, 2, 0])", {"T": T234}, lambda T: np.transpose(T, (1, 2, 0))),
    ("transpose(T)", {"T": T234}, np.transpose),
    ("diff(v)", {"v": v4}, np.diff),
    ("diff(v, 2)", {"v": v4}, lambda v: np.diff(v, 2)),
    ("diff(T, 1, 1)", {"T": T234}, lambda T: np.diff(T, 1, 1)),
    ("sort(v)", {"v": v4}, np.sort),
    ("sort(T, 1)", {"T": T234}, lambda T: np.sort(T, 1)),
    ("sort(A, 0) * A", {"A": A23}, lambda A: np.sort(A, 0) * A),
    ("take_along_axis(A, argsort(A, 1), 1)", {"A": A23}, lambda A: np.take_along_axis(A, np.argsort(A, 1), 1)),
    ("take_along_axis(A, [[2, 0], [1, 1]], 1)", {"A": A23},
     lambda A: np.take_along_axis(A, np.array([[2, 0], [1, 1]]), 1)),
    ("v * linspace(0, 1, 3)", {"v": v3}, lambda v: v * np.linspace(0, 1, 3)),
    ("nan_to_num(log(v))", {"v": np.abs(v4) + 0.5}, lambda v: np.nan_to_num(np.log(v))),
    ("v[[2, 0, 2]]", {"v": v3}, lambda v: v[[2, 0, 2]]),
    ("T[[1, 0], :, [3, -1]]", {"T": T234}, lambda T: T[[1, 0], :, [3, -1]]),
    ("T[:, [[0, 1], [2, 2]]]", {"T": T234}, lambda T: T[:, [[0, 1], [2, 2]]]),
    ("A[1, [0, 2]]", {"A": A23}, lambda A: A[1, [0, 2]]),
    # the keyword forms (NumPy's parameter names)
    ("flip(T, axis=(0, 2))", {"T": T234}, lambda T: np.flip(T, axis=(0, 2))),
    ("moveaxis(T, source=0, destination=-1)", {"T": T234}, lambda T: np.moveaxis(T, 0, -1)),
    ("tensordot(T, U, axes=2)", {"T": T234, "U": r(3, 4, 2)}, lambda T, U: np.tensordot(T, U, axes=2)),
    ("tensordot(A, B, axes=[[1], [0]])", {"A": A23, "B": B34}, lambda A, B: np.tensordot(A, B, ([1], [0]))),
    ("tensordot(T, U, axes=((0, 2), (1, 0)))", {"T": T234, "U": r(4, 2, 5)},
     lambda T, U: np.tensordot(T, U, ((0, 2), (1, 0)))),
    ("roll(T, shift=(1, -2), axis=(0, 2))", {"T": T234}, lambda T: np.roll(T, (1, -2), (0, 2))),
    ("transpose(T, axes=(1, 2, 0))", {"T": T234}, lambda T: np.transpose(T, (1, 2, 0))),
    ("concatenate([A, B2], axis=1)", {"A": A23, "B2": r(2, 2)}, lambda A, B2: np.concatenate([A, B2], 1)),
    ("stack([v, w], axis=-1)", {"v": v3, "w": w3}, lambda v, w: np.stack([v, w], axis=-1)),
    ("trace(T, offset=1, axis1=1, axis2=2)", {"T": T234}, lambda T: np.trace(T, 1, 1, 2)),
    ("trace(A, offset=-1)", {"A": r(3, 4)}, lambda A: np.trace(A, -1)),
    ("sort(T, axis=0)", {"T": T234}, lambda T: np.sort(T, axis=0)),
    ("diagonal(T, offset=1, axis1=2, axis2=0)", {"T": r(3, 2, 4)}, lambda T: np.diagonal(T, 1, 2, 0)),
    ("repeat(A, repeats=2, axis=0)", {"A": A23}, lambda A: np.repeat(A, 2, axis=0)),
    ("expand_dims(v, axis=(0, 2))", {"v": v3}, lambda v: np.expand_dims(v, (0, 2))),
    ("reshape(T, shape=(4, -1))", {"T": T234}, lambda T: np.reshape(T, (4, -1))),
    ("tril(S, k=-1) + triu(S, k=1)", {"S": S33}, lambda S: np.tril(S, -1) + np.triu(S, 1)),
    ("rot90(A, k=2)", {"A": A23}, lambda A: np.rot90(A, 2)),
    ("diff(T, n=2, axis=2)", {"T": T234}, lambda T: np.diff(T, 2, 2)),
    ("swapaxes(T, axis1=0, axis2=1)", {"T": T234}, lambda T: np.swapaxes(T, 0, 1)),
    ("take_along_axis(A, argsort(A, axis=0), axis=0)", {"A": A23},
     lambda A: np.take_along_axis(A, np.argsort(A, 0), 0)),
    ("v * linspace(1, 2, num=3, endpoint=False)", {"v": v3}, lambda v: v * np.linspace(1, 2, 3, endpoint=False)),
]
IDS = [c[0] for c in CASES]


def _points(at: dict, n: int = 2) -> dict:
    """n points: the case's values, then shifted copies."""
    return {k: np.stack([np.asarray(v, dtype=float) + 0.37 * i for i in range(n)]) for k, v in at.items()}


@pytest.mark.parametrize("expression,at,numpy", CASES, ids=IDS)
def test_value_is_numpys(expression, at, numpy):
    """Exactly NumPy's numbers where entries only move; to rounding where products
    sum in another order (BLAS against einsum's loops)."""
    got = diffcli.compile(expression).eval(at).value
    want = numpy(*(np.asarray(v, dtype=float) for v in at.values()))
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("expression,at,numpy", CASES, ids=IDS)
def test_jacobian_matches_finite_differences(expression, at, numpy):
    assert_matches_fd(expression, at)


@pytest.mark.parametrize("expression,at,numpy", CASES, ids=IDS)
def test_a_batch_of_points_is_each_point(expression, at, numpy):
    function = diffcli.compile(expression)
    points = _points(at)
    batched = function.jacobian(points, batch_ndim=1)
    for i in range(2):
        one = function.jacobian({k: v[i] for k, v in points.items()})
        for name in function.variables:
            np.testing.assert_allclose(batched[name][i], one[name], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("expression,at,numpy", CASES, ids=IDS)
def test_shared_seeds_give_the_dense_jacobian(expression, at, numpy, monkeypatch):
    """The sparsity layer reads each operation's pattern: it must not drop an entry."""
    with_patterns = diffcli.compile(expression).jacobian(at)
    monkeypatch.setenv("DIFFCLI_SPARSITY", "0")
    dense = diffcli.compile(expression).jacobian(at)
    for name in diffcli.compile(expression).variables:
        np.testing.assert_array_equal(with_patterns[name], dense[name])


@pytest.mark.parametrize("expression,at,numpy", CASES, ids=IDS)
def test_second_derivatives_match_differences_of_the_gradient(expression, at, numpy):
    scalar = diffcli.compile(f"sum(sin({expression}))")
    hessian = scalar.hessian(at)
    gradient = {name: diffcli.compile(f"sum(sin({expression}))") for name in scalar.variables}
    for a in scalar.variables:
        for b in scalar.variables:
            def grad_a(point, a=a):
                return gradient[a].grad(point)[a]
            want = _fd(grad_a, at, b)
            np.testing.assert_allclose(hessian[a][b], want, rtol=1e-5, atol=1e-5, err_msg=f"d2/d{a}d{b}")


def _fd(f, at, name):
    at = {k: np.asarray(v, dtype=float) for k, v in at.items()}
    x = at[name]
    first = f(at)
    out = np.zeros(np.shape(first) + x.shape)
    for index in np.ndindex(*x.shape):
        h = 1e-5 * max(1.0, abs(float(x[index])))
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        out[(...,) + index] = (f({**at, name: plus}) - f({**at, name: minus})) / (2 * h)
    return out


@pytest.mark.parametrize("expression,at,numpy", CASES, ids=IDS)
def test_formulas_parse_back_to_the_same_numbers(expression, at, numpy):
    """--symbolic: the value and a vector-Jacobian product (a random cotangent) as
    text, parsed and evaluated again, bit for bit."""
    function = diffcli.compile(expression)
    shapes = {k: np.shape(v) for k, v in at.items()}
    binding = function._binding(shapes)
    graph = binding.graph
    seed = graph.const(np.round(RNG.uniform(-1, 1, binding.output.shape), 2))
    nodes = [binding.output] + autodiff.vjp(graph, binding.output, seed, binding.inputs)
    from diffcli.engine.evaluate import Plan
    values = Plan(nodes, binding.inputs).run([np.asarray(at[v.attr], dtype=float) for v in binding.inputs])
    for node, want in zip(nodes, values):
        if node.op == "const":
            continue
        text = formula(node, tuple(shapes))
        again = diffcli.compile(text).eval({k: v for k, v in at.items() if k in diffcli.compile(text).variables})
        if any(n.op == "sum_to" for n in topological_order([node])):
            # formula.py writes sum_to over two axes as sums of slices, which may
            # round differently from np.sum over both at once (not an issue-19 rule)
            np.testing.assert_allclose(again.value, want, rtol=1e-14, atol=1e-15, err_msg=text)
        else:
            np.testing.assert_array_equal(again.value, want, err_msg=text)


# ---------------------------------------------------------------- sort: the permutation, ties as PyTorch


def test_sort_derivative_is_the_permutation():
    x = np.array([3.0, -1.0, 2.0, 0.5])
    jac = diffcli.compile("sort(x)").jacobian(x=x)["x"]
    np.testing.assert_array_equal(jac, np.eye(4)[np.argsort(x)])


def test_sort_at_ties_follows_the_stable_order_and_says_so():
    """torch.sort(torch.tensor([1., 0., 1.])) sends each output's gradient to the
    index it took; a stable sort gives indices [1, 0, 2]."""
    result = diffcli.compile("sort(x) @ [1, 2, 3]").grad(x=[1.0, 0.0, 1.0])
    np.testing.assert_array_equal(result["x"], [2.0, 1.0, 3.0])
    assert [k.message for k in result.kinks] == [
        "sort of tied elements (the order among them jumps); using the order a stable sort gives them, "
        "as PyTorch does"]
    assert diffcli.compile("sort(x) @ [1, 2, 3]").grad(x=[1.0, 0.0, 2.0]).kinks == []


def test_nan_to_num_has_derivative_one_where_finite_and_zero_elsewhere():
    result = diffcli.compile("sum(nan_to_num(x * y))").grad(x=[1.0, np.inf, np.nan], y=[2.0, 1.0, 1.0])
    np.testing.assert_array_equal(result["x"], [2.0, 0.0, 0.0])


def test_a_repeated_entry_adds_its_cotangents():
    got = diffcli.compile("sum(tile(x, 3) * [1, 2, 3, 4, 5, 6])").grad(x=[0.5, 0.25])["x"]
    np.testing.assert_array_equal(got, [1 + 3 + 5, 2 + 4 + 6])


# ---------------------------------------------------------------- errors: one line, at the call


@pytest.mark.parametrize("expression,shapes,message", [
    ("A @ B", {"A": (2, 3, 4), "B": (3, 4)}, "'@' needs the inner sizes to match"),
    ("A @ B", {"A": (2, 3, 4), "B": (3, 4, 2)}, "'@' needs the batch axes to broadcast"),
    ("einsum('ij,jk->ik', A, B)", {"A": (2, 3), "B": (4, 2)}, "einsum: 'j' is 3 in one operand and 4"),
    ("einsum('ij->ik', A)", {"A": (2, 3)}, "einsum: the result's 'k' is in no operand"),
    ("einsum('ijk', A)", {"A": (2, 3)}, "einsum: operand 1 is a 2x3 matrix but its subscripts 'ijk' name 3"),
    ("einsum('ij,jk', A)", {"A": (2, 3)}, "einsum: the subscripts 'ij,jk' name 2 operands, given 1"),
    ("tensordot(A, B, 3)", {"A": (2, 3), "B": (3, 4)}, "tensordot: 3 axes to sum over"),
    ("dot(T, B)", {"T": (2, 3, 4), "B": (3, 4)}, "dot: the summed axes do not match"),
    ("dot(T, v)", {"T": (2, 3, 1), "v": (2,)}, "dot: the summed axes do not match"),
    ("repeat(v, 0)", {"v": (3,)}, "repeat would give an empty array"),
    ("tile(v, (100000, 100000))", {"v": (3,)}, "tile would make more than 134,217,728 entries"),
    ("repeat(v, 10**9)", {"v": (3,)}, "repeat would make more than"),
    ("diag(v, 10**6)", {"v": (3,)}, "diag would make more than"),
    ("reshape(A, [4, 2])", {"A": (2, 3)}, "reshape: cannot reshape array of size 6 into shape (4,2)"),
    ("moveaxis(A, 0, 5)", {"A": (2, 3)}, "moveaxis: "),
    ("concatenate([A, v])", {"A": (2, 3), "v": (3,)}, "concatenate: all the input array"),
    ("cross(a, b)", {"a": (2,), "b": (3,)}, "cross needs 3-vectors along the last axis, got a 2-vector"),
    ("v[[0, 3]]", {"v": (3,)}, "indexing: index 3 is out of bounds"),
    ("diff(v, 3)", {"v": (3,)}, "diff: order 3 needs more than 3 entries"),
    ("trace(v)", {"v": (3,)}, "trace needs a matrix or an array, got a 3-vector"),
])
def test_a_shape_error_is_one_line_at_the_call(expression, shapes, message):
    function = diffcli.compile(expression)
    with pytest.raises(ShapeError) as caught:
        function._binding(shapes)
    error = caught.value
    assert error.message.startswith(message), error.message
    assert "\n" not in error.message and error.span is not None


@pytest.mark.parametrize("expression,message", [
    ("einsum(A, B)", "einsum's first argument is its subscripts"),
    ("'ij' + A", "quoted text is only einsum's subscripts"),
    ("roll(A)", "roll needs shift (by position or as shift=...)"),
    ("flip(A, axes=0)", "flip has no keyword argument 'axes'"),
    ("roll(A, B)", "roll: keyword arguments are constants, and 'B' is not one"),
    ("take_along_axis(A, B, 0)", "take_along_axis takes constant indices or argsort"),
    ("einsum('i.j', A)", "einsum: a '.' outside '...'"),
])
def test_a_misused_argument_is_named(expression, message):
    with pytest.raises(ExpressionError) as caught:  # when parsed, or when built for shapes
        diffcli.compile(expression)._binding({"A": (3, 3), "B": (3, 3)})
    assert caught.value.message.startswith(message), caught.value.message


def test_the_cli_points_a_caret_at_the_call(tmp_path):
    import subprocess

    from .test_cli import _diffcli_command, _env

    proc = subprocess.run(_diffcli_command() + ["eval", "sum(A @ B)", "--at", "A=[[[1,2],[3,4]]]",
                                                "--at", "B=[1,2,3]"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "'@' needs the inner sizes to match" in proc.stderr
    assert "^" in proc.stderr and "Traceback" not in proc.stderr


def test_brackets_inside_quotes_are_not_brackets():
    np.testing.assert_array_equal(diffcli.compile("einsum('i,i', v, v)  # ([").eval(v=[1.0, 2.0]).value, 5.0)
    with pytest.raises(ExpressionError):
        diffcli.compile("einsum('i[,i', v, v)")._binding({"v": (2,)})


def test_numeric_jacobian_helper_is_used():  # the FD helper agrees with NumPy on a linear map
    f = diffcli.compile("flip(x)")
    np.testing.assert_allclose(numeric_jacobian(f, {"x": v3}, "x"), np.eye(3)[::-1], atol=1e-9)


# ---------------------------------------------------------------- Taylor rules (issue 18's field)


def _taylor(function, at: dict, tangents: dict, order: int) -> np.ndarray:
    from diffcli.engine.taylor import TaylorPlan, coefficients, seeded

    binding = function._binding({k: np.shape(v) for k, v in at.items()})
    plan = TaylorPlan([binding.output], binding.inputs)
    inputs = [seeded(at[v.attr], tangents[v.attr], order) for v in binding.inputs]
    return coefficients(plan.run(inputs, 0)[0], order)


@pytest.mark.parametrize("expression,at,numpy", CASES, ids=IDS)
def test_taylor_coefficients_are_the_directional_derivatives(expression, at, numpy):
    """sin(f(x + t v)) to order 3: coefficient 0 is the value bit for bit, 1 the jvp
    of the derivative graph, 2 and 3 the differences of the ones below (k! c_k is
    the k-th derivative in t)."""
    function = diffcli.compile(f"sin({expression})")
    at = {k: np.asarray(v, dtype=float) for k, v in at.items()}
    tangents = {k: np.round(RNG.uniform(-1, 1, np.shape(v)), 2) for k, v in at.items()}
    c = _taylor(function, at, tangents, 3)
    np.testing.assert_array_equal(c[0], function.eval(at).value)
    np.testing.assert_allclose(c[1], function.jvp(tangents, at).jvp, rtol=1e-12, atol=1e-12)
    h = 1e-4

    def shifted(sign):
        return _taylor(function, {k: v + sign * h * tangents[k] for k, v in at.items()}, tangents, 3)
    plus, minus = shifted(1), shifted(-1)
    for k in (2, 3):
        np.testing.assert_allclose(k * c[k], (plus[k - 1] - minus[k - 1]) / (2 * h), rtol=1e-5, atol=1e-5,
                                   err_msg=f"order {k}")


@pytest.mark.parametrize("expression,at", [
    ("sum(sin(einsum('ij,jk,k->i', A, B, v)))", {"A": A23, "B": B34[:, :2], "v": r(2)}),
    ("sum(sin(einsum('i,i,i->i', v, v, v)))", {"v": r(2)}),
    ("sum(cos(sort(A @ x)) * [1, 2])", {"A": A23, "x": v3}),
    ("sum(tanh(kron(x, x) + tile(x, 3)))", {"x": v3}),
    ("sum(sin(concatenate([x, x[[2, 0]] * x[0]])) * trace(outer(x, x)))", {"x": v3}),
    ("sum(sin(tensordot(T, U, 2)) @ [1, -1])", {"T": T234, "U": r(3, 4, 2)}),
])
def test_taylor_mode_gives_the_graph_methods_higher_derivatives(expression, at, monkeypatch):
    """derivative(3) by Taylor propagation through these rules (as diffcli grad --order 3)
    against the derivative graph differentiated three times."""
    name = list(at)[-1]
    by_taylor = diffcli.compile(expression).derivative(3, at, wrt=name)[name]
    monkeypatch.setenv("DIFFCLI_TAYLOR", "0")
    by_graph = diffcli.compile(expression).derivative(3, at, wrt=name)[name]
    np.testing.assert_allclose(by_taylor, by_graph, rtol=1e-10, atol=1e-10)
