"""graph.py: interning, the simplifier's rewrites (each exact to the last bit, the
sign of a zero included, against the same operations built without rewrites and
run through the op table's NumPy kernels), and the iterative walks at depth 100,000."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import diffcli
from diffcli.graph.nodes import Graph, topological_order
from diffcli.graph.ops import OPS
from diffcli.language.parse import parse

from .test_cli import run_json

# Every kind of double a rewrite could get wrong: both zeros, both infinities, nan,
# subnormals, the largest finite, numbers whose doubling overflows, and ordinary ones.
SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 2.2250738585072014e-308,
                    1.7976931348623157e308, -1e308, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-300, -7e200])


def reference_values(outputs, values: dict) -> list[np.ndarray]:
    """Each output as the op table's NumPy kernels compute it, node by node in
    topological order (a loop, not a recursion): no plan, no rewrites of its own."""
    computed: dict[int, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for node in topological_order(outputs):
            if node.op == "const":
                value = node.value
            elif node.op == "var":
                value = np.asarray(values[node.attr], dtype=np.float64)
            else:
                value = OPS[node.op].kernel(node)(*(computed[a.id] for a in node.args))
            computed[node.id] = np.asarray(value, dtype=np.float64)
    return [computed[node.id] for node in outputs]


def unsimplified(text: str, values: dict, batch_ndim: int = 0) -> np.ndarray:
    """text evaluated as written: parsed into a graph that neither rewrites nor
    folds, every operation run through its kernel (values may lead with batch axes)."""
    program = parse(text)
    shapes = {name: np.shape(values[name])[batch_ndim:] for name in program.variables}
    out = program.build(Graph(rewrite=False), shapes)
    return reference_values([out], values)[0]


def assert_same_bits(got, want, context=""):
    """Equal bit for bit, the sign of a zero included; any nan matches any nan."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, context
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{context}: {got} vs {want}"
    assert np.array_equal(got[~nan].view(np.uint64), want[~nan].view(np.uint64)), f"{context}: {got} vs {want}"


def ops_of(text: str, shapes: dict) -> list[str]:
    graph = Graph()
    out = parse(text).build(graph, shapes)
    return [n.op for n in topological_order([out]) if n.op not in ("var", "const")]


# ---------------------------------------------------------------- interning


def test_equal_subexpressions_are_one_node():
    graph = Graph()
    x = graph.var("x", ())
    first = graph.apply("sin", (x,))
    assert graph.apply("sin", (x,)) is first
    assert graph.apply("add", (first, 1.0)) is graph.apply("add", (first, 1.0))
    assert graph.var("x", ()) is x
    out = parse("sin(x) * exp(sin(x))").build(graph, {"x": ()})
    assert [n.op for n in topological_order([out])].count("sin") == 1


def test_constants_are_interned_by_value_and_sign_of_zero():
    graph = Graph()
    assert graph.const(2.0) is graph.const(2) is graph.const(np.float64(2.0))
    assert graph.const(0.0) is not graph.const(-0.0)
    assert math.copysign(1.0, graph.const(-0.0).scalar) == -1.0
    assert graph.const(math.nan) is graph.const(float("nan"))
    assert graph.const([1.0, 2.0]) is graph.const(np.array([1.0, 2.0]))
    assert graph.const([0.0, 0.0]) is not graph.const([0.0, -0.0])
    assert graph.const([1.0, 2.0]) is not graph.const([[1.0, 2.0]])


def test_a_variable_keeps_its_shape():
    graph = Graph()
    graph.var("x", (3,))
    with pytest.raises(ValueError, match="already has shape"):
        graph.var("x", (2,))


def test_uniform_means_every_entry_bit_for_bit():
    """[2, 2] may stand for 2; [0, -0] may not stand for 0 (nor for -0)."""
    graph = Graph()
    assert graph.const([2.0, 2.0]).uniform == 2.0
    assert graph.const([0.0, -0.0]).uniform is None
    assert math.copysign(1.0, graph.const([-0.0, -0.0]).uniform) == -1.0
    assert graph.const([math.nan, math.nan]).uniform is None


# ---------------------------------------------------------------- rewrites, exact


