"""Graph -> text in diffcli's own language, so a derivative can be printed as a
formula and fed back to `diffcli eval`.

Walks the graph in topological order (never recursively). A node used more
than once is printed once, as a let-binding (`t1 = ...; ... t1 ...`), and so is
any very long subexpression, which keeps the text linear in the graph's size.
Internal structural operations (rank lifts, broadcasts, scatters from the
derivative of indexing) are written with the language's literals and
indexing, which give the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError
from .nodes import Node, topological_order
from .ops import ADD, ATOM, CALL, COMPARE, MUL, OPS, POSTFIX, POWER, UNARY, Call, Infix, einsum_text

# How each operation is written is its record's notation (ops.py): an infix
# operator, a call by its name, or one of the rules of _render's own below.
MAX_LITERAL = 4096  # entries a structural operation may expand into
LONG = 400  # characters after which a subexpression gets a name of its own


def formula(root: Node, reserved: tuple[str, ...] = ()) -> str:
    """The text of root's value, as 'let; let; result'."""
    lets, (text,) = walk([root], _renderer([root]), reserved)
    return "; ".join([f"{name} = {value}" for name, value in lets] + [text])


def formula_parts(roots: list[Node], reserved: tuple[str, ...] = (),
                  leaf=None) -> tuple[list[tuple[str, str]], list[str]]:
    """Several formulas sharing their let-bindings: ([(name, text)], [text per root])."""
    return walk(roots, _renderer(roots), reserved, leaf)


def _renderer(roots: list[Node]):
    """_render, writing as nothing the rank lifts that only broadcasting operations
    read (where the language's broadcasting lifts ranks the same way)."""
    drop = lifts_to_drop(roots)
    return lambda node, args: _render(node, args, node.id in drop)


def lifts_to_drop(roots: list[Node]) -> set[int]:
    """Ids of the nodes read only by operations that broadcast."""
    broadcast_reads: set[int] = set()
    ranked_reads: set[int] = set()
    for node in topological_order(roots):
        for a in node.args:
            (broadcast_reads if _broadcasts(node) else ranked_reads).add(a.id)
    return broadcast_reads - ranked_reads


def walk(roots: list[Node], render, reserved: tuple[str, ...] = (), leaf=None,
         long: int = LONG, spell=str) -> tuple[list[tuple[str, str]], list[str]]:
    """The one walk every printer shares (latex.py, numpy_code.py write other forms
    with it): nodes in topological order (never recursively), each written by
    render(node, [(text, level) of its operands]) -> (text, level). A node used
    more than once, or whose text is longer than long, is named once: returns the
    (name, text) let-bindings in order and each root's text (several roots share
    their lets). leaf(node): written where used even when shared (default:
    variables and scalar constants); spell(name): how a name is written (t_{1})."""
    leaf = leaf or _is_leaf
    order = topological_order(roots)
    uses: dict[int, int] = {}
    for root in roots:  # a root is one use, however many entries it is (a symmetric Hessian's)
        uses[root.id] = 1
    for node in order:
        for a in node.args:
            # A scan's operands are spelled out once per entry: name them instead.
            uses[a.id] = uses.get(a.id, 0) + (2 if node.op == "linscan" else 1)
    root_ids = {root.id for root in roots}
    names = _fresh_names(reserved)
    texts: dict[int, tuple[str, int]] = {}
    lets: list[tuple[str, str]] = []
    for node in order:
        text, level = render(node, [texts[a.id] for a in node.args])
        shared = _worth_naming(text, uses.get(node.id, 0))
        if (shared or (len(text) > long and node.id not in root_ids)) and not leaf(node):
            name = spell(next(names))
            lets.append((name, text))
            text, level = name, ATOM
        texts[node.id] = (text, level)
    return lets, [texts[root.id][0] for root in roots]


def _worth_naming(text: str, uses: int) -> bool:
    """A subexpression used more than once gets a name where writing it each time
    would be longer than 't1 = ...; ' and the name each time (x ^ 2 twice is not)."""
    return uses > 1 and uses * len(text) > len(text) + 7 + 2 * uses


