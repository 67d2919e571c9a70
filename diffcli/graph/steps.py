"""The derivation a student would write: at each node of the user's expression,
the rule of calculus that applies (named by the operation's record in ops.py:
sum, product, quotient, power, ... or the table entry of a function, found by
differentiating the operation alone), the operands it applies to, and the
derivative of that subexpression; the last step's derivative is the answer.

Nodes are visited in topological order (never recursively); a node shared by
several others is one step, referred to by its id. Expressions of more than
MAX_NODES nodes are refused: their derivations are no longer read.
"""

from __future__ import annotations

from collections import namedtuple

from ..errors import UsageError
from . import autodiff
from .formula import formula
from .nodes import Graph, Node, topological_order
from .ops import OPS, TABLE

MAX_NODES = 60


def operand_names(n: int) -> tuple[str, ...]:
    """u, v, w as the rules write them; u1, u2, ... for a literal of more items."""
    return ("u", "v", "w")[:n] if n <= 3 else tuple(f"u{i}" for i in range(1, n + 1))

# id: the node's id; expression: its text; rule: the rule's name and template;
# operands: (letter, id of its step) the rule's u, v, w stand for; entries: for a
# table rule, the table's partial derivatives (d/du f(u, v) = ...); derivative:
# d(expression)/d(wrt); constant: it does not depend on wrt (no rule applied).
Step = namedtuple("Step", "id expression rule operands entries derivative constant")
Derivation = namedtuple("Derivation", "expression wrt steps answer")


def derive(graph: Graph, output: Node, wrt: Node, variables: tuple[str, ...]) -> Derivation:
    """The steps of d(output)/d(wrt), children before the nodes that use them."""
    order = topological_order([output])
    if len(order) > MAX_NODES:
        raise UsageError(f"too large to show steps ({len(order)} nodes; at most {MAX_NODES}); use --symbolic")
    depends = autodiff.depends_on(order, {wrt.id})
    steps = []
    for node in order:
        if node.id not in depends:
            steps.append(Step(node.id, formula(node, variables), _constant_rule(node, wrt), [], [], "0", True))
            continue
        derivative = formula(autodiff.jacobian_node(graph, node, wrt), variables)
        if node is wrt:
            steps.append(Step(node.id, node.attr, f"the variable itself: d{node.attr}/d{node.attr} = 1", [], [],
                              derivative, False))
            continue
        operands = list(zip(operand_names(len(node.args)), (arg.id for arg in node.args)))
        rule, entries = _rule(node)
        steps.append(Step(node.id, formula(node, variables), rule, operands, entries, derivative, False))
    return Derivation(steps[-1].expression, wrt.attr, steps, steps[-1].derivative)


def _constant_rule(node: Node, wrt: Node) -> str:
    if node.op == "const":
        return "a constant: its derivative is 0"
    if node.op == "var":
        return f"another variable, constant in {wrt.attr}: its derivative is 0"
    return f"does not depend on {wrt.attr}: its derivative is 0"


def _rule(node: Node) -> tuple[str, list[tuple[str, str]]]:
    """The rule's text, and for a table rule the table's entries."""
    rule = OPS[node.op].rule
    if rule is not TABLE:
        return (rule(node) if callable(rule) else rule), []
    entries = table_entries(node)
    if len(entries) > 1:
        terms = " + ".join(f"df/d{letter} {letter}'" for letter, _, _ in entries)
        return f"chain rule with the table's entries: f' = {terms}", [e[1:] for e in entries]
    if node.args[0].op == "var":
        return "the table entry", [e[1:] for e in entries]
    return "chain rule with the table entry: f(u)' = f'(u) u'", [e[1:] for e in entries]


def table_entries(node: Node) -> list[tuple[str, str, str]]:
    """(letter, 'd/du op(u, v)', its formula) for each operand that is not a
    constant: the operation differentiated alone, on scalars for an elementwise
    one (entry by entry), else on operands of its shapes."""
    op = OPS[node.op]
    graph = Graph()
    letters = operand_names(len(node.args))
    shapes = [() if op.elementwise else arg.shape for arg in node.args]
    operands = [graph.var(letter, shape) for letter, shape in zip(letters, shapes)]
    result = graph.apply(node.op, operands, node.attr)
    entries = []
    for letter, operand, arg in zip(letters, operands, node.args):
        if arg.op == "const":
            continue  # a constant operand has no derivative to carry
        entry = autodiff.jacobian_node(graph, result, operand)
        entries.append((letter, f"d/d{letter} {formula(result, letters)}", formula(entry, letters)))
    return entries