# (expression, the operations left after simplifying, x's values). Each rewrite the
# simplifier makes outside derivative graphs, and the look-alikes it must not make.
REWRITTEN = [
    ("x * 1", []), ("1 * x", []), ("x * -1", ["neg"]), ("-1 * x", ["neg"]), ("x / 1", []), ("x ^ 1", []),
    ("pow(x, 1)", []), ("--x", []), ("-(x * 3)", ["mul"]), ("-(3 * x)", ["mul"]), ("(-x) * 3", ["mul"]),
    ("3 * -x", ["mul"]), ("(-x) * 0", ["mul"]), ("-(x * 0)", ["mul"]), ("x + x", ["mul"]),
    ("x + -0", []), ("-0 + x", []), ("x - 0", []), ("-0 - x", ["neg"]), ("max(x)", []), ("min(x)", []),
    ("transpose(x)", []), ("x * (1 + 0)", []), ("x - (2 - 2)", []),
]
NOT_REWRITTEN = [
    ("x + 0", ["add"]), ("0 + x", ["add"]), ("0 - x", ["sub"]), ("x - -0", ["sub"]), ("x * 0", ["mul"]),
    ("0 * x", ["mul"]), ("x * -0", ["mul"]), ("x - x", ["sub"]), ("x / x", ["div"]), ("x * x", ["mul"]),
    ("sum(x)", ["sum"]), ("logsumexp(x)", ["logsumexp"]), ("mean(x)", ["sum"]), ("x ^ 0", ["pow"]),
    ("0 ^ x", ["pow"]), ("x + (2 - 2)", ["add"]),
]


@pytest.mark.parametrize("expression,left", REWRITTEN + NOT_REWRITTEN, ids=[c[0] for c in REWRITTEN + NOT_REWRITTEN])
def test_scalar_rewrites_are_exact_for_every_kind_of_double(expression, left):
    assert sorted(ops_of(expression, {"x": ()})) == sorted(left)
    for x in SPECIAL:
        got = diffcli.compile(expression).eval(x=x).value
        assert_same_bits(got, unsimplified(expression, {"x": x}), f"{expression} at x = {x!r}")


@pytest.mark.parametrize("expression,left", [
    ("v * [1, 1, 1]", []), ("[2, 2, 2] * v", ["mul"]), ("v + [-0, -0, -0]", []),
    ("v + [0, 0, 0]", ["add"]), ("v + [0, -0, 0]", ["add"]), ("[0, -0, 0] - v", ["sub"]),
    ("[-0, -0, -0] - v", ["neg"]), ("v * [1, 1, 1] + [0, -0, 0]", ["add"]),
])
def test_uniform_constants_stand_for_their_number_only_when_exact(expression, left):
    assert sorted(ops_of(expression, {"v": (3,)})) == sorted(left)
    rng = np.random.default_rng(4)
    for _ in range(40):
        v = rng.choice(SPECIAL, 3)
        assert_same_bits(diffcli.compile(expression).eval(v=v).value, unsimplified(expression, {"v": v}),
                         f"{expression} at v = {v!r}")


@pytest.mark.parametrize("expression,at,want", [
    ("atan2(0 - x, -1)", {"x": 0.0}, math.pi),          # 0 - 0 = +0, where -x = -0 gave -pi
    ("1 / (0 - x)", {"x": 0.0}, math.inf),              # gave -inf
    ("atan2(x + 0, -1)", {"x": -0.0}, math.pi),         # -0 + 0 = +0, where x = -0 gave -pi
    ("atan2(x - -0, -1)", {"x": -0.0}, math.pi),
    ("atan2(x + -0, -1)", {"x": -0.0}, -math.pi),       # -0 + -0 = -0: the rewrite x + -0 -> x is exact
    ("atan2(-0 - x, -1)", {"x": 0.0}, -math.pi),
    ("atan2(sum(x), -1)", {"x": -0.0}, math.pi),        # NumPy's sum(-0) is +0
    ("atan2(max(x), -1)", {"x": -0.0}, -math.pi),
    ("1 / (x * 1)", {"x": -0.0}, -math.inf),
])
def test_the_sign_of_zero_is_numpys(expression, at, want):
    got = diffcli.compile(expression).eval(at).value
    assert_same_bits(got, want, expression)
    assert_same_bits(unsimplified(expression, at), want, expression)


def test_the_cli_prints_numpys_value_for_signed_zeros():
    assert run_json("eval", "atan2(0 - x, -1)", "--at", "x=0")["value"] == math.pi
    assert run_json("eval", "atan2(x + 0, -1)", "--at", "x=-0.0")["value"] == math.pi