def renderer(name, constant, own: dict, infix, call):
    """A printer's render(node, args) for walk(): a variable by name(its name), a
    constant by constant(value), an operation with a rule of the printer's own
    by own[op](node, args), an infix operator by infix(node, notation, args),
    any other by call(node, args) (latex.py and numpy_code.py differ only there)."""
    def render(node: Node, args: list[tuple[str, int]]) -> tuple[str, int]:
        op = node.op
        if op == "var":
            return name(node.attr), ATOM
        if op == "const":
            return constant(node.value)
        rule = own.get(op)
        if rule is not None:
            return rule(node, args)
        notation = OPS[op].notation
        if type(notation) is Infix:
            return infix(node, notation, args)
        return call(node, args)
    return render


def _fresh_names(reserved):
    taken = set(reserved)
    i = 0
    while True:
        i += 1
        if f"t{i}" not in taken:
            yield f"t{i}"


def _broadcasts(node: Node) -> bool:
    """Its operands are lined up by the language's own broadcasting, which lifts a
    lower rank with leading axes of size 1, as a lift (reshape) in the graph does."""
    return OPS[node.op].broadcasting or node.op == "broadcast_to"


def _is_leaf(node: Node) -> bool:
    return node.op == "var" or (node.op == "const" and node.size == 1)


def _wrap(part: tuple[str, int], minimum: int) -> str:
    text, level = part
    return text if level >= minimum else f"({text})"


def _render(node: Node, args: list[tuple[str, int]], drop_lift: bool = False) -> tuple[str, int]:
    """node's text from its operands' texts. drop_lift: node is read only where
    broadcasting lifts ranks anyway, so a rank lift may be written as nothing."""
    op = node.op
    if op == "var":
        return node.attr, ATOM
    if op == "const":
        return _constant(node.value)
    if op == "pow":  # right-associative, and binds tighter than unary minus on its left
        a, b = args
        return f"{_wrap(a, POSTFIX)} ^ {_wrap(b, UNARY)}", POWER
    notation = OPS[op].notation
    if type(notation) is Infix:
        symbol, level = notation.symbol, notation.precedence
        a, b = (_scalar_if_uniform(node, arg, part) for arg, part in zip(node.args, args))
        if op == "add" and node.args[1].op == "neg" and b[1] == UNARY:  # x + (-y) is exactly x - y
            return f"{_wrap(a, ADD)} - {b[0][1:]}", ADD
        # Operands are parenthesised so the text parses back to exactly this tree
        # (a + (b + c) stays so: floating-point addition is not associative).
        return f"{_wrap(a, level + (level == COMPARE))} {symbol} {_wrap(b, level + 1)}", level
    if op == "neg":
        return f"-{_wrap(args[0], UNARY)}", UNARY
    if notation == CALL:
        return f"{op}({', '.join(text for text, _ in args)})", ATOM
    if type(notation) is Call:  # with keyword arguments from its attr
        return f"{op}({', '.join(notation.arguments(node, [text for text, _ in args]))})", ATOM
    if op == "cumsum":
        if node.attr:  # accumulated from the end
            return f"cumsum({_wrap(args[0], POSTFIX)}[::-1])[::-1]", POSTFIX
        return f"cumsum({args[0][0]})", ATOM
    if op == "index":
        return f"{_wrap(args[0], POSTFIX)}[{', '.join(subscript_text(i) for i in node.attr)}]", POSTFIX
    if op == "stack":
        return f"[{', '.join(text for text, _ in args)}]", ATOM
    if op == "reshape":
        return _reshape(node, args[0], drop_lift)
    if op == "broadcast_to":
        ones = _constant(np.ones(node.shape))
        return f"{_wrap(args[0], MUL)} * {ones[0]}", MUL
    if op == "sum_to":
        return _sum_to(node, args[0])
    if op == "scatter":
        return _scatter(node, args[0])
    if op == "scatter_sum":  # the sum of its parts' scatters, added in the same order
        parts = [_scatter_part(items, node.attr[1], arg.shape, part)[0]
                 for items, arg, part in zip(node.attr[0], node.args, args)]
        return " + ".join(parts), ADD
    if op == "linscan":
        return _linscan(node, args)
    if op == "einsum":
        return f"einsum('{einsum_text(node.attr)}', {', '.join(text for text, _ in args)})", ATOM
    if op in ("argsort", "take_along_axis"):  # the axis counted from the front, as users write it
        return f"{op}({', '.join(text for text, _ in args)}, {node.attr + len(node.shape)})", ATOM
    if op == "gather":
        return _gather(node, args)
    if op == "gather_t":
        return _gather_t(node, args[0])
    raise UsageError(f"no notation for the internal operation '{op}' in a formula")


