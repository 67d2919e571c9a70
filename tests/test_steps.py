"""graph/steps.py and `diffcli steps`: the derivation step by step. Every step's
derivative is checked against central differences of the step's own
subexpression, every table entry against central differences of the operation
alone at the operands' values there; the rules named are the textbook's; large
expressions are refused with a pointer to --symbolic."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import diffcli
from diffcli.cli import cli
from diffcli.errors import UsageError
from diffcli.graph.ops import OPS, TABLE
from diffcli.graph.steps import MAX_NODES

from .helpers import numeric_jacobian

CORPUS = [
    ("sin(x)^2 * exp(x)", {"x": 0.7}),
    ("x/(1+x^2)", {"x": 0.7}),
    ("sqrt(x^2+y^2)*atan2(y,x)", {"x": 0.7, "y": 1.3}),
    ("x^x + 2^x - log(x) / x", {"x": 0.7}),
    ("sin(x^2) * cos(y) - tanh(x*y)", {"x": 0.7, "y": 1.3}),
    ("r = hypot(x, y); r * asin(x / r) + acosh(1 + r)", {"x": 0.7, "y": 1.3}),
    ("exp(-x) * sigmoid(x) + softplus(-x) + cbrt(x) + log1p(x^2)", {"x": 0.7}),
    ("sum(x^2) + x[0] * dot(x, x)", {"x": [0.5, -1.5, 2.0]}),
    ("norm(A @ x) + trace(A)", {"A": [[1.0, 2.0], [-0.5, 1.5]], "x": [0.3, 0.9]}),
    ("prod(x) + max(x) + logsumexp(x)", {"x": [0.5, -1.5, 2.0]}),
    ("[x, x^2, sin(x), cos(x) / y]", {"x": 0.7, "y": 1.3}),
]


def _value(text: str, at: dict) -> np.ndarray:
    function = diffcli.compile(text)
    return np.asarray(function.eval({k: at[k] for k in function.variables}).value)


def _fd(text: str, at: dict, wrt: str) -> np.ndarray:
    function = diffcli.compile(text)
    if wrt not in function.variables:
        return np.zeros(np.shape(_value(text, at)) + np.shape(at[wrt]))
    return numeric_jacobian(function, {k: at[k] for k in function.variables}, wrt)


@pytest.mark.parametrize("expression,at", CORPUS, ids=[c[0] for c in CORPUS])
def test_every_step_is_the_derivative_of_its_subexpression(expression, at):
    shapes = {k: np.shape(v) for k, v in at.items()}
    for derivation in diffcli.compile(expression).steps(shapes):
        for step in derivation.steps:
            expected = _fd(step.expression, at, derivation.wrt)
            got = np.broadcast_to(_value(step.derivative, at), expected.shape)
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6,
                                       err_msg=f"d/d{derivation.wrt} [{step.expression}] = {step.derivative}")
        assert derivation.answer == derivation.steps[-1].derivative
        assert derivation.expression == derivation.steps[-1].expression


def test_every_table_entry_is_the_derivative_of_its_function():
    """'d/du atan2(u, v) = v / (v ^ 2 + u ^ 2)', checked where the rule is used:
    at the values its operands have at the point (the scalar corpus)."""
    checked = 0
    for derivation, at in ((d, at) for expression, at in CORPUS[:7] for d in diffcli.compile(expression).steps()):
        steps = {step.id: step for step in derivation.steps}
        for step in derivation.steps:
            operands = {letter: float(_value(steps[i].expression, at)) for letter, i in step.operands}
            for label, entry in step.entries:
                letter, function_text = label[len("d/d"):].split(" ", 1)
                expected = _fd(function_text, operands, letter)
                assert float(_value(entry, operands)) == pytest.approx(float(expected), rel=1e-6, abs=1e-6), label
                checked += 1
    assert checked >= 20


def test_the_rules_are_the_textbook_rules():
    (derivation,) = diffcli.compile("sin(x)^2 * exp(x) + x^x / 2^x - sin(x^2)").steps()
    rules = {step.expression: step.rule for step in derivation.steps}
    assert rules["sin(x) ^ 2 * exp(x)"].startswith("product rule: (u v)' = u' v + u v'")
    assert rules["sin(x) ^ 2"].startswith("power rule")
    assert rules["x ^ x"].startswith("general power rule")
    assert rules["2 ^ x"].startswith("exponential rule")
    assert rules["x ^ x / 2 ^ x"].startswith("quotient rule")
    assert rules["sin(x)"] == "the table entry"
    assert rules["sin(x ^ 2)"].startswith("chain rule with the table entry")
    assert rules["2"].startswith("a constant")
    assert rules["x"].startswith("the variable itself")
    sin = next(step for step in derivation.steps if step.expression == "sin(x)")
    assert sin.entries == [("d/du sin(u)", "cos(u)")]
    (literal,) = diffcli.compile("[x, x^2, sin(x), cos(x)]").steps()
    assert [letter for letter, _ in literal.steps[-1].operands] == ["u1", "u2", "u3", "u4"]
    (two,) = diffcli.compile("atan2(y, x) * y").steps(wrt=["x"])
    rules = {step.expression: step.rule for step in two.steps}
    assert rules["y"].startswith("another variable, constant in x")
    assert rules["atan2(y, x)"] == "chain rule with the table's entries: f' = df/du u' + df/dv v'"


def test_every_operation_names_its_rule():
    """The rule is a fact of each record in the op table: a name and template,
    a function of the node (pow), or TABLE (found from its vjp)."""
    for name, op in OPS.items():
        assert op.rule is TABLE or callable(op.rule) or (isinstance(op.rule, str) and ": " in op.rule), name


def test_large_expressions_are_refused_with_a_pointer_to_symbolic():
    big = " + ".join(f"sin({i} * x)" for i in range(MAX_NODES))
    with pytest.raises(UsageError, match=r"too large to show steps \(\d+ nodes; at most 60\); use --symbolic"):
        diffcli.compile(big).steps()
    result = CliRunner().invoke(cli, ["steps", big])
    assert result.exit_code == 2 and result.stdout == ""
    assert "too large to show steps" in result.stderr and "use --symbolic" in result.stderr


TREE = """\
d/dx [x ^ 2 + sin(x)]   sum rule: (u + v)' = u' + v'
  u = x ^ 2, v = sin(x)
  = cos(x) + 2 * x
