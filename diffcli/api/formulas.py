"""Derivative formulas in each output form, per block and as a labelled matrix.

A block is what one JSON key holds: the gradient for one variable, the Hessian
block for one pair, the order-N tensor. Its formula is written whole, in the
diffcli language (round-trips through eval), LaTeX or a NumPy function. The
labelled matrix (formula_table) splits each block into its entries, one line
each (d2/dxdy, dvalue[0]/dx[1]), sharing the named subexpressions of all of
them: the terminal view of a Hessian or a Jacobian.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from ..errors import UsageError
from ..graph.ops import OPS

FORMS = ("diffcli", "latex", "numpy")
MAX_ENTRIES = 64  # a block with more entries is shown whole in the labelled matrix

# key: the JSON path ("x",) or ("x", "y"); node: the derivative; parts: (name, shape)
# of each group of its axes, the output's first (name None) where it has its own.
Block = namedtuple("Block", "key node parts")
FormulaTable = namedtuple("FormulaTable", "lets entries")  # [(name, text)], [(label, text)]


def check_form(form: str) -> str:
    if form not in FORMS:
        raise UsageError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
    return form


def blocks(nodes: dict, kind: str, output_shape: tuple, shapes: dict, order: int) -> list[Block]:
    """The derivative nodes of formula_nodes, each with the axis groups of its shape."""
    out = [(None, output_shape)] if output_shape else []
    if kind == "hessian":
        return [Block((a, b), node, [(a, shapes[a]), (b, shapes[b])])
                for a, row in nodes.items() for b, node in row.items()]
    if kind == "derivative":
        ((name, node),) = nodes.items()
        return [Block((name,), node, out + [(name, shapes[name])] * order)]
    return [Block((name,), node, out + [(name, shapes[name])]) for name, node in nodes.items()]


def block_texts(found: list[Block], form: str, variables: tuple[str, ...]) -> list[str]:
    """Each block's whole formula, self-contained, in the form asked for."""
    if form == "latex":
        from ..graph.latex import latex
        return [latex(b.node, variables) for b in found]
    if form == "numpy":
        from ..graph.numpy_code import function_source, module_source
        return [module_source([function_source(b.node, python_name(b), variables)]) for b in found]
    from ..graph.formula import formula
    return [formula(b.node, variables) for b in found]


def numpy_module(found: list[Block], variables: tuple[str, ...]) -> str:
    """One Python module holding a NumPy function per block (helpers once)."""
    from ..graph.numpy_code import function_source, module_source
    return module_source([function_source(b.node, python_name(b), variables) for b in found])


def table(found: list[Block], form: str, variables: tuple[str, ...]) -> FormulaTable:
    """One labelled line per entry (per block where a block has more than
    MAX_ENTRIES), with the subexpressions they share named once, first."""
    labels, roots = [], []
    for block in found:
        shape = block.node.shape
        if not shape or int(np.prod(shape)) > MAX_ENTRIES:
            labels.append(label(block, None, form))
            roots.append(block.node)
            continue
        for index in np.ndindex(*shape):
            labels.append(label(block, index, form))
            roots.append(_entry(block.node, tuple(int(i) for i in index)))
    if form == "latex":
        from ..graph.latex import latex_parts
        lets, texts = latex_parts(roots, variables, leaf=_short)
    else:
        from ..graph.formula import formula_parts
        lets, texts = formula_parts(roots, variables, leaf=_short)
    return FormulaTable(lets, list(zip(labels, texts)))


def _short(node) -> bool:
    """Written where used, however often: a variable, a number, an entry of a variable (x[0])."""
    if node.op == "index" and node.args[0].op == "var":
        return all(isinstance(i, int) for i in node.attr)
    return node.op == "var" or (node.op == "const" and node.size == 1)


def _entry(node, index: tuple):
    """The node of one entry, index pushed down through literals, broadcasts,
    reshapes of one number, sums to one number and elementwise operations (an
    entry of a*b is a's entry times b's: the same numbers), so a row reads as its
    own formula (6 * x[0], not t1[0]); elsewhere node[index]. Iterative:
    derivative graphs are deep."""
    done: dict[tuple, object] = {}
    stack = [(node, index)]
    while stack:
        current, at = stack[-1]
        if (current.id, at) in done:
            stack.pop()
            continue
        found = _entry_parts(current, at)
        if found is None:
            stack.pop()
            done[(current.id, at)] = _stop(current, at)
            continue
        parts, combine = found
        waiting = [(arg, i) for arg, i in parts if (arg.id, i) not in done]
        if waiting:
            stack.extend(waiting)
            continue
        stack.pop()
        done[(current.id, at)] = combine([done[(arg.id, i)] for arg, i in parts])
    return done[(node.id, index)]