def _scalar_if_uniform(node: Node, arg: Node, part: tuple[str, int]) -> tuple[str, int]:
    """[2, 2, 2] * x (or [2] * x, a lifted 2) is written 2 * x when broadcasting the
    scalar gives the same numbers."""
    if arg.op != "const" or not arg.shape or node.op == "matmul":
        return part
    others = [o.shape for o in node.args if o is not arg]
    first = float(arg.value.ravel()[0])
    if tuple(np.broadcast_shapes(*others)) != node.shape or np.isnan(first) \
            or not np.all(arg.value == first):
        return part
    return number_text(first)


def number_text(v: float) -> tuple[str, int]:
    if math.isnan(v):
        return "nan", ATOM
    if math.isinf(v):
        return ("inf", ATOM) if v > 0 else ("-inf", UNARY)
    if v == math.pi:
        return "pi", ATOM
    if v == math.e:
        return "e", ATOM
    text = str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if text == "0" and math.copysign(1.0, v) < 0:
        text = "-0.0"
    return text, (UNARY if text.startswith("-") else ATOM)


def _constant(value: np.ndarray) -> tuple[str, int]:
    if value.ndim == 0:
        return number_text(float(value))
    return _literal_of(value.shape, lambda idx: number_text(float(value[idx]))[0]), ATOM


def subscript_text(item) -> str:
    if isinstance(item, int):
        return str(item)
    start, stop, step = item
    text = f"{'' if start is None else start}:{'' if stop is None else stop}"
    return text + (f":{step}" if step is not None else "")


def _reshape(node: Node, arg: tuple[str, int], drop_lift: bool) -> tuple[str, int]:
    source, target = node.args[0].shape, node.shape
    lifted = len(target) - len(source)
    if lifted >= 0 and target[lifted:] == source and all(s == 1 for s in target[:lifted]):
        if drop_lift:
            return arg  # the language lifts ranks the same way when it broadcasts
        # Elsewhere (transpose, indexing, @, the result itself) the axes must be
        # there: each [ ] of one element adds a leading axis of size 1.
        return "[" * lifted + arg[0] + "]" * lifted, ATOM
    dropped = len(source) - len(target)
    if dropped > 0 and source[dropped:] == target and all(s == 1 for s in source[:dropped]):
        return f"{_wrap(arg, POSTFIX)}[{', '.join(['0'] * dropped)}]", POSTFIX
    if len(source) == 1 and target == (1, source[0]):
        return f"[{arg[0]}]", ATOM
    if len(source) == 1 and target == (source[0], 1):
        return f"transpose([{arg[0]}])", ATOM
    return _elementwise_literal(node, arg, lambda idx: np.unravel_index(
        np.ravel_multi_index(idx, target), source))


def _sum_to(node: Node, arg: tuple[str, int]) -> tuple[str, int]:
    source, target = node.args[0].shape, node.shape
    base = _wrap(arg, POSTFIX)

    def entry(idx):
        parts = [":" if t == 1 and s != 1 else str(i) for i, s, t in zip(idx, source, target)]
        if all(p == ":" for p in parts):
            return f"sum({arg[0]})"
        return f"sum({base}[{', '.join(parts)}])"
    return _literal_of(target, entry), ATOM


def _scatter(node: Node, arg: tuple[str, int]) -> tuple[str, int]:
    items, shape = node.attr
    return _scatter_part(items, shape, node.args[0].shape, arg)


def _scatter_part(items, shape, g_shape, arg: tuple[str, int]) -> tuple[str, int]:
    check_literal_size(shape)
    where = np.full(shape, -1, dtype=np.int64)
    key = tuple(i if isinstance(i, int) else slice(*i) for i in items)
    where[key] = np.arange(int(np.prod(g_shape, dtype=np.int64))).reshape(g_shape)
    base = _wrap(arg, POSTFIX)

    def entry(idx):
        k = int(where[idx])
        if k < 0:
            return "0"
        if not g_shape:
            return arg[0]
        return f"{base}[{', '.join(map(str, np.unravel_index(k, g_shape)))}]"
    return _literal_of(shape, entry), ATOM