def test_every_rewrite_in_the_table_is_exercised_by_a_case_above():
    """A new entry in the simplifier's table without an exactness case fails here
    (reshape, broadcast_to, sum_to are made by indexing and derivative rules; the
    derivative-only rewrites are checked in tests/test_parse.py)."""
    rewritten = {name for name, op in OPS.items() if op.rewrite is not None}

    written = {"add", "sub", "mul", "div", "pow", "neg", "max", "min", "transpose"}
    structural = {"reshape", "broadcast_to", "sum_to", "cumsum", "cumprod"}
    assert rewritten == written | structural


def test_structural_rewrites_keep_every_bit():
    """reshape of reshape, reshape and broadcast_to to the same shape: the numbers
    are moved, never changed, as their kernels move them. sum_to its own shape and
    cumsum or cumprod of one number become that number (sum_to's kernel would add +0:
    only derivative rules make it; cumsum and cumprod start from the first element)."""
    values = np.array([[-0.0, 0.0, np.nan], [np.inf, -5e-324, 1.5]])

    def build(graph):
        a, s = graph.var("a", (2, 3)), graph.var("s", ())
        return a, s, [graph.reshape(graph.reshape(a, (3, 2)), (6,)), graph.reshape(a, (2, 3)),
                      graph.apply("broadcast_to", (a,), (2, 3)), graph.apply("sum_to", (a,), (2, 3)),
                      graph.apply("cumsum", (s,), False), graph.apply("cumprod", (s,), True)]

    a, s, outs = build(Graph())
    assert outs[0].op == "reshape" and outs[0].args[0] is a
    assert outs[1:] == [a, a, a, s, s]
    _, _, plain = build(Graph(rewrite=False))
    assert [n.op for n in plain] == ["reshape", "reshape", "broadcast_to", "sum_to", "cumsum", "cumprod"]
    for out in reference_values(plain[:3], {"a": values}):
        assert_same_bits(out.ravel(), values.ravel())


# ---------------------------------------------------------------- iterative walks


DEPTH = 100_000


def test_topological_order_of_a_chain_100000_deep():
    """Built and walked without recursion (the limit is lowered to prove it): each
    node after its arguments, each once."""
    graph = Graph()
    x = graph.var("x", ())
    node = x
    for i in range(DEPTH):
        node = graph.apply("sin" if i % 2 else "cos", (node,))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        order = topological_order([node])
    finally:
        sys.setrecursionlimit(limit)
    assert len(order) == DEPTH + 1 and order[0] is x and order[-1] is node
    position = {n.id: i for i, n in enumerate(order)}
    assert all(position[a.id] < position[n.id] for n in order for a in n.args)


def test_topological_order_of_a_shared_ladder_visits_each_node_once():
    """Each level uses the one below twice (a + a*c): 2^100000 paths, 100,000 levels."""
    graph = Graph()
    node = graph.var("x", ())
    for _ in range(DEPTH // 2):
        node = graph.apply("add", (node, graph.apply("mul", (node, 0.5))))
    order = topological_order([node, node])
    assert len(order) == len({n.id for n in order}) == DEPTH + 2  # x, the constant, two per level


def test_rewrites_and_the_reference_evaluator_at_depth_100000():
    """((x + 0) * 1)... 100,000 deep, built without the parser (tests/test_parse.py
    parses that deep): every add stays (x + 0 is not x), every * 1 goes, and the plan
    and the test's own iterative reference both give x + 0."""
    from diffcli.engine.evaluate import Plan

    def build(graph):
        x = graph.var("x", ())
        node = x
        for i in range(DEPTH):
            node = graph.apply("add", (node, 0.0)) if i % 2 == 0 else graph.apply("mul", (node, 1.0))
        return x, node

    x, out = build(Graph())
    ops = [n.op for n in topological_order([out])]
    assert ops.count("add") == DEPTH // 2 and "mul" not in ops
    _, plain = build(Graph(rewrite=False))
    values = np.array([-0.0, 2.5])  # a batch of two points
    want = values + 0.0
    assert_same_bits(Plan([out], [x]).run([values])[0], want)
    assert_same_bits(reference_values([plain], {"x": values})[0], want)