def _stop(node, index: tuple):
    if not index:
        return node
    if node.op == "const":
        return node.graph.const(node.value[index])
    return node.graph.apply("index", (node,), index)


def _entry_parts(node, index: tuple):
    """([(operand, its index)], how their entries make this one), or None."""
    def same(entries):
        return entries[0]

    source = node.args[0].shape if node.args else ()
    if node.op == "reshape" and source and node.args[0].size == 1:  # one number, however shaped
        return [(node.args[0], (0,) * len(source))], same
    if node.op == "sum_to" and node.size == 1:  # the sum of all of it
        return [(node.args[0], ())], lambda entries: node.graph.apply("sum", entries)
    if not index or node.op in ("var", "const"):
        return None
    if node.op == "stack":
        return [(node.args[index[0]], index[1:])], same
    if node.op == "broadcast_to":
        return [(node.args[0], _broadcast_index(index, source))], same
    if node.op in OPS and OPS[node.op].elementwise:
        return ([(arg, _broadcast_index(index, arg.shape)) for arg in node.args],
                lambda entries: node.graph.apply(node.op, entries, node.attr))
    lifted = len(node.shape) - len(source)
    if node.op == "reshape" and lifted >= 0 and node.shape[lifted:] == source:  # leading ones
        return [(node.args[0], index[lifted:])], same
    return None


def _broadcast_index(index: tuple, shape: tuple) -> tuple:
    """The entry of an operand of this shape that broadcasting reads for index."""
    aligned = index[len(index) - len(shape):] if shape else ()
    return tuple(i if n != 1 else 0 for i, n in zip(aligned, shape))


def python_name(block: Block) -> str:
    """d_dx, d2_dxdy, d3_dx3: a block's NumPy function name."""
    names = [name for name, _ in block.parts if name is not None]
    if len(block.key) == 2:
        return f"d2_d{names[0]}d{names[1]}"
    if len(names) == 1:
        return f"d_d{names[0]}"
    return f"d{len(names)}_d{names[0]}{len(names)}"


def label(block: Block, index: tuple | None, form: str) -> str:
    """d/dx, d2/dx[0]dy[1], dvalue[0]/dx (or their LaTeX \\frac{\\partial ...}) for
    a block, or one entry of it."""
    groups, start = [], 0
    for name, shape in block.parts:
        groups.append((name, None if index is None else index[start:start + len(shape)]))
        start += len(shape)
    output = groups[0][1] if groups[0][0] is None else None
    wrt = [g for g in groups if g[0] is not None]
    if form == "latex":
        return _latex_label(output, wrt)
    n = len(wrt)
    head = "d" if n == 1 else f"d{n}"
    top = f"value{_brackets(output)}" if output else ""
    if index is None and n > 1 and len(block.key) == 1:
        return f"{head}{top}/d{wrt[0][0]}{n}"  # d3/dx3
    return f"{head}{top}/" + "".join(f"d{name}{_brackets(i)}" for name, i in wrt)


def _brackets(index) -> str:
    return f"[{','.join(map(str, index))}]" if index else ""


def _latex_label(output, wrt) -> str:
    from ..graph.latex import spell_name
    n = len(wrt)
    top = r"\partial" + (f"^{{{n}}}" if n > 1 else "") + " f" + (f"_{{{','.join(map(str, output))}}}" if output else "")
    parts: list[list] = []  # runs of the same entry, written \partial x^{2}
    for name, i in wrt:
        text = spell_name(name)
        if i:
            text = (f"{{{text}}}" if "_" in text else text) + f"_{{{','.join(map(str, i))}}}"
        if parts and parts[-1][0] == text:
            parts[-1][1] += 1
        else:
            parts.append([text, 1])
    bottom = r" ".join(r"\partial " + (t if k == 1 else f"{t}^{{{k}}}") for t, k in parts)
    return rf"\frac{{{top}}}{{{bottom}}}"