def _entry(source: tuple[str, int], shape: tuple, k: int) -> str:
    if not shape:
        return source[0]
    return f"{_wrap(source, POSTFIX)}[{', '.join(map(str, np.unravel_index(k, shape)))}]"


def _gather(node: Node, args) -> tuple[str, int]:
    """Each entry from where the map reads it (0 for none)."""
    attr = node.attr
    starts = attr.offsets()
    sources = [(start, shape, arg) for start, shape, arg in zip(starts, attr.sources, args)]

    def entry(idx):
        p = int(attr.positions[idx])
        if p < 0:
            return "0"
        start, shape, arg = next(s for s in reversed(sources) if s[0] <= p and math.prod(s[1]) > p - s[0])
        return _entry(arg, shape, p - start)
    return _literal_of(node.shape, entry), ATOM


def _gather_t(node: Node, arg: tuple[str, int]) -> tuple[str, int]:
    """Each entry the sum of the entries of g read from it, added in g's order (as
    the kernel adds them), 0 for none."""
    (target,) = node.attr.sources
    check_literal_size(target)
    flat = node.attr.positions.ravel()
    g_shape = node.args[0].shape
    readers: dict[int, list[int]] = {}
    for k in np.flatnonzero(flat >= 0):
        readers.setdefault(int(flat[k]), []).append(int(k))

    def entry(idx):
        found = readers.get(int(np.ravel_multi_index(idx, target)) if target else 0)
        if not found:
            return "0"
        return " + ".join(_entry(arg, g_shape, k) for k in found)
    if not target:
        return entry(()), ADD
    return _literal_of(target, entry), ATOM


def _linscan(node: Node, args) -> tuple[str, int]:
    """Each entry of the scan in Horner form, the same operations in the same order
    as the kernel: h[i] + a[i] * (h[i+1] + a[i+1] * (...)) from the end, or the
    mirror image from the start."""
    n = node.shape[0]
    check_literal_size((n * n,))
    h, a = (_scan_operand(operand, part) for operand, part in zip(node.args, args))
    step = 1 if node.attr else -1
    entries = []
    for i in range(n):
        j, chain = i, [i]
        while 0 <= j + step < n:
            j += step
            chain.append(j)
        text = h(chain[-1])
        for k in reversed(chain[:-1]):
            text = f"{h(k)} + {a(k)} * ({text})"
        entries.append(text)
    return "[" + ", ".join(entries) + "]", ATOM


def _scan_operand(operand: Node, part: tuple[str, int]):
    """Entry k of a scan's operand along the scan's axis: the scan broadcasts its
    operands, so one of size 1 there gives its only entry to every k, and a
    constant of one number is that number."""
    if operand.op == "const" and operand.uniform is not None:
        number = _wrap(number_text(operand.uniform), POSTFIX)
        return lambda k: number
    base = _wrap(part, POSTFIX)
    if operand.shape[0] == 1:
        return lambda k: f"{base}[0]"
    return lambda k: f"{base}[{k}]"


def _elementwise_literal(node, arg, source_index) -> tuple[str, int]:
    base = _wrap(arg, POSTFIX)
    return _literal_of(node.shape, lambda idx: f"{base}[{', '.join(map(str, source_index(idx)))}]"
                       if node.args[0].shape else arg[0]), ATOM


def _literal_of(shape: tuple, entry) -> str:
    """A nested literal built level by level (no recursion on the rank)."""
    if not shape:
        return entry(())
    check_literal_size(shape)
    flat = [entry(idx) for idx in np.ndindex(*shape)]
    for n in reversed(shape):
        flat = ["[" + ", ".join(flat[i:i + n]) + "]" for i in range(0, len(flat), n)]
    return flat[0]


def check_literal_size(shape):
    size = int(np.prod(shape, dtype=np.int64))
    if size > MAX_LITERAL:
        raise UsageError(f"the formula would spell out {size:,} entries; --symbolic writes at most "
                         f"{MAX_LITERAL:,}")