├── d/dx [x ^ 2]   power rule: (u^n)' = n u^(n-1) u'
│     u = x, v = 2
│     = 2 * x
│   ├── d/dx [x] = 1   the variable itself: dx/dx = 1
│   └── d/dx [2] = 0   a constant: its derivative is 0
└── d/dx [sin(x)]   the table entry
      u = x
      table: d/du sin(u) = cos(u)
      = cos(x)
    └── d/dx [x]: as above
answer: d/dx [x ^ 2 + sin(x)] = cos(x) + 2 * x
"""


def test_the_command_draws_a_tree_on_a_terminal_and_writes_json_in_a_pipe():
    tree = CliRunner().invoke(cli, ["steps", "x^2 + sin(x)", "--format", "table", "--color", "never"])
    assert tree.exit_code == 0 and tree.stdout == TREE
    piped = CliRunner().invoke(cli, ["steps", "x*y + sin(y)", "--wrt", "y"])
    document = json.loads(piped.stdout)
    (derivation,) = document["derivations"]
    assert derivation["wrt"] == "y" and derivation["answer"] == "cos(y) + x"
    last = derivation["steps"][-1]
    assert last["rule"].startswith("sum rule") and set(last["operands"]) == {"u", "v"}
    assert {s["id"] for s in derivation["steps"]} >= set(last["operands"].values())
    bad = CliRunner().invoke(cli, ["steps", "sin(x", "--json"])
    assert bad.exit_code == 2 and bad.stdout == "" and "error:" in bad.stderr
